//! `tidings dlq ls|show|redrive|purge`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::SystemTime;

use serde::Serialize;
use tidings::admin::{Operator, Pace};
use tidings::DeadLetter;

use crate::args::{Action, Dlq, DlqLs};
use crate::exit::{Failure, Outcome, INTERRUPTED, NOT_CONFIRMED, NOT_FOUND, USAGE};
use crate::select::{rate, Selection};
use crate::table::{self, ago, cut};

/// Most dead letters a command reads.
const READ_MAX: usize = 100_000;

/// A dead letter as JSON shows it.
#[derive(Serialize)]
pub struct Shown {
    id: String,
    reason: String,
    attempts: u32,
    published_at: String,
    dead_lettered_at: String,
    ordering_key: Option<String>,
    attributes: BTreeMap<String, String>,
    /// The payload as JSON where it parses, else as text.
    payload: serde_json::Value,
}

impl From<&DeadLetter> for Shown {
    fn from(d: &DeadLetter) -> Self {
        let payload = serde_json::from_slice(&d.payload)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&d.payload).into_owned()));
        Shown {
            id: d.id.to_string(),
            reason: d.reason.clone(),
            attempts: d.attempts,
            published_at: table::rfc3339(d.publish_time),
            dead_lettered_at: table::rfc3339(d.dead_lettered_at),
            ordering_key: d.ordering_key.clone(),
            attributes: d.attributes.clone(),
            payload,
        }
    }
}

#[derive(Serialize)]
struct Group {
    reason: String,
    count: usize,
    oldest: String,
    newest: String,
}

fn groups(list: &[DeadLetter]) -> Vec<Group> {
    let mut by: BTreeMap<&str, Vec<SystemTime>> = BTreeMap::new();
    for d in list {
        by.entry(d.reason.as_str()).or_default().push(d.dead_lettered_at);
    }
    let mut out: Vec<Group> = by
        .into_iter()
        .map(|(reason, times)| Group {
            reason: reason.to_string(),
            count: times.len(),
            oldest: table::rfc3339(*times.iter().min().unwrap()),
            newest: table::rfc3339(*times.iter().max().unwrap()),
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    out
}

pub async fn run(op: &Operator, cmd: Dlq, json: bool) -> Outcome {
    match cmd {
        Dlq::Ls(a) => ls(op, a, json).await,
        Dlq::Show { args } => show(op, args, json).await,
        Dlq::Redrive(r) if r.yes => Err(Failure::new(
            USAGE,
            "--yes is not an option of `dlq redrive`: a redrive deletes nothing and asks no confirmation (--yes \
             confirms a purge); --dry-run shows what it would move",
        )),
        Dlq::Redrive(r) => act(op, r.action, false, json, true).await,
        Dlq::Purge(p) => act(op, p.action, p.yes, json, false).await,
    }
}

async fn ls(op: &Operator, a: DlqLs, json: bool) -> Outcome {
    let sel = Selection::filters(&a.filters)?;
    let all = op.dead_letters(&a.target.topic, &a.target.subscription, READ_MAX).await?;
    let list: Vec<DeadLetter> = all.into_iter().filter(|d| sel.matches(d)).collect();
    if a.group_by.is_some() {
        let mut g = groups(&list);
        g.truncate(a.limit);
        if json {
            table::json(&g);
        } else if g.is_empty() {
            println!("no dead letters");
        } else {
            let rows: Vec<Vec<String>> = g
                .iter()
                .map(|g| vec![g.count.to_string(), g.oldest.clone(), g.newest.clone(), cut(&g.reason, 80)])
                .collect();
            table::print(&["COUNT", "OLDEST", "NEWEST", "REASON"], &rows);
        }
        return Ok(());
    }
    let total = list.len();
    let shown: Vec<&DeadLetter> = list.iter().take(a.limit).collect();
    if json {
        table::json(&shown.iter().map(|d| Shown::from(*d)).collect::<Vec<_>>());
        return Ok(());
    }
    if shown.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                ago(d.dead_lettered_at),
                d.attempts.to_string(),
                cut(&d.reason, 40),
                cut(&String::from_utf8_lossy(&d.payload), 40),
            ]
        })
        .collect();
    table::print(&["ID", "DEAD-LETTERED", "ATTEMPTS", "REASON", "PAYLOAD"], &rows);
    if total > shown.len() {
        println!("{} of {total} shown (--limit)", shown.len());
    }
    Ok(())
}

async fn show(op: &Operator, args: Vec<String>, json: bool) -> Outcome {
    let (targets, id) = match args.as_slice() {
        [id] => (op.subscription_names().await?, id.clone()),
        [topic, sub, id] => (vec![(topic.clone(), sub.clone())], id.clone()),
        _ => return Err(Failure::new(USAGE, "dlq show takes ID, or TOPIC SUBSCRIPTION ID")),
    };
    for (topic, sub) in &targets {
        let list = op.dead_letters(topic, sub, READ_MAX).await?;
        if let Some(d) = list.iter().find(|d| d.id.as_str() == id) {
            let s = Shown::from(d);
            if json {
                table::json(&serde_json::json!({ "topic": topic, "subscription": sub, "dead_letter": s }));
                return Ok(());
            }
            println!("id:              {}", s.id);
            println!("subscription:    {topic} / {sub}");
            println!("reason:          {}", s.reason);
            println!("attempts:        {}", s.attempts);
            println!("published:       {} ({})", s.published_at, ago(d.publish_time));
            println!("dead-lettered:   {} ({})", s.dead_lettered_at, ago(d.dead_lettered_at));
            if let Some(k) = &s.ordering_key {
                println!("ordering key:    {k}");
            }
            if s.attributes.is_empty() {
                println!("attributes:      (none)");
            } else {
                println!("attributes:");
                for (k, v) in &s.attributes {
                    println!("  {k} = {v}");
                }
            }
            println!("payload:");
            let pretty = match &s.payload {
                serde_json::Value::String(text) if serde_json::from_slice::<serde_json::Value>(&d.payload).is_err() => {
                    text.clone()
                }
                v => serde_json::to_string_pretty(v).expect("JSON serializes"),
            };
            for line in pretty.lines() {
                println!("  {line}");
            }
            return Ok(());
        }
    }
    Err(Failure::new(
        NOT_FOUND,
        format!("no dead letter with id {id:?} in {} dead-letter queue(s) searched", targets.len()),
    ))
}

fn confirm(question: &str) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            NOT_CONFIRMED,
            format!("{question}: not confirmed (stdin is not a terminal); pass --yes to go ahead"),
        ));
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| Failure::new(NOT_CONFIRMED, e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[derive(Serialize)]
struct Report<'a> {
    action: &'a str,
    topic: &'a str,
    subscription: &'a str,
    dry_run: bool,
    /// Dry run: how many would be acted on.
    selected: usize,
    done: u64,
    interrupted: bool,
    /// Dead letters acted on (dry run: that would be).
    ids: Vec<String>,
}

/// Redrive or purge. The dry run and the purge confirmation read the dead-letter queue first; the action itself
/// reads it once more and acts as it goes (on Pub/Sub a second read in the same process may miss what the first one
/// just released, so nothing else reads twice).
async fn act(op: &Operator, a: Action, yes: bool, json: bool, redrive: bool) -> Outcome {
    let (verb, past, done_verb) =
        if redrive { ("redrive", "redriven", "moved") } else { ("purge", "purged", "deleted") };
    let sel = Selection::action(&a)?;
    let pace = match &a.rate {
        Some(r) => Pace::per_second(rate(r)?)?,
        None => Pace::unlimited(),
    };
    let (topic, sub) = (a.target.topic.as_str(), a.target.subscription.as_str());
    let mut report = Report {
        action: verb,
        topic,
        subscription: sub,
        dry_run: a.dry_run,
        selected: 0,
        done: 0,
        interrupted: false,
        ids: Vec::new(),
    };
    if a.dry_run || (!redrive && !yes) {
        let found: Vec<DeadLetter> =
            op.dead_letters(topic, sub, READ_MAX).await?.into_iter().filter(|d| sel.matches(d)).collect();
        let missing = sel.missing_ids(&found);
        if !missing.is_empty() {
            return Err(Failure::new(
                NOT_FOUND,
                format!("no dead letter with id {} in {topic} / {sub}", missing.join(", ")),
            ));
        }
        if a.dry_run || found.is_empty() {
            report.selected = found.len();
            report.ids = found.iter().map(|d| d.id.to_string()).collect();
            if json {
                table::json(&report);
            } else if found.is_empty() {
                println!("no dead letters of {topic} / {sub} match; nothing {past}");
            } else {
                println!("{} dead letter(s) of {topic} / {sub} would be {past} (dry run):", found.len());
                for d in &found {
                    println!("  {}  {}", d.id, cut(&d.reason, 70));
                }
            }
            return Ok(());
        }
        if !confirm(&format!("Delete {} dead letter(s) of {topic} / {sub} for good?", found.len()))? {
            return Err(Failure::new(NOT_CONFIRMED, "purge not confirmed; nothing deleted"));
        }
    }
    let acted = std::sync::Mutex::new(Vec::<String>::new());
    let selected = |d: &DeadLetter| {
        let yes = sel.matches(d);
        if yes {
            acted.lock().unwrap().push(d.id.to_string());
        }
        yes
    };
    let work = async {
        if redrive {
            op.redrive(topic, sub, &selected, &pace).await
        } else {
            op.purge(topic, sub, &selected, &pace).await
        }
    };
    let bar = crate::progress::start(json, done_verb);
    // The first Ctrl-C stops between two messages (the one in hand is finished and counted); a second abandons it.
    let mut stopped = false;
    let outcome = {
        let follow = crate::progress::follow(bar.as_ref(), &pace);
        tokio::pin!(work, follow);
        tokio::select! {
        r = &mut work => Some(r),
        _ = crate::signal::interrupted() => {
            pace.stop();
            stopped = true;
            tokio::select! {
                r = &mut work => Some(r),
                _ = crate::signal::interrupted() => None,
                _ = &mut follow => unreachable!("follow never completes"),
            }
        }
        _ = &mut follow => unreachable!("follow never completes"),
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    report.done = pace.count();
    report.ids = acted.into_inner().unwrap();
    report.ids.truncate(report.done as usize);
    report.selected = report.ids.len();
    let finished = matches!(outcome, Some(Ok(_))) && !stopped;
    let failure = match outcome {
        Some(Ok(n)) if stopped => {
            report.done = n;
            report.interrupted = true;
            Some(Failure::new(
                INTERRUPTED,
                format!(
                    "interrupted: {done_verb} {n} dead letter(s) so far; the others are still in the dead-letter queue"
                ),
            ))
        }
        Some(Ok(n)) => {
            report.done = n;
            let missing = sel.missing_ids_among(&report.ids);
            (!missing.is_empty()).then(|| {
                Failure::new(NOT_FOUND, format!("no dead letter with id {} in {topic} / {sub}", missing.join(", ")))
            })
        }
        // Only the error when nothing was done (such as a subscription that does not exist); else how far it got.
        Some(Err(e)) if report.done == 0 => return Err(Failure::from(e)),
        Some(Err(e)) => {
            let mut f = Failure::from(e);
            f.message = format!("{verb} failed after {done_verb} {} dead letter(s): {}", report.done, f.message);
            Some(f)
        }
        None => {
            report.interrupted = true;
            Some(Failure::new(
                INTERRUPTED,
                format!(
                    "interrupted: {done_verb} {} dead letter(s) so far; the others are still in the dead-letter queue",
                    report.done
                ),
            ))
        }
    };
    if json {
        table::json(&report);
    } else if finished {
        let whither = if redrive { "back into the subscription" } else { "for good" };
        println!("{done_verb} {} dead letter(s) of {topic} / {sub} {whither}", report.done);
    }
    failure.map_or(Ok(()), Err)
}
