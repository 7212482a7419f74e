//! The nftables backend. Per packet it costs one map lookup whatever the number of services:
//! a verdict map sends a VIP (or a published port) to the chain `pickN` for its number of
//! backends N, and that chain's one rule DNATs to `backends[key . random mod N]`. Only the
//! first packet of a connection passes NAT chains; conntrack keeps the mapping after that,
//! with the kernel's own timeouts (nothing here shortens them).
//!
//! A full sync writes the whole table with `nft -f` in one transaction (the table is
//! replaced atomically, so established connections and their conntrack entries live on).
//! Every later change is a batch of element deletes and adds computed from the last
//! programmed state, sent over a netlink socket kept open per namespace.

use super::conntrack::{self, Flusher};
use super::leftovers::{Part, Takeover};
use super::netlink::{ElemData, ElemOp, NftSocket};
use super::nft_affinity::{self, StickyKey, StickyTarget, stick_chain};
use super::plan::{assign_slots, left_backends};
use super::{LbBackend, LbError, MeshTable, Netns, Synced, VipTable};
use shoal_api::objects::Protocol;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::sync::Mutex;

pub const VIP_TABLE: &str = "shoal";
pub const MESH_TABLE: &str = "shoal_mesh";
/// Chains `pick1..pickN` made at a full sync; a service with more backends makes the next
/// full sync double it.
const MIN_CHAINS: usize = 16;
/// Larger change sets go as a full sync.
const MAX_INCREMENTAL_OPS: usize = 2000;

/// A key or value as nft writes it and as nf_tables stores it: every field of a
/// concatenation padded to 4 bytes, addresses and ports in network order, the random slot
/// (numgen) in host order.
pub trait Field {
    fn text(&self) -> String;
    fn bytes(&self, out: &mut Vec<u8>);
}

impl Field for Ipv4Addr {
    fn text(&self) -> String {
        self.to_string()
    }
    fn bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.octets());
    }
}

fn port_bytes(port: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
}

/// A published port: protocol and port number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortKey(pub Protocol, pub u16);

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

impl Field for PortKey {
    fn text(&self) -> String {
        format!("{} . {}", self.0, self.1)
    }
    fn bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[proto_number(self.0), 0, 0, 0]);
        port_bytes(self.1, out);
    }
}

impl Field for SocketAddrV4 {
    fn text(&self) -> String {
        format!("{} . {}", self.ip(), self.port())
    }
    fn bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ip().octets());
        port_bytes(self.port(), out);
    }
}

fn bytes_of(f: &impl Field) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    f.bytes(&mut v);
    v
}

fn slot_bytes(key: &impl Field, slot: usize) -> Vec<u8> {
    let mut v = bytes_of(key);
    v.extend_from_slice(&(slot as u32).to_ne_bytes());
    v
}

fn pick_chain(n: usize) -> String {
    format!("pick{n}")
}

/// Backends of every key in slot order, as programmed.
pub type Slots<K, V> = BTreeMap<K, Vec<V>>;

/// The element changes that turn `old` into `want`, and the slots that result (a copy;
/// the backend itself updates its slots in place with `update_slots`).
pub fn element_ops<K, V>(
    old: &Slots<K, V>,
    want: &BTreeMap<K, BTreeSet<V>>,
    idle: Option<&'static str>,
) -> (Slots<K, V>, Vec<ElemOp>)
where
    K: StickyKey + Ord + Clone,
    V: Field + Ord + Clone,
{
    let mut slots = old.clone();
    let (ops, _) = update_slots(&mut slots, want, idle);
    (slots, ops)
}

/// Brings `slots` to `want` in place and returns the element changes that do the same in
/// the kernel. Keys whose backends are unchanged cost a comparison and nothing else, so a
/// change to one service stays cheap among tens of thousands. Deletes come first: a key
/// whose value changes is deleted and added in the same transaction. `idle` names the set
/// of keys without backends (refused at once), if the table has one. Also returns the
/// largest backend count among the keys that changed (the chains they need).
pub fn update_slots<K, V>(
    slots: &mut Slots<K, V>,
    want: &BTreeMap<K, BTreeSet<V>>,
    idle: Option<&'static str>,
) -> (Vec<ElemOp>, usize)
where
    K: StickyKey + Ord + Clone,
    V: Field + Ord + Clone,
{
    let none = BTreeMap::new();
    update_slots_sticky(slots, want, idle, &none, &none, &mut Vec::new())
}

/// `update_slots` for a table where some keys have session affinity: those in `sticky_new`
/// (keys with backends, and their timeout) point at their own `stick_<id>` chain instead
/// of `pickN`; `sticky_old` is what was programmed. The affinity objects themselves are
/// written by `nft_affinity`. Backends that left a key are added to `removed`.
pub fn update_slots_sticky<K, V>(
    slots: &mut Slots<K, V>,
    want: &BTreeMap<K, BTreeSet<V>>,
    idle: Option<&'static str>,
    sticky_old: &BTreeMap<K, u32>,
    sticky_new: &BTreeMap<K, u32>,
    removed: &mut Vec<(K, V)>,
) -> (Vec<ElemOp>, usize)
where
    K: StickyKey + Ord + Clone,
    V: Field + Ord + Clone,
{
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    // The selector of a key: pickN for N backends (its stick chain with affinity), the
    // idle set for none.
    let selector = |key: &K, count: usize, sticky: bool| match count {
        0 => idle.map(|_| None),
        _ if sticky => Some(Some(stick_chain(key))),
        c => Some(Some(pick_chain(c))),
    };
    let any_sticky = !(sticky_old.is_empty() && sticky_new.is_empty());
    let mut change =
        |key: &K, o: &[V], n: &[V], was: Option<Option<String>>, will: Option<Option<String>>| {
            removed.extend(
                o.iter()
                    .filter(|b| !n.contains(b))
                    .map(|b| (key.clone(), b.clone())),
            );
            if was != will {
                match was {
                    Some(Some(_)) => deletes.push(ElemOp::Delete {
                        set: selector_of(idle),
                        key: bytes_of(key),
                    }),
                    Some(None) => deletes.push(ElemOp::Delete {
                        set: idle.expect("idle keys only with an idle set"),
                        key: bytes_of(key),
                    }),
                    None => {}
                }
                match will {
                    Some(Some(chain)) => adds.push(ElemOp::Add {
                        set: selector_of(idle),
                        key: bytes_of(key),
                        data: Some(ElemData::Goto(chain)),
                    }),
                    Some(None) => adds.push(ElemOp::Add {
                        set: idle.expect("idle keys only with an idle set"),
                        key: bytes_of(key),
                        data: None,
                    }),
                    None => {}
                }
            }
            for i in 0..o.len().max(n.len()) {
                let (a, b) = (o.get(i), n.get(i));
                if a == b {
                    continue;
                }
                if a.is_some() {
                    deletes.push(ElemOp::Delete {
                        set: "backends",
                        key: slot_bytes(key, i),
                    });
                }
                if let Some(v) = b {
                    adds.push(ElemOp::Add {
                        set: "backends",
                        key: slot_bytes(key, i),
                        data: Some(ElemData::Value(bytes_of(v))),
                    });
                }
            }
        };
    // One ordered walk over both maps finds what differs; only that is touched after.
    let (mut gone, mut differ) = (Vec::new(), Vec::new());
    let (mut have, mut wanted) = (slots.iter().peekable(), want.iter().peekable());
    loop {
        match (have.peek(), wanted.peek()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                gone.push((*k).clone());
                have.next();
            }
            (None, Some((k, _))) => {
                differ.push((*k).clone());
                wanted.next();
            }
            (Some((ka, o)), Some((kb, w))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    gone.push((*ka).clone());
                    have.next();
                }
                std::cmp::Ordering::Greater => {
                    differ.push((*kb).clone());
                    wanted.next();
                }
                std::cmp::Ordering::Equal => {
                    let sticky_changed =
                        any_sticky && sticky_old.contains_key(*ka) != sticky_new.contains_key(*kb);
                    if sticky_changed || o.len() != w.len() || !o.iter().all(|b| w.contains(b)) {
                        differ.push((*kb).clone());
                    }
                    have.next();
                    wanted.next();
                }
            },
        }
    }
    let mut most = 0;
    for key in gone {
        let o = slots.remove(&key).expect("listed above");
        let was = selector(&key, o.len(), sticky_old.contains_key(&key));
        change(&key, &o, &[], was, None);
    }
    for key in differ {
        let w = &want[&key];
        let before = slots.remove(&key);
        let old = before.as_deref().unwrap_or_default();
        let n = assign_slots(old, w);
        let was = before
            .as_ref()
            .and_then(|o| selector(&key, o.len(), sticky_old.contains_key(&key)));
        let will = selector(&key, n.len(), sticky_new.contains_key(&key));
        change(&key, old, &n, was, will);
        most = most.max(n.len());
        slots.insert(key, n);
    }
    deletes.extend(adds);
    (deletes, most)
}

/// The VIP table has an idle set; the mesh does not (a port without backends is simply
/// not published, and the node answers with a reset).
fn selector_of(idle: Option<&'static str>) -> &'static str {
    if idle.is_some() { "vips" } else { "ports" }
}

fn chains_for<K, V>(slots: &Slots<K, V>) -> usize {
    let most = slots.values().map(Vec::len).max().unwrap_or(0);
    most.next_power_of_two().max(MIN_CHAINS)
}

/// The elements of a full sync, after the affinity objects of `sticky` keys.
fn elements<K: StickyKey + Ord, V: Field + StickyTarget + PartialEq>(
    out: &mut String,
    table: &str,
    selector: &str,
    slots: &Slots<K, V>,
    sticky: &BTreeMap<K, u32>,
) {
    for (k, t) in sticky {
        if let Some(vs) = slots.get(k).filter(|v| !v.is_empty()) {
            out.push_str(&nft_affinity::update_script(table, k, None, (vs, *t)));
        }
    }
    let mut sel = Vec::new();
    let mut be = Vec::new();
    for (k, vs) in slots.iter().filter(|(_, v)| !v.is_empty()) {
        let chain = if sticky.contains_key(k) {
            stick_chain(k)
        } else {
            pick_chain(vs.len())
        };
        sel.push(format!("{} : goto {chain}", k.text()));
        for (i, v) in vs.iter().enumerate() {
            be.push(format!("{} . {i} : {}", k.text(), v.text()));
        }
    }
    for (set, items) in [(selector, sel), ("backends", be)] {
        if !items.is_empty() {
            let _ = writeln!(
                out,
                "add element ip {table} {set} {{ {} }}",
                items.join(", ")
            );
        }
    }
}

/// The whole east-west table of one task namespace.
pub fn vip_ruleset(slots: &Slots<Ipv4Addr, Ipv4Addr>, chains: usize) -> String {
    vip_ruleset_sticky(slots, chains, &BTreeMap::new())
}

/// `vip_ruleset` with session affinity for the VIPs of `sticky`.
pub fn vip_ruleset_sticky(
    slots: &Slots<Ipv4Addr, Ipv4Addr>,
    chains: usize,
    sticky: &BTreeMap<Ipv4Addr, u32>,
) -> String {
    let t = VIP_TABLE;
    let mut s = format!("table ip {t} {{}}\ndelete table ip {t}\ntable ip {t} {{\n");
    s.push_str("  map vips { type ipv4_addr : verdict; }\n");
    s.push_str("  map backends { typeof ip daddr . numgen random mod 1 : ip daddr; }\n");
    s.push_str("  set idle { type ipv4_addr; }\n");
    for n in 1..=chains {
        let _ = writeln!(
            s,
            "  chain {} {{ dnat to ip daddr . numgen random mod {n} map @backends; }}",
            pick_chain(n)
        );
    }
    s.push_str(
        "  chain balance { type nat hook output priority -100; policy accept; ip daddr vmap @vips; }\n",
    );
    // A VIP whose service has no running task refuses at once instead of timing out.
    s.push_str(
        "  chain refuse { type filter hook output priority 0; policy accept; ip daddr @idle reject; }\n}\n",
    );
    elements(&mut s, t, "vips", slots, sticky);
    let idle: Vec<String> = slots
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| k.to_string())
        .collect();
    if !idle.is_empty() {
        let _ = writeln!(s, "add element ip {t} idle {{ {} }}", idle.join(", "));
    }
    s
}

/// The node's routing-mesh table.
pub fn mesh_ruleset(
    slots: &Slots<PortKey, SocketAddrV4>,
    local: &BTreeSet<Ipv4Addr>,
    snat: Option<&(Ipv4Addr, String)>,
    chains: usize,
    sticky: &BTreeMap<PortKey, u32>,
) -> String {
    let t = MESH_TABLE;
    let mut s = format!("table ip {t} {{}}\ndelete table ip {t}\ntable ip {t} {{\n");
    s.push_str("  map ports { type inet_proto . inet_service : verdict; }\n");
    s.push_str(
        "  map backends { typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }\n",
    );
    s.push_str("  set local { type ipv4_addr; }\n");
    for n in 1..=chains {
        let _ = writeln!(
            s,
            "  chain {} {{ dnat to meta l4proto . th dport . numgen random mod {n} map @backends; }}",
            pick_chain(n)
        );
    }
    let steer =
        "fib daddr type local meta l4proto { tcp, udp, sctp } meta l4proto . th dport vmap @ports";
    let _ = writeln!(
        s,
        "  chain prerouting {{ type nat hook prerouting priority -100; policy accept; {steer}; }}"
    );
    let _ = writeln!(
        s,
        "  chain output {{ type nat hook output priority -100; policy accept; {steer}; }}"
    );
    // Remote backends answer the node's ingress address over the overlay; local ones are
    // reached unchanged and see the client's own address.
    let snat_rule = snat
        .map(|(ip, dev)| {
            format!(" ct status dnat oifname \"{dev}\" ip daddr != @local snat to {ip};")
        })
        .unwrap_or_default();
    // Only what the mesh DNATed may be routed into the ingress overlay: the node forwards,
    // but its tasks are not open to the underlay on every port. Frames bridged within the
    // overlay (which br_netfilter also shows this hook, in and out by the bridge) pass.
    let guard = snat
        .map(|(_, dev)| {
            format!(
                " iifname != \"{dev}\" oifname \"{dev}\" ct state new ct status & dnat != dnat drop;"
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "  chain postrouting {{ type nat hook postrouting priority 100; policy accept;{snat_rule} }}"
    );
    let _ = writeln!(
        s,
        "  chain forward {{ type filter hook forward priority 0; policy accept;{guard} }}\n}}"
    );
    elements(&mut s, t, "ports", slots, sticky);
    if !local.is_empty() {
        let items: Vec<String> = local.iter().map(|i| i.to_string()).collect();
        let _ = writeln!(s, "add element ip {t} local {{ {} }}", items.join(", "));
    }
    s
}

/// Runs `nft -f -` with `script` inside `ns`.
pub fn nft_script(ns: &Netns, script: &str) -> Result<(), LbError> {
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(LbError::NoNft)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(LbError::NoNft)?;
    }
    let out = child.wait_with_output().map_err(LbError::NoNft)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LbError::Nft {
            ns: format!("{ns:?}"),
            stderr: String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

struct Balancer<K, V> {
    slots: Slots<K, V>,
    chains: usize,
    /// Keys with session affinity as programmed (keys with backends only), and the
    /// timeout in seconds.
    sticky: BTreeMap<K, u32>,
}

/// The keys of `want` that have backends and affinity.
fn sticky_of<K: Ord + Clone, V>(
    want: &BTreeMap<K, BTreeSet<V>>,
    affinity: &BTreeMap<K, u32>,
) -> BTreeMap<K, u32> {
    affinity
        .iter()
        .filter(|(k, _)| want.get(k).is_some_and(|v| !v.is_empty()))
        .map(|(k, t)| (k.clone(), *t))
        .collect()
}

/// One incremental change of a balanced table: element changes over netlink, with the
/// affinity objects they point at made before (`before`) and the ones nothing points at
/// any more removed after (`after`), each an nft script of its own transaction.
struct Change<K, V> {
    ops: Vec<ElemOp>,
    most: usize,
    before: String,
    after: String,
    /// Backends that left a key (their UDP flows are forgotten once this is applied).
    removed: Vec<(K, V)>,
}

impl<K, V> Change<K, V> {
    fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.before.is_empty() && self.after.is_empty()
    }
}

impl<K, V> Balancer<K, V>
where
    K: StickyKey + Ord + Clone,
    V: Field + StickyTarget + Ord + Clone,
{
    /// Brings the mirror to `want` and says what the kernel needs for the same.
    fn change(
        &mut self,
        table: &str,
        want: &BTreeMap<K, BTreeSet<V>>,
        idle: Option<&'static str>,
        sticky: BTreeMap<K, u32>,
    ) -> Change<K, V> {
        // Slots of keys with affinity before or after, as they were.
        let was: BTreeMap<K, Vec<V>> = self
            .sticky
            .keys()
            .chain(sticky.keys())
            .filter_map(|k| Some((k.clone(), self.slots.get(k)?.clone())))
            .collect();
        let mut removed = Vec::new();
        let (ops, most) = update_slots_sticky(
            &mut self.slots,
            want,
            idle,
            &self.sticky,
            &sticky,
            &mut removed,
        );
        let mut before = String::new();
        for (k, t) in &sticky {
            let old = self
                .sticky
                .get(k)
                .map(|ot| (was.get(k).map(Vec::as_slice).unwrap_or_default(), *ot));
            before.push_str(&nft_affinity::update_script(
                table,
                k,
                old,
                (&self.slots[k], *t),
            ));
        }
        let mut after = String::new();
        for k in self.sticky.keys().filter(|k| !sticky.contains_key(*k)) {
            let n = was.get(k).map_or(0, Vec::len);
            after.push_str(&nft_affinity::remove_script(table, k, n));
        }
        self.sticky = sticky;
        Change {
            ops,
            most,
            before,
            after,
            removed,
        }
    }
}

struct Mesh {
    balancer: Balancer<PortKey, SocketAddrV4>,
    local: BTreeSet<Ipv4Addr>,
    snat: Option<(Ipv4Addr, String)>,
}

#[derive(Default)]
struct Namespace {
    vips: Option<Balancer<Ipv4Addr, Ipv4Addr>>,
    mesh: Option<Mesh>,
    sock: Option<NftSocket>,
}

impl Namespace {
    /// Sends `ops` as one transaction; false when it could not be applied (the caller
    /// falls back to a full sync).
    fn send(&mut self, ns: &Netns, table: &str, ops: &[ElemOp]) -> bool {
        if self.sock.is_none() {
            let opened = match ns.path() {
                Some(p) => NftSocket::open_in(&p),
                None => NftSocket::open(),
            };
            match opened {
                Ok(s) => self.sock = Some(s),
                Err(e) => {
                    tracing::warn!(?ns, error = %e, "no nf_tables socket; syncing in full");
                    return false;
                }
            }
        }
        let sock = self.sock.as_mut().expect("opened above");
        match sock.apply(table, ops) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(?ns, table, error = %e, "incremental update refused; syncing in full");
                self.sock = None;
                false
            }
        }
    }

    /// Applies `change` in its three steps; false when one was refused (the caller falls
    /// back to a full sync, which replaces the table and so anything half done).
    fn apply_change<K, V>(&mut self, ns: &Netns, table: &str, change: &Change<K, V>) -> bool {
        let script = |text: &str, step: &str| {
            text.is_empty()
                || nft_script(ns, text)
                    .inspect_err(|e| tracing::warn!(?ns, table, step, error = %e, "affinity update refused; syncing in full"))
                    .is_ok()
        };
        script(&change.before, "before")
            && (change.ops.is_empty() || self.send(ns, table, &change.ops))
            && script(&change.after, "after")
    }
}

/// The nftables backend; it remembers what it programmed in each namespace.
#[derive(Default)]
pub struct Nftables {
    spaces: Mutex<HashMap<Netns, Namespace>>,
    conntrack: Flusher,
    takeover: Takeover,
}

impl Nftables {
    fn forget_udp_vips(&self, ns: &Netns, removed: Vec<(Ipv4Addr, Ipv4Addr)>) {
        self.conntrack.flush(ns, conntrack::vips_gone(removed));
    }

    fn forget_udp_ports(&self, ns: &Netns, removed: Vec<(PortKey, SocketAddrV4)>) {
        let gone = removed
            .into_iter()
            .filter(|(k, _)| k.0 == Protocol::Udp)
            .map(|(k, b)| (k.1, b));
        self.conntrack.flush(ns, conntrack::ports_gone(gone));
    }
}

impl LbBackend for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn apply_vips(&self, ns: &Netns, table: &VipTable) -> Result<Synced, LbError> {
        self.takeover.before_first(ns, Part::Vips);
        let mut spaces = self.spaces.lock().expect("lock");
        let space = spaces.entry(ns.clone()).or_default();
        // Updated in place: a refused batch falls back to a full sync, which starts over.
        let sticky = sticky_of(&table.vips, &table.affinity);
        let mut removed = Vec::new();
        if let Some(mut b) = space.vips.take() {
            let change = b.change(VIP_TABLE, &table.vips, Some("idle"), sticky.clone());
            if change.is_empty() {
                space.vips = Some(b);
                return Ok(Synced::Unchanged);
            }
            if change.ops.len() <= MAX_INCREMENTAL_OPS
                && change.most <= b.chains
                && space.apply_change(ns, VIP_TABLE, &change)
            {
                space.vips = Some(b);
                self.forget_udp_vips(ns, change.removed);
                return Ok(Synced::Incremental {
                    ops: change.ops.len().max(1),
                });
            }
            removed = change.removed;
        }
        space.vips = None;
        let (slots, _) = element_ops(&Slots::new(), &table.vips, Some("idle"));
        let chains = chains_for(&slots);
        nft_script(ns, &vip_ruleset_sticky(&slots, chains, &sticky))?;
        space.vips = Some(Balancer {
            slots,
            chains,
            sticky,
        });
        self.forget_udp_vips(ns, removed);
        Ok(Synced::Full)
    }

    fn apply_mesh(&self, ns: &Netns, table: &MeshTable) -> Result<Synced, LbError> {
        self.takeover.before_first(ns, Part::Mesh);
        let ns = ns.clone();
        let want: BTreeMap<PortKey, BTreeSet<SocketAddrV4>> = table
            .ports
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|((p, n), v)| (PortKey(*p, *n), v.clone()))
            .collect();
        let affinity: BTreeMap<PortKey, u32> = table
            .affinity
            .iter()
            .map(|((p, n), t)| (PortKey(*p, *n), *t))
            .collect();
        let sticky = sticky_of(&want, &affinity);
        let mut removed = Vec::new();
        let mut spaces = self.spaces.lock().expect("lock");
        let space = spaces.entry(ns.clone()).or_default();
        let mut kept = space.mesh.take();
        if let Some(m) = kept.take_if(|m| m.snat != table.snat) {
            // The SNAT changed: a full sync below, but the backends that left are known.
            removed = left_backends(&m.balancer.slots, |k, b| {
                want.get(k).is_some_and(|n| n.contains(b))
            });
        }
        if let Some(mut m) = kept {
            let chains = m.balancer.chains;
            let mut change = m.balancer.change(MESH_TABLE, &want, None, sticky.clone());
            let most = change.most;
            let (add_local, del_local) = crate::overlay::diff(&table.local, &m.local);
            let mut local_ops: Vec<ElemOp> = del_local
                .iter()
                .map(|ip| ElemOp::Delete {
                    set: "local",
                    key: bytes_of(ip),
                })
                .collect();
            // Local addresses go first so a new local backend never sees SNAT.
            local_ops.extend(add_local.iter().map(|ip| ElemOp::Add {
                set: "local",
                key: bytes_of(ip),
                data: None,
            }));
            local_ops.append(&mut change.ops);
            change.ops = local_ops;
            if change.is_empty() {
                space.mesh = Some(m);
                return Ok(Synced::Unchanged);
            }
            if change.ops.len() <= MAX_INCREMENTAL_OPS
                && most <= chains
                && space.apply_change(&ns, MESH_TABLE, &change)
            {
                m.local = table.local.clone();
                space.mesh = Some(m);
                self.forget_udp_ports(&ns, change.removed);
                return Ok(Synced::Incremental {
                    ops: change.ops.len().max(1),
                });
            }
            removed = change.removed;
        }
        space.mesh = None;
        let (slots, _) = element_ops(&Slots::new(), &want, None);
        let chains = chains_for(&slots);
        nft_script(
            &ns,
            &mesh_ruleset(&slots, &table.local, table.snat.as_ref(), chains, &sticky),
        )?;
        space.mesh = Some(Mesh {
            balancer: Balancer {
                slots,
                chains,
                sticky,
            },
            local: table.local.clone(),
            snat: table.snat.clone(),
        });
        self.forget_udp_ports(&ns, removed);
        Ok(Synced::Full)
    }

    fn forget(&self, ns: &Netns) {
        self.spaces.lock().expect("lock").remove(ns);
        self.takeover.forget(ns);
    }

    fn take_over_from(&self, previous: &str) {
        self.takeover.set_previous(previous);
    }

    fn remove_mesh(&self, ns: &Netns) -> Result<(), LbError> {
        if let Some(space) = self.spaces.lock().expect("lock").get_mut(ns) {
            space.mesh = None;
        }
        nft_script(
            ns,
            &format!("table ip {MESH_TABLE} {{}}\ndelete table ip {MESH_TABLE}\n"),
        )
    }
}

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
