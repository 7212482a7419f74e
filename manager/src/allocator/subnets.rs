//! Overlay subnets carved from address pools (Swarm's `--default-addr-pool`, 10.0.0.0/8 in /24s).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{AllocError, Allocator};

/// Hands out subnets of `subnet_len` from `pools` in order, serially and wrapping. Subnets
/// given explicitly may be anywhere and of any size; nothing allocated ever overlaps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SubnetPool {
    pools: Vec<Ipv4Net>,
    subnet_len: u8,
    /// Allocated subnets by network address. They are disjoint, so the address is a key and
    /// the one before an address is the only one that can cover it.
    allocated: BTreeMap<Ipv4Addr, Ipv4Net>,
    /// Network address of the last subnet `allocate_next` handed out.
    cursor: Option<Ipv4Addr>,
}

fn net(addr: u64, len: u8) -> Ipv4Net {
    let addr = u32::try_from(addr).expect("candidate addresses stay below 2^32");
    Ipv4Net::new(addr.into(), len).expect("subnet length checked in SubnetPool::new")
}

impl SubnetPool {
    pub fn new(pools: Vec<Ipv4Net>, subnet_len: u8) -> Result<Self, AllocError> {
        let pools: Vec<Ipv4Net> = pools.iter().map(Ipv4Net::trunc).collect();
        for (i, pool) in pools.iter().enumerate() {
            if subnet_len < pool.prefix_len() || subnet_len > 32 {
                return Err(AllocError::OutOfRange {
                    item: format!("subnet size /{subnet_len}"),
                    range: format!("pool {pool} (/{}-/32)", pool.prefix_len()),
                });
            }
            // Disjoint pools keep `capacity` honest.
            if let Some(other) = pools[..i]
                .iter()
                .find(|o| o.contains(pool) || pool.contains(*o))
            {
                return Err(AllocError::Overlaps {
                    item: format!("pool {pool}"),
                    other: format!("pool {other}"),
                });
            }
        }
        Ok(Self {
            pools,
            subnet_len,
            allocated: BTreeMap::new(),
            cursor: None,
        })
    }

    pub fn pools(&self) -> &[Ipv4Net] {
        &self.pools
    }

    pub fn subnet_len(&self) -> u8 {
        self.subnet_len
    }

    /// An allocated subnet that overlaps `n`, if any.
    fn overlapping(&self, n: Ipv4Net) -> Option<Ipv4Net> {
        // The allocated subnet starting last at or before n's end is the only candidate:
        // anything before it ends before it starts.
        let (_, &last) = self.allocated.range(..=n.broadcast()).next_back()?;
        (last.broadcast() >= n.network()).then_some(last)
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.subnet_len)
    }

    /// First candidate start and last candidate start of pool `i`.
    fn bounds(&self, i: usize) -> (u64, u64) {
        let p = self.pools[i];
        (
            u64::from(u32::from(p.network())),
            u64::from(u32::from(p.broadcast())) + 1 - self.size(),
        )
    }

    /// The first free subnet starting in `[from, to]` (both aligned), jumping over allocated
    /// subnets instead of stepping through every candidate.
    fn first_free(&self, mut from: u64, to: u64) -> Option<Ipv4Net> {
        let size = self.size();
        while from <= to {
            let candidate = net(from, self.subnet_len);
            let Some(taken) = self.overlapping(candidate) else {
                return Some(candidate);
            };
            // `taken` ends at or after `from`, so this moves forward by at least one subnet.
            from = (u64::from(u32::from(taken.broadcast())) + 1).div_ceil(size) * size;
        }
        None
    }
}

impl Allocator for SubnetPool {
    type Item = Ipv4Net;

    fn allocate_next(&mut self) -> Result<Ipv4Net, AllocError> {
        let size = self.size();
        let n = self.pools.len();
        let cursor = self.cursor.and_then(|c| {
            let i = self.pools.iter().position(|p| p.contains(&c))?;
            Some((i, u64::from(u32::from(c))))
        });
        // Search after the cursor to the end of its pool, then the other pools in order from
        // the next one (wrapping), then the cursor's pool up to and including the cursor.
        let mut segments = Vec::with_capacity(n + 1);
        match cursor {
            Some((i, c)) => {
                segments.push((c + size, self.bounds(i).1));
                segments.extend((1..n).map(|k| self.bounds((i + k) % n)));
                segments.push((self.bounds(i).0, c));
            }
            None => segments.extend((0..n).map(|i| self.bounds(i))),
        }
        let found = segments
            .into_iter()
            .find_map(|(from, to)| self.first_free(from, to));
        let Some(subnet) = found else {
            let pools: Vec<String> = self.pools.iter().map(ToString::to_string).collect();
            return Err(AllocError::Exhausted {
                what: format!("/{} subnets of {}", self.subnet_len, pools.join(", ")),
                capacity: self.capacity(),
            });
        };
        self.allocated.insert(subnet.network(), subnet);
        self.cursor = Some(subnet.network());
        Ok(subnet)
    }

    fn allocate_specific(&mut self, subnet: Ipv4Net) -> Result<(), AllocError> {
        let subnet = subnet.trunc();
        match self.overlapping(subnet) {
            Some(other) if other == subnet => Err(AllocError::Taken {
                item: subnet.to_string(),
            }),
            Some(other) => Err(AllocError::Overlaps {
                item: subnet.to_string(),
                other: other.to_string(),
            }),
            None => {
                self.allocated.insert(subnet.network(), subnet);
                Ok(())
            }
        }
    }

    fn release(&mut self, subnet: &Ipv4Net) -> bool {
        let subnet = subnet.trunc();
        if self.allocated.get(&subnet.network()) != Some(&subnet) {
            return false;
        }
        self.allocated.remove(&subnet.network());
        true
    }

    fn is_allocated(&self, subnet: &Ipv4Net) -> bool {
        let subnet = subnet.trunc();
        self.allocated.get(&subnet.network()) == Some(&subnet)
    }

    fn capacity(&self) -> u64 {
        self.pools
            .iter()
            .map(|p| 1u64 << (self.subnet_len - p.prefix_len()))
            .sum()
    }

    fn in_use(&self) -> u64 {
        self.allocated.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn pool(pools: &[&str], len: u8) -> SubnetPool {
        SubnetPool::new(pools.iter().map(|p| n(p)).collect(), len).unwrap()
    }

    #[test]
    fn conformance() {
        crate::allocator::conformance::run_conformance(
            || pool(&["10.0.0.0/24"], 28),
            16,
            "/28 subnets of 10.0.0.0/24",
            // Mostly /28s, sometimes bigger or smaller, in and just past the pool.
            |r| {
                let len = [28, 28, 28, 26, 30, 24][(r % 6) as usize];
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + ((r >> 8) % 512) as u32), len)
                    .unwrap()
                    .trunc()
            },
        );
    }

    #[test]
    fn rejects_bad_config() {
        let err = SubnetPool::new(vec![n("10.0.0.0/16")], 8).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet size /8 is outside pool 10.0.0.0/16 (/16-/32)"
        );
        assert!(SubnetPool::new(vec![n("10.0.0.0/16")], 33).is_err());
        let err = SubnetPool::new(vec![n("10.0.0.0/8"), n("10.1.0.0/16")], 24).unwrap_err();
        assert_eq!(err.to_string(), "pool 10.1.0.0/16 overlaps pool 10.0.0.0/8");
    }

    #[test]
    fn overlaps_with_bigger_and_smaller_nets() {
        let mut p = pool(&["10.0.0.0/24"], 28);
        assert_eq!(p.allocate_next().unwrap(), n("10.0.0.0/28"));
        assert_eq!(
            p.allocate_specific(n("10.0.0.0/24"))
                .unwrap_err()
                .to_string(),
            "10.0.0.0/24 overlaps 10.0.0.0/28"
        );
        assert_eq!(
            p.allocate_specific(n("10.0.0.4/30"))
                .unwrap_err()
                .to_string(),
            "10.0.0.4/30 overlaps 10.0.0.0/28"
        );
        assert_eq!(
            p.allocate_specific(n("10.0.0.9/28"))
                .unwrap_err()
                .to_string(),
            "10.0.0.0/28 is already allocated"
        );
        // A bigger net taken explicitly is stepped over as a whole.
        p.allocate_specific(n("10.0.0.32/27")).unwrap();
        assert_eq!(p.allocate_next().unwrap(), n("10.0.0.16/28"));
        assert_eq!(p.allocate_next().unwrap(), n("10.0.0.64/28"));
        // Outside the pools is fine, and does not count against its capacity.
        p.allocate_specific(n("192.168.0.0/16")).unwrap();
        assert_eq!((p.in_use(), p.capacity()), (5, 16));
        assert!(
            !p.release(&n("10.0.0.32/28")),
            "only the exact allocated subnet is released"
        );
        assert!(p.release(&n("10.0.0.32/27")));
    }

    #[test]
    fn pools_in_order_then_exhausted() {
        let mut p = pool(&["10.0.0.0/27", "172.16.0.0/28"], 28);
        let got: Vec<_> = (0..3)
            .map(|_| p.allocate_next().unwrap().to_string())
            .collect();
        assert_eq!(got, ["10.0.0.0/28", "10.0.0.16/28", "172.16.0.0/28"]);
        assert_eq!(
            p.allocate_next().unwrap_err().to_string(),
            "/28 subnets of 10.0.0.0/27, 172.16.0.0/28 exhausted: all 3 in use"
        );
        p.release(&n("10.0.0.16/28"));
        assert_eq!(p.allocate_next().unwrap(), n("10.0.0.16/28"));
    }

    #[test]
    fn big_pool_stays_small() {
        let mut p = pool(&["10.0.0.0/8"], 24);
        assert_eq!(p.capacity(), 65536);
        p.allocate_specific(n("10.0.0.0/9")).unwrap();
        assert_eq!(
            p.allocate_next().unwrap(),
            n("10.128.0.0/24"),
            "one jump over the /9"
        );
        for _ in 0..2000 {
            p.allocate_next().unwrap();
        }
        assert_eq!(p.allocate_next().unwrap(), n("10.135.209.0/24"));
        assert!(p.allocate_specific(n("10.128.0.0/9")).is_err());
        // Fill the rest with one net: the next search wraps and fails without stepping each /24.
        p.allocate_specific(n("10.192.0.0/10")).unwrap();
        for a in ["10.136.0.0/13", "10.144.0.0/12", "10.160.0.0/11"] {
            p.allocate_specific(n(a)).unwrap();
        }
        for i in 210..=255 {
            p.allocate_specific(n(&format!("10.135.{i}.0/24"))).unwrap();
        }
        assert!(matches!(
            p.allocate_next(),
            Err(AllocError::Exhausted {
                capacity: 65536,
                ..
            })
        ));
        assert!(serde_json::to_string(&p).unwrap().len() < 200_000);
    }

    #[test]
    fn slash_zero_and_slash_32() {
        let mut p = pool(&["0.0.0.0/0"], 32);
        assert_eq!(p.capacity(), 1 << 32);
        p.allocate_specific(n("255.255.255.255/32")).unwrap();
        assert_eq!(p.allocate_next().unwrap(), n("0.0.0.0/32"));
        let mut top = pool(&["255.255.255.254/31"], 32);
        assert_eq!(top.allocate_next().unwrap(), n("255.255.255.254/32"));
        assert_eq!(top.allocate_next().unwrap(), n("255.255.255.255/32"));
        assert!(top.allocate_next().is_err());
    }
}
