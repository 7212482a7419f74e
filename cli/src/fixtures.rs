//! Objects for the unit tests of filters and `--format` rows.

use shoal_api::control::{ServiceStatus, ServiceView, TaskView};
use shoal_api::objects::*;
use std::collections::BTreeMap;

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn service(id: &str, name: &str, mode: ServiceMode, labels: &[(&str, &str)]) -> ServiceView {
    ServiceView {
        service: Service {
            id: id.into(),
            version: Version { index: 7 },
            created_at: "2024-05-01T12:00:00Z".into(),
            updated_at: "2024-05-01T12:00:00Z".into(),
            spec: ServiceSpec {
                name: name.into(),
                labels: self::labels(labels),
                task_template: TaskSpec {
                    container_spec: ContainerSpec {
                        image: "nginx:alpine@sha256:0123".into(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                mode,
                update_config: UpdateConfig::default(),
                rollback_config: None,
                endpoint_spec: EndpointSpec::default(),
            },
            previous_spec: None,
            endpoint: Endpoint::default(),
            update_status: None,
            spec_version: Version { index: 7 },
        },
        service_status: ServiceStatus {
            running_tasks: 1,
            desired_tasks: 2,
        },
    }
}

pub fn node(id: &str, host: &str, role: NodeRole, labels: &[(&str, &str)]) -> Node {
    Node {
        id: id.into(),
        version: Version { index: 3 },
        created_at: "2024-05-01T12:00:00Z".into(),
        updated_at: "2024-05-01T12:00:00Z".into(),
        spec: NodeSpec {
            name: String::new(),
            labels: self::labels(labels),
            role,
            availability: Availability::Active,
        },
        description: NodeDescription {
            hostname: host.into(),
            platform: Platform {
                architecture: "x86_64".into(),
                os: "linux".into(),
            },
            executor: "native".into(),
            dataplane: "nftables".into(),
            resources: Default::default(),
        },
        status: NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
            addr: "198.18.0.1".into(),
        },
        manager_status: (role == NodeRole::Manager).then(|| ManagerStatus {
            leader: true,
            reachability: "reachable".into(),
            addr: "198.18.0.1:2377".into(),
        }),
        raft_id: 0,
        ingress_addr: String::new(),
    }
}

pub fn network(id: &str, name: &str, labels: &[(&str, &str)]) -> Network {
    Network {
        id: id.into(),
        version: Version::default(),
        created_at: "2024-05-01T12:00:00.5Z".into(),
        updated_at: String::new(),
        spec: NetworkSpec {
            name: name.into(),
            labels: self::labels(labels),
            driver_configuration: Driver {
                name: "overlay".into(),
                options: Default::default(),
            },
            ingress: false,
            attachable: false,
            internal: false,
            ipam_options: IpamOptions::default(),
        },
        driver_state: Driver::default(),
        ipam_options: IpamOptions::default(),
    }
}

/// A task of service `<service>-id`, on node `<node>-id` named `node`.
pub fn task(
    id: &str,
    service: &str,
    slot: u64,
    node: &str,
    state: TaskState,
    desired: TaskState,
) -> TaskView {
    crate::tasks::tests::task_view(id, service, slot, node, state, desired, 5)
}
