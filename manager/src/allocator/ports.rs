//! Published (ingress) ports, one space per protocol, like swarmkit's portallocator.

use serde::{Deserialize, Serialize};
use shoal_api::objects::Protocol;

use super::{AllocError, Allocator, SerialSpace};

/// Swarm's default range for automatically assigned published ports.
pub const DEFAULT_DYNAMIC_PORTS: (u16, u16) = (30000, 32767);

/// The published ports of one protocol: a master space over 1-65535 holds every published
/// port; `allocate_next` draws serially from the dynamic range. A port chosen by the user
/// inside the dynamic range is held in both, so it is never also handed out automatically.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PortSpace {
    protocol: Protocol,
    master: SerialSpace,
    dynamic: SerialSpace,
}

impl PortSpace {
    /// `dyn_lo` 0 is taken as 1 (port 0 is never published); `dyn_lo > dyn_hi` gives an
    /// empty dynamic range, so only specific ports can be published.
    pub fn new(protocol: Protocol, dyn_lo: u16, dyn_hi: u16) -> Self {
        let lo = dyn_lo.max(1);
        Self {
            protocol,
            master: SerialSpace::new(&format!("published ports/{protocol}"), 1, 65535),
            dynamic: SerialSpace::new(
                &format!("dynamic published ports {lo}-{dyn_hi}/{protocol}"),
                lo.into(),
                dyn_hi.into(),
            ),
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

impl Allocator for PortSpace {
    type Item = u16;

    fn allocate_next(&mut self) -> Result<u16, AllocError> {
        let port = self.dynamic.allocate_next()?;
        // Cannot fail: a master port inside the dynamic range is always held in both.
        self.master.allocate_specific(port)?;
        Ok(port as u16)
    }

    fn allocate_specific(&mut self, port: u16) -> Result<(), AllocError> {
        let item = || format!("port {port}/{}", self.protocol);
        if port == 0 {
            return Err(AllocError::OutOfRange {
                item: item(),
                range: "1-65535".into(),
            });
        }
        if self.master.is_allocated(&port.into()) {
            return Err(AllocError::Taken { item: item() });
        }
        self.master.allocate_specific(port.into())?;
        if self.dynamic.contains(port.into()) {
            self.dynamic.allocate_specific(port.into())?;
        }
        Ok(())
    }

    fn release(&mut self, port: &u16) -> bool {
        self.dynamic.release(&(*port).into());
        self.master.release(&(*port).into())
    }

    fn is_allocated(&self, port: &u16) -> bool {
        self.master.is_allocated(&(*port).into())
    }

    fn capacity(&self) -> u64 {
        self.dynamic.capacity()
    }

    fn in_use(&self) -> u64 {
        self.master.in_use()
    }
}

/// The cluster's published ports, one independent space per protocol.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PublishedPorts {
    tcp: PortSpace,
    udp: PortSpace,
    sctp: PortSpace,
}

impl PublishedPorts {
    pub fn new(dyn_lo: u16, dyn_hi: u16) -> Self {
        Self {
            tcp: PortSpace::new(Protocol::Tcp, dyn_lo, dyn_hi),
            udp: PortSpace::new(Protocol::Udp, dyn_lo, dyn_hi),
            sctp: PortSpace::new(Protocol::Sctp, dyn_lo, dyn_hi),
        }
    }

    pub fn space(&mut self, p: Protocol) -> &mut PortSpace {
        match p {
            Protocol::Tcp => &mut self.tcp,
            Protocol::Udp => &mut self.udp,
            Protocol::Sctp => &mut self.sctp,
        }
    }

    pub fn space_ref(&self, p: Protocol) -> &PortSpace {
        match p {
            Protocol::Tcp => &self.tcp,
            Protocol::Udp => &self.udp,
            Protocol::Sctp => &self.sctp,
        }
    }
}

impl Default for PublishedPorts {
    fn default() -> Self {
        Self::new(DEFAULT_DYNAMIC_PORTS.0, DEFAULT_DYNAMIC_PORTS.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        crate::allocator::conformance::run_conformance(
            || PortSpace::new(Protocol::Tcp, 30000, 30007),
            8,
            "dynamic published ports 30000-30007/tcp",
            // Mostly around the dynamic range, sometimes anywhere (including port 0).
            |r| {
                if r % 4 == 0 {
                    (r >> 8) as u16
                } else {
                    29995 + (r % 16) as u16
                }
            },
        );
    }

    #[test]
    fn edge_ports() {
        let mut s = PortSpace::new(Protocol::Udp, 30000, 30007);
        assert_eq!(
            s.allocate_specific(0).unwrap_err().to_string(),
            "port 0/udp is outside 1-65535"
        );
        s.allocate_specific(65535).unwrap();
        s.allocate_specific(1).unwrap();
        assert_eq!(
            s.allocate_specific(65535).unwrap_err().to_string(),
            "port 65535/udp is already allocated"
        );
        assert_eq!(s.in_use(), 2);
        assert_eq!(
            s.capacity(),
            8,
            "ports outside the dynamic range do not use it up"
        );
        assert!(s.release(&65535));
        assert!(!s.release(&65535));
        assert!(!s.release(&0));
    }

    #[test]
    fn specific_port_in_dynamic_range_is_reserved_there() {
        let mut s = PortSpace::new(Protocol::Tcp, 30000, 30003);
        s.allocate_specific(30001).unwrap();
        assert_eq!(s.allocate_next().unwrap(), 30000);
        assert_eq!(s.allocate_next().unwrap(), 30002);
        assert_eq!(s.allocate_next().unwrap(), 30003);
        assert_eq!(
            s.allocate_next().unwrap_err().to_string(),
            "dynamic published ports 30000-30003/tcp exhausted: all 4 in use"
        );
        assert!(s.release(&30001));
        assert_eq!(
            s.allocate_next().unwrap(),
            30001,
            "released from both spaces"
        );
        assert_eq!(
            s.allocate_specific(30002).unwrap_err().to_string(),
            "port 30002/tcp is already allocated"
        );
    }

    #[test]
    fn protocols_are_independent() {
        let mut pp = PublishedPorts::default();
        assert_eq!(pp.space(Protocol::Tcp).allocate_next().unwrap(), 30000);
        pp.space(Protocol::Tcp).allocate_specific(8080).unwrap();
        pp.space(Protocol::Udp).allocate_specific(8080).unwrap();
        assert_eq!(pp.space(Protocol::Udp).allocate_next().unwrap(), 30000);
        assert!(!pp.space_ref(Protocol::Sctp).is_allocated(&8080));
        assert_eq!(pp.space_ref(Protocol::Sctp).capacity(), 2768);

        let mut tiny = PublishedPorts::new(0, 1);
        assert_eq!(
            tiny.space(Protocol::Sctp).allocate_next().unwrap(),
            1,
            "port 0 is never handed out"
        );
        assert_eq!(
            tiny.space(Protocol::Sctp)
                .allocate_next()
                .unwrap_err()
                .to_string(),
            "dynamic published ports 1-1/sctp exhausted: all 1 in use"
        );
    }
}
