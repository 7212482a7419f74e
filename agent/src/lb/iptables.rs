//! The iptables backend, for hosts where nftables cannot be used: kube-proxy-style chains.
//! A VIP (or a published port) jumps to its chain `SHOAL-SVC-<id>` (`SHOAL-PORT-<id>`),
//! which DNATs to one backend through `statistic --mode random` rules whose probabilities
//! make every backend equally likely. With session affinity each backend gets a chain
//! `SHOAL-SEP-<id>-<slot>` that records the client in an `xt_recent` list, and the
//! service chain first sends a client found in a list (within the timeout) to its slot.
//!
//! Every change rewrites the chains whose rules differ with one `iptables-restore
//! --noflush` per table (each table changes atomically) and deletes chains that are no
//! longer used in the same run; rules of others in the same tables (Docker's, in the
//! node's namespace) are left alone. The jumps from the built-in chains are added once.
//! iptables-restore still reads the whole table from the kernel each time, so a change
//! costs time in the number of services: this backend is the fallback, nftables and eBPF
//! are the fast paths.

use super::conntrack::{self, Flusher};
use super::leftovers::{Part, Takeover};
use super::plan::{assign_slots, left_backends};
use super::{LbBackend, LbError, MeshTable, Netns, Synced, VipTable};
use shoal_api::objects::Protocol;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Jumps from built-in chains: (table, built-in chain, shoal's chain).
const VIP_JUMPS: [(&str, &str, &str); 2] = [
    ("nat", "OUTPUT", "SHOAL-VIPS"),
    ("filter", "OUTPUT", "SHOAL-IDLE"),
];
const MESH_JUMPS: [(&str, &str, &str); 4] = [
    ("nat", "PREROUTING", "SHOAL-MESH"),
    ("nat", "OUTPUT", "SHOAL-MESH"),
    ("nat", "POSTROUTING", "SHOAL-MESH-POST"),
    ("filter", "FORWARD", "SHOAL-MESH-FWD"),
];
/// Chains of the VIP tables (task namespaces) and of the mesh (the node's namespace) by
/// prefix, so that each side deletes only its own leftovers.
const VIP_PREFIXES: [&str; 3] = ["SHOAL-VIPS", "SHOAL-IDLE", "SHOAL-SVC-"];
const MESH_PREFIXES: [&str; 3] = ["SHOAL-MESH", "SHOAL-PORT-", "SHOAL-MSEP-"];

/// The rules of one namespace's side, as `iptables-restore` input per table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Chain name -> its rules (without the `-A CHAIN` prefix), per table.
    pub nat: BTreeMap<String, Vec<String>>,
    pub filter: BTreeMap<String, Vec<String>>,
}

/// A backend a DNAT rule sends to.
trait Target {
    fn to(&self) -> String;
}

impl Target for Ipv4Addr {
    fn to(&self) -> String {
        self.to_string()
    }
}

impl Target for SocketAddrV4 {
    fn to(&self) -> String {
        format!("{}:{}", self.ip(), self.port())
    }
}

/// The rules of a balanced key: its service chain `svc` with its backends by slot, and
/// with affinity a chain per slot named `sep_prefix<slot>`. `proto` is matched first
/// where a DNAT names a port (iptables maps a port only after a protocol match).
fn balance<V: Target>(
    rules: &mut BTreeMap<String, Vec<String>>,
    svc: &str,
    sep_prefix: &str,
    slots: &[V],
    affinity_s: Option<u32>,
    proto: Option<&str>,
) {
    let n = slots.len();
    let mut chain = Vec::new();
    let p = proto.map(|p| format!("-p {p} ")).unwrap_or_default();
    let target = |i: usize| match affinity_s {
        Some(_) => format!("-j {sep_prefix}{i}"),
        None => format!("{p}-j DNAT --to-destination {}", slots[i].to()),
    };
    if let Some(t) = affinity_s {
        for i in 0..n {
            chain.push(format!(
                "-m recent --name {sep_prefix}{i} --rcheck --seconds {t} --reap --rsource {}",
                target(i)
            ));
        }
    }
    for i in 0..n {
        if i + 1 == n {
            chain.push(target(i));
        } else {
            // Of the backends from i on, this one with equal chance.
            let p = 1.0 / (n - i) as f64;
            chain.push(format!(
                "-m statistic --mode random --probability {p:.10} {}",
                target(i)
            ));
        }
    }
    rules.insert(svc.to_string(), chain);
    if affinity_s.is_some() {
        for (i, b) in slots.iter().enumerate() {
            rules.insert(
                format!("{sep_prefix}{i}"),
                vec![format!(
                    "{p}-m recent --name {sep_prefix}{i} --set --rsource -j DNAT --to-destination {}",
                    b.to()
                )],
            );
        }
    }
}

fn vip_id(vip: Ipv4Addr) -> String {
    format!("{:08X}", u32::from(vip))
}

/// The rules of a task namespace for `table`, with backends in `slots`.
pub fn vip_rules(table: &VipTable, slots: &BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>) -> Rules {
    let mut r = Rules::default();
    let mut dispatch = Vec::new();
    let mut idle = Vec::new();
    for (vip, backends) in slots {
        if backends.is_empty() {
            // No running task: refused at once rather than left to time out.
            idle.push(format!(
                "-d {vip}/32 -p tcp -j REJECT --reject-with tcp-reset"
            ));
            idle.push(format!("-d {vip}/32 -j REJECT"));
            continue;
        }
        let id = vip_id(*vip);
        let svc = format!("SHOAL-SVC-{id}");
        dispatch.push(format!("-d {vip}/32 -j {svc}"));
        let affinity = table.affinity.get(vip).copied();
        balance(
            &mut r.nat,
            &svc,
            &format!("SHOAL-SVC-{id}-"),
            backends,
            affinity,
            None,
        );
    }
    r.nat.insert("SHOAL-VIPS".into(), dispatch);
    r.filter.insert("SHOAL-IDLE".into(), idle);
    r
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// The rules of the node's routing mesh for `table`, with backends in `slots`.
pub fn mesh_rules(
    table: &MeshTable,
    slots: &BTreeMap<(Protocol, u16), Vec<SocketAddrV4>>,
) -> Rules {
    let mut r = Rules::default();
    let mut steer = Vec::new();
    for ((proto, port), backends) in slots.iter().filter(|(_, b)| !b.is_empty()) {
        let name = proto_name(*proto);
        let chain = format!("SHOAL-PORT-{name}-{port}");
        steer.push(format!(
            "-p {name} --dport {port} -m addrtype --dst-type LOCAL -j {chain}"
        ));
        let affinity = table.affinity.get(&(*proto, *port)).copied();
        balance(
            &mut r.nat,
            &chain,
            &format!("SHOAL-MSEP-{name}-{port}-"),
            backends,
            affinity,
            Some(name),
        );
    }
    r.nat.insert("SHOAL-MESH".into(), steer);
    let mut post = Vec::new();
    let mut fwd = Vec::new();
    if let Some((ip, dev)) = &table.snat {
        // Local backends are reached unchanged and see the client; remote ones answer
        // the node's ingress address over the overlay.
        for l in &table.local {
            post.push(format!(
                "-o {dev} -d {l}/32 -m conntrack --ctstate DNAT -j RETURN"
            ));
        }
        post.push(format!(
            "-o {dev} -m conntrack --ctstate DNAT -j SNAT --to-source {ip}"
        ));
        // Only what the mesh DNATed may be routed into the ingress overlay.
        fwd.push(format!(
            "! -i {dev} -o {dev} -m conntrack --ctstate NEW -m conntrack ! --ctstate DNAT -j DROP"
        ));
    }
    r.nat.insert("SHOAL-MESH-POST".into(), post);
    r.filter.insert("SHOAL-MESH-FWD".into(), fwd);
    r
}

/// `iptables-restore --noflush` input for one table: every chain of `want` declared (which
/// empties it) and filled, then the chains of `stale` emptied and deleted.
pub fn restore_text(
    table: &str,
    want: &BTreeMap<String, Vec<String>>,
    stale: &BTreeSet<String>,
) -> String {
    let mut s = format!("*{table}\n");
    for chain in want.keys().chain(stale.iter()) {
        let _ = writeln!(s, ":{chain} - [0:0]");
    }
    for (chain, rules) in want {
        for rule in rules {
            let _ = writeln!(s, "-A {chain} {rule}");
        }
    }
    for chain in stale {
        let _ = writeln!(s, "-X {chain}");
    }
    s.push_str("COMMIT\n");
    s
}

fn ipt_err(ns: &Netns, what: &str, detail: impl std::fmt::Display) -> LbError {
    LbError::Iptables {
        ns: format!("{ns:?}"),
        error: format!("{what}: {detail}"),
    }
}

fn restore(ns: &Netns, text: &str) -> Result<(), LbError> {
    let mut child = ns
        .command("iptables-restore")
        .args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ipt_err(ns, "running iptables-restore (install iptables)", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| ipt_err(ns, "writing to iptables-restore", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ipt_err(ns, "iptables-restore", e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(ipt_err(
        ns,
        "iptables-restore",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("; "),
    ))
}

/// Shoal's chains in `table` of `ns` whose names start with one of `prefixes`.
fn existing_chains(
    ns: &Netns,
    table: &str,
    prefixes: &[&str],
) -> Result<BTreeSet<String>, LbError> {
    let out = ns
        .command("iptables-save")
        .args(["-t", table])
        .output()
        .map_err(|e| ipt_err(ns, "running iptables-save (install iptables)", e))?;
    if !out.status.success() {
        return Err(ipt_err(
            ns,
            "iptables-save",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| prefixes.iter().any(|p| c.starts_with(p)))
        .map(String::from)
        .collect())
}

/// Adds the jump from a built-in chain to shoal's, unless it is there.
fn ensure_jump(ns: &Netns, (table, from, to): (&str, &str, &str)) -> Result<(), LbError> {
    let check = ns
        .command("iptables")
        .args(["-w", "-t", table, "-C", from, "-j", to])
        .output()
        .map_err(|e| ipt_err(ns, "running iptables", e))?;
    if check.status.success() {
        return Ok(());
    }
    let add = ns
        .command("iptables")
        .args(["-w", "-t", table, "-I", from, "1", "-j", to])
        .output()
        .map_err(|e| ipt_err(ns, "running iptables", e))?;
    if add.status.success() {
        Ok(())
    } else {
        Err(ipt_err(
            ns,
            &format!("iptables -t {table} -I {from} -j {to}"),
            String::from_utf8_lossy(&add.stderr).trim(),
        ))
    }
}

/// What one side of a namespace holds now.
struct Side<K: Keyed> {
    /// Backends by slot, as programmed.
    slots: BTreeMap<K, Vec<<K as Keyed>::Backend>>,
    /// The rules written last; a change rewrites only when they differ.
    rules: Option<Rules>,
}

impl<K: Keyed> Default for Side<K> {
    fn default() -> Self {
        Side {
            slots: BTreeMap::new(),
            rules: None,
        }
    }
}

trait Keyed {
    type Backend: Ord + Clone;
}

impl Keyed for Ipv4Addr {
    type Backend = Ipv4Addr;
}

impl Keyed for (Protocol, u16) {
    type Backend = SocketAddrV4;
}

#[derive(Default)]
struct Space {
    vips: Option<Side<Ipv4Addr>>,
    mesh: Option<Side<(Protocol, u16)>>,
}

/// New slots for `want`, keeping each backend that stays in its slot.
fn next_slots<K: Ord + Clone, V: Ord + Clone>(
    old: &BTreeMap<K, Vec<V>>,
    want: &BTreeMap<K, BTreeSet<V>>,
) -> BTreeMap<K, Vec<V>> {
    want.iter()
        .map(|(k, w)| {
            let before = old.get(k).map(Vec::as_slice).unwrap_or_default();
            (k.clone(), assign_slots(before, w))
        })
        .collect()
}

/// Writes `rules` over what `old` held (or, the first time, over whatever shoal chains of
/// `prefixes` the namespace has), then makes sure of the jumps.
fn program(
    ns: &Netns,
    old: Option<&Rules>,
    rules: &Rules,
    prefixes: &[&str],
    jumps: &[(&str, &str, &str)],
) -> Result<Synced, LbError> {
    let mut written = 0;
    for (table, want) in [("nat", &rules.nat), ("filter", &rules.filter)] {
        let before = old.map(|o| if table == "nat" { &o.nat } else { &o.filter });
        let had: BTreeSet<String> = match before {
            Some(chains) => chains.keys().cloned().collect(),
            None => existing_chains(ns, table, prefixes)?,
        };
        let stale: BTreeSet<String> = had.into_iter().filter(|c| !want.contains_key(c)).collect();
        // Only chains whose rules differ are written (kube-proxy's partial sync): a chain
        // that refers to a new one is itself new or changed, so both go in one run.
        let changed: BTreeMap<String, Vec<String>> = want
            .iter()
            .filter(|(c, r)| before.is_none_or(|b| b.get(*c) != Some(*r)))
            .map(|(c, r)| (c.clone(), r.clone()))
            .collect();
        if changed.is_empty() && stale.is_empty() {
            continue;
        }
        written += changed.values().map(Vec::len).sum::<usize>() + stale.len();
        restore(ns, &restore_text(table, &changed, &stale))?;
    }
    if old.is_none() {
        for j in jumps {
            ensure_jump(ns, *j)?;
        }
    }
    Ok(match old {
        None => Synced::Full,
        Some(_) => Synced::Incremental {
            ops: written.max(1),
        },
    })
}

/// Removes the routing mesh's chains and jumps from `ns`: leaving the swarm, or another
/// dataplane taking over from this one.
pub fn remove_mesh_chains(ns: &Netns) -> Result<(), LbError> {
    remove_chains(ns, &MESH_PREFIXES, &MESH_JUMPS)
}

/// Removes a task namespace's VIP chains and jumps (another dataplane taking over).
pub fn remove_vip_chains(ns: &Netns) -> Result<(), LbError> {
    remove_chains(ns, &VIP_PREFIXES, &VIP_JUMPS)
}

fn remove_chains(
    ns: &Netns,
    prefixes: &[&str],
    jumps: &[(&str, &str, &str)],
) -> Result<(), LbError> {
    let mut found = BTreeMap::new();
    for table in ["nat", "filter"] {
        found.insert(table, existing_chains(ns, table, prefixes)?);
    }
    if found.values().all(BTreeSet::is_empty) {
        return Ok(());
    }
    for (table, from, to) in jumps.iter().copied() {
        // Absent already is fine: removing is idempotent.
        let _ = ns
            .command("iptables")
            .args(["-w", "-t", table, "-D", from, "-j", to])
            .output();
    }
    for (table, stale) in found {
        if !stale.is_empty() {
            restore(ns, &restore_text(table, &BTreeMap::new(), &stale))?;
        }
    }
    Ok(())
}

/// The iptables backend; it remembers what it programmed in each namespace.
#[derive(Default)]
pub struct Iptables {
    spaces: Mutex<HashMap<Netns, Space>>,
    conntrack: Flusher,
    takeover: Takeover,
}

impl Iptables {
    /// Whether `iptables-restore` runs here.
    pub fn available() -> Result<(), String> {
        match Command::new("iptables-restore").arg("--version").output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(format!("iptables-restore: {e} (install iptables)")),
        }
    }
}

impl LbBackend for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn apply_vips(&self, ns: &Netns, table: &VipTable) -> Result<Synced, LbError> {
        self.takeover.before_first(ns, Part::Vips);
        let mut spaces = self.spaces.lock().expect("lock");
        let space = spaces.entry(ns.clone()).or_default();
        let side = space.vips.take().unwrap_or_default();
        let slots = next_slots(&side.slots, &table.vips);
        let rules = vip_rules(table, &slots);
        if side.rules.as_ref() == Some(&rules) {
            space.vips = Some(side);
            return Ok(Synced::Unchanged);
        }
        // On failure the side is forgotten: the next change starts from what the
        // namespace holds.
        let synced = program(ns, side.rules.as_ref(), &rules, &VIP_PREFIXES, &VIP_JUMPS)?;
        self.conntrack.flush(
            ns,
            conntrack::vips_gone(left_backends(&side.slots, |k, b| {
                slots.get(k).is_some_and(|n| n.contains(b))
            })),
        );
        space.vips = Some(Side {
            slots,
            rules: Some(rules),
        });
        Ok(synced)
    }

    fn apply_mesh(&self, ns: &Netns, table: &MeshTable) -> Result<Synced, LbError> {
        self.takeover.before_first(ns, Part::Mesh);
        let mut spaces = self.spaces.lock().expect("lock");
        let space = spaces.entry(ns.clone()).or_default();
        let side = space.mesh.take().unwrap_or_default();
        let want: BTreeMap<(Protocol, u16), BTreeSet<SocketAddrV4>> = table
            .ports
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let slots = next_slots(&side.slots, &want);
        let rules = mesh_rules(table, &slots);
        if side.rules.as_ref() == Some(&rules) {
            space.mesh = Some(side);
            return Ok(Synced::Unchanged);
        }
        let synced = program(ns, side.rules.as_ref(), &rules, &MESH_PREFIXES, &MESH_JUMPS)?;
        let udp_left = left_backends(&side.slots, |k, b| {
            slots.get(k).is_some_and(|n| n.contains(b))
        })
        .into_iter()
        .filter(|((p, _), _)| *p == Protocol::Udp)
        .map(|((_, port), b)| (port, b));
        self.conntrack.flush(ns, conntrack::ports_gone(udp_left));
        space.mesh = Some(Side {
            slots,
            rules: Some(rules),
        });
        Ok(synced)
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
        remove_mesh_chains(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn every_backend_is_equally_likely_and_the_last_takes_the_rest() {
        let slots: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> = [(
            ip("198.19.1.2"),
            vec![ip("198.19.1.3"), ip("198.19.1.4"), ip("198.19.1.5")],
        )]
        .into();
        let table = VipTable {
            vips: slots
                .iter()
                .map(|(k, v)| (*k, v.iter().copied().collect()))
                .collect(),
            affinity: BTreeMap::new(),
        };
        let r = vip_rules(&table, &slots);
        assert_eq!(
            r.nat["SHOAL-VIPS"],
            ["-d 198.19.1.2/32 -j SHOAL-SVC-C6130102"]
        );
        assert_eq!(
            r.nat["SHOAL-SVC-C6130102"],
            [
                "-m statistic --mode random --probability 0.3333333333 -j DNAT --to-destination 198.19.1.3",
                "-m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination 198.19.1.4",
                "-j DNAT --to-destination 198.19.1.5",
            ]
        );
        assert!(r.filter["SHOAL-IDLE"].is_empty());
    }

    #[test]
    fn an_idle_vip_is_rejected_and_affinity_adds_a_chain_per_slot() {
        let slots: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> = [
            (ip("198.19.1.2"), vec![ip("198.19.1.3"), ip("198.19.1.4")]),
            (ip("198.19.1.9"), vec![]),
        ]
        .into();
        let table = VipTable {
            vips: BTreeMap::new(),
            affinity: [(ip("198.19.1.2"), 60)].into(),
        };
        let r = vip_rules(&table, &slots);
        assert_eq!(
            r.filter["SHOAL-IDLE"],
            [
                "-d 198.19.1.9/32 -p tcp -j REJECT --reject-with tcp-reset",
                "-d 198.19.1.9/32 -j REJECT"
            ]
        );
        let svc = &r.nat["SHOAL-SVC-C6130102"];
        assert_eq!(
            svc[0],
            "-m recent --name SHOAL-SVC-C6130102-0 --rcheck --seconds 60 --reap --rsource -j SHOAL-SVC-C6130102-0"
        );
        assert_eq!(svc.len(), 4);
        assert_eq!(
            r.nat["SHOAL-SVC-C6130102-1"],
            [
                "-m recent --name SHOAL-SVC-C6130102-1 --set --rsource -j DNAT --to-destination 198.19.1.4"
            ]
        );
    }

    #[test]
    fn the_mesh_snats_only_for_remote_backends_and_guards_the_overlay() {
        let slots: BTreeMap<(Protocol, u16), Vec<SocketAddrV4>> = [(
            (Protocol::Tcp, 30080),
            vec![SocketAddrV4::new(ip("198.19.0.3"), 80)],
        )]
        .into();
        let table = MeshTable {
            local: [ip("198.19.0.3")].into(),
            snat: Some((ip("198.19.0.250"), "sbingress".into())),
            ..Default::default()
        };
        let r = mesh_rules(&table, &slots);
        assert_eq!(
            r.nat["SHOAL-MESH"],
            ["-p tcp --dport 30080 -m addrtype --dst-type LOCAL -j SHOAL-PORT-tcp-30080"]
        );
        assert_eq!(
            r.nat["SHOAL-MESH-POST"],
            [
                "-o sbingress -d 198.19.0.3/32 -m conntrack --ctstate DNAT -j RETURN",
                "-o sbingress -m conntrack --ctstate DNAT -j SNAT --to-source 198.19.0.250"
            ]
        );
        assert_eq!(r.filter["SHOAL-MESH-FWD"].len(), 1);
    }

    #[test]
    fn a_restore_declares_fills_and_then_deletes_what_is_stale() {
        let want: BTreeMap<String, Vec<String>> = [(
            "SHOAL-VIPS".to_string(),
            vec!["-d 198.19.1.2/32 -j X".to_string()],
        )]
        .into();
        let stale: BTreeSet<String> = ["SHOAL-SVC-OLD".to_string()].into();
        assert_eq!(
            restore_text("nat", &want, &stale),
            "*nat\n:SHOAL-VIPS - [0:0]\n:SHOAL-SVC-OLD - [0:0]\n-A SHOAL-VIPS -d 198.19.1.2/32 -j X\n-X SHOAL-SVC-OLD\nCOMMIT\n"
        );
    }
}
