//! A node's view holds exactly what it needs, and deltas rebuild it exactly; the leader
//! takes from a node's reports and log streams only what concerns that node's own tasks.

use super::view::{diff, node_view};
use crate::store::tests::{cluster, service_spec};
use crate::store::{ClusterState, Command, TaskOp};
use shoal_api::objects::*;

const NOW: &str = "2026-11-25T12:00:00Z";

fn add_node(s: &mut ClusterState, id: &str, addr: &str) {
    let mut n = s.nodes["n1"].clone();
    n.id = id.into();
    n.status.addr = addr.into();
    n.manager_status = None;
    n.spec.role = NodeRole::Worker;
    s.nodes.insert(id.into(), n);
}

fn task(id: &str, service: &str, slot: u64, node: &str, s: &ClusterState) -> Task {
    Task {
        id: id.into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        service_id: service.into(),
        slot,
        node_id: node.into(),
        spec: s.services[service].spec.task_template.clone(),
        spec_version: s.services[service].spec_version,
        status: TaskStatus::default(),
        desired_state: TaskState::Running,
        networks_attachments: vec![],
        restart_count: 0,
    }
}

fn running(id: &str) -> TaskOp {
    TaskOp::Status {
        id: id.into(),
        status: TaskStatus {
            state: TaskState::Running,
            timestamp: NOW.into(),
            ..Default::default()
        },
    }
}

/// Cluster with nodes n1 (198.18.0.1), n2, n3; network "app"; service web with tasks on
/// n1 and n2, running.
fn setup() -> ClusterState {
    let mut s = cluster((30000, 32767));
    s.nodes.get_mut("n1").unwrap().status.addr = "198.18.0.1".into();
    add_node(&mut s, "n2", "198.18.0.2");
    add_node(&mut s, "n3", "198.18.0.3");
    let net = NetworkSpec {
        name: "app".into(),
        labels: Default::default(),
        driver_configuration: Driver {
            name: "overlay".into(),
            options: Default::default(),
        },
        ingress: false,
        attachable: false,
        internal: false,
        ipam_options: IpamOptions::default(),
    };
    s.apply(
        2,
        Command::CreateNetwork {
            id: "app".into(),
            spec: net,
            now: NOW.into(),
        },
    )
    .unwrap();
    s.apply(
        3,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 2, &[], &["app"]),
            now: NOW.into(),
        },
    )
    .unwrap();
    let t1 = task("t1", "web", 1, "n1", &s);
    let t2 = task("t2", "web", 2, "n2", &s);
    s.apply(
        4,
        Command::Tasks {
            ops: vec![
                TaskOp::Create(Box::new(t1)),
                TaskOp::Create(Box::new(t2)),
                running("t1"),
                running("t2"),
            ],
            now: NOW.into(),
        },
    )
    .unwrap();
    s
}

#[test]
fn a_view_holds_the_nodes_tasks_networks_peers_and_endpoints() {
    let s = setup();
    let v = node_view(&s, "n1", None);
    assert_eq!(
        v.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t1"]
    );
    let app = v
        .networks
        .iter()
        .find(|n| n.network.id == "app")
        .expect("app network");
    let peers: Vec<&str> = app.peers.iter().map(|p| p.addr.as_str()).collect();
    assert_eq!(
        peers,
        ["198.18.0.2"],
        "the other node with a task on app; not n3"
    );
    let ingress = v
        .networks
        .iter()
        .find(|n| n.network.spec.ingress)
        .expect("ingress everywhere");
    assert_eq!(ingress.peers.len(), 2);
    let web = v
        .endpoints
        .iter()
        .find(|e| e.service_name == "web")
        .expect("web endpoint");
    assert_eq!(web.virtual_ips.len(), 1);
    assert_eq!(
        web.backends.len(),
        2,
        "both running tasks, wherever they run"
    );
    assert!(web.backends.iter().all(|b| b.state == TaskState::Running));

    // n3 has no task on app: it gets neither the network nor its services.
    let v3 = node_view(&s, "n3", None);
    assert!(v3.tasks.is_empty());
    assert!(v3.networks.iter().all(|n| n.network.spec.ingress));
    assert!(v3.endpoints.is_empty());
}

#[test]
fn deltas_rebuild_the_new_view_exactly() {
    let mut s = setup();
    let before = node_view(&s, "n1", None);
    // t2 fails: it leaves the backends; a replacement lands on n1.
    let t3 = task("t3", "web", 2, "n1", &s);
    s.apply(
        5,
        Command::Tasks {
            ops: vec![
                TaskOp::Status {
                    id: "t2".into(),
                    status: TaskStatus {
                        state: TaskState::Failed,
                        timestamp: NOW.into(),
                        ..Default::default()
                    },
                },
                TaskOp::Create(Box::new(t3)),
            ],
            now: NOW.into(),
        },
    )
    .unwrap();
    let after = node_view(&s, "n1", None);
    let changes = diff(&before, &after);
    assert!(!changes.is_empty());
    let mut rebuilt = before.clone();
    rebuilt.apply(changes);
    assert_eq!(rebuilt, after);
    let web = after
        .endpoints
        .iter()
        .find(|e| e.service_name == "web")
        .unwrap();
    assert_eq!(web.backends.len(), 1, "the failed task is no backend");
    assert!(diff(&after, &after).is_empty());
}

#[test]
fn registry_credentials_go_opened_only_to_nodes_with_a_task_of_the_service() {
    use crate::ca::DataKey;
    let mut s = setup();
    let key = DataKey::generate();
    let sealed = key.seal_text("web", "eyJ1c2VybmFtZSI6InUifQ==");
    s.apply(
        5,
        Command::SetRegistryAuth {
            service_id: "web".into(),
            sealed,
        },
    )
    .unwrap();
    let auth_of = |v: &shoal_api::dispatch::NodeView| {
        v.services
            .iter()
            .find(|a| a.service_id == "web")
            .and_then(|a| a.registry_auth.clone())
            .map(|a| a.as_str().to_string())
    };
    let v1 = node_view(&s, "n1", Some(&key));
    assert_eq!(auth_of(&v1).as_deref(), Some("eyJ1c2VybmFtZSI6InUifQ=="));
    assert!(
        node_view(&s, "n3", Some(&key)).services.is_empty(),
        "no task on n3"
    );
    // Without the key (a cluster from before data keys) or with another one: none.
    assert_eq!(auth_of(&node_view(&s, "n1", None)), None);
    assert_eq!(
        auth_of(&node_view(&s, "n1", Some(&DataKey::generate()))),
        None
    );
    // A new view with the credentials reaches the node as a service upsert.
    let d = diff(&node_view(&s, "n1", None), &v1);
    assert!(d.iter().any(
        |c| matches!(c, shoal_api::dispatch::Change::ServiceUpsert(a) if a.registry_auth.is_some())
    ));
}

#[test]
fn a_secret_reaches_only_nodes_whose_live_tasks_use_it_and_leaves_when_they_end() {
    use crate::ca::DataKey;
    use shoal_api::dispatch::Change;
    use shoal_api::secrets::*;
    let mut s = setup();
    let key = DataKey::generate();
    s.apply(
        5,
        Command::CreateSecret {
            id: "sec".into(),
            spec: SecretSpec {
                name: "db".into(),
                ..Default::default()
            },
            sealed: key.seal_b64("sec", b"hunter2"),
            now: NOW.into(),
        },
    )
    .unwrap();
    s.apply(
        6,
        Command::CreateSecret {
            id: "other".into(),
            spec: SecretSpec {
                name: "unused".into(),
                ..Default::default()
            },
            sealed: key.seal_b64("other", b"nobody-needs-this"),
            now: NOW.into(),
        },
    )
    .unwrap();
    let mut spec = s.services["web"].spec.clone();
    spec.task_template.container_spec.secrets = vec![SecretReference {
        file: Some(FileTarget::new("db")),
        secret_id: String::new(),
        secret_name: "db".into(),
    }];
    let version = s.services["web"].version.index;
    s.apply(
        7,
        Command::UpdateService {
            id: "web".into(),
            version,
            spec,
            now: NOW.into(),
        },
    )
    .unwrap();
    // The rollout's new task on n1; n2 keeps its task of the old spec, n3 has none.
    let mut t3 = task("t3", "web", 1, "n1", &s);
    t3.desired_state = TaskState::Running;
    s.apply(
        8,
        Command::Tasks {
            ops: vec![TaskOp::Create(Box::new(t3))],
            now: NOW.into(),
        },
    )
    .unwrap();
    let before = node_view(&s, "n1", Some(&key));
    assert_eq!(before.secrets.len(), 1);
    assert_eq!(before.secrets[0].id, "sec");
    assert_eq!(before.secrets[0].data.as_slice(), b"hunter2");
    for n in ["n2", "n3"] {
        assert!(node_view(&s, n, Some(&key)).secrets.is_empty(), "{n}");
    }
    // Another key (or none) opens nothing: the node gets no secret rather than garbage.
    assert!(
        node_view(&s, "n1", Some(&DataKey::generate()))
            .secrets
            .is_empty()
    );
    assert!(node_view(&s, "n1", None).secrets.is_empty());

    // The task stops: the secret leaves n1's view, as a removal in the delta.
    s.apply(
        9,
        Command::Tasks {
            ops: vec![TaskOp::SetDesired {
                id: "t3".into(),
                state: TaskState::Shutdown,
            }],
            now: NOW.into(),
        },
    )
    .unwrap();
    let after = node_view(&s, "n1", Some(&key));
    assert!(after.secrets.is_empty());
    let changes = diff(&before, &after);
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::SecretRemove(id) if id == "sec"))
    );
    let mut rebuilt = before.clone();
    rebuilt.apply(changes);
    assert_eq!(rebuilt, after);
    // Nothing in a view's debug output shows the data.
    assert!(!format!("{before:?}").contains("hunter2"));
}

// The leader's side of reports and log streams, on an in-memory raft.

use super::{Dispatcher, STATUS_BATCH_MAX, STATUS_QUEUE};
use crate::consensus::RaftHandle;
use crate::consensus::node::InMemoryRaft;
use shoal_api::dispatch::{ReportRequest, SessionMessage, SessionRequest, TaskStatusUpdate};
use shoal_api::logs::{LogsRequest, PublishItem};
use std::time::Duration;

fn leader() -> (Dispatcher, InMemoryRaft) {
    let (raft, fake) = RaftHandle::in_memory(setup());
    let (d, _loops) = Dispatcher::start(raft, None);
    (d, fake)
}

fn update(task: &str, state: TaskState) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: task.into(),
        status: TaskStatus {
            state,
            timestamp: NOW.into(),
            ..Default::default()
        },
    }
}

fn report(node: &str, statuses: Vec<TaskStatusUpdate>) -> ReportRequest {
    ReportRequest {
        node_id: node.into(),
        statuses,
        applied_version: 0,
        draining: vec![],
    }
}

/// The task ids of each status entry proposed so far.
fn status_entries(fake: &InMemoryRaft) -> Vec<Vec<String>> {
    fake.entries
        .lock()
        .unwrap()
        .iter()
        .filter_map(|c| match c {
            Command::Tasks { ops, .. } => Some(
                ops.iter()
                    .filter_map(|op| match op {
                        TaskOp::Status { id, .. } => Some(id.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5s: {what}");
}

#[tokio::test]
async fn a_report_updates_only_tasks_the_store_has_on_that_node() {
    let (d, fake) = leader();
    d.report("n2", report("n2", vec![update("ghost", TaskState::Failed)]))
        .await
        .expect("an unknown id is dropped, not a reason to refuse the heartbeat");
    let mixed = vec![
        update("t1", TaskState::Failed),
        update("ghost", TaskState::Failed),
        update("t2", TaskState::Complete),
    ];
    d.report("n2", report("n2", mixed))
        .await
        .expect("another node's task is dropped; n2's own update still counts");
    eventually("t2 completes", || {
        d.raft.state().tasks["t2"].status.state == TaskState::Complete
    })
    .await;
    assert_eq!(d.raft.state().tasks["t1"].status.state, TaskState::Running);
    let entries = status_entries(&fake);
    assert_eq!(
        entries,
        [vec!["t2".to_string()]],
        "nothing else reached raft"
    );
}

#[tokio::test]
async fn a_large_report_is_split_into_bounded_raft_entries() {
    let (d, fake) = leader();
    let n = 2 * STATUS_BATCH_MAX + 50;
    // Each one a change from what the store has (Running) when the report comes.
    let statuses = (0..n).map(|_| update("t1", TaskState::Complete)).collect();
    d.report("n1", report("n1", statuses)).await.unwrap();
    eventually("every update proposed", || {
        status_entries(&fake).iter().map(Vec::len).sum::<usize>() == n
    })
    .await;
    let sizes: Vec<usize> = status_entries(&fake).iter().map(Vec::len).collect();
    assert!(
        sizes.iter().all(|&len| len <= STATUS_BATCH_MAX),
        "entry sizes {sizes:?}"
    );
}

#[tokio::test]
async fn a_full_status_queue_fails_the_report_instead_of_growing() {
    let (d, fake) = leader();
    // Raft stops committing: the batcher holds one batch, the queue fills behind it.
    fake.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let n = STATUS_QUEUE + 2 * STATUS_BATCH_MAX;
    let statuses = (0..n).map(|_| update("t1", TaskState::Complete)).collect();
    let err = d
        .report("n1", report("n1", statuses))
        .await
        .expect_err("more than the queue holds");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
}

#[tokio::test]
async fn reports_that_change_nothing_cost_no_raft_entry() {
    let (d, fake) = leader();
    // t1 runs on n1: a flood of "running", and of states behind it, changes nothing.
    for _ in 0..50 {
        let flood = (0..200)
            .flat_map(|_| {
                [
                    update("t1", TaskState::Running),
                    update("t1", TaskState::Starting),
                ]
            })
            .collect();
        d.report("n1", report("n1", flood)).await.unwrap();
    }
    // A real change in the same kind of report still goes through, alone.
    let mut last = vec![update("t1", TaskState::Running); 100];
    last.push(update("t1", TaskState::Failed));
    d.report("n1", report("n1", last)).await.unwrap();
    eventually("t1 fails", || {
        d.raft.state().tasks["t1"].status.state == TaskState::Failed
    })
    .await;
    assert_eq!(status_entries(&fake), [vec!["t1".to_string()]]);
}

#[tokio::test]
async fn only_the_nodes_a_log_subscription_went_to_publish_to_it() {
    let (d, _fake) = leader();
    let mut sessions = Vec::new();
    for node in ["n1", "n2", "n3"] {
        let req = SessionRequest {
            node_id: node.into(),
            description: Default::default(),
        };
        let mut rx = d.session(node, req).await.unwrap();
        assert!(matches!(
            rx.recv().await,
            Some(Ok(SessionMessage::Snapshot { .. }))
        ));
        sessions.push(rx);
    }
    // The snapshot goes out before the session can take a subscription.
    eventually("three sessions registered", || {
        d.sessions.lock().unwrap().len() == 3
    })
    .await;
    let mut reader = d
        .subscribe_logs(LogsRequest {
            service: "web".into(),
            follow: false,
            tail: None,
            since: None,
        })
        .unwrap();
    let mut asked = Vec::new();
    for rx in &mut sessions[..2] {
        match rx.recv().await {
            Some(Ok(SessionMessage::Logs(sub))) => asked.push(sub),
            other => panic!("expected a log subscription, got {other:?}"),
        }
    }
    let id = asked[0].id;
    assert_eq!(asked[0].task_ids, ["t1"]);
    assert_eq!(asked[1].task_ids, ["t2"]);
    let publish = |node: &'static str, items: Vec<PublishItem>| {
        let d = d.clone();
        async move {
            let stream = tokio_stream::iter(items.into_iter().map(Ok));
            d.publish_logs(node, stream).await
        }
    };
    let line = |task: &str, text: &str| PublishItem::Line {
        task_id: task.into(),
        line: text.into(),
        time: None,
        stream: Default::default(),
    };
    // n3 has no task of web and was sent nothing: refused, and its Done ends nothing.
    let err = publish(
        "n3",
        vec![
            PublishItem::Start { subscription: id },
            line("t1", "forged by n3"),
            PublishItem::Done,
        ],
    )
    .await
    .expect_err("n3 was not asked");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // n2 was asked, for t2 only: its line for n1's t1 is dropped.
    publish(
        "n2",
        vec![
            PublishItem::Start { subscription: id },
            line("t1", "forged by n2"),
            line("t2", "from n2"),
            PublishItem::Done,
        ],
    )
    .await
    .unwrap();
    publish(
        "n1",
        vec![
            PublishItem::Start { subscription: id },
            line("t1", "from n1"),
            PublishItem::Done,
        ],
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Some(l) = reader.recv().await {
        let l = l.unwrap();
        got.push((l.task_id, l.line));
    }
    assert_eq!(
        got,
        [
            ("t2".to_string(), "from n2".to_string()),
            ("t1".to_string(), "from n1".to_string())
        ]
    );
}
