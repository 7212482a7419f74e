//! The agent's session with the leader: receive the node's view (snapshot, then deltas),
//! hand it to the task runner, and report status plus heartbeats.

use crate::tasks::TaskRunner;
use shoal_api::dispatch::*;
use shoal_api::objects::{NodeDescription, Platform, Resources};
use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::wire::{frame, unframe};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

#[derive(Clone)]
pub struct AgentConfig {
    pub node_id: String,
    pub hostname: String,
    pub tls: ClientTlsConfig,
    /// Managers to try, `ip:port`.
    pub managers: Vec<String>,
}

/// The latest view, for `node inspect self` and for whoever watches role changes.
pub type SharedView = Arc<RwLock<NodeView>>;

pub struct Agent {
    stop: watch::Sender<bool>,
    pub view: SharedView,
}

impl Agent {
    pub fn start(cfg: AgentConfig, runner: TaskRunner) -> Agent {
        let (stop, stop_rx) = watch::channel(false);
        let view: SharedView = Arc::default();
        tokio::spawn(session_loop(cfg, runner, view.clone(), stop_rx));
        Agent { stop, view }
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

fn connect(addr: &str, tls: &ClientTlsConfig) -> Option<DispatcherClient<Channel>> {
    let ep = Endpoint::from_shared(format!("https://{addr}"))
        .ok()?
        .tls_config(tls.clone())
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        // A manager that went silent (partitioned, its host gone) is noticed by HTTP/2
        // pings within about 10 s, and the session moves on to another manager.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(Duration::from_secs(15)));
    Some(DispatcherClient::new(ep.connect_lazy()).max_decoding_message_size(256 << 20))
}

fn description(cfg: &AgentConfig, runner: &TaskRunner) -> NodeDescription {
    NodeDescription {
        hostname: cfg.hostname.clone(),
        platform: Platform {
            architecture: std::env::consts::ARCH.to_string(),
            os: std::env::consts::OS.to_string(),
        },
        executor: runner.executor_name().to_string(),
        dataplane: runner.dataplane_name(),
        resources: machine_resources(),
    }
}

/// The CPUs this process may use and the machine's memory, as Docker reports them in
/// `node inspect` (`NanoCPUs`, `MemoryBytes` from /proc/meminfo's MemTotal).
pub(crate) fn machine_resources() -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<i64>()
                    .ok()
            })
        })
        .unwrap_or(0);
    Resources {
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes: memory_kib * 1024,
    }
}

async fn session_loop(
    cfg: AgentConfig,
    runner: TaskRunner,
    view: SharedView,
    mut stop: watch::Receiver<bool>,
) {
    let mut managers = cfg.managers.clone();
    let mut next = 0usize;
    let mut preferred: Option<String> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let addr = match preferred.take() {
            Some(a) => a,
            None => {
                if managers.is_empty() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                next = (next + 1) % managers.len();
                managers[next].clone()
            }
        };
        let outcome = tokio::select! {
            r = run_session(&cfg, &addr, &runner, &view) => r,
            _ = stop.changed() => return,
        };
        match outcome {
            SessionEnd::Redirect(leader) => {
                tracing::debug!(%addr, %leader, "redirected to the leader");
                preferred = Some(leader);
                backoff = Duration::from_millis(50);
            }
            SessionEnd::Failed(e) => {
                tracing::debug!(%addr, error = %e, "session ended");
            }
        }
        let known: Vec<String> = view
            .read()
            .expect("view lock")
            .managers
            .iter()
            .map(|m| m.addr.clone())
            .collect();
        if !known.is_empty() {
            managers = known;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum SessionEnd {
    Redirect(String),
    Failed(String),
}

fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get("shoal-leader")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn run_session(
    cfg: &AgentConfig,
    addr: &str,
    runner: &TaskRunner,
    view: &SharedView,
) -> SessionEnd {
    let Some(mut client) = connect(addr, &cfg.tls) else {
        return SessionEnd::Failed(format!("bad manager address {addr}"));
    };
    let req = SessionRequest {
        node_id: cfg.node_id.clone(),
        description: description(cfg, runner),
    };
    let mut stream = match client.session(frame(&req)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return match leader_hint(&status) {
                Some(l) if l != addr => SessionEnd::Redirect(l),
                _ => SessionEnd::Failed(status.message().to_string()),
            };
        }
    };
    // Nothing of this session is applied yet (versions of an earlier one mean nothing here).
    runner.set_applied(0);
    // Aborted however this session ends, also when the agent is stopped mid-stream; when it
    // ends by itself (the manager stopped taking reports), so does the session.
    let mut heartbeat = AbortOnDrop(tokio::spawn(report_loop(
        cfg.clone(),
        client.clone(),
        runner.clone(),
        view.clone(),
    )));
    // Log publishers of this session, ended with it.
    let mut publishers: Vec<AbortOnDrop> = Vec::new();

    // A view whose load balancer could not be programmed: retried every second, and only
    // acknowledged once it is.
    let mut unapplied: Option<(u64, NodeView)> = None;
    loop {
        let retry = if unapplied.is_some() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3600)
        };
        let next = tokio::select! {
            m = stream.message() => Ok(m),
            _ = &mut heartbeat.0 => {
                break SessionEnd::Failed("the manager stopped taking reports".into());
            }
            _ = tokio::time::sleep(retry) => Err(()),
            // A task finished preparing (its image pulled): start it with the view as it is.
            () = runner.woken() => {
                let current = view.read().expect("view lock").clone();
                if !runner.reconcile(&current) && unapplied.is_none() {
                    tracing::debug!("view not fully applied after a preparation; the next view retries");
                }
                continue;
            }
        };
        let next = match next {
            Ok(m) => m,
            Err(()) => match &unapplied {
                None => continue,
                Some(_) => {
                    let (version, view) = unapplied.take().expect("checked");
                    if runner.reconcile(&view) {
                        runner.set_applied(version);
                    } else {
                        unapplied = Some((version, view));
                    }
                    continue;
                }
            },
        };
        let msg = match next {
            Ok(Some(f)) => f,
            Ok(None) => break SessionEnd::Failed("stream closed".into()),
            Err(status) => break SessionEnd::Failed(status.message().to_string()),
        };
        let msg: SessionMessage = match unframe(&msg) {
            Ok(m) => m,
            Err(e) => break SessionEnd::Failed(e.message().to_string()),
        };
        let (version, snapshot) = {
            let mut v = view.write().expect("view lock");
            let version = match msg {
                SessionMessage::Snapshot {
                    view: full,
                    version,
                } => {
                    *v = *full;
                    version
                }
                SessionMessage::Delta { changes, version } => {
                    v.apply(changes);
                    version
                }
                SessionMessage::Logs(sub) => {
                    publishers.push(AbortOnDrop(tokio::spawn(crate::logs::publish(
                        client.clone(),
                        runner.clone(),
                        sub,
                    ))));
                    publishers.retain(|p| !p.0.is_finished());
                    continue;
                }
            };
            (version, v.clone())
        };
        // Once tasks, load balancer and DNS match this version, tell the leader, which waits
        // for every node before a stopping task gets its SIGTERM.
        if runner.reconcile(&snapshot) {
            runner.set_applied(version);
            unapplied = None;
        } else {
            unapplied = Some((version, snapshot));
        }
    }
}

/// Heartbeats five times per period, carrying whatever status changed meanwhile; reports
/// that fail are kept and sent again.
/// Heartbeat periods of failed reports after which the session is given up.
const REPORT_FAILURES_END_SESSION: u32 = 3;

/// Sends heartbeats and status changes until reports have failed for
/// `REPORT_FAILURES_END_SESSION` heartbeat periods in a row.
async fn report_loop(
    cfg: AgentConfig,
    mut client: DispatcherClient<Channel>,
    runner: TaskRunner,
    view: SharedView,
) {
    let mut failing_since: Option<Instant> = None;
    loop {
        let period = view
            .read()
            .expect("view lock")
            .heartbeat_period_ns
            .max(500_000_000);
        let statuses = runner.drain_reports();
        let applied = runner.applied();
        let req = ReportRequest {
            node_id: cfg.node_id.clone(),
            statuses: statuses.clone(),
            applied_version: applied,
            draining: runner.draining(),
        };
        let mut call = tonic::Request::new(frame(&req));
        // A report that can't arrive within a heartbeat period is as good as lost.
        // (At least 5 s: a loaded manager may be slow without being gone.)
        let deadline = Duration::from_nanos(period).max(Duration::from_secs(5));
        call.set_timeout(deadline);
        match client.report(call).await {
            Err(status) => {
                tracing::debug!(error = %status.message(), "report failed; will resend");
                runner.requeue(statuses);
                let failing = *failing_since.get_or_insert_with(Instant::now);
                // The manager marks a node down after a few missed heartbeats; by then this
                // session is no use and another manager (the new leader) should get it.
                if failing.elapsed() > deadline * REPORT_FAILURES_END_SESSION {
                    tracing::info!(error = %status.message(), "reports have failed for several heartbeats; ending the session");
                    return;
                }
            }
            Ok(resp) => {
                failing_since = None;
                if let Ok(r) = shoal_api::wire::unframe::<ReportResponse>(resp.get_ref()) {
                    runner.mark_drained(r.drained);
                }
            }
        }
        // Send status changes promptly; heartbeats alone can wait.
        let wait = Duration::from_nanos(period / 5);
        let step = Duration::from_millis(20);
        let mut waited = Duration::ZERO;
        while waited < wait {
            tokio::time::sleep(step).await;
            waited += step;
            if runner.has_reports() || runner.applied() != applied || runner.is_draining() {
                break;
            }
        }
    }
}
