//! Durations as Docker's flags take them: Go's syntax ("10s", "1m30s", "500ms", "1.5h"),
//! held as nanoseconds like the API's duration fields.

use std::fmt;

const NS: u128 = 1;
const US: u128 = 1_000;
const MS: u128 = 1_000_000;
const S: u128 = 1_000_000_000;
const M: u128 = 60 * S;
const H: u128 = 60 * M;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration (use e.g. 10s, 1m30s, 500ms or 2h)")]
    Empty,
    #[error("missing unit in {0:?} (use e.g. 10s, 1m30s, 500ms or 2h)")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in {input:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit { unit: String, input: String },
    #[error("{0:?} is not a duration (use e.g. 10s, 1m30s, 500ms or 2h)")]
    Malformed(String),
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    #[error("duration {0:?} is too long")]
    Overflow(String),
}

/// Parses a Go-style duration into nanoseconds. A bare `0` is allowed, as in Go.
/// Usable directly as a clap value parser.
pub fn parse_nanos(input: &str) -> Result<u64, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let s = match s.strip_prefix('-') {
        Some(rest) if rest.trim_start_matches(['0', '.']).is_empty() => rest,
        Some(_) => return Err(DurationError::Negative(input.to_string())),
        None => s.strip_prefix('+').unwrap_or(s),
    };
    if s == "0" {
        return Ok(0);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0;
    while i < bytes.len() {
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_part = &s[int_start..i];
        let mut frac_part = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let frac_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_part = &s[frac_start..i];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Malformed(input.to_string()));
        }
        let unit_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
            i += 1;
        }
        let unit = &s[unit_start..i];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let scale = match unit {
            "ns" => NS,
            "us" | "µs" | "μs" => US,
            "ms" => MS,
            "s" => S,
            "m" => M,
            "h" => H,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_string(),
                    input: input.to_string(),
                });
            }
        };
        let overflow = || DurationError::Overflow(input.to_string());
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Digits beyond 18 cannot change the result by a whole nanosecond for any unit.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().map_err(|_| overflow())?;
            value += frac * scale / 10u128.pow(frac_digits.len() as u32);
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
    }
    u64::try_from(total).map_err(|_| DurationError::Overflow(input.to_string()))
}

/// Formats nanoseconds the way Go prints a `time.Duration` ("1m30s", "500ms", "0s").
pub fn format_nanos(nanos: u64) -> String {
    GoDuration(nanos).to_string()
}

struct GoDuration(u64);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = u128::from(self.0);
        if n == 0 {
            return f.write_str("0s");
        }
        if n < S {
            let (scale, unit) = if n < US {
                (NS, "ns")
            } else if n < MS {
                (US, "µs")
            } else {
                (MS, "ms")
            };
            return write!(f, "{}{unit}", fraction(n, scale));
        }
        let hours = n / H;
        let minutes = (n % H) / M;
        let rest = n % M;
        if hours > 0 {
            write!(f, "{hours}h{minutes}m")?;
        } else if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write!(f, "{}s", fraction(rest, S))
    }
}

/// `value / scale` as a decimal without trailing zeros.
fn fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let rem = value % scale;
    if rem == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_durations() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("0s", 0),
            ("10s", 10_000_000_000),
            ("1m30s", 90_000_000_000),
            ("500ms", 500_000_000),
            ("2h", 7_200_000_000_000),
            ("1h2m3s", 3_723_000_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("1.5h", 5_400_000_000_000),
            ("100ns", 100),
            ("3us", 3_000),
            ("3µs", 3_000),
            ("+5s", 5_000_000_000),
            ("-0", 0),
            (" 10s ", 10_000_000_000),
        ];
        for (input, want) in cases {
            assert_eq!(parse_nanos(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_invalid_durations() {
        let cases: &[(&str, &str)] = &[
            ("", "empty duration (use e.g. 10s, 1m30s, 500ms or 2h)"),
            (
                "10",
                "missing unit in \"10\" (use e.g. 10s, 1m30s, 500ms or 2h)",
            ),
            (
                "1m30",
                "missing unit in \"1m30\" (use e.g. 10s, 1m30s, 500ms or 2h)",
            ),
            (
                "10d",
                "unknown unit \"d\" in \"10d\" (use ns, us, ms, s, m or h)",
            ),
            (
                "abc",
                "\"abc\" is not a duration (use e.g. 10s, 1m30s, 500ms or 2h)",
            ),
            (
                "s",
                "\"s\" is not a duration (use e.g. 10s, 1m30s, 500ms or 2h)",
            ),
            (
                ".s",
                "\".s\" is not a duration (use e.g. 10s, 1m30s, 500ms or 2h)",
            ),
            ("-5s", "negative duration \"-5s\" is not allowed"),
            ("99999999999h", "duration \"99999999999h\" is too long"),
        ];
        for (input, want) in cases {
            let err = parse_nanos(input).expect_err(input);
            assert_eq!(err.to_string(), *want, "input {input:?}");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (100, "100ns"),
            (1_500, "1.5µs"),
            (500_000_000, "500ms"),
            (10_000_000_000, "10s"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (7_200_000_000_000, "2h0m0s"),
            (3_723_000_000_000, "1h2m3s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(format_nanos(*nanos), *want);
            assert_eq!(parse_nanos(want), Ok(*nanos), "round trip of {want}");
        }
    }
}
