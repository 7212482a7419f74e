//! A worker's certificate in hostile hands, and an anonymous caller: every abuse is refused
//! or ignored, the store keeps what it had, and the leader's peak memory stays flat.

use shoal_api::dispatch::{ReportRequest, SessionRequest, TaskStatusUpdate};
use shoal_api::join::RenewRequest;
use shoal_api::logs::PublishItem;
use shoal_api::objects::{NodeDescription, TaskState, TaskStatus};
use shoal_api::pb::{self, RaftBatch};
use shoal_api::wire::frame;
use shoal_integration::{LocalCluster, eventually};
use std::time::Duration;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

fn ok(c: &LocalCluster, i: usize, args: &[&str]) -> String {
    c.shoal_ok(i, args)
}

/// The largest resident size the process has had, in KiB (`VmHWM`).
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn node_tls(c: &LocalCluster, i: usize) -> ClientTlsConfig {
    let dir = c.nodes[i].dir.join("state/certificates");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    shoal_manager::ca::tls::client_tls(
        &read("swarm-root-ca.crt"),
        &read("swarm-node.crt"),
        &read("swarm-node.key"),
    )
}

async fn channel(addr: &str, tls: ClientTlsConfig) -> Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn status(state: TaskState) -> TaskStatus {
    TaskStatus {
        timestamp: "2026-12-04T00:00:00Z".into(),
        state,
        message: "forged".into(),
        err: String::new(),
        container_status: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_worker_and_an_anonymous_caller_change_nothing() {
    let mut c = LocalCluster::start(2, 191).expect("start daemons");
    c.form_swarm(1);
    // A task of the manager's, which the worker will try to report on.
    ok(
        &c,
        0,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "keep",
            "--constraint",
            "node.role==manager",
            "sleep",
            "1000",
        ],
    );
    let keep_task = eventually(Duration::from_secs(20), "keep running", || async {
        let ps = ok(
            &c,
            0,
            &[
                "service",
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                "desired-state=running",
                "keep",
            ],
        );
        let ls = ok(&c, 0, &["service", "ls"]);
        ls.contains("1/1").then(|| ps.trim().to_string())
    })
    .await
    .unwrap();
    let info: serde_json::Value = serde_json::from_str(&ok(&c, 1, &["info"])).unwrap();
    let worker_id = info["NodeID"].as_str().unwrap_or_default().to_string();
    assert!(!worker_id.is_empty());
    let manager = c.nodes[0].grpc_addr();
    let pid = c.pid(0).unwrap();
    let peak_before = peak_kib(pid);
    let tls = node_tls(&c, 1);
    let mut dispatcher =
        pb::dispatcher_client::DispatcherClient::new(channel(&manager, tls.clone()).await);

    // Reports on tasks the store does not have, and on the manager's own task: ignored.
    let mut statuses: Vec<TaskStatusUpdate> = (0..5000)
        .map(|i| TaskStatusUpdate {
            task_id: format!("no-such-task-{i}"),
            status: status(TaskState::Running),
        })
        .collect();
    statuses.push(TaskStatusUpdate {
        task_id: keep_task.clone(),
        status: status(TaskState::Failed),
    });
    let report = ReportRequest {
        node_id: worker_id.clone(),
        statuses,
        applied_version: 0,
        draining: vec![keep_task.clone()],
    };
    let _ = dispatcher.report(frame(&report)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ps = ok(&c, 0, &["service", "ps", "--no-trunc", "keep"]);
    assert!(
        ps.lines().count() == 2 && ps.contains("Running") && !ps.contains("forged"),
        "the manager's task is untouched: {ps}"
    );

    // Log lines for a subscription nobody sent this node: refused.
    let items = [
        PublishItem::Start { subscription: 1 },
        PublishItem::Line {
            task_id: keep_task.clone(),
            line: "spoofed".into(),
            time: None,
            stream: Default::default(),
        },
        PublishItem::Done,
    ]
    .map(|i| frame(&i));
    let e = dispatcher
        .publish_logs(tokio_stream::iter(items))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::PermissionDenied | Code::NotFound | Code::Unavailable
        ),
        "{e:?}"
    );

    // Junk certificate requests.
    let mut ca = pb::ca_client::CaClient::new(channel(&manager, tls.clone()).await);
    let e = ca
        .renew(frame(&RenewRequest {
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\njunk\n".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A thousand sessions from one node, on ten connections: the manager keeps one.
    let description = NodeDescription {
        hostname: "node-2".into(),
        platform: Default::default(),
        executor: "native".into(),
        dataplane: String::new(),
        resources: Default::default(),
    };
    let mut open = Vec::new();
    for _ in 0..10 {
        let mut client =
            pb::dispatcher_client::DispatcherClient::new(channel(&manager, tls.clone()).await);
        for _ in 0..100 {
            let req = SessionRequest {
                node_id: worker_id.clone(),
                description: description.clone(),
            };
            if let Ok(s) = client.session(frame(&req)).await {
                open.push(s.into_inner());
            }
        }
    }
    assert!(ok(&c, 0, &["node", "ls"]).contains("node-2"));
    drop(open);

    // An anonymous caller sends a 200 MiB Raft.Send: refused before the body is read.
    let ca_pem =
        std::fs::read_to_string(c.nodes[0].dir.join("state/certificates/swarm-root-ca.crt"))
            .unwrap();
    let anon = channel(&manager, shoal_manager::ca::tls::join_client_tls(&ca_pem)).await;
    let e = pb::raft_client::RaftClient::new(anon)
        .max_encoding_message_size(usize::MAX)
        .send(RaftBatch {
            messages: vec![vec![7u8; 200 << 20]],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let peak_after = peak_kib(pid);
    eprintln!("leader peak memory: {peak_before} KiB before, {peak_after} KiB after");
    assert!(
        peak_after < peak_before + 64 * 1024,
        "the leader's peak memory grew from {peak_before} KiB to {peak_after} KiB"
    );

    // The worker is removed: its certificate, still unexpired, opens nothing.
    c.kill(1);
    ok(&c, 0, &["node", "rm", "--force", "node-2"]);
    let req = SessionRequest {
        node_id: worker_id.clone(),
        description,
    };
    let mut dispatcher =
        pb::dispatcher_client::DispatcherClient::new(channel(&manager, tls.clone()).await);
    let e = dispatcher.session(frame(&req)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not a member"), "{}", e.message());
    let e = dispatcher.report(frame(&report)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut ca = pb::ca_client::CaClient::new(channel(&manager, tls).await);
    let e = ca
        .renew(frame(&RenewRequest {
            csr_pem: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}
