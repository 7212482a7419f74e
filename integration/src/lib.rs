//! A local cluster of `shoald` processes for tests and benchmarks: each node has its own
//! state dir, socket and loopback address (127.0.0.N:2377). Processes are killed and
//! their task processes cleaned up when the cluster is dropped, also on panic.
#![forbid(unsafe_code)]

pub mod bench;
pub mod testbed;

use anyhow::{Context, Result, anyhow};
use shoal_api::client::{call_local, connect_local};
use shoal_api::control::{ControlRequest, ControlResponse};
use shoal_api::local::{LocalRequest, LocalResponse};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Directory of the workspace's built binaries: beside this executable, or one up for test
/// executables in `deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    if dir.join("shoald").exists() {
        dir.to_path_buf()
    } else {
        dir.parent().expect("profile dir").to_path_buf()
    }
}

pub struct NodeProc {
    pub name: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Loopback address, `127.0.0.N`.
    pub ip: String,
    child: Option<Child>,
}

impl NodeProc {
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
    pub fn grpc_addr(&self) -> String {
        format!("{}:2377", self.ip)
    }
}

pub struct LocalCluster {
    _root: tempfile::TempDir,
    root: PathBuf,
    pub nodes: Vec<NodeProc>,
    /// Extra `shoald` flags for every node.
    daemon_args: Vec<String>,
}

impl LocalCluster {
    /// `count` node daemons on 127.0.0.`first_ip`.., not yet in a swarm.
    pub fn start(count: usize, first_ip: u8) -> Result<LocalCluster> {
        Self::start_with(count, first_ip, &[])
    }

    /// Like `start`, with extra `shoald` flags.
    pub fn start_with(count: usize, first_ip: u8, daemon_args: &[&str]) -> Result<LocalCluster> {
        let root_dir = tempfile::Builder::new().prefix("shoal-it-").tempdir()?;
        let root = root_dir.path().to_path_buf();
        let mut cluster = LocalCluster {
            _root: root_dir,
            root,
            nodes: Vec::new(),
            daemon_args: daemon_args.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..count {
            let name = format!("node-{}", i + 1);
            let dir = cluster.root.join(&name);
            let node = NodeProc {
                socket: dir.join("shoald.sock"),
                dir,
                ip: format!("127.0.0.{}", first_ip as usize + i),
                name,
                child: None,
            };
            cluster.nodes.push(node);
            cluster.spawn(i)?;
        }
        for i in 0..count {
            cluster.wait_socket(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("shoald.log"))?;
        let child = Command::new(bin_dir().join("shoald"))
            .arg("--state-dir")
            .arg(node.dir.join("state"))
            .arg("--socket")
            .arg(&node.socket)
            .arg("--hostname")
            .arg(&node.name)
            .args(&self.daemon_args)
            .env(
                "SHOAL_LOG",
                std::env::var("SHOAL_TEST_LOG")
                    .unwrap_or_else(|_| "warn,shoal_agent=info,shoal_manager=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin_dir().join("shoald").display()))?;
        node.child = Some(child);
        Ok(())
    }

    fn wait_socket(&self, i: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.nodes[i].socket.exists() {
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "{} did not open its socket; log:\n{}",
                    self.nodes[i].name,
                    self.log(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Runs the shoal CLI against node `i`; its stdout, failing the test on an error.
    pub fn shoal_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.shoal(i, args);
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            self.nodes[i].name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// With the CLI, as an operator would: node 1 initializes a swarm (pool 198.19.0.0/16),
    /// the next `managers - 1` nodes join as managers, the others as workers.
    pub fn form_swarm(&self, managers: usize) {
        let ip = |i: usize| self.nodes[i].ip.clone();
        let listen = |i: usize| format!("{}:2377", ip(i));
        self.shoal_ok(
            0,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &ip(0),
                "--listen-addr",
                &listen(0),
                "--default-addr-pool",
                "198.19.0.0/16",
            ],
        );
        for i in 1..self.nodes.len() {
            let role = if i < managers { "manager" } else { "worker" };
            let token = self.shoal_ok(0, &["swarm", "join-token", "-q", role]);
            self.shoal_ok(
                i,
                &[
                    "swarm",
                    "join",
                    "--token",
                    token.trim(),
                    "--advertise-addr",
                    &ip(i),
                    "--listen-addr",
                    &listen(i),
                    &self.nodes[0].grpc_addr(),
                ],
            );
        }
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(|c| c.id())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("shoald.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed node again from its state dir.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        let _ = std::fs::remove_file(&self.nodes[i].socket);
        self.spawn(i)?;
        self.wait_socket(i)
    }

    pub async fn local(&self, i: usize, req: LocalRequest) -> Result<LocalResponse, tonic::Status> {
        let mut client = connect_local(&self.nodes[i].host())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        call_local(&mut client, &req).await
    }

    pub async fn control(
        &self,
        i: usize,
        req: ControlRequest,
    ) -> Result<ControlResponse, tonic::Status> {
        match self.local(i, LocalRequest::Control(req)).await? {
            LocalResponse::Control(r) => Ok(r),
            other => Err(tonic::Status::internal(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Runs the `shoal` CLI against node `i`.
    pub fn shoal(&self, i: usize, args: &[&str]) -> std::process::Output {
        Command::new(bin_dir().join("shoal"))
            .arg("-H")
            .arg(self.nodes[i].host())
            .args(args)
            .output()
            .expect("run shoal")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        kill_tasks_under(&self.root);
        for n in &self.nodes {
            let state = n.dir.join("state");
            shoal_agent::netns::Sandboxes::new(&state).remove_all();
            shoal_agent::lb::ebpf::SockLb::unpin_all(&shoal_agent::lb::ebpf::default_pin_dir(
                &state,
            ));
        }
    }
}

/// Kills task processes whose task dir lies under `root` (they run in their own process
/// groups, so killing shoald does not reach them).
/// A task's output as it printed it: the text of each record in its output files (times
/// and stream names left out), oldest first; None before the first file exists.
pub fn task_output(task_dir: &Path) -> Option<String> {
    let current = task_dir.join("output.log");
    std::fs::metadata(&current).ok()?;
    let mut out = String::new();
    for file in shoal_agent::logs::rotate::files_oldest_first(&current) {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            out.push_str(shoal_agent::logs::record::parse(line).text);
            out.push('\n');
        }
    }
    Some(out)
}

pub fn kill_tasks_under(root: &Path) {
    remove_containers_under(root);
    let marker = format!("SHOAL_TASK_DIR={}", root.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(marker.as_bytes()))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Removes the Docker containers of the shoalds whose state dirs are `root/*/state` (found
/// by their owner label); nothing when there is no engine.
pub fn remove_containers_under(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let owner = shoal_agent::netns::Sandboxes::new(&e.path().join("state"))
            .prefix()
            .to_string();
        let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!(
                "label={}={owner}",
                shoal_agent::exec::docker::OWNER_LABEL
            ))
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// Polls `f` (blocking) until it holds; panics naming `what` after `timeout`.
/// Runs python `code` in the network and mount namespaces of the first process whose
/// command line holds `marker` (a native task), and returns what it printed.
pub fn python_in_task(marker: &str, code: &str) -> String {
    let pid = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args(["-f", marker])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .lines()
    .next()
    .unwrap_or_default()
    .to_string();
    let out = Command::new("nsenter")
        .args(["-t", &pid, "-n", "-m", "python3", "-c", code])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(e) => format!("error nsenter: {e}"),
    }
}

/// The addresses `name` resolves to (sorted, as a Python list) from the task running
/// `marker`, through its own resolv.conf, or "error ..." when it does not resolve.
pub fn resolve_in_task(marker: &str, name: &str) -> String {
    python_in_task(
        marker,
        &format!(
            "import socket\ntry:\n    print(sorted(socket.gethostbyname_ex('{name}')[2]))\nexcept Exception as e:\n    print('error', e)"
        ),
    )
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls `f` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(anyhow!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replaces the section of a benchmarks file that starts with `heading` (up to the next
/// `## `) with `text`, or appends it; the rest of the file is kept.
pub fn write_bench_section(path: &str, heading: &str, text: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let kept = match old.find(heading) {
        Some(start) => {
            let rest = &old[start + heading.len()..];
            let end = rest
                .find("\n## ")
                .map(|e| start + heading.len() + e + 1)
                .unwrap_or(old.len());
            format!("{}{}", &old[..start], &old[end..])
        }
        None => old,
    };
    std::fs::write(
        path,
        format!("{}\n\n{}", kept.trim_end(), text.trim_end()) + "\n",
    )?;
    Ok(())
}

/// Runs the `shoal` CLI against `host` and returns its output; panics with its error line
/// when it fails (for tests).
pub fn shoal_ok(host: &str, args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("shoal"))
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .expect("run shoal");
    assert!(
        out.status.success(),
        "shoal {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
