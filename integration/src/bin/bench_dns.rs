//! The embedded DNS server on one core (needs root, and `scripts/bench-deps.sh`): queries per
//! second and latency for internal names, beside aardvark-dns (Podman's container DNS, in
//! Rust), unbound serving the same names, and a UDP echo that does no DNS work at all (the
//! floor of this machine), all on the same machine in the same run.
//!
//! Everything happens in one network namespace of our own holding only loopback addresses
//! (127.0.0.0/8 and 198.18.0.0/15): no name is forwarded and no packet leaves it. Every
//! server is pinned to CPU 0 (shoal's is a current-thread tokio runtime inside this process)
//! and the load to CPU 1, so the servers' figures are for one core. Runs are interleaved
//! across the servers (round 1 of each, then round 2, ...) so that drift in a shared VM
//! hits all of them alike; each run waits for the machine to be quiet first, and is made
//! again when other processes took CPU meanwhile.
//!
//! Throughput comes from dnsperf (no rate limit, 100 queries outstanding), with the busy
//! share of each core read from /proc/stat. Latency comes from our own client at a fixed
//! offered rate: dnsperf 2.10 prints only the average, and the per-query latencies of its
//! `-v` report include the scheduling of its own send and receive threads on one core
//! (p99 of several ms against any server, also at 20k q/s), so a single busy-polling thread
//! timestamps each query instead; queries lost count as infinitely slow.
//!
//! `cargo build --release -p shoal-integration --bin bench_dns && sudo target/release/bench_dns
//! [--runs 5] [--seconds 10] [--write BENCHMARKS.md]`

use anyhow::{Context, Result, anyhow, bail};
use shoal_api::dispatch::{Backend, NodeView, ServiceEndpoint};
use shoal_api::objects::{
    EndpointMode, NetworkAttachment, Task, TaskSpec, TaskState, TaskStatus, Version, VirtualIp,
};
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PREFIX: &str = "shoalbench-dns";
const SERVICES: u32 = 1000;
const REPLICAS: u32 = 3;
/// Defaults for `--runs` and `--seconds`.
const RUNS: usize = 5;
const SECONDS: u32 = 10;
/// The design bar: at least 100k q/s on one core with p99 under 1 ms.
const BAR_QPS: u32 = 100_000;
/// A light load, for the latency of a server that is not near its limit.
const LIGHT_QPS: u32 = 20_000;
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;
const NETWORK: &str = "benchnet";
/// The asking task's address: aardvark-dns picks the answers by the source address.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 250);
const SHOAL_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const AARDVARK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const UNBOUND_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const ECHO_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
/// A core counts as quiet below this busy share; how long to wait for that.
const QUIET: f64 = 0.10;
const QUIET_PATIENCE: Duration = Duration::from_secs(300);
/// Tries per measurement while other processes disturb it, and how much CPU they may take
/// (an idle machine of this kind spends about 3% of a core on its own daemons).
const ATTEMPTS: usize = 3;
const FOREIGN: f64 = 0.05;
/// How long the latency client waits for the last answers.
const GRACE: Duration = Duration::from_millis(300);
/// A pause in the latency client's busy loop longer than this is a stall of its core.
const STALL: Duration = Duration::from_micros(100);

// ---- the names ----

struct Service {
    name: String,
    vip: Ipv4Addr,
    /// (task id, task name, address)
    tasks: Vec<(String, String, Ipv4Addr)>,
}

/// The main table's services.
fn services() -> Vec<Service> {
    services_of(SERVICES, REPLICAS)
}

/// Service `i` has its VIP at 198.19.0.(2 + (replicas + 1) i) and its tasks right after it.
fn services_of(count: u32, replicas: u32) -> Vec<Service> {
    let base = u32::from(Ipv4Addr::new(198, 19, 0, 0));
    (0..count)
        .map(|i| {
            let name = format!("svc-{:04}", i + 1);
            let first = base + 2 + i * (replicas + 1);
            let tasks = (1..=replicas)
                .map(|slot| {
                    let id = format!("{:025}", u64::from(i) * 100 + u64::from(slot));
                    (
                        id.clone(),
                        format!("{name}.{slot}.{id}"),
                        Ipv4Addr::from(first + slot),
                    )
                })
                .collect();
            Service {
                vip: Ipv4Addr::from(first),
                name,
                tasks,
            }
        })
        .collect()
}

/// What is asked: every service name (its VIP) and its `tasks.` name, type A.
fn query_names(services: &[Service]) -> Vec<String> {
    services
        .iter()
        .flat_map(|s| [s.name.clone(), format!("tasks.{}", s.name)])
        .collect()
}

fn task(id: &str, service: &str, slot: u64, addr: Ipv4Addr) -> Task {
    Task {
        id: id.into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        service_id: service.into(),
        slot,
        node_id: "node-1".into(),
        spec: TaskSpec::default(),
        spec_version: Version::default(),
        status: TaskStatus::default(),
        desired_state: TaskState::Running,
        networks_attachments: vec![NetworkAttachment {
            network_id: NETWORK.into(),
            addresses: vec![format!("{addr}/16")],
            aliases: vec![],
        }],
        restart_count: 0,
    }
}

/// The node's view: the asking task is the only local one; the services' tasks run
/// elsewhere. (Networks are left out: the DNS only reads them to leave ingress out.)
fn node_view(services: &[Service]) -> NodeView {
    node_view_of(services, EndpointMode::Vip, 1)
}

/// The view with `local` tasks on this node (the asking one, "client", first), all on the
/// one network, so that their scopes are equal.
fn node_view_of(services: &[Service], mode: EndpointMode, local: u32) -> NodeView {
    let first = u32::from(CLIENT_IP);
    NodeView {
        tasks: (0..local)
            .map(|i| {
                let id = if i == 0 {
                    "client".to_string()
                } else {
                    format!("local-{i}")
                };
                task(&id, "client", u64::from(i) + 1, Ipv4Addr::from(first - i))
            })
            .collect(),
        endpoints: services
            .iter()
            .map(|s| ServiceEndpoint {
                service_id: s.name.clone(),
                service_name: s.name.clone(),
                mode,
                ports: vec![],
                virtual_ips: vec![VirtualIp {
                    network_id: NETWORK.into(),
                    addr: format!("{}/16", s.vip),
                }],
                backends: s
                    .tasks
                    .iter()
                    .map(|(id, name, addr)| Backend {
                        task_id: id.clone(),
                        task_name: name.clone(),
                        node_id: "node-2".into(),
                        network_id: NETWORK.into(),
                        addr: format!("{addr}/16"),
                        state: TaskState::Running,
                    })
                    .collect(),
                aliases: vec![],
                session_affinity: Default::default(),
            })
            .collect(),
        ..Default::default()
    }
}

/// One network file: the address to listen on, then `id ipv4 ipv6 names` per container.
/// aardvark-dns has no VIPs: a service's VIP is a container carrying the service's name.
fn aardvark_config(services: &[Service]) -> String {
    let mut out = format!("{AARDVARK_IP}\nclient {CLIENT_IP}  client\n");
    for s in services {
        let _ = writeln!(out, "vip{} {}  {}", s.name, s.vip, s.name);
        for (id, name, addr) in &s.tasks {
            let _ = writeln!(out, "{id} {addr}  {name},tasks.{}", s.name);
        }
    }
    out
}

/// Authoritative local data only: the root zone is static, so nothing is ever recursed.
fn unbound_config(services: &[Service], dir: &Path) -> String {
    let mut out = format!(
        "server:\n  interface: {UNBOUND_IP}\n  port: 53\n  do-daemonize: no\n  chroot: \"\"\n  \
         username: \"\"\n  directory: \"{}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  \
         verbosity: 0\n  num-threads: 1\n  do-ip6: no\n  access-control: 0.0.0.0/0 allow\n  \
         module-config: \"iterator\"\n  local-zone: \".\" static\n",
        dir.display()
    );
    for s in services {
        let _ = writeln!(out, "  local-data: \"{}. 5 IN A {}\"", s.name, s.vip);
        for (_, name, addr) in &s.tasks {
            let _ = writeln!(out, "  local-data: \"{name}. 5 IN A {addr}\"");
            let _ = writeln!(out, "  local-data: \"tasks.{}. 5 IN A {addr}\"", s.name);
        }
    }
    out.push_str("remote-control:\n  control-enable: no\n");
    out
}

// ---- the namespace and the servers, removed on drop ----

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a thread of its own inside `netns` on `cpu` (entering a namespace changes
/// the calling thread only).
fn in_netns<T: Send + 'static>(
    netns: &str,
    cpu: usize,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        shoal_integration::bench::enter_netns(&format!("/run/netns/{netns}"), Some(cpu))?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("thread in {PREFIX} panicked"))?
}

/// A network namespace of ours: killed and deleted on drop, with whatever runs in it.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: &str) -> Result<Netns> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        for a in [CLIENT_IP, AARDVARK_IP, UNBOUND_IP, ECHO_IP] {
            ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        }
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `argv` inside the namespace, on `cpu`.
    fn command(&self, cpu: usize, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "taskset", "-c"])
            .arg(cpu.to_string())
            .args(argv);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only what we started runs in it (aardvark-dns's daemon, unbound, dnsperf).
        let me = std::process::id().to_string();
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>()
                    && pid.to_string() != me
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if let Err(e) = run(Command::new("ip").args(["netns", "delete", &self.name])) {
            eprintln!("removing namespace {}: {e}", self.name);
        }
    }
}

/// A child process: killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process that daemonized itself (aardvark-dns) and wrote its pid: killed on drop.
struct Daemon(i32);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A server thread in this process, pinned to the server core; stopped and joined on drop.
struct InProcess {
    stop: Box<dyn FnMut()>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    label: &'static str,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        (self.stop)();
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => eprintln!("{}: {e:#}", self.label),
                Err(_) => eprintln!("{} panicked", self.label),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// shoal's server, as shoald runs it, on a current-thread runtime.
fn start_shoal(view: NodeView, task: &str, netns: &str) -> Result<InProcess> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (task, netns) = (task.to_string(), netns.to_string());
    let thread =
        std::thread::Builder::new()
            .name("shoal-dns".into())
            .spawn(move || -> Result<()> {
                shoal_integration::bench::pin(SERVER_CPU)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let dns = shoal_agent::dns::Dns::default();
                    dns.update(&view);
                    dns.serve(&task, netns);
                    let _ = stopped.await;
                });
                Ok(())
            })?;
    let mut stop = Some(stop);
    Ok(InProcess {
        stop: Box::new(move || {
            if let Some(s) = stop.take() {
                let _ = s.send(());
            }
        }),
        thread: Some(thread),
        label: "shoal's DNS thread",
    })
}

/// The floor: each query comes back with the response bit set and nothing else done.
fn start_echo(netns: &str) -> Result<InProcess> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let netns = netns.to_string();
    let thread =
        std::thread::Builder::new()
            .name("udp-echo".into())
            .spawn(move || -> Result<()> {
                shoal_integration::bench::enter_netns(
                    &format!("/run/netns/{netns}"),
                    Some(SERVER_CPU),
                )?;
                let sock = UdpSocket::bind((ECHO_IP, 53))?;
                sock.set_read_timeout(Some(Duration::from_millis(100)))?;
                let mut buf = [0u8; 1500];
                while !stopping.load(Ordering::Relaxed) {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) if n >= 12 => {
                            buf[2] |= 0x80;
                            let _ = sock.send_to(&buf[..n], from);
                        }
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            })?;
    Ok(InProcess {
        stop: Box::new(move || stop.store(true, Ordering::Relaxed)),
        thread: Some(thread),
        label: "the UDP echo",
    })
}

// ---- queries ----

/// A query for `name`, type A, class IN, recursion desired.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// (rcode, answer count) of `server`'s reply to `name`, asked from the client address.
fn ask(netns: &str, server: Ipv4Addr, name: &str) -> Result<(u8, u16)> {
    ask_full(netns, server, name).map(|(rcode, count, _, _)| (rcode, count))
}

/// (rcode, answer count, TC, length) of `server`'s reply to `name`.
fn ask_full(netns: &str, server: Ipv4Addr, name: &str) -> Result<(u8, u16, bool, usize)> {
    let name = name.to_string();
    in_netns(netns, CLIENT_CPU, move || {
        let sock = UdpSocket::bind((CLIENT_IP, 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        sock.send_to(&dns_query(0x5e11, &name), (server, 53))?;
        let mut buf = [0u8; 1500];
        let n = sock.recv(&mut buf)?;
        if n < 12 || buf[..2] != [0x5e, 0x11] {
            bail!("a malformed reply from {server} for {name}");
        }
        Ok((
            buf[3] & 0x0f,
            u16::from_be_bytes([buf[6], buf[7]]),
            buf[2] & 0x02 != 0,
            n,
        ))
    })
}

/// Waits until `server` answers, then checks a service name and a `tasks.` name.
fn check_answers(
    netns: &str,
    label: &str,
    server: Ipv4Addr,
    alive: impl Fn() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ask(netns, server, "svc-0001").is_err() {
        if !alive() || Instant::now() > deadline {
            bail!("{label} does not answer on {server}:53");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = format!("svc-{SERVICES:04}");
    for (name, want) in [
        ("svc-0001".to_string(), 1),
        (format!("tasks.{last}"), REPLICAS as u16),
        (last, 1),
    ] {
        let got = ask(netns, server, &name)?;
        if got != (0, want) {
            bail!(
                "{label}: {name} answered with rcode {} and {} records, not {want}",
                got.0,
                got.1
            );
        }
    }
    Ok(())
}

// ---- measuring ----

/// Waits (up to `QUIET_PATIENCE`) until neither core is busy with something else.
fn wait_quiet() {
    let deadline = Instant::now() + QUIET_PATIENCE;
    loop {
        let a = shoal_integration::bench::cpu_times();
        std::thread::sleep(Duration::from_millis(700));
        let b = shoal_integration::bench::cpu_times();
        if shoal_integration::bench::busy_share(&a, &b, SERVER_CPU) < QUIET
            && shoal_integration::bench::busy_share(&a, &b, CLIENT_CPU) < QUIET
        {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("the machine stayed busy for {QUIET_PATIENCE:?}: measuring anyway");
            return;
        }
    }
}

/// CPU time (in clock ticks) used so far by other user-space processes, with the children
/// they reaped: everything but this process, its children (unbound, dnsperf) and `ours`.
/// Kernel threads are ours too: softirq work on our packets runs in them.
fn foreign_ticks(ours: &[u32]) -> u64 {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && !ours.contains(pid))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The fields after "(comm)", which may hold spaces: state ppid ... flags ...
            let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            let ppid: u32 = f.get(1)?.parse().ok()?;
            let flags: u64 = f.get(6)?.parse().ok()?;
            const PF_KTHREAD: u64 = 0x0020_0000;
            if ppid == me || flags & PF_KTHREAD != 0 {
                return None;
            }
            // utime stime cutime cstime
            Some(
                (11..15)
                    .filter_map(|i| f.get(i)?.parse::<u64>().ok())
                    .sum::<u64>(),
            )
        })
        .sum()
}

/// Runs one measurement on a quiet machine, and again (up to `ATTEMPTS` times) when other
/// processes took more than `FOREIGN` of a core meanwhile; the flag says whether it stayed
/// clean.
fn clean<T>(what: &str, ours: &[u32], mut f: impl FnMut() -> Result<T>) -> Result<(T, bool)> {
    let mut attempt = 1;
    loop {
        wait_quiet();
        let before = foreign_ticks(ours);
        let start = Instant::now();
        let r = f()?;
        let took = start.elapsed().as_secs_f64();
        // USER_HZ is 100 on Linux.
        let foreign = foreign_ticks(ours).saturating_sub(before) as f64 / 100.0;
        if foreign <= FOREIGN * took {
            return Ok((r, true));
        }
        if attempt >= ATTEMPTS {
            eprintln!("{what}: other processes took {foreign:.1} s of CPU; keeping it, marked");
            return Ok((r, false));
        }
        eprintln!("{what}: other processes took {foreign:.1} s of CPU; measuring again");
        attempt += 1;
    }
}

/// dnsperf at full speed.
#[derive(Default, Clone)]
struct Throughput {
    qps: f64,
    avg_latency: f64,
    not_noerror: u64,
    server_busy: f64,
    client_busy: f64,
    quiet: bool,
}

fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(str::trim)
}

fn parse_dnsperf(out: &str) -> Result<Throughput> {
    let get = |key: &str| {
        field(out, key)
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("dnsperf printed no {key:?}:\n{out}"))
    };
    // "NOERROR 1234 (99.00%), NXDOMAIN 5 (1.00%)"
    let not_noerror = field(out, "Response codes:")
        .unwrap_or_default()
        .split(',')
        .filter_map(|c| {
            let mut w = c.split_whitespace();
            let code = w.next()?;
            let n: u64 = w.next()?.parse().ok()?;
            (code != "NOERROR").then_some(n)
        })
        .sum();
    Ok(Throughput {
        qps: get("Queries per second:")?,
        avg_latency: get("Average Latency (s):")?,
        not_noerror,
        ..Default::default()
    })
}

fn dnsperf(ns: &Netns, dir: &Path, server: Ipv4Addr, secs: u32) -> Result<Throughput> {
    dnsperf_with(ns, &dir.join("queries.txt"), server, secs)
}

fn dnsperf_with(ns: &Netns, queries: &Path, server: Ipv4Addr, secs: u32) -> Result<Throughput> {
    let (server_s, client, secs) = (server.to_string(), CLIENT_IP.to_string(), secs.to_string());
    let argv = [
        "dnsperf",
        "-s",
        &server_s,
        "-a",
        &client,
        "-d",
        queries.to_str().unwrap_or_default(),
        "-l",
        &secs,
        "-t",
        "2",
        "-c",
        "4",
        "-q",
        "100",
    ];
    let before = shoal_integration::bench::cpu_times();
    let out = ns.command(CLIENT_CPU, &argv).output()?;
    let after = shoal_integration::bench::cpu_times();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dnsperf against {server}: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r = parse_dnsperf(&text)?;
    r.server_busy = shoal_integration::bench::busy_share(&before, &after, SERVER_CPU);
    r.client_busy = shoal_integration::bench::busy_share(&before, &after, CLIENT_CPU);
    Ok(r)
}

/// Our client at a fixed offered rate.
#[derive(Default)]
struct Latency {
    answered_qps: f64,
    /// Nanoseconds, sorted.
    latencies: Vec<u32>,
    lost: u64,
    not_noerror: u64,
    /// Share of the run in which the client's loop stood still for more than `STALL`: the
    /// client core did not run (another process, or the hypervisor).
    stalled: f64,
    /// Datagrams the namespace's kernel dropped at a full socket buffer meanwhile.
    buffer_drops: u64,
    /// Busy share of the server core.
    server_busy: f64,
    quiet: bool,
}

impl Latency {
    /// Latency at quantile `q` in seconds, lost queries counting as infinitely slow.
    fn lost_share(&self) -> f64 {
        self.lost as f64 / (self.latencies.len() as u64 + self.lost).max(1) as f64
    }

    fn quantile(&self, q: f64) -> f64 {
        let n = self.latencies.len() as u64 + self.lost;
        let i = ((q * n as f64).ceil() as usize).max(1) - 1;
        self.latencies
            .get(i)
            .map_or(f64::INFINITY, |ns| f64::from(*ns) / 1e9)
    }
}

/// Sends `rate` queries a second for `secs` from one busy-polling thread on the client
/// core, timestamping each send and each answer (matched by the query id).
fn latency(
    ns: &Netns,
    server: Ipv4Addr,
    rate: u32,
    secs: u32,
    names: &[String],
) -> Result<Latency> {
    let mut packets: Vec<Vec<u8>> = names.iter().map(|n| dns_query(0, n)).collect();
    let drops = udp_buffer_drops(ns)?;
    let before = shoal_integration::bench::cpu_times();
    let mut r = in_netns(&ns.name, CLIENT_CPU, move || -> Result<Latency> {
        let sock = UdpSocket::bind((CLIENT_IP, 0))?;
        sock.connect((server, 53))?;
        sock.set_nonblocking(true)?;
        let mut sent_at: Vec<Option<Instant>> = vec![None; 1 << 16];
        let (mut sent, mut outstanding) = (0u64, 0u64);
        let mut r = Latency {
            latencies: Vec::with_capacity(rate as usize * secs as usize),
            ..Default::default()
        };
        let mut buf = [0u8; 1500];
        let kinds = packets.len();
        let start = Instant::now();
        let end = start + Duration::from_secs(secs.into());
        let (mut last, mut stalled) = (start, Duration::ZERO);
        loop {
            let now = Instant::now();
            if now - last > STALL && now < end {
                stalled += now - last;
            }
            last = now;
            if now < end {
                let due = (now - start).as_nanos() as u64 * u64::from(rate) / 1_000_000_000;
                // Catch up after a stall, but keep answering while doing so.
                for _ in 0..32 {
                    if sent >= due {
                        break;
                    }
                    let id = (sent & 0xffff) as u16;
                    let p = &mut packets[sent as usize % kinds];
                    p[..2].copy_from_slice(&id.to_be_bytes());
                    match sock.send(p) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                    // An id still waiting after 65536 more queries is lost.
                    if sent_at[id as usize].replace(Instant::now()).is_some() {
                        r.lost += 1;
                    } else {
                        outstanding += 1;
                    }
                    sent += 1;
                }
            } else if outstanding == 0 || now > end + GRACE {
                break;
            }
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) if n >= 12 => {
                        let id = u16::from_be_bytes([buf[0], buf[1]]);
                        if let Some(t) = sent_at[id as usize].take() {
                            let ns = t.elapsed().as_nanos().min(u32::MAX.into()) as u32;
                            r.latencies.push(ns);
                            outstanding -= 1;
                            if buf[3] & 0x0f != 0 {
                                r.not_noerror += 1;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // An ICMP error from an earlier send: the query is lost anyway.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        r.lost += outstanding;
        r.stalled = stalled.as_secs_f64() / f64::from(secs);
        r.answered_qps = r.latencies.len() as f64 / f64::from(secs);
        Ok(r)
    })?;
    r.server_busy = shoal_integration::bench::busy_share(
        &before,
        &shoal_integration::bench::cpu_times(),
        SERVER_CPU,
    );
    r.latencies.sort_unstable();
    r.buffer_drops = udp_buffer_drops(ns)?.saturating_sub(drops);
    Ok(r)
}

/// `RcvbufErrors` of the namespace's UDP counters.
fn udp_buffer_drops(ns: &Netns) -> Result<u64> {
    let snmp = run(&mut ns.command(CLIENT_CPU, &["cat", "/proc/net/snmp"]))?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("no UDP counters in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| anyhow!("no RcvbufErrors in /proc/net/snmp"))
}

/// The lowest of `v`: the run the machine disturbed least.
fn best(v: impl Iterator<Item = f64>) -> f64 {
    v.fold(f64::INFINITY, f64::min)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn time(s: f64) -> String {
    if !s.is_finite() {
        "lost".into()
    } else if s < 0.001 {
        format!("{:.0} µs", s * 1e6)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

fn version(argv: &[&str], prefix: &str) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .and_then(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "?".into())
}

struct Server {
    label: &'static str,
    addr: Ipv4Addr,
    most: Vec<Throughput>,
    bar: Vec<Latency>,
    light: Vec<Latency>,
}

impl Server {
    fn new(label: &'static str, addr: Ipv4Addr) -> Server {
        Server {
            label,
            addr,
            most: vec![],
            bar: vec![],
            light: vec![],
        }
    }
}

/// Drop does not run when a signal ends the process: on SIGINT, SIGTERM or SIGHUP remove
/// the namespace with everything running in it, and the temporary dir, then exit.
fn clean_up_on_signal(dir: PathBuf) {
    std::thread::spawn(move || {
        let waited = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async {
                    use tokio::signal::unix::{SignalKind, signal};
                    let mut int = signal(SignalKind::interrupt())?;
                    let mut term = signal(SignalKind::terminate())?;
                    let mut hup = signal(SignalKind::hangup())?;
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                    Ok(())
                })
            });
        if let Err(e) = waited {
            eprintln!("no cleanup on signals: {e:#}");
            return;
        }
        eprintln!("interrupted: removing {PREFIX}-* and {}", dir.display());
        shoal_integration::testbed::remove_leftovers(PREFIX);
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(130);
    });
}

// ---- shoal alone: scope sizes, endpoint modes, answer sizes ----

struct Scenario {
    label: &'static str,
    view: NodeView,
    names: Vec<String>,
}

fn scenarios() -> Vec<Scenario> {
    let vip_names = |s: &[Service]| s.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let tasks_names = |s: &[Service]| {
        s.iter()
            .map(|s| format!("tasks.{}", s.name))
            .collect::<Vec<_>>()
    };
    let one = services_of(1, REPLICAS);
    let many = services_of(10_000, REPLICAS);
    let main = services();
    let wide = services_of(100, 100);
    vec![
        Scenario {
            label: "1 service on the network, VIP",
            view: node_view_of(&one, EndpointMode::Vip, 1),
            names: vip_names(&one),
        },
        Scenario {
            label: "10,000 services on the network, VIP",
            view: node_view_of(&many, EndpointMode::Vip, 1),
            names: vip_names(&many),
        },
        Scenario {
            label: "1,000 services, VIP, one local task",
            view: node_view_of(&main, EndpointMode::Vip, 1),
            names: vip_names(&main),
        },
        Scenario {
            label: "1,000 services, VIP, 50 local tasks (50 scopes)",
            view: node_view_of(&main, EndpointMode::Vip, 50),
            names: vip_names(&main),
        },
        Scenario {
            label: "1,000 services, dnsrr (3 tasks each)",
            view: node_view_of(&main, EndpointMode::Dnsrr, 1),
            names: vip_names(&main),
        },
        Scenario {
            label: "tasks.<svc>, 3 tasks (1,000 services)",
            view: node_view_of(&main, EndpointMode::Vip, 1),
            names: tasks_names(&main),
        },
        Scenario {
            label: "tasks.<svc>, 100 tasks (100 services), UDP without EDNS",
            view: node_view_of(&wide, EndpointMode::Vip, 1),
            names: tasks_names(&wide),
        },
    ]
}

/// One table row per scenario: shoal alone, started afresh on the server core with the
/// scenario's view; dnsperf as in the main table, `runs` times.
fn run_scenarios(ns: &Netns, dir: &Path, ours: &[u32], runs: usize, secs: u32) -> Result<String> {
    let mut table = String::new();
    for sc in scenarios() {
        // The view update as shoald makes it, timed on this (client) core.
        let dns = shoal_agent::dns::Dns::default();
        let started = Instant::now();
        dns.update(&sc.view);
        let update = started.elapsed().as_secs_f64();
        let mut tables: Vec<Arc<shoal_agent::dns::fast::Table>> = vec![];
        for t in &sc.view.tasks {
            if let Some(tb) = dns.table(&t.id)
                && !tables.iter().any(|k| Arc::ptr_eq(k, &tb))
            {
                tables.push(tb);
            }
        }
        drop(dns);
        let queries = dir.join("scenario.txt");
        let file: String = sc.names.iter().map(|n| format!("{n} A\n")).collect();
        std::fs::write(&queries, file)?;
        let _shoal = start_shoal(sc.view, "client", &ns.name)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = loop {
            match ask_full(&ns.name, SHOAL_IP, &sc.names[0]) {
                Ok(got) => break got,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(e.context(format!("{}: shoal does not answer", sc.label))),
            }
        };
        let mut got = vec![];
        for round in 1..=runs {
            let what = format!("{}, round {round}", sc.label);
            let (mut r, quiet) = clean(&what, ours, || dnsperf_with(ns, &queries, SHOAL_IP, secs))?;
            r.quiet = quiet;
            if r.not_noerror > 0 {
                bail!("{}: {} answers were not NOERROR", sc.label, r.not_noerror);
            }
            eprintln!(
                "{what}: {:.0} q/s (CPU {SERVER_CPU} {:.0}%, CPU {CLIENT_CPU} {:.0}%)",
                r.qps,
                r.server_busy * 100.0,
                r.client_busy * 100.0
            );
            got.push(r);
        }
        let m = |f: &dyn Fn(&Throughput) -> f64| median(got.iter().map(f).collect());
        let _ = writeln!(
            table,
            "| {} | {} | {}{}, {} bytes | {:.1} ms | {} | {:.0} | {:.0}% / {:.0}% | {:.0} |",
            sc.label,
            sc.names.len(),
            probe.1,
            if probe.2 { " (TC)" } else { "" },
            probe.3,
            update * 1e3,
            tables.len(),
            m(&|r| r.qps),
            m(&|r| r.server_busy) * 100.0,
            m(&|r| r.client_busy) * 100.0,
            m(&|r| r.qps / r.server_busy.max(0.01)),
        );
    }
    Ok(table)
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench_dns builds a network namespace: run it as root");
    }
    for tool in ["dnsperf", "unbound", AARDVARK, "taskset"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!("{tool} is missing: run scripts/bench-deps.sh");
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if cores < 2 {
        bail!("bench_dns needs two cores: one for the servers, one for the load");
    }
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let write = arg("--write");
    let runs: usize = arg("--runs").map_or(Ok(RUNS), |v| v.parse())?;
    let seconds: u32 = arg("--seconds").map_or(Ok(SECONDS), |v| v.parse())?;
    let removed = shoal_integration::testbed::remove_leftovers(PREFIX);
    if removed > 0 {
        eprintln!("removed {removed} namespace(s) left by an earlier run");
    }
    // This thread only waits and reads files: keep it off the server core.
    shoal_integration::bench::pin(CLIENT_CPU)?;

    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-dns-")
        .tempdir()?;
    clean_up_on_signal(dir.path().to_path_buf());
    let services = services();
    let names = query_names(&services);
    let query_file: String = names.iter().map(|n| format!("{n} A\n")).collect();
    std::fs::write(dir.path().join("queries.txt"), query_file)?;
    let aardvark_dir = dir.path().join("aardvark");
    std::fs::create_dir(&aardvark_dir)?;
    std::fs::write(aardvark_dir.join(NETWORK), aardvark_config(&services))?;
    let unbound_conf = dir.path().join("unbound.conf");
    std::fs::write(&unbound_conf, unbound_config(&services, dir.path()))?;

    let ns = Netns::create(&format!("{PREFIX}-1"))?;

    let _shoal = start_shoal(node_view(&services), "client", &ns.name)?;
    check_answers(&ns.name, "shoal", SHOAL_IP, || true)?;

    // aardvark-dns forks into the background once it is ready and writes its pid.
    let aardvark_conf = aardvark_dir.to_string_lossy().to_string();
    run(&mut ns.command(
        SERVER_CPU,
        &[AARDVARK, "--config", &aardvark_conf, "-p", "53", "run"],
    ))?;
    let pid: i32 = std::fs::read_to_string(aardvark_dir.join("aardvark.pid"))?
        .trim()
        .parse()?;
    let _aardvark = Daemon(pid);
    check_answers(&ns.name, "aardvark-dns", AARDVARK_IP, || {
        Path::new(&format!("/proc/{pid}")).exists()
    })?;

    let log_path = dir.path().join("unbound.log");
    let log = std::fs::File::create(&log_path)?;
    let unbound_conf = unbound_conf.to_string_lossy().to_string();
    let _unbound = Proc(
        ns.command(SERVER_CPU, &["unbound", "-d", "-c", &unbound_conf])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let unbound_pid = _unbound.0.id();
    check_answers(&ns.name, "unbound", UNBOUND_IP, || {
        Path::new(&format!("/proc/{unbound_pid}")).exists()
    })
    .with_context(|| std::fs::read_to_string(&log_path).unwrap_or_default())?;

    let _echo = start_echo(&ns.name)?;
    let ours = [pid as u32];

    let mut servers = [
        Server::new("shoal (embedded DNS)", SHOAL_IP),
        Server::new("aardvark-dns", AARDVARK_IP),
        Server::new("unbound", UNBOUND_IP),
        Server::new("UDP echo (floor: no DNS work)", ECHO_IP),
    ];
    for round in 1..=runs {
        for s in &mut servers {
            let what = format!("round {round}, {}", s.label);
            let (mut most, clean_most) =
                clean(&what, &ours, || dnsperf(&ns, dir.path(), s.addr, seconds))?;
            most.quiet = clean_most;
            let (mut bar, clean_bar) = clean(&what, &ours, || {
                latency(&ns, s.addr, BAR_QPS, seconds, &names)
            })?;
            bar.quiet = clean_bar;
            let (mut light, clean_light) = clean(&what, &ours, || {
                latency(&ns, s.addr, LIGHT_QPS, seconds, &names)
            })?;
            light.quiet = clean_light;
            eprintln!(
                "round {round}: {}: {:.0} q/s (CPU {SERVER_CPU} {:.0}%, CPU {CLIENT_CPU} {:.0}%); \
                 at {BAR_QPS} q/s: {:.0} answered, CPU {SERVER_CPU} {:.0}%, {} lost ({} at full \
                 buffers), p99 {}, client stalled {:.1}%; \
                 at {LIGHT_QPS} q/s: p99 {}, client stalled {:.1}%{}",
                s.label,
                most.qps,
                most.server_busy * 100.0,
                most.client_busy * 100.0,
                bar.answered_qps,
                bar.server_busy * 100.0,
                bar.lost,
                bar.buffer_drops,
                time(bar.quantile(0.99)),
                bar.stalled * 100.0,
                time(light.quantile(0.99)),
                light.stalled * 100.0,
                if most.quiet && bar.quiet && light.quiet {
                    ""
                } else {
                    " (disturbed)"
                },
            );
            s.most.push(most);
            s.bar.push(bar);
            s.light.push(light);
        }
    }

    // The main table's shoal is done; the scenarios start their own on the same address.
    drop(_shoal);
    let scenario_rows = run_scenarios(&ns, dir.path(), &ours, runs, seconds)?;

    let baseline = median(servers[2].most.iter().map(|r| r.qps).collect());
    let p99_at_bar = |s: &Server| median(s.bar.iter().map(|r| r.quantile(0.99)).collect());
    let verdict = {
        let (shoal, echo) = (&servers[0], &servers[3]);
        let qps = median(shoal.most.iter().map(|r| r.qps).collect());
        let p99 = p99_at_bar(shoal);
        format!(
            "Against the bar: shoal answered {qps:.0} q/s on one core ({}), and at {BAR_QPS} \
             q/s its p99 was {} ({}; unbound {}, the echo {}).",
            if qps >= f64::from(BAR_QPS) {
                "met"
            } else {
                "short"
            },
            time(p99),
            if p99 < 0.001 { "met" } else { "not met" },
            time(p99_at_bar(&servers[2])),
            time(p99_at_bar(echo)),
        )
    };
    // Issue 18's bars, all against servers measured in this run.
    let issue_bars = {
        let (shoal, unbound, echo) = (&servers[0], &servers[2], &servers[3]);
        let qps = |s: &Server| median(s.most.iter().map(|r| r.qps).collect());
        let per_core = |s: &Server| {
            median(
                s.most
                    .iter()
                    .map(|r| r.qps / r.server_busy.max(0.01))
                    .collect(),
            )
        };
        let cpu = |s: &Server| median(s.bar.iter().map(|r| r.server_busy).collect());
        let met = |ok: bool| if ok { "met" } else { "not met" };
        format!(
            "Bars of issue 18 (same run): q/s at least 1.05x unbound's: {:.2}x ({}); at least \
             0.9x the echo's: {:.2}x ({}); CPU {SERVER_CPU} at {BAR_QPS} q/s at most unbound's: \
             {:.0}% vs {:.0}% ({}); p99 at {BAR_QPS} q/s at most unbound's: {} vs {} ({}). Per \
             busy server core: shoal {:.0}, unbound {:.0}, echo {:.0} q/s.",
            qps(shoal) / qps(unbound),
            met(qps(shoal) >= 1.05 * qps(unbound)),
            qps(shoal) / qps(echo),
            met(qps(shoal) >= 0.9 * qps(echo)),
            cpu(shoal) * 100.0,
            cpu(unbound) * 100.0,
            met(cpu(shoal) <= cpu(unbound)),
            time(p99_at_bar(shoal)),
            time(p99_at_bar(unbound)),
            met(p99_at_bar(shoal) <= p99_at_bar(unbound)),
            per_core(shoal),
            per_core(unbound),
            per_core(echo),
        )
    };
    let mut table = String::new();
    let (mut noisy, mut errors) = (0, 0);
    let mut stalls = vec![];
    let (lost, drops): (u64, u64) = servers
        .iter()
        .flat_map(|s| s.bar.iter().chain(&s.light))
        .fold((0, 0), |(l, d), r| (l + r.lost, d + r.buffer_drops));
    for s in &servers {
        let qps = median(s.most.iter().map(|r| r.qps).collect());
        let m = |f: &dyn Fn(&Throughput) -> f64| median(s.most.iter().map(f).collect());
        let b = |f: &dyn Fn(&Latency) -> f64| median(s.bar.iter().map(f).collect());
        let l = |f: &dyn Fn(&Latency) -> f64| median(s.light.iter().map(f).collect());
        noisy += s.most.iter().filter(|r| !r.quiet).count()
            + s.bar.iter().chain(&s.light).filter(|r| !r.quiet).count();
        if !s.label.starts_with("UDP echo") {
            errors += s.most.iter().map(|r| r.not_noerror).sum::<u64>()
                + s.bar
                    .iter()
                    .chain(&s.light)
                    .map(|r| r.not_noerror)
                    .sum::<u64>();
        }
        stalls.extend(s.bar.iter().chain(&s.light).map(|r| r.stalled));
        let _ = writeln!(
            table,
            "| {} | {:.0} | {} | {:.0}% / {:.0}% | {:.0} | {:.0} | {:.0}% | {:.2}% | {} | {} ({}) | {} ({}) | {:.2} |",
            s.label,
            qps,
            time(m(&|r| r.avg_latency)),
            m(&|r| r.server_busy) * 100.0,
            m(&|r| r.client_busy) * 100.0,
            m(&|r| r.qps / r.server_busy.max(0.01)),
            b(&|r| r.answered_qps),
            b(&|r| r.server_busy) * 100.0,
            b(&|r| r.lost_share()) * 100.0,
            time(b(&|r| r.quantile(0.5))),
            time(b(&|r| r.quantile(0.99))),
            time(best(s.bar.iter().map(|r| r.quantile(0.99)))),
            time(l(&|r| r.quantile(0.99))),
            time(best(s.light.iter().map(|r| r.quantile(0.99)))),
            qps / baseline,
        );
    }
    if errors > 0 {
        bail!("{errors} answers were not NOERROR: the servers do not serve the same names");
    }

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let date = run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let versions = format!(
        "dnsperf {}, aardvark-dns {}, unbound {}",
        version(&["dnsperf", "-h"], "Version "),
        version(&[AARDVARK, "--version"], "aardvark-dns "),
        version(&["unbound", "-V"], "Version "),
    );
    let heading = "## DNS: internal names on one core";
    let out = format!(
        "{heading}\n\n\
         {cores} cores ({cpu}), kernel {} · {} · `bench_dns` (release build), {versions}; \
         median of {runs} interleaved runs of {seconds} s each{}\n\n\
         {SERVICES} services x {REPLICAS} tasks on one overlay network. Queries: every \
         service name (its VIP) and every `tasks.<service>` ({REPLICAS} A records), type A, \
         UDP over loopback in a namespace of its own. Every server on CPU {SERVER_CPU} \
         (shoal: its DNS server on a current-thread tokio runtime inside `bench_dns`; \
         unbound: `num-threads: 1`, local data only; aardvark-dns: its own runtime, every \
         thread on CPU {SERVER_CPU}; the echo: a thread that sends each query back), the load \
         on CPU {CLIENT_CPU}.\n\n\
         - most: dnsperf `-c 4 -q 100`, no rate limit. Busy shares from /proc/stat (CPU \
         {SERVER_CPU} also carries the kernel's work of delivering the answers over loopback). \
         When CPU {CLIENT_CPU} is the busy one, dnsperf is the limit (see the echo), and q/s per \
         busy server core (q/s ÷ CPU {SERVER_CPU} busy) estimates the server's own ceiling.\n\
         - latency: one busy-polling client thread at a fixed offered rate timestamps each \
         query (dnsperf 2.10 reports only the average, and its per-query `-v` times include \
         the scheduling of its own two threads on one core: p99 of several ms against any \
         server). The columns from \"answered\" to the first p99 are for {BAR_QPS} q/s \
         offered. Lost queries count as infinitely slow (\"lost\" in a cell: more than the \
         quantile's share was lost); {drops} of the {lost} lost were dropped by the kernel at \
         the server's full socket buffer. In brackets: the best of the runs.\n\
         - This VM stalls: the latency client's own core stood still (gaps over \
         {STALL:?} in its loop) for a median {:.1}% of each run; the echo's p99 is what is \
         left for a server that does no work at all.\n\
         - Bar: at least {BAR_QPS} q/s on one core with p99 under 1 ms (CoreDNS: 33.7k q/s \
         on 2 vCPU).\n\n\
         | server | q/s, most | avg latency, most | busy CPU {SERVER_CPU} / CPU {CLIENT_CPU} | \
         q/s per busy server core | answered q/s at {BAR_QPS} offered | CPU {SERVER_CPU} busy | \
         lost | p50 | p99 \
         (best) | p99 at {LIGHT_QPS} q/s (best) | q/s vs unbound |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n{table}\n{verdict}\n\n{issue_bars}\n\n\
         shoal alone across scopes and answers (its fast path: internal names answered in \
         batches from a table of pre-encoded answers per scope, shared by tasks whose names \
         are equal), dnsperf as above, median of {runs} runs; each row starts a fresh server \
         with its view. \"answer\" is the reply to the first name over UDP without EDNS; the \
         view update (every local task's scope and answer table, on CPU {CLIENT_CPU}) is timed \
         once.\n\n\
         | scope | names asked | answer | view update | tables | q/s, most | busy CPU \
         {SERVER_CPU} / CPU {CLIENT_CPU} | q/s per busy server core |\n\
         |---|---|---|---|---|---|---|---|\n{scenario_rows}\n\
         Re-run (as root): `scripts/bench-deps.sh && cargo build --release -p \
         shoal-integration --bin bench_dns && target/release/bench_dns --write BENCHMARKS.md`\n",
        kernel.trim(),
        date.trim(),
        if noisy > 0 {
            format!("; {noisy} measurement(s) disturbed by other processes after {ATTEMPTS} tries")
        } else {
            String::new()
        },
        median(stalls) * 100.0,
    );
    println!("{out}");
    if let Some(path) = write {
        shoal_integration::write_bench_section(&path, heading, &out)?;
    }
    Ok(())
}
