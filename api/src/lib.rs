//! Types and wire definitions shared by shoal's manager, agent and CLI.
#![forbid(unsafe_code)]

pub mod client;
pub mod control;
pub mod dispatch;
pub mod join;
pub mod local;
pub mod objects;
pub mod wire;

/// Generated gRPC code for `proto/shoal.proto`.
#[expect(clippy::all, reason = "generated code")]
pub mod pb {
    tonic::include_proto!("shoal.v1");
}

/// Now as RFC 3339 UTC, the timestamp format of Docker's objects.
pub fn now_rfc3339() -> String {
    format_unix_nanos(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128,
    )
}

/// Formats Unix nanoseconds as RFC 3339 UTC.
pub fn format_unix_nanos(nanos: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Parses an RFC 3339 timestamp into Unix nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_and_parses_known_instants() {
        assert_eq!(super::format_unix_nanos(0), "1970-01-01T00:00:00Z");
        let s = super::format_unix_nanos(1_700_000_000_123_000_000);
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(super::parse_rfc3339(&s), Some(1_700_000_000_123_000_000));
    }
}
