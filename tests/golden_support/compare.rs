//! Comparing raw forms: volatile values normalized, differences shown as a line diff.

use serde_json::Value;

use super::Fixture;

/// `raw` with the volatile values replaced: the fixture's id and prefix, tidings' `ts` / `dlq_ts`, 32-digit hex
/// runs (redrive de-duplication ids), and the values of `volatile` keys at any depth (broker timestamps, sequences).
pub fn normalize(raw: &Value, id: &str, prefix: &str, volatile: &[&str]) -> Value {
    match raw {
        Value::String(s) => Value::String(normalize_text(s, id, prefix)),
        Value::Array(a) => Value::Array(a.iter().map(|v| normalize(v, id, prefix, volatile)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = if volatile.contains(&k.as_str()) && !v.is_null() {
                        Value::from("<volatile>")
                    } else {
                        normalize(v, id, prefix, volatile)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

pub fn normalize_text(s: &str, id: &str, prefix: &str) -> String {
    let mut s = s.replace(id, "<id>").replace(prefix, "<prefix>");
    for field in ["\"ts\":", "\"dlq_ts\":"] {
        s = replace_number_after(&s, field);
    }
    replace_hex32(&s)
}

fn replace_number_after(s: &str, field: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(field) {
        let (head, tail) = rest.split_at(at + field.len());
        out.push_str(head);
        let digits = tail.bytes().take_while(|b| b.is_ascii_digit() || *b == b'-').count();
        out.push_str(if digits > 0 { "<time>" } else { "" });
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

fn replace_hex32(s: &str) -> String {
    let b = s.as_bytes();
    let (mut out, mut i) = (String::with_capacity(s.len()), 0);
    while i < b.len() {
        let run = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if run >= 32 {
            out.push_str("<hex>");
            i += run;
        } else if run > 0 {
            out.push_str(&s[i..i + run]);
            i += run;
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Fails with a line diff when the raw forms of `fixture` (the file `tests/golden/<file>.json`) and `today` differ
/// after normalizing.
pub fn assert_same_wire(file: &str, fixture: &Fixture, today: &Fixture, volatile: &[&str]) {
    let want = normalize(&fixture.raw, &fixture.decoded.id, &fixture.prefix, volatile);
    let got = normalize(&today.raw, &today.decoded.id, &today.prefix, volatile);
    if want != got {
        let (w, g) = (serde_json::to_string_pretty(&want).unwrap(), serde_json::to_string_pretty(&got).unwrap());
        panic!(
            "the wire form of golden case {:?} ({}) changed: what {} stores today differs from the fixture \
             tests/golden/{}.json (normalized; - fixture, + today). A wire change breaks messages in flight and \
             other producers and consumers; if it is intended, re-record with TIDINGS_WRITE_GOLDEN=1 and say why.\n{}",
            fixture.case,
            fixture.covers,
            fixture.backend,
            file,
            line_diff(&w, &g)
        );
    }
    assert_eq!(
        (&fixture.published, &fixture.topic),
        (&today.published, &today.topic),
        "golden case {:?}: the fixture was recorded from another message",
        fixture.case
    );
}

/// A line diff (longest common subsequence), `-` for the fixture's lines, `+` for today's.
pub fn line_diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut l = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            l[i][j] = if a[i] == b[j] { l[i + 1][j + 1] + 1 } else { l[i + 1][j].max(l[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || l[i + 1][j] >= l[i][j + 1]) {
            out += &format!("- {}\n", a[i]);
            i += 1;
        } else {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        }
    }
    out
}

/// `s` with the fixture's prefix replaced by `fresh` (for injecting a fixture into fresh resources).
pub fn reprefix(raw: &Value, old: &str, fresh: &str) -> Value {
    match raw {
        Value::String(s) => Value::String(s.replace(old, fresh)),
        Value::Array(a) => Value::Array(a.iter().map(|v| reprefix(v, old, fresh)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), reprefix(v, old, fresh))).collect()),
        other => other.clone(),
    }
}
