//! Session affinity under nftables, the way kube-proxy's nftables mode keeps ClientIP
//! affinity: a key (a VIP, or a published port) with affinity goes to its own chain
//! `stick_<id>` instead of the shared `pickN`. Each backend slot `i` has a dynamic set
//! `aff_<id>_<i>` of client addresses with a per-element timeout and a chain `ep_<id>_<i>`
//! that refreshes the client's entry and DNATs to the slot's backend. `stick_<id>` sends a
//! client found in a slot's set to that slot, and anyone else to a random slot.
//!
//! A slot whose backend changes has its set flushed (its clients pick again); the other
//! slots keep their clients. A full sync (first programming, or a restart of shoald)
//! starts with empty sets.

use super::nft::{Field, PortKey};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

/// A key of a balanced table, as it names its affinity objects.
pub trait StickyKey: Field {
    fn id(&self) -> String;
    /// What a slot's rule matches first: nft maps a port only after a protocol match.
    fn matches(&self) -> String {
        String::new()
    }
}

impl StickyKey for Ipv4Addr {
    fn id(&self) -> String {
        format!("{:08x}", u32::from(*self))
    }
}

impl StickyKey for PortKey {
    fn id(&self) -> String {
        format!("{}_{}", self.0, self.1)
    }
    fn matches(&self) -> String {
        format!("meta l4proto {} ", self.0)
    }
}

/// A backend, as the DNAT of its slot's chain writes it.
pub trait StickyTarget {
    fn dnat(&self) -> String;
}

impl StickyTarget for Ipv4Addr {
    /// A VIP keeps the port the client asked for.
    fn dnat(&self) -> String {
        format!("dnat to {self}")
    }
}

impl StickyTarget for SocketAddrV4 {
    fn dnat(&self) -> String {
        format!("dnat to {}:{}", self.ip(), self.port())
    }
}

pub fn stick_chain(key: &impl StickyKey) -> String {
    format!("stick_{}", key.id())
}

/// The commands that bring `key`'s affinity objects in `table` from `old` (slots and
/// timeout as programmed, if it had affinity) to `new` (non-empty slots and timeout).
/// Empty when nothing differs. Run before the element that points at `stick_<id>` is
/// added; objects of slots beyond the new count go in the same transaction, after the
/// chain that referred to them is rewritten.
pub fn update_script<K: StickyKey, V: StickyTarget + PartialEq>(
    table: &str,
    key: &K,
    old: Option<(&[V], u32)>,
    new: (&[V], u32),
) -> String {
    if old == Some(new) {
        return String::new();
    }
    let (slots, timeout_s) = new;
    let id = key.id();
    let old_slots = old.map(|(s, _)| s).unwrap_or_default();
    let mut s = String::new();
    for (i, b) in slots.iter().enumerate() {
        let _ = writeln!(
            s,
            "add set ip {table} aff_{id}_{i} {{ type ipv4_addr; flags dynamic,timeout; size 65536; }}"
        );
        if old_slots.get(i).is_some_and(|o| o != b) {
            let _ = writeln!(s, "flush set ip {table} aff_{id}_{i}");
        }
        let _ = writeln!(s, "add chain ip {table} ep_{id}_{i}");
        let _ = writeln!(s, "flush chain ip {table} ep_{id}_{i}");
        // Two rules: with the set full the update fails and ends its rule, and the DNAT
        // must still happen (the client just is not remembered).
        let _ = writeln!(
            s,
            "add rule ip {table} ep_{id}_{i} update @aff_{id}_{i} {{ ip saddr timeout {timeout_s}s }}"
        );
        let _ = writeln!(
            s,
            "add rule ip {table} ep_{id}_{i} {}{}",
            key.matches(),
            b.dnat()
        );
    }
    let stick = stick_chain(key);
    let _ = writeln!(s, "add chain ip {table} {stick}");
    let _ = writeln!(s, "flush chain ip {table} {stick}");
    for i in 0..slots.len() {
        let _ = writeln!(
            s,
            "add rule ip {table} {stick} ip saddr @aff_{id}_{i} goto ep_{id}_{i}"
        );
    }
    let arms: Vec<String> = (0..slots.len())
        .map(|i| format!("{i} : goto ep_{id}_{i}"))
        .collect();
    let _ = writeln!(
        s,
        "add rule ip {table} {stick} numgen random mod {} vmap {{ {} }}",
        slots.len(),
        arms.join(", ")
    );
    for i in slots.len()..old_slots.len() {
        let _ = writeln!(s, "delete chain ip {table} ep_{id}_{i}");
        let _ = writeln!(s, "delete set ip {table} aff_{id}_{i}");
    }
    s
}

/// The commands that remove `key`'s affinity objects (it has `slots` slots), once no
/// element points at `stick_<id>` any more.
pub fn remove_script<K: StickyKey>(table: &str, key: &K, slots: usize) -> String {
    let id = key.id();
    let mut s = format!("delete chain ip {table} {}\n", stick_chain(key));
    for i in 0..slots {
        let _ = writeln!(s, "delete chain ip {table} ep_{id}_{i}");
        let _ = writeln!(s, "delete set ip {table} aff_{id}_{i}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::objects::Protocol;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_sticky_vip_gets_a_set_and_chain_per_slot() {
        let vip = ip("198.19.1.2");
        let b = [ip("198.19.1.3"), ip("198.19.1.4")];
        let s = update_script("shoal", &vip, None, (&b[..], 60));
        assert!(s.contains("add set ip shoal aff_c6130102_1 { type ipv4_addr; flags dynamic,timeout; size 65536; }"), "{s}");
        assert!(s.contains(
            "add rule ip shoal ep_c6130102_0 update @aff_c6130102_0 { ip saddr timeout 60s }\nadd rule ip shoal ep_c6130102_0 dnat to 198.19.1.3\n"
        ), "{s}");
        assert!(s.contains(
            "add rule ip shoal stick_c6130102 ip saddr @aff_c6130102_1 goto ep_c6130102_1"
        ));
        assert!(s.contains(
            "numgen random mod 2 vmap { 0 : goto ep_c6130102_0, 1 : goto ep_c6130102_1 }"
        ));
        assert!(!s.contains("flush set"), "nothing to forget yet: {s}");
    }

    #[test]
    fn a_changed_slot_forgets_its_clients_and_the_others_keep_theirs() {
        let vip = ip("198.19.1.2");
        let old = [ip("198.19.1.3"), ip("198.19.1.4"), ip("198.19.1.5")];
        let new = [ip("198.19.1.3"), ip("198.19.1.9")];
        let s = update_script("shoal", &vip, Some((&old[..], 60)), (&new[..], 60));
        assert!(s.contains("flush set ip shoal aff_c6130102_1"), "{s}");
        assert!(!s.contains("flush set ip shoal aff_c6130102_0"), "{s}");
        // The third slot goes, after the stick chain no longer points at it.
        let rewrite = s.find("numgen random mod 2").unwrap();
        let gone = s.find("delete chain ip shoal ep_c6130102_2").unwrap();
        assert!(gone > rewrite, "{s}");
        assert!(s.contains("delete set ip shoal aff_c6130102_2"));
        // The same slots and timeout: nothing to do.
        assert!(update_script("shoal", &vip, Some((&new[..], 60)), (&new[..], 60)).is_empty());
    }

    #[test]
    fn a_published_port_dnats_to_the_target_port() {
        let key = PortKey(Protocol::Tcp, 30080);
        let b = [SocketAddrV4::new(ip("198.19.0.5"), 8080)];
        let s = update_script("shoal_mesh", &key, None, (&b[..], 10));
        assert!(s.contains("add chain ip shoal_mesh stick_tcp_30080"), "{s}");
        assert!(
            s.contains("ep_tcp_30080_0 meta l4proto tcp dnat to 198.19.0.5:8080"),
            "{s}"
        );
        let r = remove_script("shoal_mesh", &key, 1);
        assert_eq!(
            r,
            "delete chain ip shoal_mesh stick_tcp_30080\ndelete chain ip shoal_mesh ep_tcp_30080_0\ndelete set ip shoal_mesh aff_tcp_30080_0\n"
        );
    }
}
