//! Overlay, VIP and DNS convergence on the namespace testbed (3 nodes, needs root): from
//! `service scale` acknowledged to the new task reachable over the overlay from a task on
//! every other node, and through the service's VIP and `tasks.<service>` from a task on
//! every node; from a task's death to its FDB entries gone on every other node, and to its
//! address gone from every node's load balancer (the kernel's nft map) and DNS. Beside
//! each, the control-plane time alone (task reported running / failed through the API).
//!
//! `cargo build --release && sudo target/release/bench_overlay [--write BENCHMARKS.md]`

use anyhow::{Result, anyhow, bail};
use shoal_api::control::{ControlRequest as C, ControlResponse as R, TaskView};
use shoal_api::objects::TaskState;
use shoal_integration::bin_dir;
use shoal_integration::testbed::Testbed;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 7;
const SERVER: &str = "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0',7000)); s.listen()\nwhile True:\n    c,a=s.accept(); c.close()";

fn shoal(host: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(bin_dir().join("shoal"))
        .arg("-H")
        .arg(host)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("shoal {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tasks(rt: &tokio::runtime::Runtime, host: &str, service: &str) -> Vec<TaskView> {
    rt.block_on(async {
        let Ok(mut c) = shoal_api::client::connect_local(host).await else {
            return vec![];
        };
        let req = shoal_api::local::LocalRequest::Control(C::TaskList {
            service: Some(service.into()),
            node: None,
        });
        match shoal_api::client::call_local(&mut c, &req).await {
            Ok(shoal_api::local::LocalResponse::Control(R::Tasks(t))) => t,
            _ => vec![],
        }
    })
}

fn ip_of(t: &TaskView) -> String {
    t.task.networks_attachments[0].addresses[0]
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn pid_of(t: &TaskView) -> u32 {
    t.task
        .status
        .container_status
        .as_ref()
        .map(|c| c.pid)
        .unwrap_or(0)
}

fn connects(from_pid: u32, ip: &str) -> bool {
    let code = format!("import socket\nsocket.create_connection(('{ip}',7000),timeout=0.3)");
    Command::new("nsenter")
        .args(["-t", &from_pid.to_string(), "-n", "python3", "-c", &code])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// From inside a task: the VIP answers (one replica: only once the new task is programmed;
/// before, the VIP refuses) and `tasks.target` lists `ip`.
fn via_vip_and_dns(from_pid: u32, vip: &str, ip: &str) -> bool {
    let code = format!(
        "import socket\nsocket.create_connection(('{vip}',7000),timeout=0.3)\n\
         assert '{ip}' in socket.gethostbyname_ex('tasks.target')[2]"
    );
    Command::new("nsenter")
        .args([
            "-t",
            &from_pid.to_string(),
            "-n",
            "-m",
            "python3",
            "-c",
            &code,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether a task's load balancer (the kernel's map) or DNS still holds `ip`.
fn lb_or_dns_has(from_pid: u32, ip: &str) -> bool {
    let pid = from_pid.to_string();
    let in_lb = Command::new("nsenter")
        .args([
            "-t", &pid, "-n", "nft", "-j", "list", "map", "ip", "shoal", "backends",
        ])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("\"{ip}\"")));
    let code = format!(
        "import socket\ntry:\n    print('{ip}' in socket.gethostbyname_ex('tasks.target')[2])\nexcept Exception:\n    print(False)"
    );
    let in_dns = Command::new("nsenter")
        .args(["-t", &pid, "-n", "-m", "python3", "-c", &code])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "True");
    in_lb || in_dns
}

/// `f` for every pid at once (the probes start processes; run them side by side).
fn all(pids: &[u32], f: impl Fn(u32) -> bool + Sync) -> bool {
    std::thread::scope(|s| {
        let handles: Vec<_> = pids.iter().map(|p| s.spawn(|| f(*p))).collect();
        handles.into_iter().all(|h| h.join().unwrap_or(false))
    })
}

fn fdb_has(node_ns: &str, mac: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", node_ns, "bridge", "fdb", "show"])
        .output()
        // The vxlan's own entries (with a remote `dst`), not what a bridge port learned.
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.contains(mac) && l.contains(" dst "))
        })
}

fn mac(ip: &str) -> String {
    let o: Vec<u8> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(start.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench_overlay builds network namespaces: run it as root");
    }
    let write = std::env::args().skip_while(|a| a != "--write").nth(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let root = tempfile::tempdir()?;
    let mut bed = Testbed::create("shbench", 3, root.path())?;
    let shoald = bin_dir().join("shoald");
    for i in 0..3 {
        bed.start(i, &shoald, &[])?;
    }
    bed.form_swarm_blocking(1)?;
    let h = bed.nodes[0].host();
    shoal(
        &h,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.50.0/24",
            "app",
        ],
    )?;
    // One probe task per node, and the service under test.
    shoal(
        &h,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "probe",
            "--mode",
            "global",
            "--network",
            "app",
            "python3",
            "-c",
            SERVER,
        ],
    )?;
    shoal(
        &h,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "target",
            "--replicas",
            "0",
            "--network",
            "app",
            "python3",
            "-c",
            SERVER,
        ],
    )?;
    let probes = {
        let mut p = Vec::new();
        until("3 running probes", Duration::from_secs(30), || {
            p = tasks(&rt, &h, "probe")
                .into_iter()
                .filter(|t| t.task.status.state == TaskState::Running && pid_of(t) != 0)
                .collect();
            p.len() == 3
        })?;
        p
    };
    let vip = {
        let v: serde_json::Value =
            serde_json::from_str(&shoal(&h, &["service", "inspect", "target"])?)?;
        v[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .ok_or_else(|| anyhow!("target has no VIP"))?
            .to_string()
    };
    let every: Vec<u32> = probes.iter().map(pid_of).collect();
    let (mut api_up, mut net_up, mut api_down, mut net_down) = (vec![], vec![], vec![], vec![]);
    let (mut lb_up, mut lb_down) = (vec![], vec![]);
    for _ in 0..RUNS {
        shoal(&h, &["service", "scale", "target=1"])?;
        let acked = Instant::now();
        let mut new = None;
        until("the new task running", Duration::from_secs(20), || {
            new = tasks(&rt, &h, "target").into_iter().find(|t| {
                t.task.status.state == TaskState::Running
                    && t.task.desired_state == TaskState::Running
            });
            new.is_some()
        })?;
        api_up.push(acked.elapsed());
        let t = new.ok_or_else(|| anyhow!("no task"))?;
        let ip = ip_of(&t);
        let others: Vec<u32> = probes
            .iter()
            .filter(|p| p.node_name != t.node_name)
            .map(pid_of)
            .collect();
        until(
            "reachable from the other nodes",
            Duration::from_secs(20),
            || all(&others, |pid| connects(pid, &ip)),
        )?;
        net_up.push(acked.elapsed());
        until(
            "through the VIP and DNS from every node",
            Duration::from_secs(20),
            || all(&every, |pid| via_vip_and_dns(pid, &vip, &ip)),
        )?;
        lb_up.push(acked.elapsed());

        // Death: SIGKILL the task's process.
        let killed = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid_of(&t) as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let other_ns: Vec<String> = bed
            .nodes
            .iter()
            .filter(|n| n.name != t.node_name)
            .map(|n| n.netns.clone())
            .collect();
        let m = mac(&ip);
        until("the killed task failed", Duration::from_secs(20), || {
            tasks(&rt, &h, "target")
                .iter()
                .any(|x| x.task.id == t.task.id && x.task.status.state.is_terminal())
        })?;
        api_down.push(killed.elapsed());
        until("its FDB entries gone", Duration::from_secs(20), || {
            other_ns.iter().all(|ns| !fdb_has(ns, &m))
        })?;
        net_down.push(killed.elapsed());
        until("out of every LB and DNS", Duration::from_secs(20), || {
            all(&every, |pid| !lb_or_dns_has(pid, &ip))
        })?;
        lb_down.push(killed.elapsed());

        shoal(&h, &["service", "scale", "target=0"])?;
        until("target scaled to 0", Duration::from_secs(20), || {
            tasks(&rt, &h, "target")
                .iter()
                .all(|x| x.task.status.state.is_terminal())
        })?;
        std::thread::sleep(Duration::from_millis(300));
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()?
            .stdout,
    )?;
    let (au, nu, ad, nd) = (
        median(api_up),
        median(net_up),
        median(api_down),
        median(net_down),
    );
    let (lu, ld) = (median(lb_up), median(lb_down));
    let out = format!(
        "## Overlay convergence (3-node namespace testbed)\n\n\
         {} cores, kernel {} · {} · `bench_overlay` (release build), median of {RUNS} runs; \
         the replacement a restart policy starts after a death is not counted\n\n\
         | event | control plane alone | every other node's dataplane | ratio |\n|---|---|---|---|\n\
         | `service scale` acknowledged → new task | running in the API: {} | reachable over VXLAN from a task on each other node: {} | {:.2} |\n\
         | task SIGKILLed → | failed in the API: {} | its FDB entries gone on each other node: {} | {:.2} |\n\
         | `service scale` acknowledged → new task | running in the API: {} | answering through the VIP and listed by `tasks.target` DNS from a task on every node: {} | {:.2} |\n\
         | task SIGKILLed → | failed in the API: {} | out of every node's load balancer (nft map) and DNS: {} | {:.2} |\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel.trim(),
        date.trim(),
        ms(au),
        ms(nu),
        nu.as_secs_f64() / au.as_secs_f64(),
        ms(ad),
        ms(nd),
        nd.as_secs_f64() / ad.as_secs_f64(),
        ms(au),
        ms(lu),
        lu.as_secs_f64() / au.as_secs_f64(),
        ms(ad),
        ms(ld),
        ld.as_secs_f64() / ad.as_secs_f64(),
    );
    println!("{out}");
    if let Some(path) = write {
        shoal_integration::write_bench_section(&path, "## Overlay convergence", &out)?;
    }
    Ok(())
}
