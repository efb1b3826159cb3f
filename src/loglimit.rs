//! Rate-limited log lines, so that a fault repeating many times a second
//! fills neither the log nor the disk. One limiter for every such line: it
//! decides and returns the finished line, with the count held back.

use std::fmt;
use std::time::{Duration, Instant};

/// Which repeats a [`LogLimit`] holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeats {
    /// Every line: one kind of event, whatever its text says.
    AnyText,
    /// Only the same text again; a different line is logged at once (and
    /// the count held back of the previous one is dropped with it).
    SameText,
}

/// The first line at once, then at most one per `every`; the line logged
/// says how many were held back since the last one.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    repeats: Repeats,
    /// When the last line was logged, and its text for [`Repeats::SameText`].
    last: Option<(Instant, String)>,
    held: u64,
}

impl LogLimit {
    pub const fn new(every: Duration, repeats: Repeats) -> LogLimit {
        LogLimit {
            every,
            repeats,
            last: None,
            held: 0,
        }
    }

    /// The line to log now, finished, or `None` to leave it out. The text
    /// is only rendered when it is logged or must be compared.
    pub fn check(&mut self, line: impl fmt::Display, now: Instant) -> Option<String> {
        let due = self
            .last
            .as_ref()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= self.every);
        let (text, held_back) = match self.repeats {
            Repeats::AnyText => (None, !due),
            Repeats::SameText => {
                let text = line.to_string();
                let same = self.last.as_ref().is_some_and(|(_, last)| *last == text);
                if !same {
                    self.held = 0;
                }
                (Some(text), same && !due)
            }
        };
        if held_back {
            self.held += 1;
            return None;
        }
        let text = text.unwrap_or_else(|| line.to_string());
        let out = match std::mem::take(&mut self.held) {
            0 => text.clone(),
            n => format!("{text} ({n} more since the last report)"),
        };
        let kept = match self.repeats {
            Repeats::AnyText => String::new(),
            Repeats::SameText => text,
        };
        self.last = Some((now, kept));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_suppressed() {
        let t0 = Instant::now();
        let mut r = LogLimit::new(Duration::from_secs(10), Repeats::AnyText);
        assert_eq!(r.check("x", t0), Some("x".into()));
        assert_eq!(r.check("x", t0 + Duration::from_secs(1)), None);
        assert_eq!(r.check("x", t0 + Duration::from_secs(9)), None);
        assert_eq!(
            r.check("x", t0 + Duration::from_secs(10)),
            Some("x (2 more since the last report)".into())
        );
    }

    #[test]
    fn repeated_lines_are_rate_limited() {
        let t0 = Instant::now();
        let mut q = LogLimit::new(Duration::from_secs(600), Repeats::SameText);
        assert_eq!(q.check("a", t0), Some("a".into()));
        assert_eq!(q.check("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(q.check("a", t0 + Duration::from_secs(2)), None);
        // A different line is logged at once.
        assert_eq!(q.check("b", t0 + Duration::from_secs(3)), Some("b".into()));
        assert_eq!(q.check("b", t0 + Duration::from_secs(4)), None);
        assert_eq!(
            q.check("b", t0 + Duration::from_secs(603)),
            Some("b (1 more since the last report)".into())
        );
        assert_eq!(q.check("b", t0 + Duration::from_secs(1203)), Some("b".into()));
    }

    #[test]
    fn a_kind_of_line_is_throttled_whatever_its_text() {
        let t0 = Instant::now();
        let mut t = LogLimit::new(Duration::from_secs(10), Repeats::AnyText);
        assert_eq!(t.check("a", t0), Some("a".into()));
        assert_eq!(t.check("b", t0 + Duration::from_secs(1)), None);
        assert_eq!(t.check("c", t0 + Duration::from_secs(9)), None);
        assert_eq!(
            t.check("d", t0 + Duration::from_secs(10)),
            Some("d (2 more since the last report)".into())
        );
        assert_eq!(t.check("e", t0 + Duration::from_secs(20)), Some("e".into()));
    }

    /// A line that is left out is never rendered.
    #[test]
    fn a_line_left_out_is_not_formatted() {
        struct Counted<'a>(&'a std::cell::Cell<u32>);
        impl fmt::Display for Counted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.set(self.0.get() + 1);
                f.write_str("x")
            }
        }
        let rendered = std::cell::Cell::new(0);
        let t0 = Instant::now();
        let mut r = LogLimit::new(Duration::from_secs(10), Repeats::AnyText);
        for s in 0..5 {
            r.check(Counted(&rendered), t0 + Duration::from_secs(s));
        }
        assert_eq!(rendered.get(), 1);
    }
}
