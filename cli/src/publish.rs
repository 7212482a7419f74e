//! `--publish` values: the short form `[PUBLISHED:]TARGET[/PROTOCOL]` (ranges as in Docker,
//! `8080-8081:80-81`) and the long form `published=8080,target=80,protocol=udp,mode=host`.
//!
//! Also `--publish-rm` values, which name ports to remove rather than describe new ones.

use shoal_api::objects::{PortConfig, Protocol, PublishMode};
use std::fmt;

/// A bad `--publish` (or `--publish-add`, `--publish-rm`) value, naming the flag and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --{flag} {spec:?}: {reason}")]
pub struct PublishError {
    pub flag: &'static str,
    pub spec: String,
    #[source]
    pub reason: PortError,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("empty port spec (use [PUBLISHED:]TARGET[/PROTOCOL], e.g. 8080:80)")]
    Empty,
    #[error("{what} port {value} is out of range 1-65535")]
    OutOfRange { what: PortKind, value: String },
    #[error("{what} port {value:?} is not a number (use e.g. 8080:80)")]
    NotANumber { what: PortKind, value: String },
    #[error("{what} port range {value:?} is reversed (write LOW-HIGH)")]
    ReversedRange { what: PortKind, value: String },
    #[error(
        "published range {published} and target range {target} differ in size (give ranges of the same length)"
    )]
    RangeMismatch { published: String, target: String },
    #[error("unknown protocol {0:?} (use tcp, udp or sctp)")]
    UnknownProtocol(String),
    #[error("unknown publish mode {0:?} (use ingress or host)")]
    UnknownMode(String),
    #[error("unknown key {0:?} (use published, target, protocol, mode or name)")]
    UnknownKey(String),
    #[error("{0:?} has no value (write KEY=VALUE, e.g. target=80)")]
    MissingValue(String),
    #[error("key {0:?} is given twice")]
    DuplicateKey(String),
    #[error("missing target port (use e.g. 8080:80 or published=8080,target=80)")]
    MissingTarget,
    #[error("a host IP is not supported here (use [PUBLISHED:]TARGET[/PROTOCOL], e.g. 8080:80)")]
    HostIp,
    #[error("port ranges are not supported by --publish-rm (remove ports one by one)")]
    RangeInRemove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Published,
    Target,
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortKind::Published => "published",
            PortKind::Target => "target",
        })
    }
}

/// One port as written, before defaults: what `--publish-rm` needs to know was given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct RawPort {
    name: Option<String>,
    published: Option<u16>,
    target: Option<u16>,
    protocol: Option<Protocol>,
    mode: Option<PublishMode>,
    /// Written as the short form with a single number (`8080`, `53/udp`).
    single_number: bool,
}

/// Parses a `--publish` value into the ports it publishes (several for a range).
/// A missing published port is 0: a dynamic port from 30000-32767.
pub fn parse_publish(flag: &'static str, spec: &str) -> Result<Vec<PortConfig>, PublishError> {
    let err = |reason| PublishError {
        flag,
        spec: spec.to_string(),
        reason,
    };
    let raw = parse_raw(spec).map_err(err)?;
    raw.into_iter()
        .map(|p| {
            Ok(PortConfig {
                name: p.name.unwrap_or_default(),
                protocol: p.protocol.unwrap_or_default(),
                target_port: p.target.ok_or_else(|| err(PortError::MissingTarget))?,
                published_port: p.published.unwrap_or(0),
                publish_mode: p.mode.unwrap_or_default(),
            })
        })
        .collect()
}

/// Which published ports a `--publish-rm` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    /// `8080` or `53/udp`: the port published as that number or, failing that, the port
    /// whose target is that number (Docker's `--publish-rm TARGET`).
    Number { port: u16, protocol: Protocol },
    /// `8080:80` or the long form: every field given must match.
    Fields {
        published: Option<u16>,
        target: Option<u16>,
        protocol: Protocol,
        mode: Option<PublishMode>,
    },
}

/// Parses a `--publish-rm` value.
pub fn parse_publish_rm(spec: &str) -> Result<PortMatch, PublishError> {
    let err = |reason| PublishError {
        flag: "publish-rm",
        spec: spec.to_string(),
        reason,
    };
    let mut raw = parse_raw(spec).map_err(err)?;
    if raw.len() != 1 {
        return Err(err(PortError::RangeInRemove));
    }
    let p = raw.remove(0);
    let protocol = p.protocol.unwrap_or_default();
    if p.single_number
        && let Some(port) = p.target
    {
        return Ok(PortMatch::Number { port, protocol });
    }
    if p.published.is_none() && p.target.is_none() {
        return Err(err(PortError::MissingTarget));
    }
    Ok(PortMatch::Fields {
        published: p.published.filter(|&n| n != 0),
        target: p.target,
        protocol,
        mode: p.mode,
    })
}

fn parse_raw(spec: &str) -> Result<Vec<RawPort>, PortError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(PortError::Empty);
    }
    if spec.contains('=') {
        parse_long(spec).map(|p| vec![p])
    } else {
        parse_short(spec)
    }
}

fn parse_long(spec: &str) -> Result<RawPort, PortError> {
    let mut port = RawPort::default();
    let mut seen: Vec<String> = Vec::new();
    for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let Some((key, value)) = field.split_once('=') else {
            return Err(PortError::MissingValue(field.to_string()));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        if value.is_empty() {
            return Err(PortError::MissingValue(key));
        }
        if seen.contains(&key) {
            return Err(PortError::DuplicateKey(key));
        }
        match key.as_str() {
            "published" => port.published = Some(parse_port(PortKind::Published, value)?),
            "target" => port.target = Some(parse_port(PortKind::Target, value)?),
            "protocol" => port.protocol = Some(parse_protocol(value)?),
            "mode" => port.mode = Some(parse_mode(value)?),
            "name" => port.name = Some(value.to_string()),
            _ => return Err(PortError::UnknownKey(key)),
        }
        seen.push(key);
    }
    if port.target.is_none() && port.published.is_none() {
        return Err(PortError::MissingTarget);
    }
    Ok(port)
}

fn parse_short(spec: &str) -> Result<Vec<RawPort>, PortError> {
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((ports, proto)) => (ports, Some(parse_protocol(proto)?)),
        None => (spec, None),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [target] => (None, *target),
        [published, target] => (Some(*published), *target),
        _ => return Err(PortError::HostIp),
    };
    if target.is_empty() {
        return Err(PortError::MissingTarget);
    }
    let targets = parse_range(PortKind::Target, target)?;
    // `:80` leaves the published port to the allocator, like `80`.
    let published = match published.filter(|p| !p.is_empty()) {
        Some(p) => Some(parse_range(PortKind::Published, p)?),
        None => None,
    };
    let single_number = published.is_none() && !target.contains('-');
    let count = targets.1 - targets.0 + 1;
    if let Some((lo, hi)) = published
        && hi - lo + 1 != count
        && lo != 0
    {
        return Err(PortError::RangeMismatch {
            published: published_text(lo, hi),
            target: published_text(targets.0, targets.1),
        });
    }
    Ok((0..count)
        .map(|i| RawPort {
            name: None,
            // A published 0 (`0:80`) asks for dynamic ports too.
            published: published.map(|(lo, _)| if lo == 0 { 0 } else { lo + i }),
            target: Some(targets.0 + i),
            protocol,
            mode: None,
            single_number,
        })
        .collect())
}

fn published_text(lo: u16, hi: u16) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn parse_range(what: PortKind, s: &str) -> Result<(u16, u16), PortError> {
    match s.split_once('-') {
        Some((lo, hi)) if lo.trim().is_empty() || hi.trim().is_empty() => {
            Err(PortError::NotANumber {
                what,
                value: s.to_string(),
            })
        }
        Some((lo, hi)) => {
            let (lo, hi) = (parse_port(what, lo)?, parse_port(what, hi)?);
            if lo > hi {
                return Err(PortError::ReversedRange {
                    what,
                    value: s.to_string(),
                });
            }
            Ok((lo, hi))
        }
        None => {
            let p = parse_port(what, s)?;
            Ok((p, p))
        }
    }
}

/// A port number; 0 is allowed for published ports only (it asks for a dynamic one).
fn parse_port(what: PortKind, s: &str) -> Result<u16, PortError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError::NotANumber {
            what,
            value: s.to_string(),
        });
    }
    let out_of_range = || PortError::OutOfRange {
        what,
        value: s.trim_start_matches('0').to_string(),
    };
    let n: u64 = s.parse().map_err(|_| out_of_range())?;
    match (what, n) {
        (PortKind::Target, 0) => Err(PortError::OutOfRange {
            what,
            value: "0".into(),
        }),
        (_, n) => u16::try_from(n).map_err(|_| out_of_range()),
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, PortError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        _ => Err(PortError::UnknownProtocol(s.to_string())),
    }
}

fn parse_mode(s: &str) -> Result<PublishMode, PortError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "ingress" => Ok(PublishMode::Ingress),
        "host" => Ok(PublishMode::Host),
        _ => Err(PortError::UnknownMode(s.to_string())),
    }
}

/// `8080/tcp`-style label of a port, for messages.
pub fn port_label(port: u16, protocol: Protocol) -> String {
    format!("{port}/{protocol}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(published: u16, target: u16, protocol: Protocol, mode: PublishMode) -> PortConfig {
        PortConfig {
            name: String::new(),
            protocol,
            target_port: target,
            published_port: published,
            publish_mode: mode,
        }
    }

    fn tcp(published: u16, target: u16) -> PortConfig {
        port(published, target, Protocol::Tcp, PublishMode::Ingress)
    }

    #[test]
    fn parses_valid_specs() {
        use Protocol::*;
        use PublishMode::*;
        let named = PortConfig {
            name: "web".into(),
            ..tcp(8080, 80)
        };
        let cases: Vec<(&str, Vec<PortConfig>)> = vec![
            ("8080:80", vec![tcp(8080, 80)]),
            ("80", vec![tcp(0, 80)]),
            (":80", vec![tcp(0, 80)]),
            ("0:80", vec![tcp(0, 80)]),
            ("53:53/udp", vec![port(53, 53, Udp, Ingress)]),
            ("53/UDP", vec![port(0, 53, Udp, Ingress)]),
            ("9000:9000/sctp", vec![port(9000, 9000, Sctp, Ingress)]),
            ("65535:1", vec![tcp(65535, 1)]),
            ("8080-8081:80-81", vec![tcp(8080, 80), tcp(8081, 81)]),
            ("80-81", vec![tcp(0, 80), tcp(0, 81)]),
            ("published=8080,target=80", vec![tcp(8080, 80)]),
            ("target=80,published=8080", vec![tcp(8080, 80)]),
            ("target=80", vec![tcp(0, 80)]),
            (
                "published=8080,target=80,protocol=udp,mode=host",
                vec![port(8080, 80, Udp, Host)],
            ),
            (
                "Mode=INGRESS, Target=80 ,PUBLISHED=8080,",
                vec![tcp(8080, 80)],
            ),
            ("name=web,published=8080,target=80", vec![named]),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_publish("publish", spec), Ok(want), "spec {spec:?}");
        }
    }

    #[test]
    fn rejects_invalid_specs_with_one_clear_line() {
        let cases: &[(&str, &str)] = &[
            (
                "70000:80",
                r#"invalid --publish "70000:80": published port 70000 is out of range 1-65535"#,
            ),
            (
                "8080:70000",
                r#"invalid --publish "8080:70000": target port 70000 is out of range 1-65535"#,
            ),
            (
                "8080:0",
                r#"invalid --publish "8080:0": target port 0 is out of range 1-65535"#,
            ),
            (
                "0",
                r#"invalid --publish "0": target port 0 is out of range 1-65535"#,
            ),
            (
                "99999999999999999999999:80",
                r#"invalid --publish "99999999999999999999999:80": published port 99999999999999999999999 is out of range 1-65535"#,
            ),
            (
                "http:80",
                r#"invalid --publish "http:80": published port "http" is not a number (use e.g. 8080:80)"#,
            ),
            (
                "8080:-1",
                r#"invalid --publish "8080:-1": target port "-1" is not a number (use e.g. 8080:80)"#,
            ),
            (
                "80/icmp",
                r#"invalid --publish "80/icmp": unknown protocol "icmp" (use tcp, udp or sctp)"#,
            ),
            (
                "8080:",
                r#"invalid --publish "8080:": missing target port (use e.g. 8080:80 or published=8080,target=80)"#,
            ),
            (
                "published=8080",
                r#"invalid --publish "published=8080": missing target port (use e.g. 8080:80 or published=8080,target=80)"#,
            ),
            (
                "published=8080,port=80",
                r#"invalid --publish "published=8080,port=80": unknown key "port" (use published, target, protocol, mode or name)"#,
            ),
            (
                "target=80,mode=global",
                r#"invalid --publish "target=80,mode=global": unknown publish mode "global" (use ingress or host)"#,
            ),
            (
                "target=80,target=81",
                r#"invalid --publish "target=80,target=81": key "target" is given twice"#,
            ),
            (
                "target=",
                r#"invalid --publish "target=": "target" has no value (write KEY=VALUE, e.g. target=80)"#,
            ),
            (
                "target=80,udp",
                r#"invalid --publish "target=80,udp": "udp" has no value (write KEY=VALUE, e.g. target=80)"#,
            ),
            (
                "127.0.0.1:8080:80",
                r#"invalid --publish "127.0.0.1:8080:80": a host IP is not supported here (use [PUBLISHED:]TARGET[/PROTOCOL], e.g. 8080:80)"#,
            ),
            (
                "8080-8082:80-81",
                r#"invalid --publish "8080-8082:80-81": published range 8080-8082 and target range 80-81 differ in size (give ranges of the same length)"#,
            ),
            (
                "90-80",
                r#"invalid --publish "90-80": target port range "90-80" is reversed (write LOW-HIGH)"#,
            ),
            (
                "",
                r#"invalid --publish "": empty port spec (use [PUBLISHED:]TARGET[/PROTOCOL], e.g. 8080:80)"#,
            ),
        ];
        for (spec, want) in cases {
            let err = parse_publish("publish", spec).expect_err(spec);
            assert_eq!(err.to_string(), *want, "spec {spec:?}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn names_the_flag() {
        let err = parse_publish("publish-add", "x").unwrap_err();
        assert!(err.to_string().starts_with("invalid --publish-add \"x\":"));
    }

    #[test]
    fn parses_publish_rm() {
        assert_eq!(
            parse_publish_rm("8080"),
            Ok(PortMatch::Number {
                port: 8080,
                protocol: Protocol::Tcp
            })
        );
        assert_eq!(
            parse_publish_rm("53/udp"),
            Ok(PortMatch::Number {
                port: 53,
                protocol: Protocol::Udp
            })
        );
        assert_eq!(
            parse_publish_rm("8080:80"),
            Ok(PortMatch::Fields {
                published: Some(8080),
                target: Some(80),
                protocol: Protocol::Tcp,
                mode: None
            })
        );
        assert_eq!(
            parse_publish_rm("published=8080"),
            Ok(PortMatch::Fields {
                published: Some(8080),
                target: None,
                protocol: Protocol::Tcp,
                mode: None
            })
        );
        assert_eq!(
            parse_publish_rm("80-81").unwrap_err().to_string(),
            r#"invalid --publish-rm "80-81": port ranges are not supported by --publish-rm (remove ports one by one)"#
        );
        assert_eq!(
            parse_publish_rm("mode=host").unwrap_err().reason,
            PortError::MissingTarget
        );
    }
}
