//! `shoald`: the local API on a unix socket, and the node's life in a swarm: init, join,
//! leave, and restart from the state dir. Managers run a `ManagerRuntime` beside the agent.
//! An autolocked manager restarts locked and waits for `swarm unlock` (`lock.rs`).

mod lock;

use crate::exec::Executor;
use crate::identity::{Certs, Identity, StateDir};
use crate::session::{Agent, AgentConfig};
use crate::tasks::TaskRunner;
use shoal_api::control::ControlResponse;
use shoal_api::dispatch::ManagerPeer;
use shoal_api::join::{JoinRequest, JoinResponse, KeyText, RenewRequest, RenewResponse};
use shoal_api::local::*;
use shoal_api::now_rfc3339;
use shoal_api::objects::*;
use shoal_api::pb::{self, Frame};
use shoal_api::wire::{ErrorKind, frame, unframe};
use shoal_manager::ca::{self, DataKey, JoinToken, RootCa, UnlockKey};
use shoal_manager::consensus::RaftConfig;
use shoal_manager::ids::{new_id, new_raft_id};
use shoal_manager::runtime::{ManagerConfig, ManagerRuntime};
use shoal_manager::store::{Command, InitCluster};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

pub const DEFAULT_PORT: u16 = 2377;

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub hostname: String,
    /// Raft tick; elections start after 10-20 ticks of silence.
    pub raft_tick: Duration,
    /// Tasks get sandboxes, so their overlay interfaces can be plumbed.
    pub overlays: bool,
    /// The service load balancer (`shoald --dataplane`); None when tasks get no sandboxes.
    pub dataplane: Option<Arc<crate::lb::choose::Dataplane>>,
}

struct Running {
    identity: Identity,
    certs: Certs,
    agent: Agent,
    runner: TaskRunner,
    manager: Option<ManagerRuntime>,
    /// Bumped on every restart of the node's parts; a watch loop of an older one exits.
    generation: u64,
    /// The cluster data key (managers), kept to rewrite its file when autolock changes.
    data_key: Option<DataKey>,
    /// The unlock key this node's key files are locked under; `None`: they are plain.
    kek: Option<UnlockKey>,
}

pub struct Daemon {
    opts: DaemonOptions,
    dir: StateDir,
    executor: Arc<dyn Executor>,
    inner: Mutex<Option<Running>>,
    generations: std::sync::atomic::AtomicU64,
    /// Set while the node waits for `swarm unlock`; then `inner` is empty.
    locked: std::sync::Mutex<Option<lock::LockedNode>>,
}

/// How often a node checks its role and certificate.
const WATCH_EVERY: Duration = Duration::from_millis(500);

fn err(kind: ErrorKind, msg: impl Into<String>) -> Status {
    kind.status(msg)
}

fn internal(e: impl std::fmt::Display) -> Status {
    ErrorKind::Internal.status(e.to_string())
}

/// `ip` or `ip:port` to a socket address, with `default_port` when none is given.
fn parse_addr(s: &str, default_port: u16, what: &str) -> Result<SocketAddr, Status> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(err(
        ErrorKind::Invalid,
        format!("{what} {s:?} is not an IP address or IP:port"),
    ))
}

/// Listen and advertise addresses as Docker resolves them: the advertise address defaults to
/// the listen address, and must be a concrete IP.
fn resolve_addrs(
    listen: &str,
    advertise: &str,
) -> Result<(SocketAddr, IpAddr, SocketAddr), Status> {
    let listen = parse_addr(
        if listen.is_empty() {
            "0.0.0.0:2377"
        } else {
            listen
        },
        DEFAULT_PORT,
        "--listen-addr",
    )?;
    let adv = if advertise.is_empty() {
        if listen.ip().is_unspecified() {
            return Err(err(
                ErrorKind::Invalid,
                "could not choose an IP address to advertise since --listen-addr is unspecified; use --advertise-addr",
            ));
        }
        SocketAddr::new(listen.ip(), listen.port())
    } else {
        parse_addr(advertise, listen.port(), "--advertise-addr")?
    };
    Ok((listen, adv.ip(), SocketAddr::new(adv.ip(), adv.port())))
}

impl Daemon {
    pub fn new(opts: DaemonOptions, executor: Arc<dyn Executor>) -> anyhow::Result<Arc<Daemon>> {
        let dir = StateDir::new(opts.state_dir.clone())?;
        Ok(Arc::new(Daemon {
            opts,
            dir,
            executor,
            inner: Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
            locked: std::sync::Mutex::new(None),
        }))
    }

    /// Rejoins the swarm recorded in the state dir, if any.
    pub async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some((identity, mut certs)) = self.dir.load()? else {
            // Not in a swarm: whatever an earlier run left has no owner.
            self.executor.discard_leftovers(&[]);
            return Ok(());
        };
        if self.open_at_start(&mut certs)? {
            // Docker's locked node does nothing at all: no manager, no agent session.
            tracing::warn!(node = %identity.node_id, "this manager's keys are locked (autolock): it serves nothing until `shoal swarm unlock`");
            *self.locked.lock().expect("lock state") = Some(lock::LockedNode { identity, certs });
            return Ok(());
        }
        tracing::info!(node = %identity.node_id, role = %identity.role, "resuming swarm membership from the state dir");
        let running = self
            .start_node(identity, certs, false, None, None)
            .await
            .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
        self.install(&mut *self.inner.lock().await, running);
        Ok(())
    }

    /// Makes `running` the node's current parts and starts watching its role and certificate.
    fn install(self: &Arc<Self>, slot: &mut Option<Running>, mut running: Running) {
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        running.generation = generation;
        let keeper = running
            .manager
            .as_ref()
            .zip(running.data_key.clone())
            .map(|(m, key)| (m.raft.clone(), key));
        *slot = Some(running);
        tokio::spawn(self.clone().watch_loop(generation));
        if let Some((raft, data_key)) = keeper {
            tokio::spawn(self.clone().keep_key_files(generation, raft, data_key));
        }
    }

    /// Renews the node certificate before it expires, and follows role changes (promotion
    /// starts the manager, demotion stops it), both through a certificate from the managers.
    async fn watch_loop(self: Arc<Self>, generation: u64) {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let due = {
                let inner = self.inner.lock().await;
                let Some(r) = inner.as_ref().filter(|r| r.generation == generation) else {
                    return;
                };
                let role_now = r
                    .agent
                    .view
                    .read()
                    .expect("view lock")
                    .node
                    .as_ref()
                    .map(|n| n.spec.role);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs() as i64;
                let renew = ca::parse_node_cert_pem(&r.certs.cert_pem)
                    .map(|id| ca::needs_renewal(&id, now))
                    .unwrap_or(true);
                let role_changed = role_now.is_some_and(|role| role != r.identity.role);
                if role_changed {
                    tracing::info!(from = %r.identity.role, to = ?role_now, "the node's role changed; renewing its certificate");
                }
                renew || role_changed
            };
            if due && let Err(e) = self.renew(generation).await {
                tracing::warn!(error = %e.message(), "certificate renewal failed; retrying");
            }
        }
    }

    /// Gets a new certificate from a manager, then restarts the node's parts with it (tasks
    /// keep running: the task runner is carried over).
    async fn renew(self: &Arc<Self>, generation: u64) -> Result<(), Status> {
        // What the request needs is read under the lock; the calls to the managers are made
        // without it, so that `shoal info`, `/metrics` and the local API keep answering
        // while a manager is slow or unreachable.
        let (managers, view_managers, tls, role, raft) = {
            let inner = self.inner.lock().await;
            let Some(r) = inner.as_ref().filter(|r| r.generation == generation) else {
                return Ok(());
            };
            let view = r.agent.view.read().expect("view lock");
            let mut managers: Vec<String> = view.managers.iter().map(|m| m.addr.clone()).collect();
            managers.extend(r.identity.managers.iter().map(|m| m.addr.clone()));
            let tls = ca::tls::client_tls(&r.certs.ca_pem, &r.certs.cert_pem, &r.certs.key_pem);
            let raft = r.manager.as_ref().map(|m| m.raft.clone());
            (managers, view.managers.clone(), tls, r.identity.role, raft)
        };
        let (key_pem, csr_pem) = ca::new_key_and_csr().map_err(internal)?;
        let answer = request_renewal(&managers, &tls, &csr_pem).await?;
        if role == NodeRole::Manager
            && answer.role == NodeRole::Worker
            && let Some(raft) = &raft
        {
            // Keep answering raft until the leader has removed this voter: with two
            // managers, leaving earlier would take the quorum with it.
            for _ in 0..200 {
                if !raft.voters().contains(&raft.id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut inner = self.inner.lock().await;
        // A leave, or another restart of the node's parts, may have come in meanwhile.
        if inner.as_ref().is_none_or(|r| r.generation != generation) {
            return Ok(());
        }
        let old = inner.take().expect("checked");
        let certs = Certs {
            ca_pem: old.certs.ca_pem.clone(),
            cert_pem: answer.cert_pem,
            key_pem,
        };
        let mut identity = old.identity.clone();
        let demoted = identity.role == NodeRole::Manager && answer.role == NodeRole::Worker;
        identity.role = answer.role;
        if !view_managers.is_empty() {
            identity.managers = view_managers;
        }
        // A manager keeps its files locked unless told otherwise; when autolock was turned
        // off, the key keeper unlocks them once this node's replica says so. Workers hold
        // no unlock key.
        let kek = match answer.role {
            NodeRole::Manager => parse_unlock_key(answer.unlock_key.as_ref())?.or(old.kek.clone()),
            NodeRole::Worker => None,
        };
        let data_key = match answer.role {
            NodeRole::Manager => self
                .save_data_key(answer.data_key.as_ref(), kek.as_ref())?
                .or(old.data_key.clone()),
            NodeRole::Worker => None,
        };
        self.dir
            .save_certs(&certs, kek.as_ref().and(data_key.as_ref()))
            .map_err(internal)?;
        self.dir.save_identity(&identity).map_err(internal)?;
        old.agent.stop();
        if let Some(m) = old.manager {
            m.stop().await;
        }
        if demoted {
            // No longer a raft member: a later promotion starts from an empty log; and a
            // worker keeps no cluster data key.
            let _ = std::fs::remove_dir_all(self.dir.raft_dir());
            let _ = std::fs::remove_file(self.dir.data_key_path());
        }
        let runner = old.runner.clone();
        let running = match self
            .start_node(identity, certs, false, Some(old.runner), kek)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // Never leave the node with nothing running: come back as before.
                tracing::warn!(error = %e.message(), "restart with the new certificate failed; restarting with the old one");
                let back = self
                    .start_node(old.identity, old.certs, false, Some(runner), old.kek)
                    .await?;
                self.install(&mut inner, back);
                return Err(e);
            }
        };
        tracing::info!(role = %running.identity.role, "node certificate renewed");
        self.install(&mut inner, running);
        Ok(())
    }

    /// Keeps the cluster data key a join or renewal answer carried (managers only), locked
    /// under `kek` when the swarm is autolocked.
    fn save_data_key(
        &self,
        key: Option<&KeyText>,
        kek: Option<&UnlockKey>,
    ) -> Result<Option<DataKey>, Status> {
        let Some(key) = key else { return Ok(None) };
        let key = DataKey::from_base64(&key.0).map_err(internal)?;
        key.save(&self.dir.data_key_path(), kek).map_err(internal)?;
        Ok(Some(key))
    }

    /// Starts the node's parts; `kek` is the unlock key its key files are locked under, if
    /// they are, and `certs` holds the TLS key in the clear.
    async fn start_node(
        &self,
        identity: Identity,
        certs: Certs,
        bootstrap: bool,
        runner: Option<TaskRunner>,
        kek: Option<UnlockKey>,
    ) -> Result<Running, Status> {
        let mut node_data_key = None;
        let manager_role = identity.role == NodeRole::Manager;
        let manager = if manager_role {
            let listen: SocketAddr = identity.listen_addr.parse().map_err(internal)?;
            let mut raft = RaftConfig::new(identity.raft_id);
            raft.tick = self.opts.raft_tick;
            let path = self.dir.data_key_path();
            let data_key = DataKey::read_file(&path)
                .and_then(|file| file.map(|f| f.open(&path, kek.as_ref())).transpose())
                .map_err(internal)?;
            node_data_key = data_key.clone();
            if data_key.is_none() {
                tracing::warn!(
                    "this manager has no cluster data key (a swarm from before data keys): services can't carry registry credentials"
                );
            }
            let rt = ManagerRuntime::start(ManagerConfig {
                raft_dir: self.dir.raft_dir(),
                raft,
                listen_addr: listen,
                ca_pem: certs.ca_pem.clone(),
                cert_pem: certs.cert_pem.clone(),
                key_pem: certs.key_pem.clone(),
                bootstrap,
                peers: identity.managers.clone(),
                data_key,
            })
            .await
            .map_err(|e| err(ErrorKind::Unavailable, e.to_string()))?;
            Some(rt)
        } else {
            None
        };
        let runner = runner.unwrap_or_else(|| {
            let fresh = TaskRunner::new(self.executor.clone(), self.dir.tasks_dir());
            // Tasks that kept running while shoald was down are taken over, not restarted;
            // before the session starts, so the first view finds them running here.
            let adopted = fresh.adopt_leftovers();
            if !adopted.is_empty() {
                tracing::info!(tasks = adopted.len(), "adopted running tasks");
            }
            fresh
        });
        if let (true, Some(dataplane)) = (self.opts.overlays, self.opts.dataplane.clone()) {
            let overlay = identity
                .advertise_addr
                .parse()
                .map_err(|_| {
                    crate::overlay::apply::OverlayError::NoUnderlay(std::net::Ipv4Addr::UNSPECIFIED)
                })
                .and_then(crate::overlay::apply::Overlay::new);
            match overlay {
                Ok(overlay) => {
                    tracing::info!(backend = %dataplane.describe(), "service load balancer");
                    runner.set_overlay(Some(crate::tasks::OverlayCtx {
                        node_id: identity.node_id.clone(),
                        overlay,
                        lb: dataplane.lb.clone(),
                        dataplane: dataplane.describe(),
                    }))
                }
                Err(e) => tracing::warn!(error = %e, "tasks start without overlay networking"),
            }
        }
        let mut managers: Vec<String> = identity.managers.iter().map(|m| m.addr.clone()).collect();
        if identity.role == NodeRole::Manager && !managers.contains(&identity.grpc_addr) {
            managers.insert(0, identity.grpc_addr.clone());
        }
        let agent = Agent::start(
            AgentConfig {
                node_id: identity.node_id.clone(),
                hostname: self.opts.hostname.clone(),
                tls: ca::tls::client_tls(&certs.ca_pem, &certs.cert_pem, &certs.key_pem),
                managers,
            },
            runner.clone(),
        );
        Ok(Running {
            identity,
            certs,
            agent,
            runner,
            manager,
            generation: 0,
            data_key: node_data_key,
            kek: kek.filter(|_| manager_role),
        })
    }

    async fn init(self: &Arc<Self>, req: SwarmInit) -> Result<LocalResponse, Status> {
        let mut inner = self.inner.lock().await;
        if inner.is_some() {
            return Err(already_in_swarm());
        }
        let (listen, adv_ip, grpc) = resolve_addrs(&req.listen_addr, &req.advertise_addr)?;
        if req.default_addr_pool.is_empty() {
            return Err(err(
                ErrorKind::Invalid,
                "--default-addr-pool needs at least one CIDR",
            ));
        }
        if !(8..=29).contains(&req.subnet_size) {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "--default-addr-pool-mask-length {} must be between 8 and 29",
                    req.subnet_size
                ),
            ));
        }
        if req.data_path_port < 1024 || req.data_path_port > 49151 {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "--data-path-port {} must be between 1024 and 49151",
                    req.data_path_port
                ),
            ));
        }
        let dynamic_ports = req.dynamic_port_range.unwrap_or((30000, 32767));
        if dynamic_ports.0 == 0 || dynamic_ports.0 > dynamic_ports.1 {
            return Err(err(
                ErrorKind::Invalid,
                "the dynamic port range must be LO-HI with 1 <= LO <= HI",
            ));
        }
        let node_id = new_id();
        let cluster_id = new_id();
        let raft_id = new_raft_id();
        let root = RootCa::generate().map_err(internal)?;
        let (key_pem, csr_pem) = ca::new_key_and_csr().map_err(internal)?;
        let spec = ClusterSpec::default();
        let cert_pem = root
            .issue(
                &csr_pem,
                &node_id,
                &cluster_id,
                NodeRole::Manager,
                Duration::from_nanos(spec.node_cert_expiry),
            )
            .map_err(internal)?;
        let certs = Certs {
            ca_pem: root.cert_pem().to_string(),
            cert_pem,
            key_pem,
        };
        let identity = Identity {
            node_id: node_id.clone(),
            cluster_id: cluster_id.clone(),
            role: NodeRole::Manager,
            raft_id,
            advertise_addr: adv_ip.to_string(),
            listen_addr: listen.to_string(),
            grpc_addr: grpc.to_string(),
            managers: vec![ManagerPeer {
                node_id: node_id.clone(),
                raft_id,
                addr: grpc.to_string(),
            }],
        };
        // Refuse before writing anything if the port is taken.
        drop(std::net::TcpListener::bind(listen).map_err(|e| {
            err(
                ErrorKind::Invalid,
                format!("cannot listen on {listen}: {e}; choose another --listen-addr"),
            )
        })?);
        // With --autolock the keys are locked from the first write: the data key is never on
        // disk in the clear.
        let kek = req.autolock.then(UnlockKey::generate);
        let data_key = DataKey::generate();
        data_key
            .save(&self.dir.data_key_path(), kek.as_ref())
            .map_err(internal)?;
        let running = self
            .start_node(identity.clone(), certs.clone(), true, None, kek.clone())
            .await?;
        let manager = running.manager.as_ref().expect("init makes a manager");
        // The single voter elects itself at once; wait for that before the first write.
        for _ in 0..100 {
            if manager.raft.is_leader() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = now_rfc3339();
        let mut node_labels = std::collections::BTreeMap::new();
        node_labels.insert(
            shoal_manager::store::GRPC_ADDR_LABEL.to_string(),
            grpc.to_string(),
        );
        let init = InitCluster {
            cluster: Cluster {
                id: cluster_id,
                version: Version::default(),
                created_at: now.clone(),
                updated_at: now.clone(),
                spec: spec.clone(),
                tls_info: root.cert_pem().to_string(),
                default_addr_pool: req.default_addr_pool.clone(),
                subnet_size: req.subnet_size,
                data_path_port: req.data_path_port,
                join_tokens: None,
            },
            ca_key_pem: root.key_pem().unwrap_or_default(),
            worker_token: JoinToken::generate(&root).to_string(),
            manager_token: JoinToken::generate(&root).to_string(),
            node: Node {
                id: node_id.clone(),
                version: Version::default(),
                created_at: now.clone(),
                updated_at: now,
                spec: NodeSpec {
                    name: String::new(),
                    labels: node_labels,
                    role: NodeRole::Manager,
                    availability: Availability::Active,
                },
                description: NodeDescription {
                    hostname: self.opts.hostname.clone(),
                    platform: Platform::default(),
                    executor: self.executor.name().to_string(),
                    dataplane: self.dataplane_description(),
                    resources: crate::session::machine_resources(),
                },
                status: NodeStatus {
                    state: NodeState::Unknown,
                    message: String::new(),
                    addr: adv_ip.to_string(),
                },
                manager_status: Some(ManagerStatus {
                    addr: grpc.to_string(),
                    ..Default::default()
                }),
                raft_id,
                ingress_addr: String::new(),
            },
            ingress_id: new_id(),
            ingress_spec: NetworkSpec {
                name: "ingress".into(),
                labels: Default::default(),
                driver_configuration: Driver {
                    name: "overlay".into(),
                    options: Default::default(),
                },
                ingress: true,
                attachable: false,
                internal: false,
                ipam_options: IpamOptions::default(),
            },
            dynamic_ports,
        };
        let mut proposed = manager.raft.propose(Command::Init(Box::new(init))).await;
        if let (Ok(_), Some(kek)) = (&proposed, &kek) {
            let autolock =
                shoal_manager::controlapi::autolock::init_autolock(&spec, kek, &data_key);
            proposed = manager.raft.propose(autolock).await;
        }
        if let Err(e) = proposed {
            // Nothing was committed: undo everything so a corrected init can run.
            running.agent.stop();
            if let Some(m) = running.manager {
                m.stop().await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = self.dir.wipe();
            return Err(shoal_manager::controlapi::propose_status(e));
        }
        self.dir
            .save_certs(&certs, kek.as_ref().map(|_| &data_key))
            .map_err(internal)?;
        self.dir.save_identity(&identity).map_err(internal)?;
        self.install(&mut inner, running);
        tracing::info!(node = %node_id, autolock = req.autolock, "swarm initialized");
        Ok(LocalResponse::Joined { node_id })
    }

    async fn join(self: &Arc<Self>, req: SwarmJoin) -> Result<LocalResponse, Status> {
        let mut inner = self.inner.lock().await;
        if inner.is_some() {
            return Err(already_in_swarm());
        }
        let token = JoinToken::parse(&req.token)
            .map_err(|e| err(ErrorKind::Invalid, format!("invalid join token: {e}")))?;
        let remote = parse_addr(&req.remote_addr, DEFAULT_PORT, "manager address")?;
        let listen_default = format!("0.0.0.0:{DEFAULT_PORT}");
        let (listen, adv_ip, grpc) = resolve_addrs(
            if req.listen_addr.is_empty() {
                &listen_default
            } else {
                &req.listen_addr
            },
            &req.advertise_addr,
        )?;
        // Refuse before asking to join if this node could not serve as a manager there.
        drop(std::net::TcpListener::bind(listen).map_err(|e| {
            err(
                ErrorKind::Invalid,
                format!("cannot listen on {listen}: {e}; choose another --listen-addr"),
            )
        })?);
        let ca_pem = tokio::time::timeout(
            MANAGER_CALL_DEADLINE,
            ca::tls::fetch_root_ca(remote, &token.ca_digest),
        )
        .await
        .map_err(|_| {
            err(
                ErrorKind::Unavailable,
                format!("manager {remote} did not answer within {MANAGER_CALL_DEADLINE:?}"),
            )
        })?
        .map_err(|e| err(ErrorKind::Permission, e.to_string()))?;
        let (key_pem, csr_pem) = ca::new_key_and_csr().map_err(internal)?;
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{remote}"))
            .map_err(internal)?
            .tls_config(ca::tls::join_client_tls(&ca_pem))
            .map_err(internal)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(MANAGER_CALL_DEADLINE)
            .connect()
            .await
            .map_err(|e| {
                err(
                    ErrorKind::Unavailable,
                    format!("cannot reach manager {remote}: {e}"),
                )
            })?;
        let mut client = pb::ca_client::CaClient::new(channel);
        let request = JoinRequest {
            token: req.token.clone(),
            csr_pem,
            description: NodeDescription {
                hostname: self.opts.hostname.clone(),
                platform: Platform {
                    architecture: std::env::consts::ARCH.into(),
                    os: std::env::consts::OS.into(),
                },
                executor: self.executor.name().into(),
                dataplane: self.dataplane_description(),
                resources: crate::session::machine_resources(),
            },
            advertise_addr: adv_ip.to_string(),
            grpc_addr: grpc.to_string(),
        };
        let answer: JoinResponse = unframe(client.join(frame(&request)).await?.get_ref())?;
        let kek = match answer.role {
            NodeRole::Manager => parse_unlock_key(answer.unlock_key.as_ref())?,
            NodeRole::Worker => None,
        };
        let data_key = self.save_data_key(answer.data_key.as_ref(), kek.as_ref())?;
        let certs = Certs {
            ca_pem: answer.ca_pem,
            cert_pem: answer.cert_pem,
            key_pem,
        };
        let mut managers = answer.managers;
        if !managers.iter().any(|m| m.addr == remote.to_string()) {
            managers.push(ManagerPeer {
                node_id: String::new(),
                raft_id: 0,
                addr: remote.to_string(),
            });
        }
        let identity = Identity {
            node_id: answer.node_id.clone(),
            cluster_id: answer.cluster_id,
            role: answer.role,
            raft_id: answer.raft_id,
            advertise_addr: adv_ip.to_string(),
            listen_addr: listen.to_string(),
            grpc_addr: grpc.to_string(),
            managers,
        };
        self.dir
            .save_certs(&certs, kek.as_ref().and(data_key.as_ref()))
            .map_err(internal)?;
        self.dir.save_identity(&identity).map_err(internal)?;
        let running = self.start_node(identity, certs, false, None, kek).await?;
        if let Some(m) = &running.manager {
            // A new manager counts towards quorum at once: answer only once it has caught up,
            // so the next write does not find the cluster short of a majority.
            for _ in 0..400 {
                let caught_up = m.raft.leader_id() != 0
                    && m.raft.voters().contains(&m.raft.id)
                    && m.raft.state().cluster.is_some();
                if caught_up {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.install(&mut inner, running);
        Ok(LocalResponse::Joined {
            node_id: answer.node_id,
        })
    }

    async fn leave(&self, force: bool) -> Result<LocalResponse, Status> {
        let mut inner = self.inner.lock().await;
        let Some(running) = inner.as_ref() else {
            return Err(err(
                ErrorKind::Unavailable,
                "This node is not part of a swarm",
            ));
        };
        if running.identity.role == NodeRole::Manager && !force {
            let (reachable, managers) = running
                .manager
                .as_ref()
                .map(|m| m.raft.reachable())
                .unwrap_or((1, 1));
            return Err(err(
                ErrorKind::Precondition,
                format!(
                    "You are attempting to leave the swarm on a node that is participating as a manager ({reachable} of {managers} managers reachable). Demote it first with 'shoal node demote', or use --force to ignore this message."
                ),
            ));
        }
        if let Some(m) = &running.manager {
            // Hand our raft seat back first, so the remaining managers keep a correct
            // majority; skipped when this is the last manager or quorum is gone.
            let id = running.identity.node_id.clone();
            let others = m.raft.voters().len() > 1;
            if others {
                let demote = shoal_api::control::ControlRequest::NodeUpdate(
                    shoal_api::control::NodeUpdate {
                        node: id,
                        role: Some(NodeRole::Worker),
                        ..Default::default()
                    },
                );
                match m.control.handle(demote).await {
                    Ok(_) => {
                        for _ in 0..100 {
                            if !m.raft.voters().contains(&m.raft.id) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "leaving without giving up the raft seat")
                    }
                }
            }
        }
        let running = inner.take().expect("checked");
        running.agent.stop();
        running.runner.stop_all().await;
        running.runner.remove_mesh();
        if let Some(m) = running.manager {
            m.stop().await;
        }
        // Let the raft thread and server wind down before their files go.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.dir.wipe().map_err(internal)?;
        Ok(LocalResponse::Done)
    }

    async fn info(&self) -> LocalResponse {
        let inner = self.inner.lock().await;
        let info = match inner.as_ref() {
            None => NodeInfo {
                local_node_state: "inactive".into(),
                node_id: String::new(),
                cluster_id: String::new(),
                control_available: false,
                node_addr: String::new(),
                remote_managers: vec![],
                node: None,
                held_secrets: vec![],
            },
            Some(r) => {
                let view_node = r.agent.view.read().expect("view lock").node.clone();
                let node = match (&r.manager, view_node) {
                    (Some(m), _) => m
                        .raft
                        .state()
                        .nodes
                        .get(&r.identity.node_id)
                        .map(|n| m.control.node_view(n)),
                    (None, n) => n,
                };
                let remote = r
                    .agent
                    .view
                    .read()
                    .expect("view lock")
                    .managers
                    .iter()
                    .map(|m| m.addr.clone())
                    .collect::<Vec<_>>();
                NodeInfo {
                    local_node_state: "active".into(),
                    node_id: r.identity.node_id.clone(),
                    cluster_id: r.identity.cluster_id.clone(),
                    control_available: r.manager.is_some(),
                    node_addr: r.identity.advertise_addr.clone(),
                    remote_managers: if remote.is_empty() {
                        r.identity.managers.iter().map(|m| m.addr.clone()).collect()
                    } else {
                        remote
                    },
                    node,
                    held_secrets: r
                        .agent
                        .view
                        .read()
                        .expect("view lock")
                        .secrets
                        .iter()
                        .map(|s| s.spec.name.clone())
                        .collect(),
                }
            }
        };
        LocalResponse::Info(Box::new(info))
    }

    /// Reads the manager's raft status and node states into the metrics, then encodes
    /// them (`GET /metrics`).
    pub async fn metrics_text(&self) -> String {
        let m = crate::metrics::global();
        {
            let inner = self.inner.lock().await;
            m.nodes.clear();
            match inner.as_ref().and_then(|r| r.manager.as_ref()) {
                Some(mgr) => {
                    use std::sync::atomic::Ordering;
                    let st = &mgr.raft.status;
                    m.raft_term.set(st.term.load(Ordering::SeqCst) as i64);
                    m.raft_commit_index
                        .set(st.commit.load(Ordering::SeqCst) as i64);
                    m.raft_leader.set(i64::from(mgr.raft.is_leader()));
                    for n in mgr.raft.state().nodes.values() {
                        m.nodes
                            .get_or_create(&crate::metrics::StateLabel {
                                state: n.status.state.to_string(),
                            })
                            .inc();
                    }
                }
                None => {
                    m.raft_leader.set(0);
                }
            }
        }
        crate::metrics::encode()
    }

    /// The dataplane as `node inspect` shows it.
    fn dataplane_description(&self) -> String {
        self.opts
            .dataplane
            .as_ref()
            .filter(|_| self.opts.overlays)
            .map(|d| d.describe())
            .unwrap_or_else(|| "none (shoald is not root)".into())
    }

    async fn doctor(&self) -> LocalResponse {
        let checks = tokio::task::spawn_blocking(crate::doctor::checks)
            .await
            .unwrap_or_default();
        let inner = self.inner.lock().await;
        let mut report = shoal_api::local::DoctorReport {
            executor: self.executor.name().to_string(),
            dataplane: "none (not in a swarm)".into(),
            checks,
            ..Default::default()
        };
        if let Some(r) = inner.as_ref() {
            report.node_id = r.identity.node_id.clone();
            report.dataplane = r.runner.dataplane_name();
            let view = r.agent.view.read().expect("view lock").clone();
            let states: std::collections::BTreeMap<String, String> = match &r.manager {
                Some(m) => m
                    .raft
                    .state()
                    .nodes
                    .values()
                    .map(|n| (n.id.clone(), n.status.state.to_string()))
                    .collect(),
                None => Default::default(),
            };
            let mut peers: std::collections::BTreeMap<String, shoal_api::local::DoctorPeer> =
                Default::default();
            for n in &view.networks {
                for p in &n.peers {
                    let peer = peers.entry(p.node_id.clone()).or_insert_with(|| {
                        shoal_api::local::DoctorPeer {
                            node_id: p.node_id.clone(),
                            addr: p.addr.clone(),
                            networks: vec![],
                            state: states
                                .get(&p.node_id)
                                .cloned()
                                .unwrap_or_else(|| "unknown here (ask a manager)".into()),
                        }
                    });
                    peer.networks.push(n.network.spec.name.clone());
                }
            }
            report.peers = peers.into_values().collect();
        }
        LocalResponse::Doctor(Box::new(report))
    }

    async fn control(
        &self,
        req: shoal_api::control::ControlRequest,
    ) -> Result<LocalResponse, Status> {
        let control = {
            let inner = self.inner.lock().await;
            let Some(running) = inner.as_ref() else {
                return Err(err(
                    ErrorKind::Unavailable,
                    "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect this node to swarm and try again.",
                ));
            };
            match &running.manager {
                Some(m) => m.control.clone(),
                None => {
                    return Err(err(
                        ErrorKind::Unavailable,
                        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.",
                    ));
                }
            }
        };
        let answer: ControlResponse = control.handle(req).await?;
        Ok(LocalResponse::Control(answer))
    }

    /// `service logs`: the leader gathers the output; another manager relays its stream.
    pub(crate) async fn logs(
        &self,
        req: shoal_api::logs::LogsRequest,
    ) -> Result<FrameStream, Status> {
        use tokio_stream::StreamExt;
        if self.is_locked() {
            return Err(lock::locked_error());
        }
        let (certs, leader_addr) = {
            let inner = self.inner.lock().await;
            let Some(running) = inner.as_ref() else {
                return Err(err(
                    ErrorKind::Unavailable,
                    "This node is not part of a swarm",
                ));
            };
            let Some(m) = &running.manager else {
                return Err(err(
                    ErrorKind::Unavailable,
                    "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.",
                ));
            };
            if m.raft.is_leader() {
                let rx = m.dispatcher.subscribe_logs(req)?;
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                    .map(|item| item.map(|line| frame(&line)));
                return Ok(Box::pin(stream));
            }
            let addr = m.raft.leader_addr().ok_or_else(|| {
                err(
                    ErrorKind::Unavailable,
                    "no raft leader at the moment; retry in a few seconds",
                )
            })?;
            (running.certs.clone(), addr)
        };
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{leader_addr}"))
            .map_err(internal)?
            .tls_config(ca::tls::client_tls(
                &certs.ca_pem,
                &certs.cert_pem,
                &certs.key_pem,
            ))
            .map_err(internal)?
            .connect()
            .await
            .map_err(|e| {
                err(
                    ErrorKind::Unavailable,
                    format!("cannot reach the leader at {leader_addr}: {e}"),
                )
            })?;
        let stream = pb::control_client::ControlClient::new(channel)
            .logs(frame(&req))
            .await?
            .into_inner();
        Ok(Box::pin(stream))
    }

    pub async fn handle(self: &Arc<Self>, req: LocalRequest) -> Result<LocalResponse, Status> {
        if self.is_locked() {
            return self.handle_locked(req).await;
        }
        match req {
            LocalRequest::SwarmInit(r) => self.init(r).await,
            LocalRequest::SwarmJoin(r) => self.join(r).await,
            LocalRequest::SwarmLeave { force } => self.leave(force).await,
            LocalRequest::Info => Ok(self.info().await),
            LocalRequest::Doctor => Ok(self.doctor().await),
            LocalRequest::Control(r) => self.control(r).await,
            LocalRequest::SwarmUnlock { .. } => {
                Err(lock::not_locked(self.inner.lock().await.is_some()))
            }
        }
    }

    /// Stops the agent and the manager on daemon shutdown; tasks are left running and the
    /// state dir stays. The next start finds the tasks' processes and ends them (their
    /// tasks are reported lost and replaced); adopting them comes with the sandboxes.
    pub async fn shutdown(&self) {
        if let Some(running) = self.inner.lock().await.take() {
            running.agent.stop();
            if let Some(m) = running.manager {
                m.stop().await;
            }
        }
    }
}

/// How long one call to a manager may take (connect, TLS, answer) before the next manager is
/// tried: a silent drop otherwise waits for TCP to give up.
const MANAGER_CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Asks each manager in turn for a certificate for `csr_pem`.
async fn request_renewal(
    managers: &[String],
    tls: &tonic::transport::ClientTlsConfig,
    csr_pem: &str,
) -> Result<RenewResponse, Status> {
    let mut last_err = err(ErrorKind::Unavailable, "no manager known");
    for addr in managers {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .and_then(|e| e.tls_config(tls.clone()))
        {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(2))
                .timeout(MANAGER_CALL_DEADLINE),
            Err(e) => {
                last_err = internal(e);
                continue;
            }
        };
        let Ok(channel) = endpoint.connect().await else {
            last_err = err(
                ErrorKind::Unavailable,
                format!("cannot reach manager {addr}"),
            );
            continue;
        };
        let request = frame(&RenewRequest {
            csr_pem: csr_pem.to_string(),
        });
        match pb::ca_client::CaClient::new(channel).renew(request).await {
            Ok(reply) => return unframe::<RenewResponse>(reply.get_ref()),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// The unlock key a join or renewal answer carried, if the swarm is autolocked.
fn parse_unlock_key(key: Option<&KeyText>) -> Result<Option<UnlockKey>, Status> {
    key.map(|k| UnlockKey::parse(&k.0))
        .transpose()
        .map_err(|e| internal(format!("the unlock key from the manager: {e}")))
}

fn already_in_swarm() -> Status {
    err(
        ErrorKind::Unavailable,
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.",
    )
}

/// The local API service.
pub struct LocalService {
    pub daemon: Arc<Daemon>,
}

pub(crate) type FrameStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Frame, Status>> + Send>>;

#[tonic::async_trait]
impl pb::local_server::Local for LocalService {
    async fn call(&self, req: Request<Frame>) -> Result<Response<Frame>, Status> {
        let request: LocalRequest = unframe(req.get_ref())?;
        let answer = self.daemon.handle(request).await?;
        Ok(Response::new(frame(&answer)))
    }

    type StreamStream = FrameStream;

    async fn stream(&self, req: Request<Frame>) -> Result<Response<FrameStream>, Status> {
        let request: LocalStreamRequest = unframe(req.get_ref())?;
        match request {
            LocalStreamRequest::ServiceLogs(r) => Ok(Response::new(self.daemon.logs(r).await?)),
        }
    }
}
