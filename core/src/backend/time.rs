//! Time helpers every backend shares: wire timestamps, whole-second rounding and retry jitter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, negative before it.
pub fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// [`micros`] rounded up: the first whole microsecond not before `t`. A due time is stored this way, so a store whose
/// clock reads whole microseconds never finds it due early.
pub fn micros_ceil(t: SystemTime) -> i64 {
    let us = micros(t);
    if from_micros(us) < t {
        us + 1
    } else {
        us
    }
}

/// The time `us` microseconds after (or, negative, before) the Unix epoch.
pub fn from_micros(us: i64) -> SystemTime {
    let d = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// Whole seconds, rounded up (brokers with second-granular settings must never get less than asked for).
pub fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `d` scaled by a factor in [0.5, 1.5), from a cheap clock-derived source (enough to spread retries).
pub fn jittered(d: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.5 + (nanos % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_stored_rounded_up_to_the_microsecond() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_001);
        assert_eq!(micros(t), 1_700_000_000_000_000);
        assert_eq!(micros_ceil(t), 1_700_000_000_000_001, "1 ns past a microsecond is due at the next one");
        assert!(from_micros(micros_ceil(t)) >= t);
        let whole = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000);
        assert_eq!(micros_ceil(whole), micros(whole), "a whole microsecond stays");
    }

    #[test]
    fn micros_round_trip_and_seconds_round_up() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(from_micros(micros(t)), t);
        assert_eq!(secs_ceil(Duration::from_millis(1001)), 2);
        assert_eq!(secs_ceil(Duration::from_secs(3)), 3);
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(2));
            assert!(j >= Duration::from_secs(1) && j < Duration::from_secs(3), "{j:?}");
        }
    }
}
