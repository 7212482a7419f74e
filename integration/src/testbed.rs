//! A multi-node testbed on one machine: every node is a network namespace wired to an
//! underlay bridge (in a namespace of its own) with an address from 198.18.0.0/16, and runs
//! its own `shoald`. Built with iproute2; removed on drop, also on panic, and leftovers of
//! a crashed run are removed by name prefix before a new one starts.

use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Underlay address of node `i` (1-based).
pub fn node_addr(i: usize) -> String {
    format!("198.18.{}.{}", i / 250, i % 250)
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn netns_list() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in a namespace, then deletes it.
fn remove_netns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = ip(&["netns", "delete", name]);
}

/// Gives `netns` an `eth0` with `addr`/16 whose peer `port` is on the underlay bridge.
fn plug_into_underlay(underlay: &str, netns: &str, port: &str, addr: &str) -> Result<()> {
    ip(&[
        "-n", underlay, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns,
    ])?;
    ip(&["-n", underlay, "link", "set", port, "master", "br0", "up"])?;
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        netns,
        "addr",
        "add",
        &format!("{addr}/16"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", netns, "link", "set", "eth0", "up"])?;
    Ok(())
}

/// Stops the tasks and removes the task namespaces of the nodes whose state lives under
/// `root` (node dirs `root/node-N/state`).
pub fn remove_tasks_under(root: &Path) {
    crate::kill_tasks_under(root);
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            shoal_agent::netns::Sandboxes::new(&e.path().join("state")).remove_all();
        }
    }
}

/// Removes what an earlier run with this prefix left behind.
pub fn remove_leftovers(prefix: &str) -> usize {
    let stale: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    for n in &stale {
        remove_netns(n);
    }
    remove_bpf_dirs(prefix);
    stale.len()
}

/// Each node's eBPF pin directory: its maps and the links holding its programs attached.
pub fn bpf_dir(prefix: &str, node: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{prefix}-{node}"))
}

/// Unpins the eBPF dataplanes of a testbed's nodes, which detaches their programs.
fn remove_bpf_dirs(prefix: &str) {
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
            {
                shoal_agent::lb::ebpf::SockLb::unpin_all(&e.path());
            }
        }
    }
}

/// Removes cgroup directories made for the nodes (`{node}` in a `--cgroup` flag), children
/// first; a directory still holding a process stays.
fn remove_cgroups(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = std::fs::remove_dir(d);
        if let Some(parent) = d.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Whether this process may build namespaces; tests skip without it, except under CI.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs root (network namespaces); CI runs as root, so this is a failure");
    }
    eprintln!("skipping {test}: it needs root to create network namespaces");
    false
}

/// The local test image the Docker tests run (scripts/test-image.sh builds it).
pub const TEST_IMAGE: &str = "shoal-test-busybox:latest";

/// Whether a Docker engine answers and holds the test image; tests skip without them,
/// except under CI, where their absence is a failure.
pub fn require_docker(test: &str) -> bool {
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    let image = engine
        && Command::new("docker")
            .args(["image", "inspect", TEST_IMAGE])
            .output()
            .is_ok_and(|o| o.status.success());
    if image {
        return true;
    }
    let why = if engine {
        format!("the image {TEST_IMAGE} is missing (bash scripts/test-image.sh builds it)")
    } else {
        "no Docker engine answers".to_string()
    };
    missing(test, &why)
}

/// A test's answer to something it needs being absent: skip, saying why; under CI, fail.
pub fn missing(test: &str, why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}, and CI=true does not allow skipping");
    }
    eprintln!("skipping {test}: {why}");
    false
}

pub struct TestbedNode {
    pub name: String,
    pub netns: String,
    pub addr: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Docker's Engine API of this node (`shoald --engine-api-socket`).
    pub engine_socket: PathBuf,
    /// Environment given to this node's shoald when it starts (e.g. libfaketime's).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl TestbedNode {
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `DOCKER_HOST` for this node's Engine API.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.engine_socket.display())
    }
}

pub struct Testbed {
    pub prefix: String,
    pub underlay: String,
    pub nodes: Vec<TestbedNode>,
    pub root: PathBuf,
    /// Keep namespaces and daemons when dropped (for `shoal dev up`).
    detached: bool,
    /// Other namespaces made for this testbed (outside clients).
    extra: Vec<String>,
    /// Per-node cgroups given to shoald with `--cgroup`.
    cgroups: Vec<PathBuf>,
}

impl Testbed {
    /// Builds `count` node namespaces under `root` with names starting with `prefix`.
    pub fn create(prefix: &str, count: usize, root: &Path) -> Result<Testbed> {
        if count == 0 || count > 250 {
            bail!("a testbed has 1 to 250 nodes, not {count}");
        }
        remove_leftovers(prefix);
        let underlay = format!("{prefix}-ul");
        let mut bed = Testbed {
            prefix: prefix.to_string(),
            underlay: underlay.clone(),
            nodes: Vec::new(),
            root: root.to_path_buf(),
            detached: false,
            extra: Vec::new(),
            cgroups: Vec::new(),
        };
        ip(&["netns", "add", &underlay])?;
        ip(&["-n", &underlay, "link", "set", "lo", "up"])?;
        ip(&["-n", &underlay, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &underlay, "link", "set", "br0", "up"])?;
        for i in 1..=count {
            let netns = format!("{prefix}-n{i}");
            let addr = node_addr(i);
            let name = format!("node-{i}");
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir)?;
            ip(&["netns", "add", &netns])?;
            bed.nodes.push(TestbedNode {
                socket: dir.join("shoald.sock"),
                engine_socket: dir.join("docker.sock"),
                name,
                netns: netns.clone(),
                addr: addr.clone(),
                dir,
                env: Vec::new(),
                child: None,
            });
            plug_into_underlay(&underlay, &netns, &format!("p{i}"), &addr)?;
        }
        Ok(bed)
    }

    /// A formed swarm: `count` nodes, each running the workspace's shoald, the first
    /// `managers` of them managers, every node ready.
    pub fn up(prefix: &str, count: usize, managers: usize, root: &Path) -> Result<Testbed> {
        Testbed::up_with(prefix, count, managers, root, &[])
    }

    /// `up`, with extra flags for every shoald.
    pub fn up_with(
        prefix: &str,
        count: usize,
        managers: usize,
        root: &Path,
        extra: &[&str],
    ) -> Result<Testbed> {
        let mut bed = Testbed::create(prefix, count, root)?;
        let shoald = crate::bin_dir().join("shoald");
        for i in 0..count {
            bed.start(i, &shoald, extra)?;
        }
        bed.form_swarm_blocking(managers)?;
        Ok(bed)
    }

    /// Starts node `i`'s shoald inside its namespace, with its own eBPF pin directory.
    /// `{node}` in a flag stands for the node's name (`--cgroup /sys/fs/cgroup/x/{node}`).
    pub fn start(&mut self, i: usize, shoald: &Path, extra: &[&str]) -> Result<()> {
        let bpf = bpf_dir(&self.prefix, &self.nodes[i].name);
        let extra: Vec<String> = extra
            .iter()
            .map(|f| f.replace("{node}", &self.nodes[i].name))
            .collect();
        for pair in extra.windows(2).filter(|p| p[0] == "--cgroup") {
            let dir = PathBuf::from(&pair[1]);
            if !self.cgroups.contains(&dir) {
                self.cgroups.push(dir);
            }
        }
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("shoald.log"))?;
        let _ = std::fs::remove_file(&node.socket);
        // nsenter, not `ip netns exec`: that one gives the daemon a mount namespace of its
        // own without the host's bpffs and cgroup2 mounts, and the eBPF dataplane pins its
        // programs there so that they outlive the daemon, as on a real host.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.netns))
            .arg("--")
            .arg(shoald)
            .arg("--state-dir")
            .arg(node.dir.join("state"))
            .arg("--socket")
            .arg(&node.socket)
            .arg("--hostname")
            .arg(&node.name)
            .arg("--bpf-dir")
            .arg(bpf)
            .arg("--engine-api-socket")
            .arg(&node.engine_socket)
            .args(&extra)
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} in {}", shoald.display(), node.netns))?;
        node.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.socket.exists() {
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "{} did not open {}; see {}",
                    node.name,
                    node.socket.display(),
                    node.dir.join("shoald.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Node `i`'s shoald process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(|c| c.id())
    }

    /// SIGKILLs node `i`'s shoald (its tasks live on) and starts it again.
    pub fn restart(&mut self, i: usize, shoald: &Path, extra: &[&str]) -> Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.start(i, shoald, extra)
    }

    /// Node 1 initializes a swarm (pool 198.19.0.0/16), the next `managers - 1` nodes join
    /// as managers and the rest as workers; returns once every node is ready.
    pub async fn form_swarm(&self, managers: usize) -> Result<()> {
        use shoal_api::client::{call_local, connect_local};
        use shoal_api::control::{ControlRequest, ControlResponse};
        use shoal_api::local::{LocalRequest, LocalResponse, SwarmInit, SwarmJoin};
        use shoal_api::objects::{NodeRole, NodeState};
        let first = &self.nodes[0];
        let mut m = connect_local(&first.host()).await?;
        let host = first.host();
        let call = |req: LocalRequest| {
            let host = host.clone();
            async move {
                let mut c = connect_local(&host).await?;
                call_local(&mut c, &req)
                    .await
                    .map_err(|s| anyhow!("{}", s.message()))
            }
        };
        call_local(
            &mut m,
            &LocalRequest::SwarmInit(SwarmInit {
                advertise_addr: first.addr.clone(),
                listen_addr: format!("{}:2377", first.addr),
                default_addr_pool: vec!["198.19.0.0/16".into()],
                subnet_size: 24,
                data_path_port: 4789,
                dynamic_port_range: None,
                autolock: false,
            }),
        )
        .await
        .map_err(|s| anyhow!("swarm init on {}: {}", first.name, s.message()))?;
        let token = |role| async move {
            match call(LocalRequest::Control(ControlRequest::JoinToken {
                role,
                rotate: false,
            }))
            .await?
            {
                LocalResponse::Control(ControlResponse::Token(t)) => Ok::<_, anyhow::Error>(t),
                other => Err(anyhow!("unexpected answer {other:?}")),
            }
        };
        let worker = token(NodeRole::Worker).await?;
        let manager = token(NodeRole::Manager).await?;
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            let mut c = connect_local(&n.host()).await?;
            call_local(
                &mut c,
                &LocalRequest::SwarmJoin(SwarmJoin {
                    token: if i < managers {
                        manager.clone()
                    } else {
                        worker.clone()
                    },
                    remote_addr: format!("{}:2377", first.addr),
                    advertise_addr: n.addr.clone(),
                    listen_addr: format!("{}:2377", n.addr),
                }),
            )
            .await
            .map_err(|s| anyhow!("{} could not join: {}", n.name, s.message()))?;
        }
        // Up means every node has its session: ready for tasks.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match call(LocalRequest::Control(ControlRequest::NodeList)).await? {
                LocalResponse::Control(ControlResponse::Nodes(n)) => n
                    .iter()
                    .filter(|n| n.status.state == NodeState::Ready)
                    .count(),
                _ => 0,
            };
            if ready == self.nodes.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "only {ready} of {} nodes became ready within 30s",
                    self.nodes.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `form_swarm` for callers without a runtime.
    pub fn form_swarm_blocking(&self, managers: usize) -> Result<()> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(self.form_swarm(managers))
    }

    /// Leaves namespaces and daemons running after this value is dropped.
    /// A plain namespace on the underlay (no shoald): an outside client of the nodes'
    /// published ports. Named `<prefix>-<name>`, removed with the testbed.
    pub fn outside_client(&mut self, name: &str, addr: &str) -> Result<String> {
        let netns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &netns])?;
        self.extra.push(netns.clone());
        plug_into_underlay(&self.underlay, &netns, &format!("c{name}"), addr)?;
        Ok(netns)
    }

    pub fn detach(mut self) {
        self.detached = true;
        for n in &mut self.nodes {
            n.child = None;
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        // The daemons go first, so that none starts a replacement for a task (or a
        // container) removed below.
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Tasks live in namespaces of their own, out of reach of `remove_netns`.
        crate::kill_tasks_under(&self.root);
        for n in &mut self.nodes {
            remove_netns(&n.netns);
            shoal_agent::netns::Sandboxes::new(&n.dir.join("state")).remove_all();
            // A killed daemon leaves the tmpfs of its tasks' secrets mounted (a daemon that
            // stops cleanly unmounts it once no task has files).
            let files = shoal_agent::taskfiles::store::default_dir(&n.dir.join("state"));
            let _ = nix::mount::umount2(&files, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(&files);
        }
        for n in &self.extra {
            remove_netns(n);
        }
        remove_netns(&self.underlay);
        remove_bpf_dirs(&self.prefix);
        remove_cgroups(&self.cgroups);
    }
}
