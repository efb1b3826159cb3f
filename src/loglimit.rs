//! Rate-limited log lines, so that a fault repeating many times a second
//! fills neither the log nor the disk.

use std::time::{Duration, Instant};

/// Rate-limits a repeated log line: the first occurrence and then at most one
/// per `every`, saying how many were not logged in between.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line should be logged now, `n` being how many were
    /// suppressed since the last one.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Rate limit for repeated log lines: a line differing from the previous
/// one is logged at once; the same line again at most once per `every`,
/// with the number of repeats left out meanwhile.
#[derive(Debug)]
pub struct Quiet {
    every: Duration,
    last: Option<(String, Instant)>,
    suppressed: u64,
}

impl Quiet {
    pub fn new(every: Duration) -> Quiet {
        Quiet {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// The line to log now, if any.
    pub fn check(&mut self, line: &str, now: Instant) -> Option<String> {
        let repeat = self.last.as_ref().is_some_and(|(l, _)| l == line);
        let due = self
            .last
            .as_ref()
            .is_none_or(|(_, at)| now.saturating_duration_since(*at) >= self.every);
        if repeat && !due {
            self.suppressed += 1;
            return None;
        }
        let out = match (repeat, self.suppressed) {
            (true, n) if n > 0 => format!("{line} (repeated {n} times)"),
            _ => line.to_string(),
        };
        self.last = Some((line.to_string(), now));
        self.suppressed = 0;
        Some(out)
    }
}

/// Rate limit for a kind of log line whatever its text: at most one per
/// `every`, with the number left out meanwhile.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// The line to log now, if any.
    pub fn check(&mut self, line: &str, now: Instant) -> Option<String> {
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        let out = match self.suppressed {
            0 => line.to_string(),
            n => format!("{line} ({n} similar lines left out)"),
        };
        self.last = Some(now);
        self.suppressed = 0;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_suppressed() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(10));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(2));
    }

    #[test]
    fn repeated_lines_are_rate_limited() {
        let t0 = Instant::now();
        let mut q = Quiet::new(Duration::from_secs(600));
        assert_eq!(q.check("a", t0), Some("a".into()));
        assert_eq!(q.check("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(q.check("a", t0 + Duration::from_secs(2)), None);
        // A different line is logged at once.
        assert_eq!(q.check("b", t0 + Duration::from_secs(3)), Some("b".into()));
        assert_eq!(q.check("b", t0 + Duration::from_secs(4)), None);
        assert_eq!(
            q.check("b", t0 + Duration::from_secs(603)),
            Some("b (repeated 1 times)".into())
        );
        assert_eq!(q.check("b", t0 + Duration::from_secs(1203)), Some("b".into()));
    }

    #[test]
    fn a_kind_of_line_is_throttled_whatever_its_text() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.check("a", t0), Some("a".into()));
        assert_eq!(t.check("b", t0 + Duration::from_secs(1)), None);
        assert_eq!(t.check("c", t0 + Duration::from_secs(9)), None);
        assert_eq!(
            t.check("d", t0 + Duration::from_secs(10)),
            Some("d (2 similar lines left out)".into())
        );
        assert_eq!(t.check("e", t0 + Duration::from_secs(20)), Some("e".into()));
    }
}
