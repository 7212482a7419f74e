//! Addresses of one IPv4 subnet (task IPs, VIPs, node LB IPs).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{AllocError, Allocator, SerialSpace};

/// One subnet's addresses. The network and broadcast addresses (prefix <= 30) and the gateway
/// (first host address) are reserved; everything else is handed out serially, as Swarm does
/// for gateway, task and VIP addresses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Ipv4Pool {
    subnet: Ipv4Net,
    /// Host addresses after the gateway, as `u32`s. They are contiguous, so the reserved
    /// addresses are simply outside this range.
    space: SerialSpace,
}

impl Ipv4Pool {
    pub fn new(subnet: Ipv4Net) -> Self {
        let subnet = subnet.trunc();
        let network = u32::from(subnet.network());
        let broadcast = u32::from(subnet.broadcast());
        let what = format!("addresses of {subnet}");
        let space = match subnet.prefix_len() {
            // Gateway at network + 1; broadcast reserved.
            0..=30 => SerialSpace::new(&what, network + 2, broadcast - 1),
            // RFC 3021 point-to-point: both addresses are hosts, the first is the gateway.
            31 => SerialSpace::new(&what, broadcast, broadcast),
            // A /32 is only its gateway.
            _ => SerialSpace::new(&what, 1, 0),
        };
        Self { subnet, space }
    }

    /// A pool that hands out only the addresses of `range` (Docker's `--ip-range`), a part
    /// of `subnet`; the subnet's own reserved addresses stay out of it.
    pub fn with_range(subnet: Ipv4Net, range: Ipv4Net) -> Self {
        let mut pool = Self::new(subnet);
        let range = range.trunc();
        let (r_lo, r_hi) = (u32::from(range.network()), u32::from(range.broadcast()));
        // The subnet's hosts that the range holds: the space is contiguous, so the gateway,
        // network and broadcast addresses stay outside it as before.
        let lo = (u32::from(pool.subnet.network()) + 2).max(r_lo);
        let hi = u32::from(pool.subnet.broadcast())
            .saturating_sub(1)
            .min(r_hi);
        pool.space = SerialSpace::new(&format!("addresses of {range} in {}", pool.subnet), lo, hi);
        pool
    }

    /// Whether `ip` is one this pool can hand out (inside its range).
    pub fn in_range(&self, ip: Ipv4Addr) -> bool {
        self.space.contains(u32::from(ip))
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        let network = u32::from(self.subnet.network());
        if self.subnet.prefix_len() <= 30 {
            Ipv4Addr::from(network + 1)
        } else {
            Ipv4Addr::from(network)
        }
    }

    /// What a reserved address is reserved as, if it is.
    fn reserved_as(&self, ip: Ipv4Addr) -> Option<&'static str> {
        if ip == self.gateway() {
            Some("gateway")
        } else if self.subnet.prefix_len() <= 30 && ip == self.subnet.network() {
            Some("network address")
        } else if self.subnet.prefix_len() <= 30 && ip == self.subnet.broadcast() {
            Some("broadcast address")
        } else {
            None
        }
    }
}

impl Allocator for Ipv4Pool {
    type Item = Ipv4Addr;

    fn allocate_next(&mut self) -> Result<Ipv4Addr, AllocError> {
        self.space.allocate_next().map(Ipv4Addr::from)
    }

    fn allocate_specific(&mut self, ip: Ipv4Addr) -> Result<(), AllocError> {
        // Checked here rather than left to the space, so errors name addresses, not integers.
        if !self.subnet.contains(&ip) {
            return Err(AllocError::OutOfRange {
                item: ip.to_string(),
                range: self.subnet.to_string(),
            });
        }
        if let Some(role) = self.reserved_as(ip) {
            return Err(AllocError::Taken {
                item: format!("{ip} ({role} of {})", self.subnet),
            });
        }
        if self.space.is_allocated(&u32::from(ip)) {
            return Err(AllocError::Taken {
                item: ip.to_string(),
            });
        }
        self.space.allocate_specific(u32::from(ip))
    }

    fn release(&mut self, ip: &Ipv4Addr) -> bool {
        self.space.release(&u32::from(*ip))
    }

    fn is_allocated(&self, ip: &Ipv4Addr) -> bool {
        self.space.is_allocated(&u32::from(*ip))
            || (self.subnet.contains(ip) && self.reserved_as(*ip).is_some())
    }

    fn capacity(&self) -> u64 {
        self.space.capacity()
    }

    fn in_use(&self) -> u64 {
        self.space.in_use()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Ipv4Pool {
        Ipv4Pool::new(s.parse().unwrap())
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn conformance() {
        crate::allocator::conformance::run_conformance(
            || pool("198.19.1.0/28"),
            13,
            "addresses of 198.19.1.0/28",
            |r| Ipv4Addr::from(u32::from(ip("198.19.1.0")) + (r % 20) as u32),
        );
    }

    #[test]
    fn reserves_network_gateway_broadcast() {
        let mut p = pool("198.19.1.77/24");
        assert_eq!(p.subnet().to_string(), "198.19.1.0/24");
        assert_eq!(p.gateway(), ip("198.19.1.1"));
        assert_eq!(p.capacity(), 253);
        assert_eq!(p.allocate_next().unwrap(), ip("198.19.1.2"));
        for (addr, msg) in [
            (
                "198.19.1.0",
                "198.19.1.0 (network address of 198.19.1.0/24) is already allocated",
            ),
            (
                "198.19.1.1",
                "198.19.1.1 (gateway of 198.19.1.0/24) is already allocated",
            ),
            (
                "198.19.1.255",
                "198.19.1.255 (broadcast address of 198.19.1.0/24) is already allocated",
            ),
            ("198.19.1.2", "198.19.1.2 is already allocated"),
            ("198.19.2.1", "198.19.2.1 is outside 198.19.1.0/24"),
        ] {
            assert_eq!(p.allocate_specific(ip(addr)).unwrap_err().to_string(), msg);
        }
        assert!(p.is_allocated(&p.gateway()));
        assert!(!p.release(&p.gateway()), "the gateway is not released");
        p.allocate_specific(ip("198.19.1.254")).unwrap();
        assert_eq!(p.in_use(), 2);
    }

    #[test]
    fn an_ip_range_limits_what_is_handed_out() {
        let mut p = Ipv4Pool::with_range(
            "198.19.1.0/24".parse().unwrap(),
            "198.19.1.128/30".parse().unwrap(),
        );
        assert_eq!(p.gateway(), ip("198.19.1.1"), "the gateway is the subnet's");
        assert_eq!(p.capacity(), 4);
        let got: Vec<Ipv4Addr> = (0..4).map(|_| p.allocate_next().unwrap()).collect();
        assert_eq!(got[0], ip("198.19.1.128"));
        assert_eq!(got[3], ip("198.19.1.131"));
        assert!(
            p.allocate_next().is_err(),
            "the range is exhausted, not the subnet"
        );
        assert!(!p.in_range(ip("198.19.1.2")));
        // A range at the subnet's edges keeps its reserved addresses out.
        let q = Ipv4Pool::with_range(
            "198.19.2.0/24".parse().unwrap(),
            "198.19.2.0/24".parse().unwrap(),
        );
        assert_eq!(q.capacity(), 253);
        assert!(!q.in_range(ip("198.19.2.1")) && !q.in_range(ip("198.19.2.255")));
    }

    #[test]
    fn small_prefixes() {
        let mut p30 = pool("10.9.0.4/30");
        assert_eq!((p30.gateway(), p30.capacity()), (ip("10.9.0.5"), 1));
        assert_eq!(p30.allocate_next().unwrap(), ip("10.9.0.6"));

        let mut p31 = pool("10.9.0.8/31");
        assert_eq!((p31.gateway(), p31.capacity()), (ip("10.9.0.8"), 1));
        assert_eq!(p31.allocate_next().unwrap(), ip("10.9.0.9"));
        assert_eq!(
            p31.allocate_next().unwrap_err().to_string(),
            "addresses of 10.9.0.8/31 exhausted: all 1 in use"
        );

        for s in ["10.9.0.10/32", "255.255.255.255/32", "0.0.0.0/32"] {
            let mut p32 = pool(s);
            assert_eq!(p32.capacity(), 0);
            assert_eq!(p32.gateway(), p32.subnet().addr());
            assert!(matches!(
                p32.allocate_next(),
                Err(AllocError::Exhausted { .. })
            ));
            assert!(matches!(
                p32.allocate_specific(p32.gateway()),
                Err(AllocError::Taken { .. })
            ));
        }

        let all = pool("0.0.0.0/0");
        assert_eq!(all.capacity(), (1u64 << 32) - 3);
    }
}
