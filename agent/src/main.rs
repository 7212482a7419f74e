//! `shoald --state-dir DIR --socket PATH`: one node daemon.

use clap::Parser;
use shoal_agent::daemon::{Daemon, DaemonOptions, LocalService};
use shoal_agent::exec::by_runtime::ByRuntime;
use shoal_agent::exec::docker::DockerExecutor;
use shoal_agent::exec::native::NativeExecutor;
use shoal_agent::lb::choose::{Choice, choose};
use shoal_agent::lb::ebpf::{EbpfOptions, cgroup2_mount, default_pin_dir, join_cgroup};
use shoal_agent::netns::Sandboxes;
use shoal_agent::taskfiles::TaskFilesDir;
use shoal_api::pb::local_server::LocalServer;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "shoald", version, about = "shoal node daemon")]
struct Opts {
    #[command(subcommand)]
    helper: Option<Helper>,
    /// Where the node keeps its identity, certificates, raft log and task output.
    #[arg(long, default_value = "/var/lib/shoal")]
    state_dir: PathBuf,
    /// Unix socket the CLI talks to (root-only).
    #[arg(long, default_value = shoal_api::client::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Node name shown by `node ls` (default: the host name).
    #[arg(long)]
    hostname: Option<String>,
    /// Raft tick in milliseconds; an election starts after 10-20 ticks without a leader.
    #[arg(long, default_value_t = 50, hide = true)]
    raft_tick_ms: u64,
    /// Where image tasks run: `docker` (the local engine; fails when it does not answer),
    /// `native` (no containers; image tasks are refused), or `auto`: docker when the
    /// engine answers, native otherwise.
    #[arg(long, default_value = "auto", value_parser = ["auto", "docker", "native"])]
    executor: String,
    /// Service load balancer: `ebpf` (VIPs balanced at connect() by cgroup programs, the
    /// routing mesh in tc), `nftables`, `iptables` (kube-proxy-style chains, for hosts
    /// without nft), or `auto`: ebpf when the kernel takes its programs, else nftables, else
    /// iptables (the reason is logged and shown by `node inspect`). `ipvs` is refused with
    /// the reason.
    #[arg(long, default_value = "auto", value_parser = ["auto", "ebpf", "nftables", "iptables", "ipvs"])]
    dataplane: String,
    /// cgroup v2 directory the eBPF programs attach to; shoald moves itself inside so its
    /// tasks are too (default: the root of the cgroup v2 hierarchy, all of the host).
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,
    /// Directory on bpffs where the eBPF dataplane pins its maps and links; they outlive
    /// shoald, so a restart keeps every connection working. One per daemon (default:
    /// /sys/fs/bpf/shoal, or a name made from --state-dir when that is not the default).
    #[arg(long, value_name = "DIR")]
    bpf_dir: Option<PathBuf>,
    /// Where the secrets and configs of running tasks are kept: shoald mounts a tmpfs here
    /// while some task has files (memory only, mode 0700, nosuid/nodev/noexec, no swap
    /// where the kernel allows, at most 256 MiB), one directory per task, removed when the
    /// task ends. It must not be inside --state-dir. One per daemon (default: /run/shoal/task-files, or a name made
    /// from --state-dir when that is not the default).
    #[arg(long, value_name = "DIR")]
    task_files_dir: Option<PathBuf>,
    /// Unix socket for Docker's Engine API (the Swarm routes), so that the `docker` CLI
    /// and SDKs drive the cluster: `DOCKER_HOST=unix://PATH docker service ls`. Mode 0660,
    /// group `docker` when the host has one. `none` turns it off. Default:
    /// /run/shoal/docker.sock, or a name made from --state-dir when that is not the default.
    #[arg(long, value_name = "PATH")]
    engine_api_socket: Option<String>,
    /// Also serve the Engine API on TCP (`IP:PORT`, Docker uses 2376), only to clients
    /// with a certificate from --tlscacert, as dockerd's `-H tcp:// --tlsverify`.
    #[arg(long, value_name = "IP:PORT", requires_all = ["tlscacert", "tlscert", "tlskey"])]
    engine_api_tcp: Option<std::net::SocketAddr>,
    /// CA that signs the certificates of Engine API clients (with --engine-api-tcp).
    #[arg(long, value_name = "PEM", requires = "engine_api_tcp")]
    tlscacert: Option<PathBuf>,
    /// The Engine API's own certificate (with --engine-api-tcp).
    #[arg(long, value_name = "PEM", requires = "engine_api_tcp")]
    tlscert: Option<PathBuf>,
    /// Its private key (with --engine-api-tcp).
    #[arg(long, value_name = "PEM", requires = "engine_api_tcp")]
    tlskey: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 127.0.0.1:9323;
    /// off when not given.
    #[arg(long, value_name = "IP:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Log filter, e.g. "info" or "shoal_manager=debug".
    #[arg(
        long,
        env = "SHOAL_LOG",
        default_value = "warn,shoal_agent=info,shoal_manager=info"
    )]
    log: String,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Programs shoald runs of itself; not for operators.
#[derive(clap::Subcommand, Debug)]
enum Helper {
    /// Copies a native task's output from the FIFOs in DIR into its capped files.
    #[command(hide = true)]
    LogWriter {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        max_size: u64,
        #[arg(long)]
        max_files: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    if let Some(Helper::LogWriter {
        dir,
        log,
        max_size,
        max_files,
    }) = &opts.helper
    {
        let limits = shoal_agent::logs::rotate::Limits {
            max_size: *max_size,
            max_files: *max_files,
        };
        shoal_agent::logs::writer::run(dir, log, limits)?;
        return Ok(());
    }
    tokio::runtime::Runtime::new()?.block_on(serve(opts))
}

async fn serve(opts: Opts) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&opts.log))
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // First, so the state dir is private (0700) before anything makes a path inside it.
    shoal_agent::identity::StateDir::new(opts.state_dir.clone())?;
    let sandboxes = if Sandboxes::available() {
        // Sandboxes of an earlier run stay: their tasks may be adopted on resume.
        Some(Sandboxes::new(&opts.state_dir))
    } else {
        tracing::warn!("not root: native tasks run without their own network namespace");
        None
    };
    let node_name = opts.hostname.clone().unwrap_or_else(hostname);
    let docker = match (opts.executor.as_str(), &sandboxes) {
        ("native", _) => None,
        (choice, Some(sb)) => {
            match DockerExecutor::connect(sb.clone(), opts.state_dir.join("tasks")).await {
                Ok(d) => Some(d),
                Err(e) if choice == "docker" => {
                    anyhow::bail!("--executor docker: cannot reach the Docker engine: {e}")
                }
                Err(e) => {
                    tracing::info!(reason = %e, "no Docker engine; image tasks are refused on this node");
                    None
                }
            }
        }
        ("docker", None) => anyhow::bail!("--executor docker needs root (container networking)"),
        (_, None) => None,
    };
    tracing::info!(
        executor = if docker.is_some() { "docker" } else { "native" },
        "task executor"
    );
    let dataplane = match &sandboxes {
        None => None,
        Some(_) => {
            let choice: Choice = opts.dataplane.parse().map_err(anyhow::Error::msg)?;
            let cgroup = match (&opts.cgroup, cgroup2_mount()) {
                (Some(c), _) => c.clone(),
                (None, Some(root)) => root,
                (None, None) => PathBuf::from("/sys/fs/cgroup"),
            };
            let ebpf = EbpfOptions {
                cgroup,
                pin_dir: opts
                    .bpf_dir
                    .clone()
                    .unwrap_or_else(|| default_pin_dir(&opts.state_dir)),
            };
            let chosen = choose(choice, &ebpf).map_err(anyhow::Error::msg)?;
            // The dataplane of the previous run: tasks it programmed still hold its rules.
            let record = opts.state_dir.join("dataplane");
            if let Ok(previous) = std::fs::read_to_string(&record)
                && previous.trim() != chosen.lb.name()
            {
                tracing::info!(
                    previous = previous.trim(),
                    now = chosen.lb.name(),
                    "dataplane changed; removing the previous one's rules as namespaces are programmed"
                );
                chosen.lb.take_over_from(previous.trim());
            }
            std::fs::write(&record, chosen.lb.name())?;
            if chosen.lb.name() == "ebpf" && opts.cgroup.is_some() && docker.is_some() {
                // Containers live in dockerd's cgroups, wherever shoald is.
                tracing::warn!(cgroup = %ebpf.cgroup.display(), "with --cgroup, VIPs are balanced for containers only if dockerd puts them inside it; the default (the root cgroup) holds them all");
            }
            if chosen.lb.name() == "ebpf" {
                // Tasks inherit shoald's cgroup: they must be where the programs act.
                join_cgroup(&ebpf.cgroup, std::process::id())
                    .map_err(|e| anyhow::anyhow!("--cgroup: {e}"))?;
            }
            Some(Arc::new(chosen))
        }
    };
    let files_dir = opts
        .task_files_dir
        .clone()
        .unwrap_or_else(|| shoal_agent::taskfiles::store::default_dir(&opts.state_dir));
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if abs(&files_dir).starts_with(abs(&opts.state_dir)) {
        // The state dir is on disk and is backed up and inspected; secrets stay out of it.
        anyhow::bail!(
            "--task-files-dir {} is inside --state-dir {}; give a directory outside it",
            files_dir.display(),
            opts.state_dir.display()
        );
    }
    let executor = ByRuntime::new(
        NativeExecutor::new(sandboxes.clone(), opts.state_dir.join("tasks"))
            .with_log_writer(std::env::current_exe()?),
        docker,
        node_name,
        TaskFilesDir::open(&files_dir),
    );
    let daemon = Daemon::new(
        DaemonOptions {
            state_dir: opts.state_dir.clone(),
            socket: opts.socket.clone(),
            hostname: opts.hostname.clone().unwrap_or_else(hostname),
            raft_tick: Duration::from_millis(opts.raft_tick_ms.max(1)),
            overlays: sandboxes.is_some(),
            dataplane,
        },
        Arc::new(executor),
    )?;
    if let Some(dir) = opts.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&opts.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", opts.socket.display())),
    }
    let listener = tokio::net::UnixListener::bind(&opts.socket)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opts.socket.display()))?;
    // Whoever can talk to shoald controls the node: root only, like docker.sock.
    std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o600))?;
    if let Some(addr) = opts.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: {e}"))?;
        let d = daemon.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let d = d.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        d.metrics_text().await,
                    )
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "metrics server stopped");
            }
        });
        tracing::info!(%addr, "serving metrics");
    }
    let engine_socket = match opts.engine_api_socket.as_deref() {
        Some("none") => None,
        Some(p) => {
            let path = PathBuf::from(p);
            shoal_agent::engine_api::serve_unix(&path, daemon.clone()).await?;
            Some(path)
        }
        // The default is a convenience: where it can't be made (not root), say so and go on.
        None => {
            let path = shoal_agent::engine_api::default_socket(&opts.state_dir);
            match shoal_agent::engine_api::serve_unix(&path, daemon.clone()).await {
                Ok(()) => Some(path),
                Err(e) => {
                    tracing::warn!(error = %e, "no Engine API socket; give --engine-api-socket PATH (or none)");
                    None
                }
            }
        }
    };
    if let (Some(addr), Some(ca), Some(cert), Some(key)) = (
        opts.engine_api_tcp,
        opts.tlscacert.clone(),
        opts.tlscert.clone(),
        opts.tlskey.clone(),
    ) {
        let files = shoal_agent::engine_api::TlsFiles { ca, cert, key };
        shoal_agent::engine_api::serve_tls(
            addr,
            &files,
            shoal_agent::engine_api::Api::new(daemon.clone()),
        )
        .await?;
    }
    daemon.resume().await?;
    tracing::info!(socket = %opts.socket.display(), state_dir = %opts.state_dir.display(), "shoald ready");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(
            LocalServer::new(LocalService {
                daemon: daemon.clone(),
            })
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20),
        )
        .serve_with_incoming_shutdown(incoming, async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        });
    server.await?;
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&opts.socket);
    if let Some(path) = &engine_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
