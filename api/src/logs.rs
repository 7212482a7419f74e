//! Task output: `service logs` requests, the subscriptions the leader sends to nodes, and
//! what nodes publish back.

use crate::objects::Driver;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogsRequest {
    /// Service id, id prefix or name.
    pub service: String,
    pub follow: bool,
    /// Last lines of each task; None for all.
    pub tail: Option<u64>,
    /// Only lines written at or after this time (Unix nanoseconds).
    #[serde(default)]
    pub since: Option<i64>,
}

/// One line of a task's output, as the CLI prints it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub task_id: String,
    pub task_name: String,
    pub node_name: String,
    pub line: String,
    /// When the node read the line from the task (Unix nanoseconds); None for output
    /// kept before shoal recorded times.
    #[serde(default)]
    pub time: Option<i64>,
    #[serde(default)]
    pub stream: Stream,
}

/// Which of a task's outputs a line came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    #[default]
    Stdout,
    Stderr,
}

/// Unix nanoseconds as Docker prints log times (RFC3339NanoFixed: UTC, nine fraction
/// digits, so columns line up).
pub fn format_time(unix_nanos: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_nanos.into())
        .ok()
        .and_then(|t| t.format(TIME_FORMAT).ok())
        .unwrap_or_else(|| ZERO_TIME.to_string())
}

pub const TIME_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
);

/// What Go prints for its zero time: Docker's stand-in for a line without one.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00.000000000Z";

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Sent by the leader in a node's session: publish these tasks' output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogSubscription {
    pub id: u64,
    pub task_ids: Vec<String>,
    pub follow: bool,
    pub tail: Option<u64>,
    #[serde(default)]
    pub since: Option<i64>,
}

/// A node's stream of answers to one subscription; `Start` comes first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "Kind", content = "Value")]
pub enum PublishItem {
    Start {
        subscription: u64,
    },
    Line {
        task_id: String,
        line: String,
        #[serde(default)]
        time: Option<i64>,
        #[serde(default)]
        stream: Stream,
    },
    /// Everything asked for was sent (never sent when following).
    Done,
}

/// How much of a task's output a node keeps: `output.log` up to `max_size`, then numbered
/// older files, `max_files` in all (Docker's json-file `max-size`/`max-file`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_size: u64,
    /// Files kept, the one being written included (at least 1).
    pub max_files: u32,
}

impl Default for Limits {
    /// 10 MiB × 5 per task unless the service's log options say otherwise.
    fn default() -> Self {
        Limits {
            max_size: 10 << 20,
            max_files: 5,
        }
    }
}

impl Limits {
    /// The service's `max-size`/`max-file` log options (`--log-opt`, a stack file's
    /// `logging.options`), whatever the driver: shoal's own copy of the output is capped
    /// the same way the engine's is.
    pub fn from_driver(driver: Option<&Driver>) -> Result<Limits, String> {
        let mut limits = Limits::default();
        let Some(d) = driver else {
            return Ok(limits);
        };
        if let Some(v) = d.options.get("max-size") {
            limits.max_size = parse_size(v).ok_or_else(|| {
                format!("log option max-size={v:?}: give a size such as 10m, 512k or 1g")
            })?;
        }
        if let Some(v) = d.options.get("max-file") {
            limits.max_files = v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                format!("log option max-file={v:?}: give a whole number of files, 1 or more")
            })?;
        }
        Ok(limits)
    }
}

/// Docker's sizes: a number with an optional k, m or g (powers of 1024), `b` allowed after.
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (num, shift) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 10),
        'm' => (&v[..v.len() - 1], 20),
        'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n: u64 = num.trim().parse().ok()?;
    n.checked_mul(1 << shift).filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn sizes_read_as_docker_reads_them() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("1gb"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "m", "-1m", "0", "ten", "1t"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_options_set_the_cap_and_bad_ones_are_refused_by_name() {
        let driver = |opts: &[(&str, &str)]| Driver {
            name: "json-file".into(),
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        };
        assert_eq!(Limits::from_driver(None), Ok(Limits::default()));
        assert_eq!(
            Limits::from_driver(Some(&driver(&[("max-size", "1k"), ("max-file", "2")]))),
            Ok(Limits {
                max_size: 1024,
                max_files: 2
            })
        );
        let e = Limits::from_driver(Some(&driver(&[("max-file", "0")]))).unwrap_err();
        assert!(e.contains("max-file"), "{e}");
        let e = Limits::from_driver(Some(&driver(&[("max-size", "lots")]))).unwrap_err();
        assert!(e.contains("max-size=\"lots\""), "{e}");
    }
}
