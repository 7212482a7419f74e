//! The nftables load balancer (needs root and nft): how long programming takes, and what a
//! VIP and the routing mesh cost a new connection.
//!
//! Programming: `Nftables::apply_vips` into a fresh namespace (a full sync, `nft -f`) for
//! 1k, 10k and 30k services of 10 backends each; then one endpoint change at a time on the
//! same instance (an element batch over its netlink socket), beside the same change made
//! with the nft CLI (`nsenter ... nft -f -`, `delete element` + `add element`). The user-space
//! parts (building the full script; the diff behind an incremental change) are timed on
//! their own too, and the kernel's elements are checked with `nft get element`.
//!
//! Connections: namespaces `shoalbench-lb-{client,server,node}`. The client reaches the
//! server over a veth (198.19.0.0/16, the overlay side) directly or through a VIP that
//! balances to the server's 10 addresses, and through the node namespace (198.18.0.0/24 and
//! 198.18.1.0/24, the underlay side, forwarding on) either routed straight to a backend or
//! through a published port of the routing mesh: to local backends, or (at a second node
//! address) to the same backends as remote ones, with SNAT. Each run is sequential
//! connect + 1-byte exchange + close; the client closes with SO_LINGER 0 (a reset: no
//! TIME_WAIT; the conntrack entry goes to CLOSE for 10 s, and runs wait until the count is
//! under a limit) and has ephemeral ports 1024-65535. Server and client are threads of this
//! process that entered their namespaces, pinned to CPU 0 and CPU 1. Runs of every path are
//! interleaved and each waits for the machine to be quiet first. The server records which
//! address each connection reached and from which address, to check the NAT. No packet
//! leaves these namespaces; every address is in 198.18.0.0/15.
//!
//! `cargo build --release -p shoal-integration --bin bench_lb && sudo target/release/bench_lb
//! [--runs 7] [--conns 5000] [--only programming|connections|ebpf-programming|ebpf-connections|
//! ebpf-mesh|iptables-programming] [--write BENCHMARKS.md]`

mod ebpf;
mod iptables;

use anyhow::{Context, Result, anyhow, bail, ensure};
use nix::sys::socket::{setsockopt, sockopt};
use shoal_agent::lb::nft::{Slots, element_ops, update_slots, vip_ruleset};
use shoal_agent::lb::{LbBackend, MeshTable, Netns, Synced, VipTable, nft::Nftables};
use shoal_api::objects::Protocol;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PREFIX: &str = "shoalbench-lb";
const SIZES: [usize; 3] = [1_000, 10_000, 30_000];
const BACKENDS: usize = 10;
/// Defaults for `--runs` and `--conns`.
const RUNS: usize = 7;
const CONNS: usize = 5_000;
/// Rounds of endpoint changes per size, each: replace a backend, put it back, add one,
/// remove it again.
const CHANGE_ROUNDS: usize = 25;
/// nft CLI changes per size (alternating there and back).
const CLI_RUNS: usize = 10;
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;
const PORT: u16 = 8080;
/// Services programmed for the connection runs.
const CONN_SIZES: [usize; 2] = [1, 30_000];
/// A core counts as quiet below this busy share.
const QUIET: f64 = 0.15;
/// Conntrack entries a namespace may hold when a run starts.
const CONNTRACK_LIMIT: u64 = 100_000;
/// A connect this slow waited for a retransmission.
const STALL: Duration = Duration::from_millis(100);
/// The client's ephemeral ports: wide, so a port (and its conntrack entry, in CLOSE for
/// 10 s) comes round again less often.
const CLIENT_PORTS: &str = "1024 65535";

const PROG_HEADING: &str = "## Load balancer: programming nftables";
const CONN_HEADING: &str = "## Load balancer: connections through a VIP and the routing mesh";

// ---- addresses (198.18.0.0/15 only) ----

fn offset(base: Ipv4Addr, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + i as u32)
}

/// VIP of service `i`: 198.19.128.0/17.
fn vip(i: usize) -> Ipv4Addr {
    offset(Ipv4Addr::new(198, 19, 128, 0), i)
}

/// A backend of the services nobody connects to: 198.19.32.0-198.19.95.255.
fn fake_task(i: usize, j: usize) -> Ipv4Addr {
    offset(Ipv4Addr::new(198, 19, 32, 0), (i * BACKENDS + j) % 16_384)
}

/// The same on the ingress side: 198.18.64.0-198.18.127.255.
fn fake_ingress_task(i: usize, j: usize) -> Ipv4Addr {
    offset(Ipv4Addr::new(198, 18, 64, 0), (i * BACKENDS + j) % 16_384)
}

/// Addresses no service has, for endpoint changes: 198.19.96.0/19.
fn spare(k: usize) -> Ipv4Addr {
    offset(Ipv4Addr::new(198, 19, 96, 0), k % 8192)
}

const CLIENT_OVERLAY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const CLIENT_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const NODE_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// A second local address of the node, which the SNAT variant is reached at: a new
/// connection there never meets a conntrack entry left by the local variant (same client
/// port, same destination), which would carry on with that entry's NAT (no SNAT).
const NODE_UNDERLAY_2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// The node's side of its link to the server: the ingress address remote backends see.
const NODE_INGRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const NODE_INGRESS_DEV: &str = "n1";
/// The routed baseline's own link node <-> server, outside ingress: the mesh's forward
/// guard drops new routed connections into ingress, as it does for tasks.
const NODE_ROUTED: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const SERVER_ROUTED: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);

/// The server's 10 overlay addresses (VIP backends): 198.19.0.10-19.
fn server_overlay(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, 10 + j as u8)
}

/// The server's 10 ingress addresses (mesh backends): 198.18.1.10-19.
fn server_ingress(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10 + j as u8)
}

/// Published port of service `i`.
fn published(i: usize) -> u16 {
    20_000 + i as u16
}

/// `n` services of 10 backends; the last one's backends are `last`, if given.
fn vip_table(n: usize, last: Option<&BTreeSet<Ipv4Addr>>) -> VipTable {
    let mut t = VipTable::default();
    for i in 0..n {
        let backends = match last {
            Some(l) if i == n - 1 => l.clone(),
            _ => (0..BACKENDS).map(|j| fake_task(i, j)).collect(),
        };
        t.vips.insert(vip(i), backends);
    }
    t
}

/// `n` published ports of 10 backends each; the last one's are the server's.
fn mesh_table(n: usize, snat_variant: bool) -> MeshTable {
    let mut t = MeshTable::default();
    for i in 0..n {
        let backends = (0..BACKENDS)
            .map(|j| {
                let ip = if i == n - 1 {
                    server_ingress(j)
                } else {
                    fake_ingress_task(i, j)
                };
                SocketAddrV4::new(ip, PORT)
            })
            .collect();
        t.ports.insert((Protocol::Tcp, published(i)), backends);
    }
    if !snat_variant {
        t.local = (0..BACKENDS).map(server_ingress).collect();
    }
    t.snat = Some((NODE_INGRESS, NODE_INGRESS_DEV.into()));
    t
}

// ---- processes, namespaces, threads ----

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// `nft -f -` with `script` inside namespace `ns`, through nsenter as the CLI is used.
fn nft_cli(ns: &str, script: &str) -> Result<()> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nsenter nft")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "nft -f in {ns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn nft_out(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("nft")
        .args(args))
}

/// Removes the namespaces an earlier run left (interrupted before its guard ran).
fn remove_leftovers() -> Result<()> {
    for line in ip(&["netns", "list"])?.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name.starts_with(PREFIX) {
            eprintln!("removing leftover namespace {name}");
            ip(&["netns", "delete", name])?;
        }
    }
    Ok(())
}

/// A network namespace of ours, deleted on drop (also on error and panic).
struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    fn create(suffix: &str) -> Result<NetnsGuard> {
        let name = format!("{PREFIX}-{suffix}");
        ip(&["netns", "add", &name])?;
        let ns = NetnsGuard { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        ip(&[&["-n", &self.name], args].concat())
    }

    fn lb(&self) -> Netns {
        Netns::Named(self.name.clone())
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            eprintln!("removing namespace {}: {e:#}", self.name);
        }
    }
}

/// Runs `f` on a thread of its own inside namespace `ns` (entering a namespace changes the
/// calling thread's), pinned to `cpu` if given.
fn in_netns<T: Send + 'static>(
    ns: &str,
    cpu: Option<usize>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<T> {
        shoal_integration::bench::enter_netns(&path, cpu)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("thread in {ns} panicked"))?
}

/// Busy share of every core over `window`.
fn busy(window: Duration) -> Result<Vec<f64>> {
    let a = shoal_integration::bench::cpu_times();
    std::thread::sleep(window);
    let b = shoal_integration::bench::cpu_times();
    Ok((0..b.len())
        .map(|cpu| shoal_integration::bench::busy_share(&a, &b, cpu))
        .collect())
}

/// Counts runs that had to start on a busy machine.
#[derive(Default)]
struct Quiet {
    waited: Duration,
    busy_starts: usize,
}

impl Quiet {
    /// Waits (at most 30 s) until every core is below `QUIET`.
    fn wait(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if busy(Duration::from_millis(200))?.iter().all(|b| *b < QUIET) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                self.busy_starts += 1;
                break;
            }
        }
        self.waited += start.elapsed();
        Ok(())
    }
}

// ---- statistics ----

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_d(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// "1 service", "30,000 services".
fn services(n: usize) -> String {
    format!("{} service{}", thousands(n), if n == 1 { "" } else { "s" })
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Median and p99 of a set of timings.
struct Spread {
    p50: Duration,
    p99: Duration,
}

fn spread(mut v: Vec<Duration>) -> Spread {
    v.sort();
    Spread {
        p50: quantile(&v, 0.5),
        p99: quantile(&v, 0.99),
    }
}

// ---- 1. programming ----

struct ProgRow {
    services: usize,
    full: Spread,
    build: Spread,
    replace: Spread,
    add: Spread,
    remove: Spread,
    diff: Spread,
    cli: Spread,
}

/// One `apply_vips` after `edit`, which must come out as an incremental batch of `ops`.
fn change(
    lb: &dyn LbBackend,
    ns: &Netns,
    table: &mut VipTable,
    ops: usize,
    edit: impl FnOnce(&mut VipTable),
) -> Result<Duration> {
    edit(table);
    let t = Instant::now();
    let synced = lb.apply_vips(ns, table)?;
    let took = t.elapsed();
    ensure!(
        synced == Synced::Incremental { ops },
        "one endpoint change came out as {synced:?}, expected Incremental {{ ops: {ops} }}"
    );
    Ok(took)
}

fn programming_size(n: usize, runs: usize, quiet: &mut Quiet) -> Result<ProgRow> {
    let mut table = vip_table(n, None);
    let mut full = Vec::new();
    let mut build = Vec::new();
    let mut kept = None;
    for r in 0..runs {
        drop(kept.take());
        quiet.wait()?;
        let ns = NetnsGuard::create("prog")?;
        let lb = Nftables::default();
        let t = Instant::now();
        let synced = lb.apply_vips(&ns.lb(), &table)?;
        full.push(t.elapsed());
        ensure!(synced == Synced::Full, "first apply_vips gave {synced:?}");
        // What apply_vips does in user space before it runs nft: slots and the script.
        let t = Instant::now();
        let (slots, _) = element_ops(&Slots::new(), &table.vips, Some("idle"));
        let script = vip_ruleset(&slots, 16);
        build.push(t.elapsed());
        ensure!(
            script.len() > n * BACKENDS,
            "a script of {} bytes",
            script.len()
        );
        eprintln!("  {n} x {BACKENDS}: full sync {}: {}", r + 1, ms(full[r]));
        kept = Some((lb, ns));
    }
    let (lb, ns) = kept.ok_or_else(|| anyhow!("no runs"))?;
    // The kernel has what was asked: the last VIP goes to pick10, slot 3 of service 1 holds
    // its fourth backend (slots start in address order).
    let got = nft_out(
        &ns.name,
        &[
            "get",
            "element",
            "ip",
            "shoal",
            "vips",
            &format!("{{ {} }}", vip(n - 1)),
        ],
    )?;
    ensure!(got.contains("goto pick10"), "vips element: {got}");
    let check = |svc: usize, slot: usize, want: Ipv4Addr| -> Result<()> {
        let key = format!("{{ {} . {slot} }}", vip(svc));
        let got = nft_out(
            &ns.name,
            &["get", "element", "ip", "shoal", "backends", &key],
        )?;
        ensure!(
            got.contains(&format!(": {want}")),
            "backends element {key}: want {want}, kernel has: {}",
            got.trim()
        );
        Ok(())
    };
    let fourth = |t: &VipTable, svc: usize| t.vips[&vip(svc)].iter().nth(3).copied();
    check(
        1,
        3,
        fourth(&table, 1).ok_or_else(|| anyhow!("no backend"))?,
    )?;

    // One endpoint change at a time; service 0 is left for the CLI.
    let space = ns.lb();
    let (mut replace, mut add, mut remove, mut diff) = (vec![], vec![], vec![], vec![]);
    let mut slots: Slots<Ipv4Addr, Ipv4Addr> =
        element_ops(&Slots::new(), &table.vips, Some("idle")).0;
    quiet.wait()?;
    for k in 0..CHANGE_ROUNDS {
        let svc = 1 + (k * 7919) % (n - 1);
        let v = vip(svc);
        let old = fourth(&table, svc).ok_or_else(|| anyhow!("no backend"))?;
        let new = spare(k);
        replace.push(change(&lb, &space, &mut table, 2, |t| {
            let s = t.vips.get_mut(&v).expect("service");
            s.remove(&old);
            s.insert(new);
        })?);
        if k == 0 {
            check(svc, 3, new)?;
        }
        // The diff alone, as apply_vips computes it, for the same change.
        let t = Instant::now();
        let (ops, _) = update_slots(&mut slots, &table.vips, Some("idle"));
        diff.push(t.elapsed());
        ensure!(ops.len() == 2, "diff of one replacement: {} ops", ops.len());
        replace.push(change(&lb, &space, &mut table, 2, |t| {
            let s = t.vips.get_mut(&v).expect("service");
            s.remove(&new);
            s.insert(old);
        })?);
        update_slots(&mut slots, &table.vips, Some("idle"));
        // An 11th backend: the VIP moves to pick11 and slot 10 is filled.
        add.push(change(&lb, &space, &mut table, 3, |t| {
            t.vips.get_mut(&v).expect("service").insert(new);
        })?);
        remove.push(change(&lb, &space, &mut table, 3, |t| {
            t.vips.get_mut(&v).expect("service").remove(&new);
        })?);
    }

    // The nft CLI: the same replacement of one backend (slot 3 of service 0), there and back.
    let original = fourth(&table, 0).ok_or_else(|| anyhow!("no backend"))?;
    let mut cli = Vec::new();
    quiet.wait()?;
    for r in 0..CLI_RUNS {
        let to = if r.is_multiple_of(2) {
            spare(8000)
        } else {
            original
        };
        let script = format!(
            "delete element ip shoal backends {{ {v} . 3 }}\nadd element ip shoal backends {{ {v} . 3 : {to} }}\n",
            v = vip(0)
        );
        let t = Instant::now();
        nft_cli(&ns.name, &script)?;
        cli.push(t.elapsed());
        if r == 0 {
            check(0, 3, to)?;
        }
    }
    check(0, 3, original)?;
    eprintln!(
        "  {n} x {BACKENDS}: change {} (diff {}), nft CLI {}",
        ms(spread(replace.clone()).p50),
        ms(spread(diff.clone()).p50),
        ms(spread(cli.clone()).p50)
    );
    drop(lb);
    drop(ns);
    Ok(ProgRow {
        services: n,
        full: spread(full),
        build: spread(build),
        replace: spread(replace),
        add: spread(add),
        remove: spread(remove),
        diff: spread(diff),
        cli: spread(cli),
    })
}

fn programming(runs: usize, header: &str) -> Result<String> {
    let mut quiet = Quiet::default();
    let mut rows = Vec::new();
    for n in SIZES {
        rows.push(programming_size(n, runs, &mut quiet)?);
    }
    let mut out = format!(
        "{PROG_HEADING}\n\n{header} · `bench_lb` (release build); full sync: median of {runs} runs, \
         each the first `apply_vips` into a fresh namespace; endpoint changes: {} replacements, \
         {CHANGE_ROUNDS} additions and {CHANGE_ROUNDS} removals of one backend of one service \
         on the same `Nftables` (each checked to go as an incremental batch), median and p99; \
         nft CLI: {CLI_RUNS} runs of `nsenter --net=... nft -f -` with `delete element` + \
         `add element` for the same replacement, median and p99\n\n",
        2 * CHANGE_ROUNDS
    );
    out.push_str(
        "| services × backends | full sync | of which building the script | replace one backend | add one backend | remove one backend | of which the diff in user space | nft CLI, replace one backend | CLI / shoal |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} × {BACKENDS} | {} | {} | {} (p99 {}) | {} (p99 {}) | {} (p99 {}) | {} | {} (p99 {}) | {:.1} |",
            thousands(r.services),
            ms(r.full.p50),
            ms(r.build.p50),
            ms(r.replace.p50),
            ms(r.replace.p99),
            ms(r.add.p50),
            ms(r.add.p99),
            ms(r.remove.p50),
            ms(r.remove.p99),
            ms(r.diff.p50),
            ms(r.cli.p50),
            ms(r.cli.p99),
            r.cli.p50.as_secs_f64() / r.replace.p50.as_secs_f64(),
        );
    }
    let at = |n: usize| rows.iter().find(|r| r.services == n);
    if let (Some(ten), Some(thirty)) = (at(10_000), at(30_000)) {
        let _ = writeln!(
            out,
            "\nBars: full sync of 10,000 × 10 under 1 s: {} ({}); one endpoint change at 30,000 \
             under 10 ms: {} ({}).",
            ms(ten.full.p50),
            if ten.full.p50 < Duration::from_secs(1) {
                "met"
            } else {
                "missed"
            },
            ms(thirty.replace.p50.max(thirty.add.p50)),
            if thirty.replace.p99.max(thirty.add.p99) < Duration::from_millis(10) {
                "met, also at p99"
            } else if thirty.replace.p50.max(thirty.add.p50) < Duration::from_millis(10) {
                "met at the median"
            } else {
                "missed"
            },
        );
        let _ = writeln!(
            out,
            "At 30,000 a replacement takes {} end to end; the user-space diff alone, timed \
             separately on the same change, takes {} (one ordered walk over every service: \
             it grows with the table, the netlink batch and the kernel commit do not). A full \
             sync spends {} of its {} building the script; the rest is `nsenter` + `nft -f`.",
            ms(thirty.replace.p50),
            ms(thirty.diff.p50),
            ms(thirty.build.p50),
            ms(thirty.full.p50),
        );
    }
    let _ = writeln!(
        out,
        "\nRe-run (as root): `target/release/bench_lb --only programming --write BENCHMARKS.md`."
    );
    if quiet.busy_starts > 0 {
        let _ = writeln!(
            out,
            "\n{} measurements started on a busy machine (another load did not stop within 30 s).",
            quiet.busy_starts
        );
    }
    Ok(out)
}

// ---- 2. connections ----

/// The TCP server: a thread in the server namespace on `SERVER_CPU`, accepting one
/// connection at a time, reading a byte, answering one, closing. It counts connections by
/// (local address reached, peer address seen). Stopped on drop.
struct Server {
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<HashMap<(Ipv4Addr, Ipv4Addr), u64>>>,
    ns: String,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    fn start(ns: &str) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let (ready, listening) = std::sync::mpsc::channel();
        let path = format!("/run/netns/{ns}");
        let (s, h) = (stop.clone(), hits.clone());
        let thread =
            std::thread::Builder::new()
                .name("lb-server".into())
                .spawn(move || -> Result<()> {
                    let listener = shoal_integration::bench::enter_netns(&path, Some(SERVER_CPU))
                        .and_then(|()| Ok(TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT))?));
                    let listener = match listener {
                        Ok(l) => {
                            let _ = ready.send(Ok(()));
                            l
                        }
                        Err(e) => {
                            let _ = ready.send(Err(anyhow!("{e:#}")));
                            return Err(e);
                        }
                    };
                    let mut byte = [0u8; 1];
                    while !s.load(Ordering::Relaxed) {
                        let Ok((mut c, _)) = listener.accept() else {
                            continue;
                        };
                        if let (Ok(SocketAddr::V4(l)), Ok(SocketAddr::V4(p))) =
                            (c.local_addr(), c.peer_addr())
                        {
                            *h.lock()
                                .expect("lock")
                                .entry((*l.ip(), *p.ip()))
                                .or_default() += 1;
                        }
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        if c.read_exact(&mut byte).is_ok() {
                            let _ = c.write_all(&byte);
                        }
                    }
                    Ok(())
                })?;
        listening
            .recv()
            .map_err(|_| anyhow!("the server thread ended"))??;
        Ok(Server {
            stop,
            hits,
            ns: ns.to_string(),
            thread: Some(thread),
        })
    }

    fn take_hits(&self) -> HashMap<(Ipv4Addr, Ipv4Addr), u64> {
        std::mem::take(&mut *self.hits.lock().expect("lock"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept.
        let _ = in_netns(&self.ns, None, || {
            Ok(TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)),
                Duration::from_secs(1),
            )?)
        });
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => eprintln!("server thread: {e:#}"),
                Err(_) => eprintln!("server thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// One client run.
struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// Connects slower than `STALL` (a lost SYN waits 1 s for its retransmission).
    stalls: usize,
    max: Duration,
}

/// `n` sequential connections from the client namespace to `target`: connect (timed),
/// one byte each way, close with a reset (SO_LINGER 0).
fn client_run(ns: &str, target: SocketAddrV4, n: usize) -> Result<Run> {
    in_netns(ns, Some(CLIENT_CPU), move || {
        let one = |lat: Option<&mut Vec<Duration>>| -> Result<()> {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(&SocketAddr::V4(target), Duration::from_secs(2))
                .with_context(|| format!("connecting to {target}"))?;
            if let Some(l) = lat {
                l.push(t.elapsed());
            }
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut b = [7u8];
            s.write_all(&b)?;
            s.read_exact(&mut b)
                .with_context(|| format!("reading the answer of {target}"))?;
            setsockopt(
                &s,
                sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )?;
            Ok(())
        };
        for _ in 0..200 {
            one(None)?;
        }
        let mut lat = Vec::with_capacity(n);
        let t = Instant::now();
        for _ in 0..n {
            one(Some(&mut lat))?;
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        let stalls = lat.iter().filter(|l| **l > STALL).count();
        let max = lat.iter().max().copied().unwrap_or_default();
        let s = spread(lat);
        Ok(Run {
            rate,
            p50: s.p50,
            p99: s.p99,
            stalls,
            max,
        })
    })
}

fn conntrack_count(ns: &str) -> Result<u64> {
    in_netns(ns, None, || {
        // Without a conntrack user in the namespace the file may be absent: nothing tracked.
        Ok(
            std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        )
    })
}

/// Waits (at most 30 s) until the namespaces hold few enough conntrack entries.
fn conntrack_settle(namespaces: &[&str]) -> Result<u64> {
    let start = Instant::now();
    loop {
        let mut most = 0;
        for ns in namespaces {
            most = most.max(conntrack_count(ns)?);
        }
        if most < CONNTRACK_LIMIT || start.elapsed() > Duration::from_secs(30) {
            return Ok(most);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Vip,
    Routed,
    Mesh,
    MeshSnat,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct to a backend (veth)",
            Path::Vip => "VIP → 10 backends (DNAT in the client's namespace)",
            Path::Routed => "direct to a backend, routed through the node (not via ingress)",
            Path::Mesh => "routing mesh: node:published port → local backend",
            Path::MeshSnat => "routing mesh: node:published port → remote backend (SNAT)",
        }
    }

    /// What the ratio compares with.
    fn baseline(self) -> Path {
        match self {
            Path::Direct | Path::Vip => Path::Direct,
            _ => Path::Routed,
        }
    }
}

const PATHS: [Path; 5] = [
    Path::Direct,
    Path::Vip,
    Path::Routed,
    Path::Mesh,
    Path::MeshSnat,
];

/// The three namespaces, wired.
struct Bed {
    client: NetnsGuard,
    server: NetnsGuard,
    node: NetnsGuard,
}

impl Bed {
    fn create() -> Result<Bed> {
        let bed = Bed {
            client: NetnsGuard::create("client")?,
            server: NetnsGuard::create("server")?,
            node: NetnsGuard::create("node")?,
        };
        let (c, s, n) = (&bed.client, &bed.server, &bed.node);
        // Devices are made inside the namespaces: nothing appears in the host's.
        c.ip(&[
            "link", "add", "c0", "type", "veth", "peer", "name", "s0", "netns", &s.name,
        ])?;
        c.ip(&[
            "link", "add", "c1", "type", "veth", "peer", "name", "n0", "netns", &n.name,
        ])?;
        n.ip(&[
            "link",
            "add",
            NODE_INGRESS_DEV,
            "type",
            "veth",
            "peer",
            "name",
            "s1",
            "netns",
            &s.name,
        ])?;
        n.ip(&[
            "link", "add", "n2", "type", "veth", "peer", "name", "s2", "netns", &s.name,
        ])?;
        n.ip(&["addr", "add", &format!("{NODE_ROUTED}/24"), "dev", "n2"])?;
        s.ip(&["addr", "add", &format!("{SERVER_ROUTED}/24"), "dev", "s2"])?;
        c.ip(&["addr", "add", &format!("{CLIENT_OVERLAY}/16"), "dev", "c0"])?;
        c.ip(&["addr", "add", &format!("{CLIENT_UNDERLAY}/24"), "dev", "c1"])?;
        n.ip(&["addr", "add", &format!("{NODE_UNDERLAY}/24"), "dev", "n0"])?;
        n.ip(&["addr", "add", &format!("{NODE_UNDERLAY_2}/24"), "dev", "n0"])?;
        n.ip(&[
            "addr",
            "add",
            &format!("{NODE_INGRESS}/24"),
            "dev",
            NODE_INGRESS_DEV,
        ])?;
        for j in 0..BACKENDS {
            s.ip(&[
                "addr",
                "add",
                &format!("{}/16", server_overlay(j)),
                "dev",
                "s0",
            ])?;
            s.ip(&[
                "addr",
                "add",
                &format!("{}/24", server_ingress(j)),
                "dev",
                "s1",
            ])?;
        }
        for (ns, dev) in [
            (c, "c0"),
            (c, "c1"),
            (s, "s0"),
            (s, "s1"),
            (n, "n0"),
            (n, NODE_INGRESS_DEV),
            (n, "n2"),
            (s, "s2"),
        ] {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        c.ip(&[
            "route",
            "add",
            "198.18.1.0/24",
            "via",
            &NODE_UNDERLAY.to_string(),
        ])?;
        c.ip(&[
            "route",
            "add",
            "198.18.2.0/24",
            "via",
            &NODE_UNDERLAY.to_string(),
        ])?;
        s.ip(&["route", "add", "default", "via", &NODE_INGRESS.to_string()])?;
        // Replies of the routed baseline go back the way it came.
        s.ip(&[
            "rule",
            "add",
            "from",
            &SERVER_ROUTED.to_string(),
            "table",
            "100",
        ])?;
        s.ip(&[
            "route",
            "add",
            "default",
            "via",
            &NODE_ROUTED.to_string(),
            "table",
            "100",
        ])?;
        in_netns(&n.name, None, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
            Ok(())
        })?;
        in_netns(&c.name, None, || {
            std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", CLIENT_PORTS)?;
            Ok(())
        })?;
        let fwd = n.ip(&["netconf", "show", "dev", "n0"])?;
        ensure!(
            fwd.contains("forwarding on"),
            "no forwarding in the node: {fwd}"
        );
        Ok(bed)
    }

    fn target(&self, path: Path, services: usize) -> SocketAddrV4 {
        match path {
            Path::Direct => SocketAddrV4::new(server_overlay(0), PORT),
            Path::Vip => SocketAddrV4::new(vip(services.max(1) - 1), PORT),
            Path::Routed => SocketAddrV4::new(SERVER_ROUTED, PORT),
            Path::Mesh => SocketAddrV4::new(NODE_UNDERLAY, published(services.max(1) - 1)),
            Path::MeshSnat => SocketAddrV4::new(NODE_UNDERLAY_2, published(services.max(1) - 1)),
        }
    }
}

struct ConnRow {
    services: usize,
    path: Path,
    rate: f64,
    p50: Duration,
    p99: Duration,
    stalls: usize,
    max: Duration,
    /// (rate, p50) of each round's run.
    rounds: Vec<(f64, Duration)>,
}

struct ConnReport {
    rows: Vec<ConnRow>,
    sync: Vec<(usize, Duration, Duration)>,
    /// What the server saw in the first run of each path.
    checks: Vec<String>,
    conntrack_most: u64,
    quiet: Quiet,
}

fn connections(runs: usize, conns: usize, header: &str) -> Result<String> {
    let bed = Bed::create()?;
    let server = Server::start(&bed.server.name)?;
    let lb = Nftables::default();
    let mut report = ConnReport {
        rows: vec![],
        sync: vec![],
        checks: vec![],
        conntrack_most: 0,
        quiet: Quiet::default(),
    };
    let all = [
        bed.client.name.as_str(),
        bed.server.name.as_str(),
        bed.node.name.as_str(),
    ];
    let servers: BTreeSet<Ipv4Addr> = (0..BACKENDS).map(server_overlay).collect();

    // Reference: no nftables table in the client's namespace (no conntrack there either).
    let mut none = Vec::new();
    for _ in 0..runs {
        report.quiet.wait()?;
        none.push(client_run(
            &bed.client.name,
            bed.target(Path::Direct, 0),
            conns,
        )?);
    }
    push_row(&mut report.rows, 0, Path::Direct, none);

    for n in CONN_SIZES {
        let t = Instant::now();
        let synced = lb.apply_vips(&bed.client.lb(), &vip_table(n, Some(&servers)))?;
        let vip_sync = t.elapsed();
        ensure!(synced == Synced::Full, "programming {n} VIPs: {synced:?}");
        let t = Instant::now();
        let synced = lb.apply_mesh(&bed.node.lb(), &mesh_table(n, false))?;
        let mesh_sync = t.elapsed();
        ensure!(synced == Synced::Full, "programming {n} ports: {synced:?}");
        report.sync.push((n, vip_sync, mesh_sync));
        eprintln!(
            "  {n} services: VIPs {}, mesh {}",
            ms(vip_sync),
            ms(mesh_sync)
        );

        let mut results: Vec<Vec<Run>> = PATHS.iter().map(|_| Vec::new()).collect();
        for round in 0..runs {
            for (p, path) in PATHS.iter().enumerate() {
                // The SNAT variant: the same backends, no longer local.
                if matches!(path, Path::Mesh | Path::MeshSnat) {
                    let s =
                        lb.apply_mesh(&bed.node.lb(), &mesh_table(n, *path == Path::MeshSnat))?;
                    ensure!(
                        matches!(s, Synced::Incremental { .. } | Synced::Unchanged),
                        "switching the mesh's local set: {s:?}"
                    );
                }
                report.conntrack_most = report.conntrack_most.max(conntrack_settle(&all)?);
                report.quiet.wait()?;
                server.take_hits();
                let r = client_run(&bed.client.name, bed.target(*path, n), conns)?;
                let hits = server.take_hits();
                if round == 0 {
                    report.checks.push(check_hits(n, *path, &hits));
                }
                eprintln!(
                    "  {n} services, {}: {:.0}/s, p50 {}, p99 {}",
                    path.label(),
                    r.rate,
                    us(r.p50),
                    us(r.p99)
                );
                results[p].push(r);
            }
        }
        for (path, runs) in PATHS.iter().zip(results) {
            push_row(&mut report.rows, n, *path, runs);
        }
    }
    drop(server);
    Ok(conn_table(&report, runs, conns, header))
}

/// Which backends answered a path's first run, and from which client address: the VIP
/// spreads over all 10 and keeps the client's address; the mesh keeps it for a local
/// backend and shows the node's ingress address to a remote one.
fn check_hits(n: usize, path: Path, hits: &HashMap<(Ipv4Addr, Ipv4Addr), u64>) -> String {
    let (backends, peer): (Vec<Ipv4Addr>, Ipv4Addr) = match path {
        Path::Direct => (vec![server_overlay(0)], CLIENT_OVERLAY),
        Path::Vip => ((0..BACKENDS).map(server_overlay).collect(), CLIENT_OVERLAY),
        Path::Routed => (vec![SERVER_ROUTED], CLIENT_UNDERLAY),
        Path::Mesh => ((0..BACKENDS).map(server_ingress).collect(), CLIENT_UNDERLAY),
        Path::MeshSnat => ((0..BACKENDS).map(server_ingress).collect(), NODE_INGRESS),
    };
    let total: u64 = hits.values().sum();
    let right: u64 = hits
        .iter()
        .filter(|((l, p), _)| backends.contains(l) && *p == peer)
        .map(|(_, c)| *c)
        .sum();
    let counts: Vec<u64> = backends
        .iter()
        .map(|b| hits.get(&(*b, peer)).copied().unwrap_or(0))
        .filter(|c| *c > 0)
        .collect();
    let spread = if counts.len() > 1 {
        format!(
            ", {} to {} each",
            counts.iter().min().unwrap_or(&0),
            counts.iter().max().unwrap_or(&0)
        )
    } else {
        String::new()
    };
    let others: Vec<String> = hits
        .iter()
        .filter(|((l, p), _)| !(backends.contains(l) && *p == peer))
        .map(|((l, p), c)| format!("{c} to {l} from {p}"))
        .collect();
    let wrong = if others.is_empty() {
        String::new()
    } else {
        format!(" (unexpected: {})", others.join(", "))
    };
    format!(
        "- {}, {}: {right} of {total} connections reached {} backend(s) from {peer}{spread}{wrong}.",
        services(n),
        path.label(),
        counts.len(),
    )
}

fn push_row(rows: &mut Vec<ConnRow>, services: usize, path: Path, runs: Vec<Run>) {
    rows.push(ConnRow {
        services,
        path,
        rate: median_f(runs.iter().map(|r| r.rate).collect()),
        p50: median_d(runs.iter().map(|r| r.p50).collect()),
        p99: median_d(runs.iter().map(|r| r.p99).collect()),
        stalls: runs.iter().map(|r| r.stalls).sum(),
        max: runs.iter().map(|r| r.max).max().unwrap_or_default(),
        rounds: runs.iter().map(|r| (r.rate, r.p50)).collect(),
    });
}

/// Median over rounds of (this row's run / the baseline's run of the same round): the runs
/// of a round are back to back, so drift on a shared machine cancels out.
fn paired(row: &ConnRow, base: &ConnRow) -> (f64, f64) {
    let rates = row
        .rounds
        .iter()
        .zip(&base.rounds)
        .map(|(a, b)| a.0 / b.0)
        .collect();
    let p50s = row
        .rounds
        .iter()
        .zip(&base.rounds)
        .map(|(a, b)| a.1.as_secs_f64() / b.1.as_secs_f64())
        .collect();
    (median_f(rates), median_f(p50s))
}

fn conn_table(r: &ConnReport, runs: usize, conns: usize, header: &str) -> String {
    let mut out = format!(
        "{CONN_HEADING}\n\n{header} · `bench_lb` (release build); median of {runs} runs of {} \
         sequential connections (connect, 1 byte each way, close with SO_LINGER 0: a reset, \
         no TIME_WAIT), runs of all paths interleaved, each after the machine is quiet and \
         conntrack below {} entries; client ephemeral ports {CLIENT_PORTS}; the SNAT variant \
         is reached at a second node address, so that a reused client port never meets a \
         conntrack entry of the local variant (which would keep that entry's NAT); client thread pinned to CPU \
         {CLIENT_CPU}, server thread to CPU {SERVER_CPU} (sched_setaffinity); p50/p99: \
         connect() latency within a run, median over runs; vs baseline: median over rounds of \
         the ratio to the baseline's run in the same round; stalls: connects over {} ms in all \
         runs, with the slowest\n\n",
        thousands(conns),
        thousands(CONNTRACK_LIMIT as usize),
        STALL.as_millis()
    );
    out.push_str(
        "| services programmed | path | connections/s | p50 connect | p99 connect | rate vs baseline | p50 vs baseline | stalls |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in &r.rows {
        let base = r
            .rows
            .iter()
            .find(|b| b.services == row.services && b.path == row.path.baseline())
            .unwrap_or(row);
        let label = if row.services == 0 {
            "direct to a backend, no nftables table in the client's namespace".to_string()
        } else {
            row.path.label().to_string()
        };
        let _ = writeln!(
            out,
            "| {} | {label} | {:.0} | {} | {} | {:.2} | {:.2} | {} ({}) |",
            if row.services == 0 {
                "none".into()
            } else {
                thousands(row.services)
            },
            row.rate,
            us(row.p50),
            us(row.p99),
            paired(row, base).0,
            paired(row, base).1,
            row.stalls,
            ms(row.max),
        );
    }
    out.push_str(
        "\nBaselines: the VIP against connecting to a backend directly over the same veth, in \
         the same namespace with the same table loaded; the mesh against connecting to the \
         backend routed through the same node without DNAT.\n",
    );
    let find = |n: usize, p: Path| r.rows.iter().find(|x| x.services == n && x.path == p);
    let (a, b) = (CONN_SIZES[0], CONN_SIZES[CONN_SIZES.len() - 1]);
    if let (Some(v1), Some(vn), Some(m1), Some(mn)) = (
        find(a, Path::Vip),
        find(b, Path::Vip),
        find(a, Path::Mesh),
        find(b, Path::Mesh),
    ) {
        let _ = writeln!(
            out,
            "\nFrom {} to {} services (medians): VIP rate ×{:.2}, p50 ×{:.2}; mesh rate ×{:.2}, p50 ×{:.2}.",
            thousands(a),
            thousands(b),
            vn.rate / v1.rate,
            vn.p50.as_secs_f64() / v1.p50.as_secs_f64(),
            mn.rate / m1.rate,
            mn.p50.as_secs_f64() / m1.p50.as_secs_f64(),
        );
        let (d1, dn) = (find(a, Path::Direct), find(b, Path::Direct));
        if let (Some(d1), Some(dn)) = (d1, dn) {
            let (r1, l1) = paired(v1, d1);
            let (rn, ln) = paired(vn, dn);
            let met = [r1, rn].iter().all(|r| *r >= 0.9) && [l1, ln].iter().all(|l| *l <= 1.1);
            let _ = writeln!(
                out,
                "Bar, a VIP within 10% of direct at {} and at {} services: rate ×{r1:.2} and \
                 ×{rn:.2}, p50 ×{l1:.2} and ×{ln:.2} ({}).",
                thousands(a),
                thousands(b),
                if met { "met" } else { "missed" },
            );
        }
    }
    for (n, vs, ms_) in &r.sync {
        let _ = writeln!(
            out,
            "Programmed {} of 10 backends: VIPs in {}, mesh ports in {} (full syncs).",
            services(*n),
            ms(*vs),
            ms(*ms_)
        );
    }
    out.push_str("\nWhat the server saw in the first run of each path:\n\n");
    for c in &r.checks {
        let _ = writeln!(out, "{c}");
    }
    let _ = writeln!(
        out,
        "Most conntrack entries in a namespace at the start of a run: {} (runs wait below {}).",
        thousands(r.conntrack_most as usize),
        thousands(CONNTRACK_LIMIT as usize)
    );
    let _ = writeln!(
        out,
        "\nRe-run (as root): `target/release/bench_lb --only connections --write BENCHMARKS.md`."
    );
    if r.quiet.busy_starts > 0 {
        let _ = writeln!(
            out,
            "{} runs started on a busy machine (another load did not stop within 30 s).",
            r.quiet.busy_starts
        );
    }
    out
}

// ---- main ----

fn header() -> Result<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nft = run(Command::new("nft").arg("--version"))?;
    let date = run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    Ok(format!(
        "{cores} cores ({cpu}), kernel {}, {} · {}",
        kernel.trim(),
        nft.trim(),
        date.trim()
    ))
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench_lb programs nftables in network namespaces of its own: run it as root");
    }
    let write = arg("--write");
    let runs: usize = arg("--runs")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(RUNS);
    let conns: usize = arg("--conns")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(CONNS);
    let only = arg("--only");
    ensure!(
        runs >= 1 && conns >= 1,
        "--runs and --conns must be at least 1"
    );
    remove_leftovers()?;
    let header = header()?;
    let mut sections = Vec::new();
    let wants = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if let Some(o) = only.as_deref() {
        ensure!(
            [
                "programming",
                "connections",
                "ebpf-programming",
                "ebpf-connections",
                "ebpf-mesh",
                "iptables-programming",
            ]
            .contains(&o),
            "--only {o}: use programming, connections, ebpf-programming, ebpf-connections, \
             ebpf-mesh or iptables-programming"
        );
    }
    if wants("programming") {
        eprintln!("programming:");
        sections.push((PROG_HEADING, programming(runs, &header)?));
    }
    if wants("ebpf-programming") {
        eprintln!("eBPF programming:");
        sections.push((ebpf::EBPF_PROG_HEADING, ebpf::programming(runs, &header)?));
    }
    if wants("iptables-programming") {
        eprintln!("iptables programming:");
        sections.push((
            iptables::IPT_PROG_HEADING,
            iptables::programming(runs, &header)?,
        ));
    }
    if wants("connections") {
        eprintln!("connections:");
        sections.push((CONN_HEADING, connections(runs, conns, &header)?));
    }
    if wants("ebpf-connections") {
        eprintln!("eBPF connections:");
        sections.push((
            ebpf::EBPF_CONN_HEADING,
            ebpf::connections(runs, conns, &header)?,
        ));
    }
    if wants("ebpf-mesh") {
        eprintln!("eBPF mesh:");
        sections.push((
            ebpf::EBPF_MESH_HEADING,
            ebpf::mesh_connections(runs, conns, &header)?,
        ));
    }
    for (heading, text) in &sections {
        println!("{text}");
        if let Some(path) = &write {
            shoal_integration::write_bench_section(path, heading, text)?;
        }
    }
    Ok(())
}
