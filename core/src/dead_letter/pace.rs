//! Pacing and counting of long operator actions (a redrive of thousands at `--rate N/s`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Lets one message through at a time, at most `rate` per second, and counts them; readable from another task
/// (a progress bar, the summary after an interruption).
///
/// [`Pace::stop`] ends an action between two messages: the message being moved finishes (it is never left half-moved
/// or moved without being counted), and the next [`Pace::wait`] returns `false`.
#[derive(Debug)]
pub struct Pace {
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
    done: AtomicU64,
    stop: CancellationToken,
}

impl Pace {
    /// No limit.
    pub fn unlimited() -> Self {
        Self { interval: None, next: Mutex::new(None), done: AtomicU64::new(0), stop: CancellationToken::new() }
    }

    /// At most `per_second` messages a second (must be positive and finite).
    pub fn per_second(per_second: f64) -> crate::Result<Self> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(crate::Error::invalid(format!(
                "rate {per_second} is invalid: it must be a positive number of messages per second"
            )));
        }
        Ok(Self { interval: Some(Duration::from_secs_f64(1.0 / per_second)), ..Self::unlimited() })
    }

    /// Waits until the next message may go: `true` when it may, `false` once [`Pace::stop`] was called (then the
    /// action returns what it has done so far).
    #[must_use = "a stopped pace means the action must end"]
    pub async fn wait(&self) -> bool {
        if self.stop.is_cancelled() {
            return false;
        }
        let Some(interval) = self.interval else { return true };
        let mut next = tokio::select! {
            n = self.next.lock() => n,
            () = self.stop.cancelled() => return false,
        };
        let now = Instant::now();
        if let Some(at) = *next {
            if at > now {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = self.stop.cancelled() => return false,
                }
            }
        }
        *next = Some(next.unwrap_or(now).max(now) + interval);
        true
    }

    /// Asks the action to end before its next message; the message in hand is finished and counted first.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether [`Pace::stop`] was called.
    pub fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The gap between two messages, when paced.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Records one message done (moved or deleted).
    pub fn done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages done so far.
    pub fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_rate_spaces_messages_and_counts_them() {
        let pace = Pace::per_second(4.0).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            assert!(pace.wait().await);
            pace.done();
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1), "4 gaps of 250 ms in virtual time");
        assert_eq!(pace.count(), 5);
        assert!(Pace::per_second(0.0).unwrap_err().to_string().contains("rate 0 is invalid"));
        assert!(Pace::per_second(f64::NAN).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_a_wait_at_once_and_every_later_one() {
        let pace = std::sync::Arc::new(Pace::per_second(0.001).unwrap());
        assert!(pace.wait().await, "the first message goes at once");
        let waiting = tokio::spawn({
            let pace = pace.clone();
            async move { pace.wait().await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "the second waits 1000 s");
        let start = Instant::now();
        pace.stop();
        assert!(!waiting.await.unwrap(), "a stopped wait says stop");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(!Pace::unlimited().stopped());
        assert!(pace.stopped() && !pace.wait().await);
        let unlimited = Pace::unlimited();
        unlimited.stop();
        assert!(!unlimited.wait().await, "an unlimited pace stops too");
    }
}
