//! The routing mesh in tc (`ebpf/src/bpf/mesh.bpf.c`): `shoal_mesh_in` on tcx ingress of
//! every underlay device of the node (the ones holding its addresses, not shoal's own
//! overlay devices) translates connections to published ports; `shoal_mesh_reply` on tcx
//! ingress of the ingress bridge translates their replies back. Maps and links are pinned
//! beside the socket balancer's: links whose program and device are unchanged are kept
//! across restarts, others are replaced with the new link attached before the old goes.
//! Flows live in pinned LRU maps, so a restarted shoald keeps every connection.
//! Connections to a published port made from the node's own namespace never pass tc
//! ingress: the socket balancer sends them to a task at connect() (`shoal_mesh_node`
//! names that namespace).

use super::plan::{assign_slots, left_backends};
use super::{LbError, MeshTable, Netns, Synced};
use aya::maps::{HashMap as BpfHash, Map, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{SchedClassifier, TcAttachType};
use shoal_api::objects::Protocol;
use shoal_ebpf::addr_key;
use shoal_ebpf::mesh::{self, Backend, BackendKey, Cfg, Flow, Nat, Port, PortKey, port_key};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const LINK_PREFIX: &str = "mesh_link_";

pub struct TcMesh {
    pin_dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    bpf: Option<aya::Ebpf>,
    /// (program, device index) this instance attached or found attached: checked once,
    /// not on every view.
    attached: BTreeSet<(&'static str, u32)>,
    /// This instance wrote the maps whole once; later applies write differences.
    synced: bool,
    slots: BTreeMap<PortKey, Vec<SocketAddrV4>>,
    /// Ports with session affinity, and its timeout in seconds.
    affinity: BTreeMap<PortKey, u32>,
    values: BTreeMap<BackendKey, Backend>,
    local: BTreeSet<u32>,
    cfg: Cfg,
}

/// An IPv4 address on a device of the node.
struct Addr {
    dev: String,
    ifindex: u32,
    addr: Ipv4Addr,
    prefix: u8,
}

fn err(ns: &Netns, e: impl std::fmt::Display) -> LbError {
    LbError::Ebpf {
        ns: format!("{ns:?} (routing mesh)"),
        error: e.to_string(),
    }
}

fn proto_num(p: Protocol) -> Option<u8> {
    match p {
        Protocol::Tcp => Some(6),
        Protocol::Udp => Some(17),
        // The tc program parses TCP and UDP only.
        Protocol::Sctp => None,
    }
}

/// The node's IPv4 addresses, read with `ip -j -4 addr` inside `ns`.
fn addresses(ns: &Netns) -> Result<Vec<Addr>, String> {
    let mut cmd = std::process::Command::new("ip");
    if let Netns::Named(n) = ns {
        cmd.args(["-n", n]);
    }
    let out = cmd
        .args(["-j", "-4", "addr", "show"])
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip addr: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j addr: {e}"))?;
    let mut addrs = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let dev = link["ifname"].as_str().unwrap_or_default().to_string();
        let ifindex = link["ifindex"].as_u64().unwrap_or_default() as u32;
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let (Some(addr), Some(prefix)) = (
                a["local"].as_str().and_then(|s| s.parse().ok()),
                a["prefixlen"].as_u64(),
            ) {
                addrs.push(Addr {
                    dev: dev.clone(),
                    ifindex,
                    addr,
                    prefix: prefix as u8,
                });
            }
        }
    }
    Ok(addrs)
}

/// Devices the outside reaches the node by: not loopback, not shoal's overlay devices.
fn is_underlay(dev: &str, ingress: Option<&str>) -> bool {
    dev != "lo" && Some(dev) != ingress && !["sb", "sv", "st"].iter().any(|p| dev.starts_with(p))
}

fn open<K: aya::Pod, V: aya::Pod>(
    dir: &Path,
    name: &str,
) -> Result<BpfHash<MapData, K, V>, String> {
    let data = MapData::from_pin(dir.join(name)).map_err(|e| format!("map {name}: {e}"))?;
    let map = Map::from_map_data(data).map_err(|e| format!("map {name}: {e}"))?;
    BpfHash::try_from(map).map_err(|e| format!("map {name}: {e}"))
}

const UDP: u8 = 17;

/// Deletes the remembered UDP flows sent to any of `left` (backend address and port, as the
/// maps hold them), so their next datagram picks a backend that is still there. A UDP
/// client that keeps its source port would otherwise go on sending to the gone task.
/// TCP flows are left: a connection to a gone task fails on its own.
fn forget_udp_flows(dir: &Path, left: &BTreeSet<(u32, u16)>) -> Result<usize, String> {
    let mut ct: BpfHash<MapData, Flow, Nat> = open(dir, mesh::MAP_CT)?;
    let stale: Vec<Flow> = ct
        .iter()
        .flatten()
        .filter(|(f, n)| f.proto == UDP && left.contains(&(n.addr, n.port)))
        .map(|(f, _)| f)
        .collect();
    for f in &stale {
        let _ = ct.remove(f);
    }
    Ok(stale.len())
}

fn batch_fd(dir: &Path, name: &str) -> Result<MapData, String> {
    MapData::from_pin(dir.join(name)).map_err(|e| format!("map {name}: {e}"))
}

/// Writes a sysctl of the network namespace `ns`.
fn sysctl_in(ns: &Netns, key: &str, value: &str) -> Result<(), String> {
    let file = format!("/proc/sys/{key}");
    ns.run_in(|| std::fs::write(&file, value))
        .and_then(|r| r)
        .map_err(|e| format!("{file}: {e}"))
}

/// The kernel tag of the program behind a pinned link.
fn link_tag(pin: &Path) -> Option<u64> {
    super::ebpf::pinned_tag(&FdLink::from(PinnedLink::from_pin(pin).ok()?))
}

impl TcMesh {
    pub fn new(pin_dir: PathBuf) -> TcMesh {
        TcMesh {
            pin_dir,
            state: Mutex::default(),
        }
    }

    fn load(&self, state: &mut State) -> Result<(), String> {
        if state.bpf.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.pin_dir).map_err(|e| e.to_string())?;
        let mut bpf = aya::EbpfLoader::new()
            .default_map_pin_directory(&self.pin_dir)
            .load(mesh::object())
            .map_err(|e| format!("loading the tc mesh: {e}"))?;
        for name in [mesh::PROG_IN, mesh::PROG_REPLY, mesh::PROG_OUT] {
            let prog: &mut SchedClassifier = bpf
                .program_mut(name)
                .ok_or_else(|| format!("{name} missing from the object"))?
                .try_into()
                .map_err(|e| format!("{name}: {e}"))?;
            prog.load().map_err(|e| format!("verifying {name}: {e}"))?;
        }
        state.bpf = Some(bpf);
        Ok(())
    }

    /// Makes `prog` run at tcx ingress or egress (`at`) of `dev` (index `ifindex`) inside `ns`, keeping a
    /// pinned link that already runs the same code there.
    fn attach(
        &self,
        state: &mut State,
        ns: &Netns,
        prog_name: &'static str,
        dev: &str,
        ifindex: u32,
        at: TcAttachType,
    ) -> Result<(), String> {
        if state.attached.contains(&(prog_name, ifindex)) {
            return Ok(());
        }
        let bpf = state.bpf.as_mut().ok_or("not loaded")?;
        let prog: &mut SchedClassifier = bpf
            .program_mut(prog_name)
            .ok_or("missing program")?
            .try_into()
            .map_err(|e| format!("{prog_name}: {e}"))?;
        let tag = prog.info().map_err(|e| e.to_string())?.tag();
        let safe_dev: String = dev
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let stem = format!("{LINK_PREFIX}{prog_name}_{safe_dev}_");
        let pin = self.pin_dir.join(format!("{stem}{ifindex}"));
        if pin.exists() && link_tag(&pin) == Some(tag) {
            state.attached.insert((prog_name, ifindex));
            return Ok(());
        }
        // The device name means the device of the namespace the attaching thread is in.
        let link: FdLink = ns
            .run_in(|| -> Result<FdLink, String> {
                let id = prog
                    .attach(dev, at)
                    .map_err(|e| format!("attaching {prog_name} to {dev}: {e}"))?;
                prog.take_link(id)
                    .map_err(|e| e.to_string())?
                    .try_into()
                    .map_err(|e: aya::programs::links::LinkError| e.to_string())
            })
            .map_err(|e| e.to_string())??;
        // The new link runs beside any old one until that one's pin goes.
        let _ = std::fs::remove_file(&pin);
        link.pin(&pin)
            .map_err(|e| format!("pinning {prog_name} on {dev}: {e}"))?;
        if let Ok(entries) = std::fs::read_dir(&self.pin_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&stem) && e.path() != pin {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        tracing::info!(program = prog_name, dev, "tc program attached");
        state.attached.insert((prog_name, ifindex));
        Ok(())
    }

    pub fn apply(&self, ns: &Netns, table: &MeshTable) -> Result<Synced, LbError> {
        let mut guard = self.state.lock().expect("lock");
        let state = &mut *guard;
        self.load(state).map_err(|e| err(ns, e))?;
        let addrs = addresses(ns).map_err(|e| err(ns, e))?;
        let ingress_dev = table.snat.as_ref().map(|(_, d)| d.as_str());
        for a in addrs.iter().filter(|a| is_underlay(&a.dev, ingress_dev)) {
            self.attach(
                state,
                ns,
                mesh::PROG_IN,
                &a.dev,
                a.ifindex,
                TcAttachType::Ingress,
            )
            .map_err(|e| err(ns, e))?;
        }
        if let Some(a) = addrs.iter().find(|a| Some(a.dev.as_str()) == ingress_dev) {
            let first = !state.attached.contains(&(mesh::PROG_REPLY, a.ifindex));
            self.attach(
                state,
                ns,
                mesh::PROG_REPLY,
                &a.dev,
                a.ifindex,
                TcAttachType::Ingress,
            )
            .map_err(|e| err(ns, e))?;
            self.attach(
                state,
                ns,
                mesh::PROG_OUT,
                &a.dev,
                a.ifindex,
                TcAttachType::Egress,
            )
            .map_err(|e| err(ns, e))?;
            // Translated replies come in from the bridge with one of the node's own
            // addresses as their source, which the kernel drops as martians unless told.
            if first {
                sysctl_in(ns, &format!("net/ipv4/conf/{}/accept_local", a.dev), "1")
                    .map_err(|e| err(ns, e))?;
            }
        }
        let dir = &self.pin_dir;
        let fresh = !state.synced;
        let mut ops = 0;

        // The node's own processes get published ports from the socket balancer.
        if fresh {
            let cookie = super::ebpf::netns_cookie(ns).map_err(|e| err(ns, e))?;
            let data = batch_fd(dir, mesh::MAP_NODE).map_err(|e| err(ns, e))?;
            shoal_ebpf::batch::update(data.fd().as_fd(), &[0u32], &[cookie])
                .map_err(|e| err(ns, format!("writing the node's cookie: {e}")))?;
        }

        // The SNAT source and the ingress subnet (for the guard).
        let cfg = match (
            &table.snat,
            addrs.iter().find(|a| Some(a.dev.as_str()) == ingress_dev),
        ) {
            (Some((snat, _)), Some(a)) => {
                let mask = if a.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - a.prefix)
                };
                Cfg {
                    snat_addr: addr_key(*snat),
                    ingress_net: addr_key(Ipv4Addr::from(u32::from(a.addr) & mask)),
                    ingress_mask: u32::from_ne_bytes(mask.to_be_bytes()),
                    pad: 0,
                }
            }
            _ => Cfg::default(),
        };
        if fresh || cfg != state.cfg {
            let data = batch_fd(dir, mesh::MAP_CFG).map_err(|e| err(ns, e))?;
            shoal_ebpf::batch::update(data.fd().as_fd(), &[0u32], &[cfg])
                .map_err(|e| err(ns, format!("writing the mesh config: {e}")))?;
            state.cfg = cfg;
            ops += 1;
        }

        // The node's addresses that published ports answer on.
        let want_local: BTreeSet<u32> = addrs
            .iter()
            .filter(|a| is_underlay(&a.dev, ingress_dev))
            .map(|a| addr_key(a.addr))
            .collect();
        let mut local_map: BpfHash<MapData, u32, u32> =
            open(dir, mesh::MAP_LOCAL).map_err(|e| err(ns, e))?;
        let have_local: BTreeSet<u32> = if fresh {
            local_map.keys().flatten().collect()
        } else {
            state.local.clone()
        };
        for k in want_local.difference(&have_local) {
            local_map.insert(k, 1, 0).map_err(|e| err(ns, e))?;
            ops += 1;
        }
        for k in have_local.difference(&want_local) {
            let _ = local_map.remove(k);
            ops += 1;
        }
        state.local = want_local;

        // Ports and their backends by slot.
        let mut want: BTreeMap<PortKey, BTreeSet<SocketAddrV4>> = BTreeMap::new();
        let mut want_affinity: BTreeMap<PortKey, u32> = BTreeMap::new();
        for ((proto, port), backends) in &table.ports {
            let Some(p) = proto_num(*proto) else { continue };
            let key = PortKey {
                proto: p,
                pad: 0,
                port: port_key(*port),
            };
            want.insert(key, backends.clone());
            if let Some(t) = table.affinity.get(&(*proto, *port)) {
                want_affinity.insert(key, *t);
            }
        }
        let mut ports: BpfHash<MapData, PortKey, Port> =
            open(dir, mesh::MAP_PORTS).map_err(|e| err(ns, e))?;
        let mut backends: BpfHash<MapData, BackendKey, Backend> =
            open(dir, mesh::MAP_BACKENDS).map_err(|e| err(ns, e))?;
        if fresh {
            // Whatever an earlier instance left: written anew below, or removed.
            state.values = backends.iter().flatten().collect();
            state.slots.clear();
            let stale: Vec<PortKey> = ports
                .keys()
                .flatten()
                .filter(|k| !want.contains_key(k))
                .collect();
            for k in stale {
                let _ = ports.remove(&k);
                ops += 1;
            }
        }
        let mut new_values: BTreeMap<BackendKey, Backend> = BTreeMap::new();
        let mut counts: Vec<(PortKey, Port)> = Vec::new();
        // UDP backends that leave a port: their flows are forgotten below.
        let udp_left: BTreeSet<(u32, u16)> = left_backends(&state.slots, |k, b| {
            k.proto != UDP || want.get(k).is_some_and(|n| n.contains(b))
        })
        .into_iter()
        .map(|(_, b)| (addr_key(*b.ip()), port_key(b.port())))
        .collect();
        for (key, set) in &want {
            let old = state.slots.get(key).cloned().unwrap_or_default();
            let slots = assign_slots(&old, set);
            for (i, b) in slots.iter().enumerate() {
                new_values.insert(
                    BackendKey {
                        proto: key.proto,
                        pad: 0,
                        port: key.port,
                        slot: i as u32,
                    },
                    Backend {
                        addr: addr_key(*b.ip()),
                        port: port_key(b.port()),
                        local: u8::from(table.local.contains(b.ip())),
                        pad: 0,
                    },
                );
            }
            let affinity_s = want_affinity.get(key).copied().unwrap_or(0);
            let had_affinity = state.affinity.get(key).copied().unwrap_or(0);
            if fresh
                || old.len() != slots.len()
                || state.slots.get(key) != Some(&slots)
                || had_affinity != affinity_s
            {
                counts.push((
                    *key,
                    Port {
                        count: slots.len() as u32,
                        affinity_s,
                    },
                ));
            }
            state.slots.insert(*key, slots);
        }
        state.slots.retain(|k, _| want.contains_key(k));
        state.affinity = want_affinity;
        let changed: Vec<(BackendKey, Backend)> = new_values
            .iter()
            .filter(|(k, v)| fresh || state.values.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        // New slots before a larger count; a smaller count before its slots go.
        if !changed.is_empty() {
            let data = batch_fd(dir, mesh::MAP_BACKENDS).map_err(|e| err(ns, e))?;
            let (k, v): (Vec<_>, Vec<_>) = changed.iter().copied().unzip();
            shoal_ebpf::batch::update(data.fd().as_fd(), &k, &v)
                .map_err(|e| err(ns, format!("writing mesh backends: {e}")))?;
            ops += changed.len();
        }
        for (k, c) in &counts {
            ports.insert(k, c, 0).map_err(|e| err(ns, e))?;
            ops += 1;
        }
        let gone_ports: Vec<PortKey> = state
            .values
            .keys()
            .map(|k| PortKey {
                proto: k.proto,
                pad: 0,
                port: k.port,
            })
            .filter(|p| !want.contains_key(p))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for p in &gone_ports {
            let _ = ports.remove(p);
            ops += 1;
        }
        for k in state.values.keys().filter(|k| !new_values.contains_key(k)) {
            let _ = backends.remove(k);
            ops += 1;
        }
        state.values = new_values;
        state.synced = true;
        if !udp_left.is_empty() {
            // The maps are programmed already: a failure here leaves old UDP flows to age
            // out of the LRU, and is not worth failing the view for.
            match forget_udp_flows(dir, &udp_left) {
                Ok(n) => ops += n,
                Err(e) => {
                    tracing::warn!(?ns, error = %e, "UDP flows to removed backends not forgotten")
                }
            }
        }
        Ok(match ops {
            _ if fresh => Synced::Full,
            0 => Synced::Unchanged,
            ops => Synced::Incremental { ops },
        })
    }

    /// Detaches the mesh's programs and empties its maps (leaving the swarm).
    pub fn remove(&self, ns: &Netns) -> Result<(), LbError> {
        let mut state = self.state.lock().expect("lock");
        if let Ok(entries) = std::fs::read_dir(&self.pin_dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(LINK_PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if let Ok(data) = batch_fd(&self.pin_dir, mesh::MAP_NODE) {
            let _ = shoal_ebpf::batch::update(data.fd().as_fd(), &[0u32], &[0u64]);
        }
        if let Ok(mut m) = open::<PortKey, Port>(&self.pin_dir, mesh::MAP_PORTS) {
            for k in m.keys().flatten().collect::<Vec<_>>() {
                let _ = m.remove(&k);
            }
        }
        if let Ok(mut m) = open::<BackendKey, Backend>(&self.pin_dir, mesh::MAP_BACKENDS) {
            for k in m.keys().flatten().collect::<Vec<_>>() {
                let _ = m.remove(&k);
            }
        }
        tracing::debug!(ns = ?ns, "tc routing mesh removed");
        *state = State::default();
        Ok(())
    }
}
