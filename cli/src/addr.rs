//! Addresses on the command line: `host[:port]` and CIDR subnets, checked before anything is
//! sent so that a typo fails with a clear line instead of a half-done request.

use std::net::IpAddr;

/// Docker's swarm port.
pub const SWARM_PORT: u16 = 2377;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("invalid {flag} {value:?}: port {port:?} is not a number in 1-65535")]
    BadPort {
        flag: &'static str,
        value: String,
        port: String,
    },
    #[error("invalid {flag} {value:?}: missing host before the port")]
    MissingHost { flag: &'static str, value: String },
    #[error("invalid {flag} {value:?}: {reason} (use a CIDR like 10.0.0.0/8)")]
    BadCidr {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid {flag} {value:?}: not an IP address")]
    BadIp { flag: &'static str, value: String },
}

/// Splits `host:port`, `[v6]:port`, a bare host or a bare IPv6 address.
pub fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        return (host, tail.strip_prefix(':'));
    }
    if s.parse::<IpAddr>().is_ok() {
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    }
}

/// `host:port`, bracketing IPv6 hosts.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn parse_port(flag: &'static str, value: &str, port: &str) -> Result<u16, AddrError> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(AddrError::BadPort {
            flag,
            value: value.to_string(),
            port: port.to_string(),
        }),
    }
}

/// Checks `host[:port]` and returns it with `default_port` added when it has none.
pub fn with_default_port(
    flag: &'static str,
    value: &str,
    default_port: u16,
) -> Result<String, AddrError> {
    let (host, port) = split_host_port(value);
    if host.is_empty() {
        return Err(AddrError::MissingHost {
            flag,
            value: value.to_string(),
        });
    }
    let port = match port {
        Some(p) => parse_port(flag, value, p)?,
        None => default_port,
    };
    Ok(join_host_port(host, port))
}

/// Checks `host[:port]` and returns the port if one is given.
pub fn optional_port(flag: &'static str, value: &str) -> Result<Option<u16>, AddrError> {
    let (host, port) = split_host_port(value);
    if host.is_empty() {
        return Err(AddrError::MissingHost {
            flag,
            value: value.to_string(),
        });
    }
    port.map(|p| parse_port(flag, value, p)).transpose()
}

/// A subnet `ip/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(flag: &'static str, value: &str) -> Result<Cidr, AddrError> {
        let bad = |reason| AddrError::BadCidr {
            flag,
            value: value.to_string(),
            reason,
        };
        let (ip, prefix) = value
            .split_once('/')
            .ok_or_else(|| bad("missing /PREFIX"))?;
        let addr: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        if prefix > max_prefix(addr) {
            return Err(bad("prefix too long for the address"));
        }
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_bits(u128::from(u32::MAX), 32, self.prefix);
                u128::from(u32::from(net)) & mask == u128::from(u32::from(ip)) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_bits(u128::MAX, 128, self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask_bits(all: u128, bits: u32, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        all & !((1u128 << (bits - u32::from(prefix))) - 1)
    }
}

/// An IP address flag (`--gateway`).
pub fn parse_ip(flag: &'static str, value: &str) -> Result<IpAddr, AddrError> {
    value.parse().map_err(|_| AddrError::BadIp {
        flag,
        value: value.to_string(),
    })
}

/// Whether `host` is 0.0.0.0 or ::, which a joining node cannot dial.
pub fn is_unspecified(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_hosts_and_ports() {
        assert_eq!(split_host_port("1.2.3.4:2377"), ("1.2.3.4", Some("2377")));
        assert_eq!(split_host_port("1.2.3.4"), ("1.2.3.4", None));
        assert_eq!(split_host_port("[::1]:2377"), ("::1", Some("2377")));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(split_host_port("eth0"), ("eth0", None));
        assert_eq!(split_host_port("eth0:4000"), ("eth0", Some("4000")));
        assert_eq!(join_host_port("::1", 2377), "[::1]:2377");
    }

    #[test]
    fn adds_default_ports_and_checks_them() {
        assert_eq!(
            with_default_port("--listen-addr", "198.18.0.1", 2377).unwrap(),
            "198.18.0.1:2377"
        );
        assert_eq!(
            with_default_port("--listen-addr", "0.0.0.0:4000", 2377).unwrap(),
            "0.0.0.0:4000"
        );
        assert_eq!(
            with_default_port("--listen-addr", "1.2.3.4:x", 2377)
                .unwrap_err()
                .to_string(),
            r#"invalid --listen-addr "1.2.3.4:x": port "x" is not a number in 1-65535"#
        );
        assert_eq!(
            optional_port("--advertise-addr", ":2377")
                .unwrap_err()
                .to_string(),
            r#"invalid --advertise-addr ":2377": missing host before the port"#
        );
        assert_eq!(optional_port("--advertise-addr", "10.0.0.1").unwrap(), None);
    }

    #[test]
    fn parses_cidrs() {
        let c = Cidr::parse("--subnet", "198.19.1.0/24").unwrap();
        assert!(c.contains("198.19.1.1".parse().unwrap()));
        assert!(!c.contains("198.19.2.1".parse().unwrap()));
        assert!(
            Cidr::parse("--subnet", "0.0.0.0/0")
                .unwrap()
                .contains("1.1.1.1".parse().unwrap())
        );
        let v6 = Cidr::parse("--subnet", "fd00::/64").unwrap();
        assert!(v6.contains("fd00::1".parse().unwrap()));
        assert!(!v6.contains("fd01::1".parse().unwrap()));
        assert_eq!(
            Cidr::parse("--subnet", "10.0.0.0").unwrap_err().to_string(),
            r#"invalid --subnet "10.0.0.0": missing /PREFIX (use a CIDR like 10.0.0.0/8)"#
        );
        assert_eq!(
            Cidr::parse("--subnet", "10.0.0.0/33")
                .unwrap_err()
                .to_string(),
            r#"invalid --subnet "10.0.0.0/33": prefix too long for the address (use a CIDR like 10.0.0.0/8)"#
        );
        assert!(Cidr::parse("--subnet", "10.0.0/8").is_err());
    }
}
