//! Cloud names: FIFO suffixes and the 80/256-character limits of SQS queue and SNS topic names.

/// SQS queue names: at most 80 characters of `[A-Za-z0-9_-]`, `.fifo` included.
pub const MAX_QUEUE_NAME: usize = 80;
/// SNS topic names: at most 256 characters, `.fifo` included.
pub const MAX_TOPIC_NAME: usize = 256;

/// `base` (+ `suffix`) (+ `.fifo`), shortened with a stable hash when it would exceed `max`.
pub fn fit(base: &str, suffix: &str, fifo: bool, max: usize) -> String {
    let tail = if fifo { ".fifo" } else { "" };
    let full = format!("{base}{suffix}");
    if full.len() + tail.len() <= max {
        return format!("{full}{tail}");
    }
    let hash = fnv1a(&full);
    let keep = max - tail.len() - 9 - suffix.len();
    format!("{}-{hash:08x}{suffix}{tail}", &base[..keep])
}

fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x01000193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_limits_and_stay_distinct() {
        assert_eq!(fit("signups--email", "", false, MAX_QUEUE_NAME), "signups--email");
        assert_eq!(fit("signups--email", "-dlq", true, MAX_QUEUE_NAME), "signups--email-dlq.fifo");
        let long = format!("{}--{}", "t".repeat(63), "s".repeat(63));
        let a = fit(&long, "-dlq", true, MAX_QUEUE_NAME);
        assert_eq!(a.len(), MAX_QUEUE_NAME);
        assert!(a.ends_with("-dlq.fifo"));
        let b = fit(&format!("{long}x"), "-dlq", true, MAX_QUEUE_NAME);
        assert_ne!(a, b);
    }
}
