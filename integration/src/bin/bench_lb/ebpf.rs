//! The eBPF backend beside nftables: map programming (a full sync of a fresh node, one
//! endpoint change) and connections through a VIP balanced at connect() against the same
//! client connecting to a backend directly, at 1, 10,000 and 30,000 services. This process
//! moves into a cgroup of its own, where the programs are attached (pins under
//! /sys/fs/bpf/shoalbench-lb), and leaves it at the end.

use super::*;
use shoal_agent::lb::ebpf::{EbpfOptions, SockLb, cgroup2_mount, join_cgroup};

pub const EBPF_PROG_HEADING: &str = "## Load balancer: programming eBPF maps";
pub const EBPF_CONN_HEADING: &str = "## Load balancer: connections through an eBPF VIP";
const EBPF_CONN_SIZES: [usize; 3] = [1, 10_000, 30_000];

/// The bench's cgroup and pin directory; on drop the programs are detached and this
/// process goes back where it was.
struct Attach {
    opts: EbpfOptions,
    back_to: std::path::PathBuf,
}

impl Attach {
    fn new() -> Result<Attach> {
        let mount = cgroup2_mount().ok_or_else(|| anyhow!("no cgroup v2 hierarchy mounted"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        let opts = EbpfOptions {
            cgroup: mount.join(PREFIX),
            pin_dir: std::path::PathBuf::from(format!("/sys/fs/bpf/{PREFIX}")),
        };
        SockLb::unpin_all(&opts.pin_dir);
        join_cgroup(&opts.cgroup, std::process::id())?;
        Ok(Attach {
            opts,
            back_to: mount.join(own.trim_start_matches('/')),
        })
    }

    /// A backend as a freshly started shoald has it: no maps kept from before.
    fn fresh(&self) -> Result<SockLb> {
        SockLb::unpin_all(&self.opts.pin_dir);
        Ok(SockLb::open(self.opts.clone())?)
    }
}

impl Drop for Attach {
    fn drop(&mut self) {
        SockLb::unpin_all(&self.opts.pin_dir);
        let _ = std::fs::write(
            self.back_to.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.opts.cgroup);
    }
}

/// Entries of a pinned map, counted by bpftool.
fn map_len(at: &Attach, map: &str) -> Result<usize> {
    let path = at.opts.pin_dir.join(map);
    let out = run(Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&path))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.as_array().map(Vec::len).unwrap_or(0))
}

struct EbpfProgRow {
    services: usize,
    full: Spread,
    replace: Spread,
    add: Spread,
    remove: Spread,
}

pub fn programming(runs: usize, header: &str) -> Result<String> {
    let at = Attach::new()?;
    let mut quiet = Quiet::default();
    let mut rows = Vec::new();
    for n in SIZES {
        let mut table = vip_table(n, None);
        let mut full = Vec::new();
        let mut kept = None;
        for r in 0..runs {
            drop(kept.take());
            quiet.wait()?;
            let ns = NetnsGuard::create("prog")?;
            let lb = at.fresh()?;
            let t = Instant::now();
            let synced = lb.apply_vips(&ns.lb(), &table)?;
            full.push(t.elapsed());
            ensure!(synced == Synced::Full, "first apply_vips gave {synced:?}");
            eprintln!(
                "  eBPF {n} x {BACKENDS}: full sync {}: {}",
                r + 1,
                ms(full[r])
            );
            kept = Some((lb, ns));
        }
        let (lb, ns) = kept.ok_or_else(|| anyhow!("no runs"))?;
        ensure!(
            map_len(&at, shoal_ebpf::MAP_BACKENDS)? == n * BACKENDS
                && map_len(&at, shoal_ebpf::MAP_SVC)? == n
                && map_len(&at, shoal_ebpf::MAP_MEMBER)? == n,
            "the maps do not hold {n} services of {BACKENDS}"
        );
        let space = ns.lb();
        let (mut replace, mut add, mut remove) = (vec![], vec![], vec![]);
        quiet.wait()?;
        for k in 0..CHANGE_ROUNDS {
            let svc = (k * 7919) % n;
            let v = vip(svc);
            let old = *table.vips[&v].iter().nth(3).expect("backend");
            let new = spare(k);
            // A replacement rewrites one slot and the count: two writes.
            replace.push(change(&lb, &space, &mut table, 2, |t| {
                let s = t.vips.get_mut(&v).expect("service");
                s.remove(&old);
                s.insert(new);
            })?);
            replace.push(change(&lb, &space, &mut table, 2, |t| {
                let s = t.vips.get_mut(&v).expect("service");
                s.remove(&new);
                s.insert(old);
            })?);
            add.push(change(&lb, &space, &mut table, 2, |t| {
                t.vips.get_mut(&v).expect("service").insert(new);
            })?);
            remove.push(change(&lb, &space, &mut table, 2, |t| {
                t.vips.get_mut(&v).expect("service").remove(&new);
            })?);
        }
        ensure!(
            map_len(&at, shoal_ebpf::MAP_BACKENDS)? == n * BACKENDS,
            "the changes left the backends map at a different size"
        );
        eprintln!(
            "  eBPF {n} x {BACKENDS}: change {}",
            ms(spread(replace.clone()).p50)
        );
        drop(lb);
        drop(ns);
        rows.push(EbpfProgRow {
            services: n,
            full: spread(full),
            replace: spread(replace),
            add: spread(add),
            remove: spread(remove),
        });
    }
    let mut out = format!(
        "{EBPF_PROG_HEADING}\n\n{header} · `bench_lb` (release build); full sync: median of \
         {runs} runs, each the first `apply_vips` of a freshly opened `SockLb` (no pinned \
         maps kept) into a fresh namespace, written with `BPF_MAP_UPDATE_BATCH`; endpoint \
         changes: {} replacements, {CHANGE_ROUNDS} additions and {CHANGE_ROUNDS} removals of \
         one backend of one service on the same instance (each checked to be two map \
         writes), median and p99; map sizes checked with `bpftool map dump`. The nftables \
         figures of the section above were taken with the same tables.\n\n",
        2 * CHANGE_ROUNDS
    );
    out.push_str(
        "| services × backends | full sync | replace one backend | add one backend | remove one backend |\n\
         |---|---|---|---|---|\n",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} × {BACKENDS} | {} | {} (p99 {}) | {} (p99 {}) | {} (p99 {}) |",
            thousands(r.services),
            ms(r.full.p50),
            ms(r.replace.p50),
            ms(r.replace.p99),
            ms(r.add.p50),
            ms(r.add.p99),
            ms(r.remove.p50),
            ms(r.remove.p99),
        );
    }
    let _ = writeln!(
        out,
        "\nRe-run (as root): `target/release/bench_lb --only ebpf-programming --write BENCHMARKS.md`."
    );
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ebpf,
    Nft,
}

struct EbpfConnRow {
    services: usize,
    mode: Mode,
    direct: Vec<Run>,
    vip: Vec<Run>,
}

pub fn connections(runs: usize, conns: usize, header: &str) -> Result<String> {
    let at = Attach::new()?;
    let bed = Bed::create()?;
    let server = Server::start(&bed.server.name)?;
    let servers: BTreeSet<Ipv4Addr> = (0..BACKENDS).map(server_overlay).collect();
    let client = bed.client.lb();
    let mut quiet = Quiet::default();
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    for n in EBPF_CONN_SIZES {
        let table = vip_table(n, Some(&servers));
        let target = SocketAddrV4::new(vip(n - 1), PORT);
        let direct = SocketAddrV4::new(server_overlay(0), PORT);
        let row = |mode| EbpfConnRow {
            services: n,
            mode,
            direct: vec![],
            vip: vec![],
        };
        let (mut e, mut f) = (row(Mode::Ebpf), row(Mode::Nft));
        for round in 0..runs {
            for mode in [Mode::Ebpf, Mode::Nft] {
                // One dataplane at a time in the client's namespace: the other's state
                // is removed (nftables' table, or eBPF's entries for the namespace).
                let ebpf = at.fresh()?;
                let _ = nft_cli(&bed.client.name, "delete table ip shoal\n");
                if mode == Mode::Ebpf {
                    ebpf.apply_vips(&client, &table)?;
                } else {
                    ebpf.forget(&client);
                    SockLb::unpin_all(&at.opts.pin_dir);
                    Nftables::default().apply_vips(&client, &table)?;
                }
                let into = if mode == Mode::Ebpf { &mut e } else { &mut f };
                for (path, to) in [(Path::Direct, direct), (Path::Vip, target)] {
                    conntrack_settle(&[&bed.client.name, &bed.server.name])?;
                    quiet.wait()?;
                    server.take_hits();
                    let r = client_run(&bed.client.name, to, conns)?;
                    let hits = server.take_hits();
                    if round == 0 && path == Path::Vip {
                        let reached: BTreeSet<Ipv4Addr> = hits.keys().map(|k| k.0).collect();
                        let from: BTreeSet<Ipv4Addr> = hits.keys().map(|k| k.1).collect();
                        ensure!(
                            reached == servers && from == [CLIENT_OVERLAY].into(),
                            "{mode:?} VIP at {n}: reached {reached:?} from {from:?}"
                        );
                        checks.push(format!(
                            "{mode:?} at {}: all {} backends reached, client address kept",
                            thousands(n),
                            reached.len()
                        ));
                    }
                    eprintln!(
                        "  {n} services, {mode:?}, {}: {:.0}/s, p50 {}, p99 {}",
                        path.label(),
                        r.rate,
                        us(r.p50),
                        us(r.p99)
                    );
                    if path == Path::Direct {
                        into.direct.push(r);
                    } else {
                        into.vip.push(r);
                    }
                }
            }
        }
        rows.push(e);
        rows.push(f);
    }
    drop(server);
    let _ = nft_cli(&bed.client.name, "delete table ip shoal\n");
    let mut out = format!(
        "{EBPF_CONN_HEADING}\n\n{header} · `bench_lb` (release build); {conns} sequential \
         connections per run (connect, 1 byte each way, close with a reset), client and \
         server pinned to one core each; median of {runs} rounds, each round measuring both \
         dataplanes back to back (eBPF: the programs on the client's cgroup, its namespace's \
         entries in the maps, no nftables table; nftables: the `ip shoal` table, no eBPF \
         entries). \"direct\" connects to a backend's address in the same state. The VIP is \
         the last of the services; its 10 backends are the server's addresses.\n\n"
    );
    out.push_str(
        "| services | dataplane | direct conn/s | VIP conn/s | VIP / direct | direct p50 | VIP p50 | VIP p99 |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let rate = |v: &[Run]| median_f(v.iter().map(|r| r.rate).collect());
        let p50 = |v: &[Run]| median_d(v.iter().map(|r| r.p50).collect());
        let ratio = median_f(
            r.vip
                .iter()
                .zip(&r.direct)
                .map(|(v, d)| v.rate / d.rate)
                .collect(),
        );
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {} | {} | {} |",
            thousands(r.services),
            if r.mode == Mode::Ebpf {
                "eBPF"
            } else {
                "nftables"
            },
            rate(&r.direct),
            rate(&r.vip),
            ratio,
            us(p50(&r.direct)),
            us(p50(&r.vip)),
            us(median_d(r.vip.iter().map(|r| r.p99).collect())),
        );
    }
    let _ = writeln!(out, "\nChecked on the first round: {}.", checks.join("; "));
    let _ = writeln!(
        out,
        "\nRe-run (as root): `target/release/bench_lb --only ebpf-connections --write BENCHMARKS.md`."
    );
    if quiet.busy_starts > 0 {
        let _ = writeln!(
            out,
            "\n{} runs started on a busy machine (another load did not stop within 30 s).",
            quiet.busy_starts
        );
    }
    Ok(out)
}

pub const EBPF_MESH_HEADING: &str = "## Load balancer: the routing mesh in tc";

/// Connections from the client's underlay side to a published port of the node, through
/// the tc mesh (eBPF) or nftables' mesh, beside the same client routed through the node to
/// a backend directly; at 1, 10,000 and 30,000 published ports.
pub fn mesh_connections(runs: usize, conns: usize, header: &str) -> Result<String> {
    let at = Attach::new()?;
    let bed = Bed::create()?;
    let server = Server::start(&bed.server.name)?;
    let node = bed.node.lb();
    let mut quiet = Quiet::default();
    let paths = [Path::Routed, Path::Mesh, Path::MeshSnat];
    // (ports, mode) -> runs by path.
    let mut results: Vec<(usize, Mode, Vec<Vec<Run>>)> = Vec::new();
    let mut checks = Vec::new();
    for n in EBPF_CONN_SIZES {
        let mut by_mode: Vec<(Mode, Vec<Vec<Run>>)> = [Mode::Ebpf, Mode::Nft]
            .into_iter()
            .map(|m| (m, paths.iter().map(|_| Vec::new()).collect()))
            .collect();
        for round in 0..runs {
            for (mode, runs_of) in by_mode.iter_mut() {
                // One mesh at a time in the node: the other's state is removed.
                let ebpf = at.fresh()?;
                let _ = nft_cli(&bed.node.name, "delete table ip shoal_mesh\n");
                let nft = Nftables::default();
                let apply = |snat: bool| -> Result<Synced> {
                    Ok(match mode {
                        Mode::Ebpf => ebpf.apply_mesh(&node, &mesh_table(n, snat))?,
                        Mode::Nft => nft.apply_mesh(&node, &mesh_table(n, snat))?,
                    })
                };
                if *mode == Mode::Nft {
                    ebpf.remove_mesh(&node)?;
                }
                apply(false)?;
                for (p, path) in paths.iter().enumerate() {
                    if matches!(path, Path::Mesh | Path::MeshSnat) {
                        apply(*path == Path::MeshSnat)?;
                    }
                    conntrack_settle(&[&bed.client.name, &bed.server.name, &bed.node.name])?;
                    quiet.wait()?;
                    server.take_hits();
                    let r = client_run(&bed.client.name, bed.target(*path, n), conns)?;
                    let hits = server.take_hits();
                    if round == 0 {
                        checks.push(format!("{mode:?}, {}", check_hits(n, *path, &hits)));
                    }
                    eprintln!(
                        "  {n} ports, {mode:?}, {}: {:.0}/s, p50 {}, p99 {}",
                        path.label(),
                        r.rate,
                        us(r.p50),
                        us(r.p99)
                    );
                    runs_of[p].push(r);
                }
            }
        }
        for (mode, runs_of) in by_mode {
            results.push((n, mode, runs_of));
        }
    }
    drop(server);
    let mut out = format!(
        "{EBPF_MESH_HEADING}\n\n{header} · `bench_lb` (release build); {conns} sequential \
         connections per run from the client's underlay address to a published port of the \
         node (the last of the ports; its 10 backends are the server's ingress addresses), \
         median of {runs} rounds, each measuring both meshes back to back (eBPF: the tc \
         programs, no nftables table in the node; nftables: the `ip shoal_mesh` table, no tc \
         programs). The baseline is the same client routed through the node to a backend on \
         a link outside ingress. \"remote\" makes the same backends remote ones (SNAT to the \
         node's ingress address, reached at the node's second address).\n\n"
    );
    out.push_str(
        "| published ports | mesh | routed direct conn/s | mesh → local conn/s | ratio | mesh → remote conn/s | ratio | routed p50 | local p50 | remote p50 |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (n, mode, runs_of) in &results {
        let rate = |v: &[Run]| median_f(v.iter().map(|r| r.rate).collect());
        let p50 = |v: &[Run]| median_d(v.iter().map(|r| r.p50).collect());
        let ratio = |v: &[Run]| {
            median_f(
                v.iter()
                    .zip(&runs_of[0])
                    .map(|(a, b)| a.rate / b.rate)
                    .collect(),
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {} | {} | {} |",
            thousands(*n),
            if *mode == Mode::Ebpf {
                "tc (eBPF)"
            } else {
                "nftables"
            },
            rate(&runs_of[0]),
            rate(&runs_of[1]),
            ratio(&runs_of[1]),
            rate(&runs_of[2]),
            ratio(&runs_of[2]),
            us(p50(&runs_of[0])),
            us(p50(&runs_of[1])),
            us(p50(&runs_of[2])),
        );
    }
    let _ = writeln!(out, "\nChecked on the first round: {}.", checks.join("; "));
    let _ = writeln!(
        out,
        "\nRe-run (as root): `target/release/bench_lb --only ebpf-mesh --write BENCHMARKS.md`."
    );
    Ok(out)
}
