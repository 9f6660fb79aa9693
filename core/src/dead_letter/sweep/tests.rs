//! The sweep retries each step that failed transiently (drivers never retry), except a restore of several letters.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{sweep, Move};
use crate::backend::{AckId, DeadLetter, DeadLetters, HeldLetter, LetterPage};
use crate::dead_letter::Pace;
use crate::{Error, MessageId, Result};

/// A dead-letter queue of `n` letters whose calls fail as planned: per operation, how many calls go through first
/// and how many fail (retryably) after them.
#[derive(Debug)]
struct Queue {
    n: u64,
    gone: Mutex<HashSet<u64>>,
    restored: Mutex<Vec<u64>>,
    plan: Mutex<HashMap<&'static str, (usize, usize)>>,
    calls: Mutex<HashMap<&'static str, usize>>,
}

impl Queue {
    fn new(n: u64, plan: &[(&'static str, (usize, usize))]) -> Self {
        let plan = Mutex::new(plan.iter().copied().collect());
        Self { n, gone: Mutex::default(), restored: Mutex::default(), plan, calls: Mutex::default() }
    }

    fn call(&self, op: &'static str) -> Result<()> {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
        match self.plan.lock().unwrap().get_mut(op) {
            Some((ok, _)) if *ok > 0 => {
                *ok -= 1;
                Ok(())
            }
            Some((_, failing)) if *failing > 0 => {
                *failing -= 1;
                Err(Error::backend(format!("{op} failed (injected)"), true))
            }
            _ => Ok(()),
        }
    }

    fn calls(&self, op: &str) -> usize {
        self.calls.lock().unwrap().get(op).copied().unwrap_or(0)
    }
}

fn num(h: &AckId) -> u64 {
    match h {
        AckId::Num(n) => *n,
        AckId::Text(_) => unreachable!("the queue hands out numbers"),
    }
}

#[async_trait]
impl DeadLetters for Queue {
    async fn read(&self, cursor: Option<&str>, max: usize) -> Result<LetterPage> {
        self.call("read")?;
        let from = cursor.map_or(0, |c| c.parse::<u64>().unwrap() + 1);
        let gone = self.gone.lock().unwrap();
        let letters: Vec<HeldLetter> = (from..self.n)
            .filter(|i| !gone.contains(i))
            .take(max)
            .map(|i| {
                let d = DeadLetter::new(
                    MessageId::from(format!("m{i}")),
                    Bytes::from_static(b"{}"),
                    SystemTime::now(),
                    1,
                    "failed",
                    SystemTime::now(),
                );
                HeldLetter::new(AckId::Num(i), d)
            })
            .collect();
        let next = letters.last().map(|h| num(&h.handle).to_string());
        Ok(LetterPage::new(letters, next))
    }
    async fn restore(&self, letters: Vec<HeldLetter>) -> Result<()> {
        // Letter by letter, so a failure may come after some of them moved (as SQS's copies do).
        for h in &letters {
            self.call("restore")?;
            self.restored.lock().unwrap().push(num(&h.handle));
            self.gone.lock().unwrap().insert(num(&h.handle));
        }
        Ok(())
    }
    async fn delete(&self, handles: Vec<AckId>) -> Result<()> {
        self.call("delete")?;
        self.gone.lock().unwrap().extend(handles.iter().map(num));
        Ok(())
    }
    async fn release(&self, _handles: Vec<AckId>) -> Result<()> {
        self.call("release")
    }
}

#[tokio::test(start_paused = true)]
async fn reads_deletes_and_releases_that_fail_transiently_are_retried() {
    let q = Queue::new(30, &[("read", (0, 2)), ("delete", (0, 2)), ("release", (0, 1))]);
    let even = |d: &DeadLetter| d.id.as_str().trim_start_matches('m').parse::<u32>().unwrap() % 2 == 0;
    let purged = sweep(&q, &even, &Pace::unlimited(), Move::Delete).await.expect("the sweep went through");
    assert_eq!(purged, 15);
    assert_eq!(q.gone.lock().unwrap().len(), 15);
    assert!(q.calls("read") >= 3 && q.calls("delete") >= 3 && q.calls("release") == 2, "{:?}", q.calls);
}

#[tokio::test(start_paused = true)]
async fn a_restore_of_one_letter_is_retried_and_one_of_several_is_not() {
    // Paced: one letter per restore call, so a failed one is tried again and each letter moves once.
    let q = Queue::new(5, &[("restore", (2, 2))]);
    let one_by_one = Pace::per_second(1000.0).unwrap();
    assert_eq!(sweep(&q, &|_| true, &one_by_one, Move::Restore).await.unwrap(), 5);
    assert_eq!(q.restored.lock().unwrap().clone(), vec![0, 1, 2, 3, 4], "each restored once");
    assert_eq!(q.calls("restore"), 7, "the third letter's restore failed twice");
    // Unpaced: several letters per call; one fails after the first moved, and repeating the call would move that one
    // twice, so the sweep returns the error instead.
    let q = Queue::new(5, &[("restore", (1, 1))]);
    let e = sweep(&q, &|_| true, &Pace::unlimited(), Move::Restore).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(q.restored.lock().unwrap().clone(), vec![0], "no letter restored twice");
}
