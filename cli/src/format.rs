//! Small formatting helpers shared by the command groups: ids, states, "5 seconds ago", JSON.

use serde::Serialize;

/// Docker's truncated id length.
pub const SHORT_ID: usize = 12;

/// The first 12 characters of an id, as Docker shows ids in tables.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(SHORT_ID) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

/// `id` shortened unless `no_trunc`.
pub fn id_column(id: &str, no_trunc: bool) -> &str {
    if no_trunc { id } else { short_id(id) }
}

/// Docker's `PrettyPrint`: first letter upper case ("ready" -> "Ready").
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Docker's `units.HumanDuration`, lower-cased as `service ps` prints it
/// ("less than a second", "5 seconds", "about a minute", "3 hours").
pub fn human_duration(nanos: i128) -> String {
    let seconds = nanos / 1_000_000_000;
    if seconds < 1 {
        return "less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "about a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // Go rounds the hours here.
    let hours = (nanos + 1_800_000_000_000) / 3_600_000_000_000;
    if hours == 1 {
        return "about an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", seconds / 3600 / 24 / 365)
}

/// "`State` N units ago" from an RFC 3339 timestamp; just the state if it does not parse.
pub fn state_since(state: &str, timestamp: &str, now_nanos: i128) -> String {
    let state = capitalize(state);
    match shoal_api::parse_rfc3339(timestamp) {
        Some(at) => format!("{state} {} ago", human_duration(now_nanos - at)),
        None => state,
    }
}

/// Docker's `units.HumanDuration(now - t) + " ago"` ("About a minute ago", "3 hours ago")
/// from an RFC 3339 timestamp; empty if it does not parse.
pub fn ago(timestamp: &str, now_nanos: i128) -> String {
    match shoal_api::parse_rfc3339(timestamp) {
        Some(at) => format!("{} ago", capitalize(&human_duration(now_nanos - at))),
        None => String::new(),
    }
}

/// The order of `sortorder.NaturalLess`, which docker/cli sorts secrets and configs by:
/// runs of digits compare as numbers (`s2` before `s10`), digits before other bytes,
/// other bytes as they are; of two equal numbers the one with fewer leading zeros first.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (da, db) = (a[i].is_ascii_digit(), b[j].is_ascii_digit());
        if da != db {
            return if da {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if !da {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
            continue;
        }
        let number = |s: &[u8], mut k: usize| {
            while k < s.len() && s[k] == b'0' {
                k += 1;
            }
            let start = k;
            while k < s.len() && s[k].is_ascii_digit() {
                k += 1;
            }
            (start, k)
        };
        let ((sa, ea), (sb, eb)) = (number(a, i), number(b, j));
        let by_number = (ea - sa)
            .cmp(&(eb - sb))
            .then_with(|| a[sa..ea].cmp(&b[sb..eb]))
            .then_with(|| sa.cmp(&sb));
        if by_number != Ordering::Equal {
            return by_number;
        }
        (i, j) = (ea, eb);
    }
    a.len().cmp(&b.len())
}

/// Now in Unix nanoseconds.
pub fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

/// JSON indented with 4 spaces, as `docker inspect` prints it, with a final newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    value
        .serialize(&mut ser)
        .expect("API objects serialize to JSON");
    let mut s = String::from_utf8(buf).expect("serde_json writes UTF-8");
    s.push('\n');
    s
}

/// One `Key:   value` line of a `--pretty` summary, the values aligned at `width`.
pub fn field(out: &mut String, width: usize, key: &str, value: &str) {
    // A key longer than the column still gets one space before its value.
    let line = format!(
        "{:<width$} {value}",
        format!("{key}:"),
        width = width.saturating_sub(1)
    );
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Truncates to `max` characters with an ellipsis, as Docker does for task errors.
pub fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i128 = 1_000_000_000;

    #[test]
    fn human_durations_match_docker() {
        let cases: &[(i128, &str)] = &[
            (0, "less than a second"),
            (SEC / 2, "less than a second"),
            (SEC, "1 second"),
            (5 * SEC, "5 seconds"),
            (59 * SEC, "59 seconds"),
            (60 * SEC, "about a minute"),
            (119 * SEC, "about a minute"),
            (120 * SEC, "2 minutes"),
            (59 * 60 * SEC, "59 minutes"),
            (60 * 60 * SEC, "about an hour"),
            (90 * 60 * SEC, "2 hours"),
            (47 * 3600 * SEC, "47 hours"),
            (48 * 3600 * SEC, "2 days"),
            (15 * 24 * 3600 * SEC, "2 weeks"),
            (90 * 24 * 3600 * SEC, "3 months"),
            (800 * 24 * 3600 * SEC, "2 years"),
        ];
        for (nanos, want) in cases {
            assert_eq!(human_duration(*nanos), *want, "{nanos}ns");
        }
    }

    #[test]
    fn state_since_reads_rfc3339() {
        let at = shoal_api::parse_rfc3339("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(
            state_since("running", "2024-01-01T00:00:00Z", at + 5 * SEC),
            "Running 5 seconds ago"
        );
        assert_eq!(state_since("pending", "", at), "Pending");
    }

    #[test]
    fn ids_and_words() {
        assert_eq!(short_id("0123456789abcdefghij"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(
            id_column("0123456789abcdefghij", true),
            "0123456789abcdefghij"
        );
        assert_eq!(capitalize("ready"), "Ready");
        assert_eq!(capitalize(""), "");
        assert_eq!(ellipsize("short", 30), "short");
        assert_eq!(ellipsize("abcdef", 4), "abc…");
    }

    #[test]
    fn ago_is_dockers_human_duration() {
        let at = shoal_api::parse_rfc3339("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(ago("2024-01-01T00:00:00Z", at), "Less than a second ago");
        assert_eq!(
            ago("2024-01-01T00:00:00Z", at + 90 * SEC),
            "About a minute ago"
        );
        assert_eq!(
            ago("2024-01-01T00:00:00Z", at + 3 * 3600 * SEC),
            "3 hours ago"
        );
        assert_eq!(ago("", at), "");
    }

    #[test]
    fn natural_order_like_sortorder() {
        let mut names = vec!["s10", "s2", "s02", "a", "S", "s1x", "s1", "b1", "1"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["1", "S", "a", "b1", "s1", "s1x", "s2", "s02", "s10"]
        );
        assert_eq!(natural_cmp("x", "x"), std::cmp::Ordering::Equal);
    }

    #[test]
    fn json_uses_four_spaces() {
        assert_eq!(json(&vec![1]), "[\n    1\n]\n");
        assert_eq!(json(&Vec::<u8>::new()), "[]\n");
    }
}
