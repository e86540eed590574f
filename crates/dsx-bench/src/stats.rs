//! Latency summaries (hdrhistogram, microseconds in, milliseconds out), duration parsing and
//! the JSON/table output helpers every subcommand shares.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A histogram of microsecond values (1 µs .. 1 h, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Record `us` (clamped into the histogram's range; 0 is a valid value).
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us);
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// `p50 … max` as one aligned table row (milliseconds).
    pub fn row(&self) -> String {
        format!(
            "{:>9} {:>9} {:>9} {:>9} {:>9}",
            fmt_ms(self.p50),
            fmt_ms(self.p90),
            fmt_ms(self.p99),
            fmt_ms(self.p999),
            fmt_ms(self.max)
        )
    }
}

pub const PERCENTILE_HEADER: &str = "      p50       p90       p99     p99.9       max";

/// Milliseconds with a precision that suits the magnitude.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.3}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// `10s`, `500ms`, `2m`, `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" | "sec" | "secs" => value,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Where the JSON goes: a file, or stdout for `-` (the human table then goes to stderr).
pub fn json_to_stdout(json: Option<&Path>) -> bool {
    json.is_some_and(|p| p.as_os_str() == "-")
}

/// Print the human-readable report (stdout, or stderr when stdout carries the JSON) and write
/// the JSON where asked.
pub fn emit<T: Serialize>(table: &str, value: &T, json: Option<&Path>) -> anyhow::Result<()> {
    if json_to_stdout(json) {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(value)?;
        if json_to_stdout(json) {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10h").is_err());
    }

    #[test]
    fn percentiles_are_ordered_and_in_ms() {
        let mut h = histogram();
        for us in 1..=10_000 {
            record(&mut h, us);
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
        assert!((p.max - 10.0).abs() < 0.01);
        assert_eq!(Percentiles::of(&histogram()), Percentiles::default());
    }
}
