//! Durations as rule files write them: Prometheus style (`90s`, `5m`, `1h30m`, `500ms`).

use std::fmt;

/// A duration in milliseconds, parsed from `<number><unit>` parts (units `ms`, `s`, `m`, `h`,
/// `d`, `w`), as Prometheus rule files write `for:`. `0` alone is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DurationMs(pub i64);

impl DurationMs {
    /// Parses `5m`, `1h30m`, `250ms`, `0`; every other text is an error saying what is wrong.
    pub fn parse(text: &str) -> Result<DurationMs, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(DurationMs(0));
        }
        if text.is_empty() {
            return Err("empty duration (write e.g. 30s, 5m, 1h30m)".into());
        }
        let bytes = text.as_bytes();
        let mut total: i64 = 0;
        let mut i = 0;
        let mut last_rank = usize::MAX;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(format!(
                    "invalid duration {text:?}: expected a number at byte {i}"
                ));
            }
            let number: i64 = text[start..i]
                .parse()
                .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let (rank, unit_ms) = match &text[unit_start..i] {
                "w" => (0, 604_800_000),
                "d" => (1, 86_400_000),
                "h" => (2, 3_600_000),
                "m" => (3, 60_000),
                "s" => (4, 1_000),
                "ms" => (5, 1),
                "" => {
                    return Err(format!(
                        "invalid duration {text:?}: a unit is missing (ms, s, m, h, d, w)"
                    ));
                }
                other => {
                    return Err(format!(
                        "invalid duration {text:?}: unknown unit {other:?} (ms, s, m, h, d, w)"
                    ));
                }
            };
            if last_rank != usize::MAX && rank <= last_rank {
                return Err(format!(
                    "invalid duration {text:?}: units must go from largest to smallest, each once"
                ));
            }
            last_rank = rank;
            total = number
                .checked_mul(unit_ms)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        }
        Ok(DurationMs(total))
    }

    /// Milliseconds.
    pub fn ms(self) -> i64 {
        self.0
    }
}

impl fmt::Display for DurationMs {
    /// The shortest exact form: `5m`, `1h30m`, `1500ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest == 0 {
            return f.write_str("0s");
        }
        if rest < 0 {
            f.write_str("-")?;
            rest = -rest;
        }
        for (unit, ms) in [
            ("w", 604_800_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if rest >= ms {
                write!(f, "{}{unit}", rest / ms)?;
                rest %= ms;
            }
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for DurationMs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DurationMs::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_durations_parse_and_print_back() {
        for (text, ms) in [
            ("0", 0),
            ("0s", 0),
            ("250ms", 250),
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("2w", 1_209_600_000),
        ] {
            assert_eq!(DurationMs::parse(text), Ok(DurationMs(ms)), "{text}");
        }
        assert_eq!(DurationMs(5_400_000).to_string(), "1h30m");
        assert_eq!(DurationMs(1_500).to_string(), "1s500ms");
    }

    #[test]
    fn malformed_durations_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("5", "unit is missing"),
            ("5min", "unknown unit"),
            ("m5", "expected a number"),
            ("30s5m", "largest to smallest"),
            ("99999999999999w", "too large"),
        ] {
            let error = DurationMs::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
