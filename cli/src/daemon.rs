//! The connection to the local `shoald`, opened on the first request so that a bad flag
//! fails before anything is dialled.

use shoal_api::client::{ConnectError, call_local, connect_local};
use shoal_api::control::{ControlRequest, ControlResponse, ServiceView, StackDeployed, TaskView};
use shoal_api::local::{LocalRequest, LocalResponse, NodeInfo};
use shoal_api::objects::{Cluster, Network, Node};
use shoal_api::pb::local_client::LocalClient;
use shoal_api::secrets::{Config, Secret};
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Host(ConnectError),
    /// tonic says only "transport error"; the message carries the root cause instead.
    #[error("cannot connect to shoald at {path}: {cause}; is shoald running there?")]
    Connect { path: String, cause: String },
    /// The daemon's own message, shown as is.
    #[error("{0}")]
    Refused(String),
    #[error("unexpected answer from shoald: expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
}

pub struct Daemon {
    host: String,
    client: Option<LocalClient<Channel>>,
}

impl Daemon {
    pub fn new(host: impl Into<String>) -> Daemon {
        Daemon {
            host: host.into(),
            client: None,
        }
    }

    pub async fn local(&mut self, req: &LocalRequest) -> Result<LocalResponse, DaemonError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self
                .client
                .insert(connect_local(&self.host).await.map_err(connect_error)?),
        };
        call_local(client, req).await.map_err(|status| {
            let message = status.message().trim();
            DaemonError::Refused(if message.is_empty() {
                format!("shoald failed the request ({:?})", status.code())
            } else {
                message.to_string()
            })
        })
    }

    /// A streaming request; frames come back as the daemon sends them.
    pub async fn stream(
        &mut self,
        req: &shoal_api::local::LocalStreamRequest,
    ) -> Result<tonic::Streaming<shoal_api::pb::Frame>, DaemonError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self
                .client
                .insert(connect_local(&self.host).await.map_err(connect_error)?),
        };
        client
            .stream(shoal_api::wire::frame(req))
            .await
            .map(|r| r.into_inner())
            .map_err(|status| DaemonError::Refused(status.message().trim().to_string()))
    }

    pub async fn control(&mut self, req: ControlRequest) -> Result<ControlResponse, DaemonError> {
        match self.local(&LocalRequest::Control(req)).await? {
            LocalResponse::Control(resp) => Ok(resp),
            other => Err(unexpected("a cluster answer", local_kind(&other))),
        }
    }

    pub async fn info(&mut self) -> Result<NodeInfo, DaemonError> {
        match self.local(&LocalRequest::Info).await? {
            LocalResponse::Info(info) => Ok(*info),
            other => Err(unexpected("node info", local_kind(&other))),
        }
    }

    pub async fn doctor(&mut self) -> Result<shoal_api::local::DoctorReport, DaemonError> {
        match self.local(&LocalRequest::Doctor).await? {
            LocalResponse::Doctor(r) => Ok(*r),
            other => Err(unexpected("doctor report", local_kind(&other))),
        }
    }

    /// A request answered by `Done`.
    pub async fn done(&mut self, req: ControlRequest) -> Result<(), DaemonError> {
        match self.control(req).await? {
            ControlResponse::Done => Ok(()),
            other => Err(unexpected("Done", control_kind(&other))),
        }
    }

    pub async fn created(&mut self, req: ControlRequest) -> Result<String, DaemonError> {
        match self.control(req).await? {
            ControlResponse::Created { id } => Ok(id),
            other => Err(unexpected("Created", control_kind(&other))),
        }
    }

    pub async fn stack_deploy(
        &mut self,
        req: ControlRequest,
    ) -> Result<StackDeployed, DaemonError> {
        match self.control(req).await? {
            ControlResponse::Stack(done) => Ok(done),
            other => Err(unexpected("Stack", control_kind(&other))),
        }
    }

    pub async fn token(&mut self, req: ControlRequest) -> Result<String, DaemonError> {
        match self.control(req).await? {
            ControlResponse::Token(token) => Ok(token),
            other => Err(unexpected("Token", control_kind(&other))),
        }
    }

    pub async fn swarm(&mut self) -> Result<Cluster, DaemonError> {
        match self.control(ControlRequest::SwarmInspect).await? {
            ControlResponse::Swarm(cluster) => Ok(*cluster),
            other => Err(unexpected("Swarm", control_kind(&other))),
        }
    }

    pub async fn nodes(&mut self) -> Result<Vec<Node>, DaemonError> {
        match self.control(ControlRequest::NodeList).await? {
            ControlResponse::Nodes(nodes) => Ok(nodes),
            other => Err(unexpected("Nodes", control_kind(&other))),
        }
    }

    pub async fn node(&mut self, node: &str) -> Result<Node, DaemonError> {
        let req = ControlRequest::NodeInspect {
            node: node.to_string(),
        };
        match self.control(req).await? {
            ControlResponse::Node(node) => Ok(*node),
            other => Err(unexpected("Node", control_kind(&other))),
        }
    }

    pub async fn services(&mut self) -> Result<Vec<ServiceView>, DaemonError> {
        match self.control(ControlRequest::ServiceList).await? {
            ControlResponse::Services(services) => Ok(services),
            other => Err(unexpected("Services", control_kind(&other))),
        }
    }

    pub async fn service(&mut self, service: &str) -> Result<ServiceView, DaemonError> {
        let req = ControlRequest::ServiceInspect {
            service: service.to_string(),
        };
        match self.control(req).await? {
            ControlResponse::Service(service) => Ok(*service),
            other => Err(unexpected("Service", control_kind(&other))),
        }
    }

    pub async fn networks(&mut self) -> Result<Vec<Network>, DaemonError> {
        match self.control(ControlRequest::NetworkList).await? {
            ControlResponse::Networks(networks) => Ok(networks),
            other => Err(unexpected("Networks", control_kind(&other))),
        }
    }

    pub async fn network(&mut self, network: &str) -> Result<Network, DaemonError> {
        let req = ControlRequest::NetworkInspect {
            network: network.to_string(),
        };
        match self.control(req).await? {
            ControlResponse::Network(network) => Ok(*network),
            other => Err(unexpected("Network", control_kind(&other))),
        }
    }

    pub async fn secrets(&mut self) -> Result<Vec<Secret>, DaemonError> {
        match self.control(ControlRequest::SecretList).await? {
            ControlResponse::Secrets(secrets) => Ok(secrets),
            other => Err(unexpected("Secrets", control_kind(&other))),
        }
    }

    /// By id, id prefix or name.
    pub async fn secret(&mut self, secret: &str) -> Result<Secret, DaemonError> {
        let req = ControlRequest::SecretInspect {
            secret: secret.to_string(),
        };
        match self.control(req).await? {
            ControlResponse::Secret(secret) => Ok(*secret),
            other => Err(unexpected("Secret", control_kind(&other))),
        }
    }

    pub async fn configs(&mut self) -> Result<Vec<Config>, DaemonError> {
        match self.control(ControlRequest::ConfigList).await? {
            ControlResponse::Configs(configs) => Ok(configs),
            other => Err(unexpected("Configs", control_kind(&other))),
        }
    }

    /// By id, id prefix or name.
    pub async fn config(&mut self, config: &str) -> Result<Config, DaemonError> {
        let req = ControlRequest::ConfigInspect {
            config: config.to_string(),
        };
        match self.control(req).await? {
            ControlResponse::Config(config) => Ok(*config),
            other => Err(unexpected("Config", control_kind(&other))),
        }
    }

    pub async fn tasks(
        &mut self,
        service: Option<String>,
        node: Option<String>,
    ) -> Result<Vec<TaskView>, DaemonError> {
        match self
            .control(ControlRequest::TaskList { service, node })
            .await?
        {
            ControlResponse::Tasks(tasks) => Ok(tasks),
            other => Err(unexpected("Tasks", control_kind(&other))),
        }
    }
}

fn connect_error(e: ConnectError) -> DaemonError {
    match e {
        ConnectError::Connect { path, source } => {
            let mut cause: &dyn std::error::Error = &source;
            while let Some(next) = cause.source() {
                cause = next;
            }
            DaemonError::Connect {
                path,
                cause: cause.to_string(),
            }
        }
        other => DaemonError::Host(other),
    }
}

fn unexpected(expected: &'static str, got: &'static str) -> DaemonError {
    DaemonError::Unexpected { expected, got }
}

fn local_kind(resp: &LocalResponse) -> &'static str {
    match resp {
        LocalResponse::Done => "Done",
        LocalResponse::Joined { .. } => "Joined",
        LocalResponse::Info(_) => "Info",
        LocalResponse::Doctor(_) => "Doctor",
        LocalResponse::Control(c) => control_kind(c),
    }
}

fn control_kind(resp: &ControlResponse) -> &'static str {
    match resp {
        ControlResponse::Done => "Done",
        ControlResponse::Created { .. } => "Created",
        ControlResponse::Swarm(_) => "Swarm",
        ControlResponse::Token(_) => "Token",
        ControlResponse::Nodes(_) => "Nodes",
        ControlResponse::Node(_) => "Node",
        ControlResponse::Services(_) => "Services",
        ControlResponse::Service(_) => "Service",
        ControlResponse::Networks(_) => "Networks",
        ControlResponse::Network(_) => "Network",
        ControlResponse::Tasks(_) => "Tasks",
        ControlResponse::Stack(_) => "Stack",
        ControlResponse::Secrets(_) => "Secrets",
        ControlResponse::Secret(_) => "Secret",
        ControlResponse::Configs(_) => "Configs",
        ControlResponse::Config(_) => "Config",
        ControlResponse::UnlockKey(_) => "UnlockKey",
    }
}
