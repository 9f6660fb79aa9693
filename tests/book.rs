//! The book (`docs/book/src`), README.md and CHANGELOG.md hold together: every page of SUMMARY.md exists and is a doc
//! test (listed in src/book_pages.rs), every relative link resolves to a file and every `#anchor` to a heading, every fenced
//! block names its language, README's Rust blocks are copies of the compiled `examples/quickstart.rs`, and every page
//! the CLI and the dashboard link to exists.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn book_src() -> PathBuf {
    root().join("docs/book/src")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every Markdown file under `dir`, recursively.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(markdown_files(&path));
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The text outside fenced code blocks and inline code, line by line, so links and headings in code are not read.
fn prose(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut fence: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = &fence {
            if trimmed.starts_with(open.as_str()) && trimmed.trim_start_matches(open.as_str()).trim().is_empty() {
                fence = None;
            }
            lines.push(String::new());
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            let marker: String = trimmed.chars().take_while(|c| *c == '`' || *c == '~').collect();
            fence = Some(marker);
            lines.push(String::new());
            continue;
        }
        // Drop inline code spans.
        let mut kept = String::new();
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                kept.push(c);
            }
        }
        lines.push(kept);
    }
    lines
}

/// The fenced blocks of `text`: (line number, info string, body).
fn fences(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            Some((start, marker, info, body)) => {
                if trimmed.starts_with(marker.as_str()) && trimmed.trim_start_matches(marker.as_str()).trim().is_empty()
                {
                    out.push((*start, std::mem::take(info), std::mem::take(body)));
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
            None if trimmed.starts_with("```") || trimmed.starts_with("~~~") => {
                let marker: String = trimmed.chars().take_while(|c| *c == '`' || *c == '~').collect();
                let info = trimmed[marker.len()..].trim().to_string();
                open = Some((i + 1, marker, info, String::new()));
            }
            None => {}
        }
    }
    out
}

/// Link targets in a line of prose: `[text](target)` and reference definitions `[label]: target`.
fn links(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while let Some(pos) = line[i..].find("](") {
        let start = i + pos + 2;
        let mut depth = 1;
        let mut end = start;
        while end < bytes.len() {
            match bytes[end] {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            end += 1;
        }
        let target = line[start..end.min(line.len())].split_whitespace().next().unwrap_or("").to_string();
        out.push(target);
        i = end.min(line.len());
    }
    let t = line.trim_start();
    if t.starts_with('[') {
        if let Some(pos) = t.find("]: ") {
            out.push(t[pos + 3..].split_whitespace().next().unwrap_or("").to_string());
        }
    }
    out
}

/// mdBook's id of a heading: lowercase, whitespace to `-`, only alphanumerics, `-` and `_` kept.
fn heading_id(text: &str) -> String {
    // A link in a heading counts by its text.
    let mut plain = String::new();
    let mut skip = false;
    let mut prev = ' ';
    for c in text.chars() {
        if prev == ']' && c == '(' {
            skip = true;
        }
        if !skip {
            plain.push(c);
        }
        if skip && c == ')' {
            skip = false;
        }
        prev = c;
    }
    plain
        .trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The heading ids of a Markdown file (headings in code blocks excluded; inline code counts by its text).
fn anchors(path: &Path) -> BTreeSet<String> {
    let text = read(path);
    let mut ids = BTreeSet::new();
    let code_free = prose(&text);
    for (line, raw) in code_free.iter().zip(text.lines()) {
        if line.trim_start().starts_with('#') && raw.trim_start().starts_with('#') {
            let heading = raw.trim_start().trim_start_matches('#').replace('`', "");
            let mut id = heading_id(&heading);
            if ids.contains(&id) {
                let mut n = 1;
                while ids.contains(&format!("{id}-{n}")) {
                    n += 1;
                }
                id = format!("{id}-{n}");
            }
            ids.insert(id);
        }
        // Explicit anchors: <a id="..."></a> / <a name="..."></a>
        for attr in ["id=\"", "name=\""] {
            let mut rest = raw;
            while let Some(pos) = rest.find(attr) {
                let after = &rest[pos + attr.len()..];
                if let Some(end) = after.find('"') {
                    ids.insert(after[..end].to_string());
                }
                rest = &rest[pos + attr.len()..];
            }
        }
    }
    ids
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Checks every relative link of `file`; `inside`, when set, is the folder links must not leave.
fn check_links(file: &Path, inside: Option<&Path>, problems: &mut Vec<String>) {
    let text = read(file);
    let dir = file.parent().unwrap();
    for (n, line) in prose(&text).iter().enumerate() {
        for target in links(line) {
            if target.is_empty()
                || target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            let (path_part, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path_part.is_empty() { file.to_path_buf() } else { normalize(&dir.join(path_part)) };
            let at = format!("{}:{}", file.strip_prefix(root()).unwrap_or(file).display(), n + 1);
            if let Some(inside) = inside {
                if !resolved.starts_with(inside) {
                    problems.push(format!(
                        "{at}: link {target:?} leaves docs/book/src (the rendered book would break): name the file as code"
                    ));
                    continue;
                }
            }
            if !resolved.exists() {
                problems.push(format!("{at}: link {target:?}: no such file {}", resolved.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                if resolved.extension().is_some_and(|e| e == "md") && !anchors(&resolved).contains(anchor) {
                    problems.push(format!(
                        "{at}: link {target:?}: no heading with id {anchor:?} in {}",
                        resolved.strip_prefix(root()).unwrap_or(&resolved).display()
                    ));
                }
            }
        }
    }
}

#[test]
fn every_page_of_the_summary_exists_and_every_page_is_in_it() {
    let src = book_src();
    let summary = read(&src.join("SUMMARY.md"));
    let listed: BTreeSet<PathBuf> =
        prose(&summary).iter().flat_map(|l| links(l)).filter(|t| t.ends_with(".md")).map(|t| src.join(t)).collect();
    let on_disk: BTreeSet<PathBuf> = markdown_files(&src).into_iter().filter(|p| !p.ends_with("SUMMARY.md")).collect();
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    assert!(missing.is_empty(), "SUMMARY.md names pages that do not exist: {missing:?}");
    assert!(unlisted.is_empty(), "pages not in SUMMARY.md (unreachable in the book): {unlisted:?}");
}

#[test]
fn every_page_is_a_doc_test_of_the_facade() {
    let included = read(&root().join("src/book_pages.rs"));
    let mut missing = Vec::new();
    for page in markdown_files(&book_src()) {
        let rel = page.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        if rel.ends_with("SUMMARY.md") {
            continue;
        }
        let text = read(&page);
        let has_rust = fences(&text).iter().any(|(_, info, _)| info.split(',').next() == Some("rust"));
        if has_rust && !included.contains(&format!("\"{rel}\"")) {
            missing.push(rel);
        }
    }
    assert!(
        missing.is_empty(),
        "pages with Rust blocks that src/book_pages.rs does not include (never compiled): {missing:?}"
    );
}

#[test]
fn every_link_in_the_book_readme_and_changelog_resolves() {
    let src = book_src();
    let mut problems = Vec::new();
    for page in markdown_files(&src) {
        check_links(&page, Some(&src), &mut problems);
    }
    for file in ["README.md", "CHANGELOG.md", "BENCHMARKS.md", "RELIABILITY.md"] {
        let path = root().join(file);
        if path.exists() {
            check_links(&path, None, &mut problems);
        }
    }
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

#[test]
fn every_fenced_block_names_its_language() {
    // A block without one is Rust to rustdoc (a doc test that fails to compile) and unhighlighted in the book.
    let mut problems = Vec::new();
    let mut files = markdown_files(&book_src());
    files.push(root().join("README.md"));
    for file in files {
        for (line, info, _) in fences(&read(&file)) {
            if info.is_empty() {
                problems.push(format!("{}:{line}", file.strip_prefix(root()).unwrap().display()));
            }
            if info.split(',').any(|a| a == "ignore") {
                problems.push(format!(
                    "{}:{line}: `ignore` blocks are never compiled: use no_run, or text for pseudo-code",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "fenced blocks without a language, or ignored:\n{}", problems.join("\n"));
}

#[test]
fn readme_rust_blocks_are_copies_of_the_compiled_quickstart() {
    // GitHub shows README as written, so its blocks cannot hide setup lines the way doc tests do; instead each one is
    // a verbatim excerpt of examples/quickstart.rs, which the test command compiles and runs.
    let quickstart = read(&root().join("examples/quickstart.rs"));
    // Compared line by line without indentation, so a block may show a function body's lines dedented.
    let normalized = |s: &str| s.lines().map(str::trim).collect::<Vec<_>>().join("\n");
    let source = normalized(&quickstart);
    let readme = read(&root().join("README.md"));
    let blocks: Vec<_> = fences(&readme).into_iter().filter(|(_, info, _)| info.starts_with("rust")).collect();
    assert!(!blocks.is_empty(), "README.md shows no Rust example");
    for (line, _, body) in blocks {
        let body = normalized(&body);
        assert!(
            source.contains(body.trim()),
            "README.md:{line}: this Rust block is not an excerpt of examples/quickstart.rs:\n{body}"
        );
    }
}

#[test]
fn every_page_the_cli_and_dashboard_link_to_exists() {
    let backend_pages = tidings::BACKENDS.iter().map(|b| {
        tidings::book::backend_page(b).unwrap_or_else(|| panic!("tidings::book::backend_page has no page for {b}"))
    });
    for page in tidings::book::PAGES.iter().copied().chain(backend_pages) {
        let (file, anchor) = page.split_once('#').map_or((page, None), |(f, a)| (f, Some(a)));
        let md = book_src().join(file.replace(".html", ".md"));
        assert!(md.exists(), "tidings::book::PAGES names {page}, but {} does not exist", md.display());
        if let Some(anchor) = anchor {
            assert!(anchors(&md).contains(anchor), "tidings::book::PAGES names {page}: no heading {anchor:?}");
        }
    }
}

#[test]
fn heading_ids_follow_mdbook() {
    assert_eq!(heading_id(" Retries and the dead-letter queue"), "retries-and-the-dead-letter-queue");
    assert_eq!(heading_id(" The tidings CLI: doctor"), "the-tidings-cli-doctor");
    assert_eq!(heading_id(" AWS (SNS + SQS)"), "aws-sns--sqs");
    assert_eq!(links("see [a](b.md#c) and [d](https://x)"), vec!["b.md#c", "https://x"]);
}
