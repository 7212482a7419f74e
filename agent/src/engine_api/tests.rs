//! The router on a daemon that is in no swarm: negotiation, Docker's error shapes, and the
//! routes that are not shoal's. The swarm routes are shown against a real cluster by
//! `integration/tests/engine_api.rs`, with the docker CLI and docker-py.

use super::*;
use crate::daemon::DaemonOptions;
use crate::exec::by_runtime::ByRuntime;
use crate::exec::native::NativeExecutor;
use axum::http::Method;
use std::time::Duration;

fn api(dir: &Path) -> Router {
    let executor = ByRuntime::new(
        NativeExecutor::new(None, dir.join("tasks")),
        None,
        "n1".into(),
        crate::taskfiles::TaskFilesDir::open(&dir.join("files")),
    );
    let daemon = Daemon::new(
        DaemonOptions {
            state_dir: dir.join("state"),
            socket: dir.join("sock"),
            hostname: "n1".into(),
            raft_tick: Duration::from_millis(50),
            overlays: false,
            dataplane: None,
        },
        Arc::new(executor),
    )
    .unwrap();
    router(Api::new(daemon))
}

async fn call(
    dir: &Path,
    method: Method,
    path: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let resp = versioned(api(dir), req).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn ping_negotiates_and_tells_the_swarm_state() {
    let dir = tempfile::tempdir().unwrap();
    for path in ["/_ping", "/v1.41/_ping", "/v1.24/_ping"] {
        let (status, h, body) = call(dir.path(), Method::GET, path).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"), "{path}");
        assert_eq!(h["API-Version"], API_VERSION);
        assert_eq!(h["OSType"], "linux");
        assert_eq!(h["Swarm"], "inactive");
    }
    let (status, _, body) = call(dir.path(), Method::HEAD, "/_ping").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let (status, h, body) = call(dir.path(), Method::GET, "/v1.50/_ping").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h["API-Version"], API_VERSION,
        "a refused client still learns the version"
    );
    assert!(
        body.contains("client version 1.50 is too new. Maximum supported API version is 1.41"),
        "{body}"
    );
    let (status, _, body) = call(dir.path(), Method::GET, "/v1.12/info").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("too old"), "{body}");
}

#[tokio::test]
async fn swarm_routes_off_a_swarm_are_docker_s_503_and_the_rest_is_501() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, body) = call(dir.path(), Method::GET, "/v1.41/services").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not a swarm manager"),
        "{body}"
    );
    let (status, _, body) = call(dir.path(), Method::GET, "/v1.41/containers/json").await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert!(body.contains("node's own engine"), "{body}");
    let (status, _, body) = call(
        dir.path(),
        Method::GET,
        "/v1.41/distribution/busybox:1/json",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    let (status, _, body) = call(dir.path(), Method::GET, "/info").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(v["Swarm"]["ControlAvailable"], false);
    let (status, _, body) = call(dir.path(), Method::GET, "/version").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["ApiVersion"].as_str(), v["MinAPIVersion"].as_str()),
        (Some(API_VERSION), Some(MIN_API_VERSION))
    );
}

#[test]
fn versions_compare_by_number() {
    assert!(newer("1.50", "1.41") && newer("1.41", "1.9") && !newer("1.41", "1.41"));
    assert!(newer("2.0", "1.41") && !newer("1.24", "1.41"));
}
