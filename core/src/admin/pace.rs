//! Pacing and counting of long operator actions (a redrive of thousands at `--rate N/s`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Lets one message through at a time, at most `rate` per second, and counts them; readable from another task
/// (a progress bar, the summary after an interruption).
#[derive(Debug)]
pub struct Pace {
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
    done: AtomicU64,
}

impl Pace {
    /// No limit.
    pub fn unlimited() -> Self {
        Self { interval: None, next: Mutex::new(None), done: AtomicU64::new(0) }
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

    /// Waits until the next message may go.
    pub async fn wait(&self) {
        let Some(interval) = self.interval else { return };
        let mut next = self.next.lock().await;
        let now = Instant::now();
        if let Some(at) = *next {
            if at > now {
                tokio::time::sleep_until(at).await;
            }
        }
        *next = Some(next.unwrap_or(now).max(now) + interval);
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
            pace.wait().await;
            pace.done();
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1), "4 gaps of 250 ms in virtual time");
        assert_eq!(pace.count(), 5);
        assert!(Pace::per_second(0.0).unwrap_err().to_string().contains("rate 0 is invalid"));
        assert!(Pace::per_second(f64::NAN).is_err());
    }
}
