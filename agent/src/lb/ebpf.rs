//! The eBPF backend: VIPs balanced at the socket, by `cgroup/connect4` and `sendmsg4`
//! programs (`ebpf/src/bpf/sock_lb.bpf.c`) attached to the cgroup that holds the tasks.
//! A connection to a VIP is pointed at a backend before the first packet exists, so there
//! is no per-packet NAT and no conntrack entry; `recvmsg4` and `getpeername4` show the VIP.
//!
//! Maps and links are pinned under the pin directory: a restarted shoald finds them, keeps
//! programs whose code did not change (same kernel tag), replaces changed ones without a gap
//! (the new link is attached beside the old before the old is unpinned), reads the maps
//! back and then changes only what differs. The routing mesh is the tc program of
//! `ebpf_mesh.rs`.
//!
//! Map plan: a VIP's backend slots are shared by every namespace that uses it
//! (`shoal_svc`, `shoal_backends`); `shoal_member` says which namespaces (by netns cookie)
//! may use which VIPs, so a task balances only the VIPs of its own networks.

use super::ebpf_mesh::TcMesh;
use super::leftovers::{Part, Takeover};
use super::plan::assign_slots;
use super::{LbBackend, LbError, MeshTable, Netns, Synced, VipTable};
use aya::maps::{HashMap as BpfHash, Map, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use shoal_ebpf::{BackendKey, MemberKey, SvcValue, addr_key, addr_of_key};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where programs attach and their objects are pinned.
#[derive(Debug, Clone)]
pub struct EbpfOptions {
    /// A cgroup v2 directory holding shoald and its tasks.
    pub cgroup: PathBuf,
    /// A directory on bpffs for this node's maps and links.
    pub pin_dir: PathBuf,
}

pub struct SockLb {
    opts: EbpfOptions,
    state: Mutex<State>,
    mesh: TcMesh,
    takeover: Takeover,
}

struct Maps {
    svc: BpfHash<MapData, u32, SvcValue>,
    backends: BpfHash<MapData, BackendKey, u32>,
    member: BpfHash<MapData, MemberKey, u32>,
}

/// What the maps hold, mirrored so that each change writes only the difference.
#[derive(Default)]
struct Mirror {
    /// VIP -> its backends by slot.
    slots: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>,
    /// The same backends as sets, to compare with a wanted table in one ordered walk.
    sets: BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>>,
    /// VIPs with session affinity, and its timeout in seconds.
    affinity: BTreeMap<Ipv4Addr, u32>,
    /// netns cookie -> the VIPs it may use.
    members: BTreeMap<u64, BTreeSet<Ipv4Addr>>,
    /// Namespaces seen, with their cookies.
    cookies: BTreeMap<Netns, u64>,
}

struct State {
    maps: Maps,
    mirror: Mirror,
    /// Everything was unpinned (`leave`): load and attach again before the next write.
    detached: bool,
}

/// Writes of one change, in the order that never shows a reader a slot it cannot follow:
/// new slots before a larger count, a smaller count before its slots go.
#[derive(Default)]
struct Writes {
    backends: Vec<(BackendKey, u32)>,
    svc: Vec<(u32, SvcValue)>,
    member_add: Vec<MemberKey>,
    member_del: Vec<MemberKey>,
    svc_del: Vec<u32>,
    backends_del: Vec<BackendKey>,
}

impl Writes {
    fn len(&self) -> usize {
        self.backends.len()
            + self.svc.len()
            + self.member_add.len()
            + self.member_del.len()
            + self.svc_del.len()
            + self.backends_del.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("bpffs is not mounted at {0} and mounting it failed: {1}")]
    NoBpffs(String, String),
    #[error("cgroup v2 directory {0}: {1}")]
    Cgroup(String, #[source] std::io::Error),
    #[error("{what}: {error}")]
    Kernel { what: String, error: String },
}

/// An aya error with its causes (aya's own message leaves out the errno).
fn kernel(what: impl Into<String>, error: impl std::error::Error) -> EbpfError {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    EbpfError::Kernel {
        what: what.into(),
        error: text,
    }
}

fn lb_err(ns: &Netns, e: impl std::fmt::Display) -> LbError {
    LbError::Ebpf {
        ns: format!("{ns:?}"),
        error: e.to_string(),
    }
}

/// Where a daemon with state in `state_dir` pins its eBPF objects unless told
/// (`--bpf-dir`): `/sys/fs/bpf/shoal` for the default state directory, else a name made
/// from the state directory's path, so daemons sharing a host keep apart. bpffs names may
/// not contain dots.
pub fn default_pin_dir(state_dir: &Path) -> PathBuf {
    match crate::identity::state_dir_tag(state_dir) {
        None => PathBuf::from("/sys/fs/bpf/shoal"),
        Some(tag) => PathBuf::from(format!("/sys/fs/bpf/shoal{tag}")),
    }
}

/// The mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(point))
    })
}

fn bpffs_mounted_at(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        matches!((f.next(), f.next(), f.next()), (Some(_), Some(point), Some("bpf")) if dir.starts_with(point))
    })
}

/// Mounts bpffs at /sys/fs/bpf when the pin directory is under it and nothing is mounted.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), EbpfError> {
    if bpffs_mounted_at(pin_dir) {
        return Ok(());
    }
    let base = Path::new("/sys/fs/bpf");
    let shown = pin_dir.display().to_string();
    if !pin_dir.starts_with(base) {
        return Err(EbpfError::NoBpffs(shown, "not under /sys/fs/bpf".into()));
    }
    let out = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .output()
        .map_err(|e| EbpfError::NoBpffs(shown.clone(), e.to_string()))?;
    if !out.status.success() {
        return Err(EbpfError::NoBpffs(
            shown,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Puts process `pid` (all its threads) into `cgroup` unless it is already inside it.
pub fn join_cgroup(cgroup: &Path, pid: u32) -> Result<(), EbpfError> {
    let err = |e| EbpfError::Cgroup(cgroup.display().to_string(), e);
    let mount = cgroup2_mount().ok_or_else(|| {
        err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no cgroup2 hierarchy is mounted",
        ))
    })?;
    let current = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(err)?;
    let current = current
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    let now = mount.join(current.trim_start_matches('/'));
    if now.starts_with(cgroup) {
        return Ok(());
    }
    std::fs::create_dir_all(cgroup).map_err(err)?;
    std::fs::write(cgroup.join("cgroup.procs"), pid.to_string()).map_err(err)
}

/// The cookie of a network namespace, read from a socket opened inside it.
pub(super) fn netns_cookie(ns: &Netns) -> std::io::Result<u64> {
    ns.run_in(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        shoal_ebpf::netns_cookie(s.as_fd())
    })?
}

fn open_map<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &str,
) -> Result<BpfHash<MapData, K, V>, EbpfError> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|e| kernel(format!("opening map {name}"), e))?;
    let map = Map::from_map_data(data).map_err(|e| kernel(format!("map {name}"), e))?;
    BpfHash::try_from(map).map_err(|e| kernel(format!("map {name} layout"), e))
}

fn map_fd(pin_dir: &Path, name: &str) -> Result<MapData, EbpfError> {
    MapData::from_pin(pin_dir.join(name)).map_err(|e| kernel(format!("opening map {name}"), e))
}

/// Loads the programs, reusing pinned maps, and makes sure each is attached to the
/// cgroup through a pinned link holding the current code.
fn load_and_attach(opts: &EbpfOptions) -> Result<(), EbpfError> {
    ensure_bpffs(&opts.pin_dir)?;
    std::fs::create_dir_all(&opts.pin_dir)
        .map_err(|e| kernel(format!("creating {}", opts.pin_dir.display()), e))?;
    std::fs::create_dir_all(&opts.cgroup)
        .map_err(|e| EbpfError::Cgroup(opts.cgroup.display().to_string(), e))?;
    // aya reuses a pinned map as it finds it, so one of an older layout is caught here.
    let stale = stale_maps(&opts.pin_dir);
    let mut recreated = !stale.is_empty();
    if recreated {
        tracing::warn!(maps = ?stale, dir = %opts.pin_dir.display(), "pinned eBPF maps of another layout; recreating them and replacing the programs");
        for (name, _, _) in EXPECTED_MAPS {
            let _ = std::fs::remove_file(opts.pin_dir.join(name));
        }
    }
    let load = || {
        aya::EbpfLoader::new()
            .default_map_pin_directory(&opts.pin_dir)
            .load(shoal_ebpf::sock_lb_object())
    };
    let mut bpf = match load() {
        Ok(b) => b,
        Err(first) => {
            // Pinned maps of an older layout: start them anew (connections made through
            // them keep working; only the VIPs are programmed again).
            tracing::warn!(error = %first, dir = %opts.pin_dir.display(), "pinned eBPF maps do not fit these programs; recreating them");
            for (name, _, _) in EXPECTED_MAPS {
                let _ = std::fs::remove_file(opts.pin_dir.join(name));
            }
            recreated = true;
            load().map_err(|e| kernel("loading the socket load balancer", e))?
        }
    };
    let cgroup = std::fs::File::open(&opts.cgroup)
        .map_err(|e| EbpfError::Cgroup(opts.cgroup.display().to_string(), e))?;
    // Which cgroup the pinned links are on, kept as a directory named after its inode
    // (bpffs holds no plain files).
    let ino = std::os::unix::fs::MetadataExt::ino(
        &cgroup
            .metadata()
            .map_err(|e| EbpfError::Cgroup(opts.cgroup.display().to_string(), e))?,
    );
    let cgroup_marker = opts.pin_dir.join(format!("{CGROUP_MARKER}{ino}"));
    let same_cgroup = cgroup_marker.is_dir();
    for name in shoal_ebpf::SOCK_LB_PROGRAMS {
        let prog: &mut CgroupSockAddr = bpf
            .program_mut(name)
            .ok_or_else(|| kernel(name, std::io::Error::other("missing from the object")))?
            .try_into()
            .map_err(|e| kernel(name, e))?;
        prog.load()
            .map_err(|e| kernel(format!("verifying {name}"), e))?;
        let tag = prog.info().map_err(|e| kernel(name, e))?.tag();
        let pin = opts.pin_dir.join(format!("link_{name}"));
        let old = PinnedLink::from_pin(&pin).ok().map(FdLink::from);
        // Links kept only when they run this code on this cgroup with these maps.
        if same_cgroup && !recreated && old.as_ref().and_then(pinned_tag) == Some(tag) {
            continue;
        }
        // With bpf links, Single is the kernel's flags=0; links on one cgroup always run
        // side by side (a link attach with ALLOW_MULTI fails with EINVAL).
        let id = prog
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| kernel(format!("attaching {name} to {}", opts.cgroup.display()), e))?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(|e| kernel(name, e))?
            .try_into()
            .map_err(|e| kernel(name, e))?;
        // The new link runs beside the old one until the rename replaces the old pin,
        // which detaches it: the old program rewrites first, so the new one sees a
        // backend address and lets it through. No connection finds neither.
        // (bpffs refuses names with a dot.)
        let fresh = opts.pin_dir.join(format!("new_link_{name}"));
        let _ = std::fs::remove_file(&fresh);
        link.pin(&fresh)
            .map_err(|e| kernel(format!("pinning {name}"), e))?;
        std::fs::rename(&fresh, &pin).map_err(|e| kernel(format!("pinning {name}"), e))?;
        drop(old);
        tracing::info!(program = name, cgroup = %opts.cgroup.display(), "eBPF program attached");
    }
    if !same_cgroup {
        forget_cgroup(&opts.pin_dir);
        std::fs::create_dir(&cgroup_marker).map_err(|e| kernel("recording the cgroup", e))?;
    }
    Ok(())
}

const CGROUP_MARKER: &str = "cgroup_ino_";

/// The maps the socket balancer pins (its own and the mesh's it reads), with their key
/// and value sizes.
const EXPECTED_MAPS: [(&str, u32, u32); 12] = [
    (shoal_ebpf::MAP_SVC, 4, 8),
    (shoal_ebpf::MAP_BACKENDS, 8, 4),
    (shoal_ebpf::MAP_MEMBER, 16, 4),
    (shoal_ebpf::MAP_REVNAT, 16, 8),
    (shoal_ebpf::MAP_SK_VIP, 4, 12),
    (shoal_ebpf::MAP_UDP_STICKY, 16, 8),
    (shoal_ebpf::MAP_AFFINITY, 16, 16),
    (shoal_ebpf::mesh::MAP_PORTS, 4, 8),
    (shoal_ebpf::mesh::MAP_AFFINITY, 8, 16),
    (shoal_ebpf::mesh::MAP_BACKENDS, 8, 8),
    (shoal_ebpf::mesh::MAP_LOCAL, 4, 4),
    (shoal_ebpf::mesh::MAP_NODE, 4, 8),
];

/// Pinned maps whose key or value size is not what these programs use.
fn stale_maps(pin_dir: &Path) -> Vec<&'static str> {
    EXPECTED_MAPS
        .iter()
        .filter(|(name, key, value)| {
            aya::maps::MapInfo::from_pin(pin_dir.join(name))
                .is_ok_and(|i| i.key_size() != *key || i.value_size() != *value)
        })
        .map(|(name, _, _)| *name)
        .collect()
}

/// Forgets which cgroup the pinned links are on, so the next `SockLb::open` attaches anew
/// and replaces every link (as it does for changed programs).
pub fn forget_cgroup(pin_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(pin_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(CGROUP_MARKER) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// The kernel tag (a hash of the instructions) of the program behind a pinned link.
pub(super) fn pinned_tag(link: &FdLink) -> Option<u64> {
    let prog_id = link.info().ok()?.program_id();
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == prog_id)
        .map(|p| p.tag())
}

impl SockLb {
    /// Loads or takes over the programs and maps, and reads back what the maps hold.
    pub fn open(opts: EbpfOptions) -> Result<SockLb, EbpfError> {
        load_and_attach(&opts)?;
        let maps = open_maps(&opts.pin_dir)?;
        let mirror = read_back(&maps);
        Ok(SockLb {
            mesh: TcMesh::new(opts.pin_dir.clone()),
            opts,
            state: Mutex::new(State {
                maps,
                mirror,
                detached: false,
            }),
            takeover: Takeover::default(),
        })
    }

    pub fn options(&self) -> &EbpfOptions {
        &self.opts
    }

    /// Removes everything this backend pinned: links (which detaches the programs) and
    /// maps. For `swarm leave` and test teardown.
    pub fn unpin_all(pin_dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(pin_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        forget_cgroup(pin_dir);
        let _ = std::fs::remove_dir(pin_dir);
    }

    fn cookie(&self, state: &mut State, ns: &Netns) -> Result<u64, LbError> {
        if let Some(c) = state.mirror.cookies.get(ns) {
            return Ok(*c);
        }
        let c = netns_cookie(ns).map_err(|e| lb_err(ns, format!("netns cookie: {e}")))?;
        state.mirror.cookies.insert(ns.clone(), c);
        Ok(c)
    }

    fn write(&self, maps: &mut Maps, w: &Writes) -> Result<(), String> {
        let dir = &self.opts.pin_dir;
        let batch = |name: &str| map_fd(dir, name).map_err(|e| e.to_string());
        if !w.backends.is_empty() {
            let fd = batch(shoal_ebpf::MAP_BACKENDS)?;
            let (k, v): (Vec<_>, Vec<_>) = w.backends.iter().copied().unzip();
            shoal_ebpf::batch::update(fd.fd().as_fd(), &k, &v)
                .map_err(|e| format!("writing backends: {e}"))?;
        }
        if !w.svc.is_empty() {
            let fd = batch(shoal_ebpf::MAP_SVC)?;
            let (k, v): (Vec<_>, Vec<_>) = w.svc.iter().copied().unzip();
            shoal_ebpf::batch::update(fd.fd().as_fd(), &k, &v)
                .map_err(|e| format!("writing services: {e}"))?;
        }
        if !w.member_add.is_empty() {
            let fd = batch(shoal_ebpf::MAP_MEMBER)?;
            let v = vec![1u32; w.member_add.len()];
            shoal_ebpf::batch::update(fd.fd().as_fd(), &w.member_add, &v)
                .map_err(|e| format!("writing members: {e}"))?;
        }
        // Deletions one by one: a batch delete stops at the first absent key.
        for k in &w.member_del {
            let _ = maps.member.remove(k);
        }
        for k in &w.svc_del {
            let _ = maps.svc.remove(k);
        }
        for k in &w.backends_del {
            let _ = maps.backends.remove(k);
        }
        Ok(())
    }
}

/// After a failed write: the maps' truth read back, keeping the namespaces' cookies (which
/// the maps do not hold), so that a sweep does not take the failure for ended tasks.
fn reread(mirror: &mut Mirror, maps: &Maps) {
    let cookies = std::mem::take(&mut mirror.cookies);
    *mirror = read_back(maps);
    mirror.cookies = cookies;
}

fn open_maps(pin_dir: &Path) -> Result<Maps, EbpfError> {
    Ok(Maps {
        svc: open_map(pin_dir, shoal_ebpf::MAP_SVC)?,
        backends: open_map(pin_dir, shoal_ebpf::MAP_BACKENDS)?,
        member: open_map(pin_dir, shoal_ebpf::MAP_MEMBER)?,
    })
}

/// The mirror, rebuilt from the pinned maps after a restart.
fn read_back(maps: &Maps) -> Mirror {
    let mut mirror = Mirror::default();
    let mut by_vip: BTreeMap<Ipv4Addr, BTreeMap<u32, Ipv4Addr>> = BTreeMap::new();
    for (k, v) in maps.backends.iter().flatten() {
        by_vip
            .entry(addr_of_key(k.vip))
            .or_default()
            .insert(k.slot, addr_of_key(v));
    }
    for (vip, v) in maps.svc.iter().flatten() {
        let vip_ip = addr_of_key(vip);
        let slots = by_vip.remove(&vip_ip).unwrap_or_default();
        // Only slots below the count are in use.
        let list = slots
            .into_iter()
            .filter(|(slot, _)| *slot < v.count)
            .map(|(_, b)| b)
            .collect::<Vec<_>>();
        mirror.sets.insert(vip_ip, list.iter().copied().collect());
        mirror.slots.insert(vip_ip, list);
        if v.affinity_s != 0 {
            mirror.affinity.insert(vip_ip, v.affinity_s);
        }
    }
    for k in maps.member.keys().flatten() {
        mirror
            .members
            .entry(k.netns)
            .or_default()
            .insert(addr_of_key(k.vip));
    }
    mirror
}

/// The writes that make VIP `vip` hold `want` with session affinity `affinity_s` (0:
/// none), updating the mirror.
fn sync_vip(
    mirror: &mut Mirror,
    vip: Ipv4Addr,
    want: &BTreeSet<Ipv4Addr>,
    affinity_s: u32,
    w: &mut Writes,
) -> bool {
    let had_affinity = mirror.affinity.get(&vip).copied().unwrap_or(0);
    if mirror.sets.get(&vip) == Some(want) && had_affinity == affinity_s {
        return false;
    }
    let old_list: Vec<Ipv4Addr> = mirror.slots.get(&vip).cloned().unwrap_or_default();
    let new = assign_slots(&old_list, want);
    let key = addr_key(vip);
    for (i, b) in new.iter().enumerate() {
        if old_list.get(i) != Some(b) {
            w.backends.push((
                BackendKey {
                    vip: key,
                    slot: i as u32,
                },
                addr_key(*b),
            ));
        }
    }
    w.svc.push((
        key,
        SvcValue {
            count: new.len() as u32,
            affinity_s,
        },
    ));
    if affinity_s == 0 {
        mirror.affinity.remove(&vip);
    } else {
        mirror.affinity.insert(vip, affinity_s);
    }
    for i in new.len()..old_list.len() {
        w.backends_del.push(BackendKey {
            vip: key,
            slot: i as u32,
        });
    }
    mirror.sets.insert(vip, want.clone());
    mirror.slots.insert(vip, new);
    true
}

/// The VIPs of `table` whose backends or affinity differ from what the maps hold: one
/// ordered walk over both, no lookups but in the (small) affinity maps, and those only
/// when either has an entry (a change at 30,000 services must stay cheap).
fn changed_vips<'a>(
    mirror: &Mirror,
    table: &'a VipTable,
) -> Vec<(Ipv4Addr, &'a BTreeSet<Ipv4Addr>, u32)> {
    let mut have = mirror.sets.iter().peekable();
    let any_affinity = !(table.affinity.is_empty() && mirror.affinity.is_empty());
    let affinity = |map: &BTreeMap<Ipv4Addr, u32>, vip| map.get(vip).copied().unwrap_or(0);
    let mut out = Vec::new();
    for (vip, want) in &table.vips {
        while have.next_if(|(h, _)| *h < vip).is_some() {}
        let want_affinity = if any_affinity {
            affinity(&table.affinity, vip)
        } else {
            0
        };
        match have.peek() {
            Some((h, set))
                if *h == vip
                    && *set == want
                    && (!any_affinity || affinity(&mirror.affinity, vip) == want_affinity) => {}
            _ => out.push((*vip, want, want_affinity)),
        }
    }
    out
}

/// (added, removed) between the VIPs a namespace has and those it wants, both ordered.
fn member_diff(
    have: &BTreeSet<Ipv4Addr>,
    want: &BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>>,
) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut h, mut w) = (have.iter().peekable(), want.keys().peekable());
    loop {
        match (h.peek(), w.peek()) {
            (Some(a), Some(b)) if a == b => {
                h.next();
                w.next();
            }
            (Some(a), Some(b)) if a < b => removed.extend(h.next().copied()),
            (_, Some(_)) => added.extend(w.next().copied()),
            (Some(_), None) => removed.extend(h.next().copied()),
            (None, None) => break,
        }
    }
    (added, removed)
}

/// Drops VIPs that no namespace uses any more.
fn drop_unused(mirror: &mut Mirror, candidates: &BTreeSet<Ipv4Addr>, w: &mut Writes) {
    for vip in candidates {
        if mirror.members.values().any(|m| m.contains(vip)) {
            continue;
        }
        mirror.sets.remove(vip);
        mirror.affinity.remove(vip);
        if let Some(slots) = mirror.slots.remove(vip) {
            let key = addr_key(*vip);
            w.svc_del.push(key);
            w.backends_del.extend((0..slots.len()).map(|i| BackendKey {
                vip: key,
                slot: i as u32,
            }));
        }
    }
}

fn member_key(cookie: u64, vip: Ipv4Addr) -> MemberKey {
    MemberKey {
        netns: cookie,
        vip: addr_key(vip),
        pad: 0,
    }
}

impl LbBackend for SockLb {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn apply_vips(&self, ns: &Netns, table: &VipTable) -> Result<Synced, LbError> {
        self.takeover.before_first(ns, Part::Vips);
        let mut guard = self.state.lock().expect("lock");
        if guard.detached {
            // Joined again after leaving: the programs and maps are made anew.
            load_and_attach(&self.opts).map_err(|e| lb_err(ns, e))?;
            guard.maps = open_maps(&self.opts.pin_dir).map_err(|e| lb_err(ns, e))?;
            guard.detached = false;
        }
        let cookie = self.cookie(&mut guard, ns)?;
        let State { maps, mirror, .. } = &mut *guard;
        let mut w = Writes::default();
        let fresh = !mirror.members.contains_key(&cookie);
        for (vip, backends, affinity_s) in changed_vips(mirror, table) {
            sync_vip(mirror, vip, backends, affinity_s, &mut w);
        }
        let have = mirror.members.entry(cookie).or_default();
        let (added, removed) = member_diff(have, &table.vips);
        for v in &added {
            have.insert(*v);
            w.member_add.push(member_key(cookie, *v));
        }
        for v in &removed {
            have.remove(v);
            w.member_del.push(member_key(cookie, *v));
        }
        let gone: BTreeSet<Ipv4Addr> = removed.into_iter().collect();
        drop_unused(mirror, &gone, &mut w);
        let ops = w.len();
        if let Err(e) = self.write(maps, &w) {
            // The mirror no longer matches: read the truth back before the retry.
            reread(mirror, maps);
            return Err(lb_err(ns, e));
        }
        Ok(match ops {
            0 => Synced::Unchanged,
            _ if fresh => Synced::Full,
            ops => Synced::Incremental { ops },
        })
    }

    fn apply_mesh(&self, ns: &Netns, table: &MeshTable) -> Result<Synced, LbError> {
        self.takeover.before_first(ns, Part::Mesh);
        self.mesh.apply(ns, table)
    }

    fn take_over_from(&self, previous: &str) {
        self.takeover.set_previous(previous);
    }

    fn forget(&self, ns: &Netns) {
        self.takeover.forget(ns);
        let mut guard = self.state.lock().expect("lock");
        let State { maps, mirror, .. } = &mut *guard;
        let Some(cookie) = mirror.cookies.remove(ns) else {
            return;
        };
        let mut w = Writes::default();
        let gone = mirror.members.remove(&cookie).unwrap_or_default();
        w.member_del
            .extend(gone.iter().map(|v| member_key(cookie, *v)));
        drop_unused(mirror, &gone, &mut w);
        if let Err(e) = self.write(maps, &w) {
            tracing::warn!(error = %e, "eBPF maps not cleaned after a task ended");
            reread(mirror, maps);
        }
    }

    fn sweep(&self, live: &[Netns]) {
        let mut guard = self.state.lock().expect("lock");
        let State { maps, mirror, .. } = &mut *guard;
        // A live namespace whose cookie is unknown (its programming failed before the
        // cookie was read) might own entries: sweep another time.
        if live.iter().any(|n| !mirror.cookies.contains_key(n)) {
            return;
        }
        let keep: BTreeSet<u64> = live
            .iter()
            .filter_map(|n| mirror.cookies.get(n).copied())
            .collect();
        let dead: Vec<u64> = mirror
            .members
            .keys()
            .filter(|c| !keep.contains(c))
            .copied()
            .collect();
        if dead.is_empty() {
            return;
        }
        let mut w = Writes::default();
        let mut candidates = BTreeSet::new();
        for c in dead {
            let gone = mirror.members.remove(&c).unwrap_or_default();
            w.member_del.extend(gone.iter().map(|v| member_key(c, *v)));
            candidates.extend(gone);
        }
        mirror.cookies.retain(|_, c| keep.contains(c));
        drop_unused(mirror, &candidates, &mut w);
        if let Err(e) = self.write(maps, &w) {
            tracing::warn!(error = %e, "eBPF maps not swept");
            reread(mirror, maps);
        }
    }

    fn remove_mesh(&self, ns: &Netns) -> Result<(), LbError> {
        self.mesh.remove(ns)
    }

    fn leave(&self) {
        // Detaches every program (links unpinned) and frees the maps; a later join opens
        // the backend anew.
        SockLb::unpin_all(&self.opts.pin_dir);
        let mut guard = self.state.lock().expect("lock");
        guard.mirror = Mirror::default();
        guard.detached = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn set(v: &[&str]) -> BTreeSet<Ipv4Addr> {
        v.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn growing_writes_slots_then_count_and_shrinking_count_then_slots() {
        let mut m = Mirror::default();
        let mut w = Writes::default();
        let vip = ip("198.19.0.2");
        assert!(sync_vip(
            &mut m,
            vip,
            &set(&["198.19.0.5", "198.19.0.6"]),
            0,
            &mut w
        ));
        assert_eq!(w.backends.len(), 2);
        assert_eq!(w.svc[0].1.count, 2);
        let mut w = Writes::default();
        assert!(!sync_vip(
            &mut m,
            vip,
            &set(&["198.19.0.5", "198.19.0.6"]),
            0,
            &mut w
        ));
        assert_eq!(w.len(), 0);
        // Removing the first backend moves the last into its slot and drops slot 1.
        let mut w = Writes::default();
        assert!(sync_vip(&mut m, vip, &set(&["198.19.0.6"]), 0, &mut w));
        assert_eq!(
            w.backends,
            vec![(
                BackendKey {
                    vip: addr_key(vip),
                    slot: 0
                },
                addr_key(ip("198.19.0.6"))
            )]
        );
        assert_eq!(w.svc[0].1.count, 1);
        assert_eq!(
            w.backends_del,
            vec![BackendKey {
                vip: addr_key(vip),
                slot: 1
            }]
        );
    }

    #[test]
    fn walks_find_exactly_what_changed() {
        let mut m = Mirror::default();
        let mut w = Writes::default();
        for (v, b) in [("198.19.0.2", "198.19.0.5"), ("198.19.0.3", "198.19.0.6")] {
            sync_vip(&mut m, ip(v), &set(&[b]), 0, &mut w);
        }
        let mut want = VipTable::default();
        want.vips.insert(ip("198.19.0.1"), set(&["198.19.0.9"]));
        want.vips.insert(ip("198.19.0.2"), set(&["198.19.0.5"]));
        want.vips.insert(ip("198.19.0.3"), set(&["198.19.0.7"]));
        let changed: Vec<Ipv4Addr> = changed_vips(&m, &want).into_iter().map(|c| c.0).collect();
        assert_eq!(changed, vec![ip("198.19.0.1"), ip("198.19.0.3")]);
        let have = set(&["198.19.0.0", "198.19.0.2"]);
        let (added, removed) = member_diff(&have, &want.vips);
        assert_eq!(added, vec![ip("198.19.0.1"), ip("198.19.0.3")]);
        assert_eq!(removed, vec![ip("198.19.0.0")]);
    }

    #[test]
    fn an_idle_vip_is_kept_with_count_zero() {
        let mut m = Mirror::default();
        let mut w = Writes::default();
        assert!(sync_vip(
            &mut m,
            ip("198.19.0.2"),
            &BTreeSet::new(),
            0,
            &mut w
        ));
        assert_eq!(w.svc[0].1.count, 0);
        assert!(w.backends.is_empty());
    }

    #[test]
    fn a_vip_goes_when_its_last_namespace_stops_using_it() {
        let mut m = Mirror::default();
        let vip = ip("198.19.0.2");
        let mut w = Writes::default();
        sync_vip(&mut m, vip, &set(&["198.19.0.5"]), 0, &mut w);
        m.members.insert(1, set(&["198.19.0.2"]));
        m.members.insert(2, set(&["198.19.0.2"]));
        m.members.remove(&1);
        let mut w = Writes::default();
        drop_unused(&mut m, &set(&["198.19.0.2"]), &mut w);
        assert_eq!(w.len(), 0, "still used by namespace 2");
        m.members.remove(&2);
        drop_unused(&mut m, &set(&["198.19.0.2"]), &mut w);
        assert_eq!(w.svc_del, vec![addr_key(vip)]);
        assert_eq!(w.backends_del.len(), 1);
        assert!(m.slots.is_empty());
    }
}
