//! One line of task output as shoal keeps it: `TIME STREAM TEXT\n`. TIME is UTC with nine
//! fraction digits (Docker's RFC3339NanoFixed, so `--timestamps` columns line up), STREAM
//! is `stdout` or `stderr`. Files written before shoal kept times hold bare lines; those read
//! back as stdout with no time.

pub use shoal_api::logs::format_time;
use shoal_api::logs::{Stream, TIME_FORMAT};
use time::OffsetDateTime;
/// `2026-12-04T18:00:00.000000000Z`
const TIME_LEN: usize = 30;

/// A line read back from a task's output file.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Unix nanoseconds.
    pub time: Option<i64>,
    pub stream: Stream,
    pub text: &'a str,
}

pub fn now() -> i64 {
    // i64 nanoseconds reach the year 2262.
    OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

/// Appends one record; `text` holds no newline (the reader split there).
pub fn encode(unix_nanos: i64, stream: Stream, text: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format_time(unix_nanos).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// One line of an output file, without its newline.
pub fn parse(line: &str) -> Record<'_> {
    let bare = Record {
        time: None,
        stream: Stream::Stdout,
        text: line,
    };
    let (Some(stamp), Some(rest)) = (line.get(..TIME_LEN), line.get(TIME_LEN..)) else {
        return bare;
    };
    let Ok(time) = time::PrimitiveDateTime::parse(stamp, TIME_FORMAT) else {
        return bare;
    };
    let (stream, text) = if let Some(t) = rest.strip_prefix(" stdout ") {
        (Stream::Stdout, t)
    } else if let Some(t) = rest.strip_prefix(" stderr ") {
        (Stream::Stderr, t)
    } else {
        return bare;
    };
    Record {
        time: Some(time.assume_utc().unix_timestamp_nanos() as i64),
        stream,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let t = 1_796_400_000_123_000_000;
        let mut out = Vec::new();
        encode(t, Stream::Stderr, b"disk  full", &mut out);
        let line = std::str::from_utf8(&out).unwrap();
        assert_eq!(line, "2026-12-04T16:00:00.123000000Z stderr disk  full\n");
        assert_eq!(
            parse(line.trim_end_matches('\n')),
            Record {
                time: Some(t),
                stream: Stream::Stderr,
                text: "disk  full"
            }
        );
    }

    #[test]
    fn bare_lines_from_older_files_have_no_time() {
        for line in [
            "hello",
            "",
            "2026-12-04T16:00:00.123000000Z other x",
            "2026-13-04T16:00:00.123000000Z stdout x",
        ] {
            assert_eq!(parse(line).time, None, "{line}");
            assert_eq!(parse(line).text, line);
        }
    }
}
