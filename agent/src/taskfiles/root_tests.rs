//! Secrets and configs in real tasks: a container and a native process get their files from
//! the in-memory store, read back from inside (content, owner, mode); none of the secret's
//! bytes are under the state dir or Docker's container directories while they run; the
//! files are gone once the tasks end. Needs root (and for the container, Docker with the
//! test image); without them the tests say why they skip, under `CI=true` they fail.

use super::*;
use crate::exec::by_runtime::ByRuntime;
use crate::exec::docker::DockerExecutor;
use crate::exec::native::NativeExecutor;
use crate::exec::{Executor, Exit, Started};
use crate::netns::Sandboxes;
use shoal_api::secrets::{Config, ConfigReference, SecretPayload, SecretReference, SecretSpec};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The image scripts/test-image.sh builds (integration's `TEST_IMAGE`).
const TEST_IMAGE: &str = "shoal-test-busybox:latest";
/// Marks this test's containers, so a crashed run's are found and removed.
const TEST_LABEL: &str = "com.shoal.test=taskfiles";
/// Prefix of this test's state dirs, and so of their stores' mount points.
const STATE_PREFIX: &str = "shoal-tfroot-";

fn skip(test: &str, why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}, and CI=true does not allow skipping");
    }
    eprintln!("skipping {test}: {why}");
    false
}

fn can_run(test: &str, docker: bool) -> bool {
    if !nix::unistd::geteuid().is_root() {
        return skip(
            test,
            "it needs root (a tmpfs mount, network and mount namespaces)",
        );
    }
    if docker {
        let image = Command::new("docker")
            .args(["image", "inspect", TEST_IMAGE])
            .output()
            .is_ok_and(|o| o.status.success());
        if !image {
            return skip(
                test,
                &format!(
                    "no Docker engine with {TEST_IMAGE} (bash scripts/test-image.sh builds it)"
                ),
            );
        }
    }
    true
}

/// What an earlier, crashed run of these tests left: containers and store mounts. Once
/// per test process, before its first test: later ones would take the running tests'.
fn remove_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(remove_leftovers_now);
}

fn remove_leftovers_now() {
    if let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={TEST_LABEL}")])
        .output()
    {
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
    let stale = store::default_dir(&std::env::temp_dir().join(STATE_PREFIX))
        .display()
        .to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in info.lines().filter_map(|l| l.split(' ').nth(4)) {
        if point.starts_with(&stale) {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(point);
        }
    }
}

/// One test's node: a state dir on disk, a store, the executors; cleaned up on drop.
struct Node {
    state: tempfile::TempDir,
    store: TaskFilesDir,
    sandboxes: Sandboxes,
    executor: ByRuntime,
    /// Started tasks: (task id, pid), killed on drop if still alive.
    tasks: Vec<(String, u32)>,
}

impl Node {
    async fn new(docker: bool) -> Node {
        remove_leftovers();
        let state = tempfile::Builder::new()
            .prefix(STATE_PREFIX)
            .tempdir()
            .unwrap();
        let tasks_dir = state.path().join("tasks");
        let root = store::default_dir(state.path());
        let store = TaskFilesDir::open(&root);
        assert_eq!(store::mounted_fs(&root), None, "mounted only when needed");
        let sandboxes = Sandboxes::new(state.path());
        let docker = match docker {
            true => Some(
                DockerExecutor::connect(sandboxes.clone(), tasks_dir.clone())
                    .await
                    .unwrap(),
            ),
            false => None,
        };
        let executor = ByRuntime::new(
            NativeExecutor::new(Some(sandboxes.clone()), tasks_dir),
            docker,
            "test-node".into(),
            store.clone(),
        );
        Node {
            state,
            store,
            sandboxes,
            executor,
            tasks: Vec::new(),
        }
    }

    fn start(&mut self, task: &Task, view: &NodeView) -> Started {
        let ctx = crate::template::context(task, view);
        let files = files_for(task, view, &ctx).unwrap();
        let log = self
            .state
            .path()
            .join("tasks")
            .join(&task.id)
            .join("output.log");
        let started = self
            .executor
            .start(task, &ctx, &log, &|_| Ok(()), &files)
            .unwrap();
        self.tasks.push((task.id.clone(), started.pid));
        assert_eq!(
            store::mounted_fs(self.store.root()).as_deref(),
            Some("tmpfs"),
            "the store is a tmpfs of its own"
        );
        started
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for (id, pid) in &self.tasks {
            self.executor.kill(*pid);
            let _ = Command::new("docker")
                .args(["rm", "-f", &format!("shoal-{id}")])
                .output();
            self.sandboxes.remove(id);
        }
        let root = self.store.root().to_path_buf();
        let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&root);
    }
}

fn random_id() -> String {
    format!(
        "{:016x}{:09x}",
        rand::random::<u64>(),
        rand::random::<u64>() >> 28
    )
}

fn task(id: &str, runtime: &str, cs: serde_json::Value) -> Task {
    serde_json::from_value(serde_json::json!({
        "ID": id, "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
        "ServiceID": "svc-files", "Slot": 1, "NodeID": "n1",
        "Spec": {"ContainerSpec": cs, "Runtime": runtime},
        "SpecVersion": {"Index": 1},
        "Status": {"Timestamp": "", "State": "assigned"},
        "DesiredState": "running"
    }))
    .unwrap()
}

fn file_target(name: &str, uid: &str, gid: &str, mode: u32) -> Option<FileTarget> {
    Some(FileTarget {
        name: name.into(),
        uid: uid.into(),
        gid: gid.into(),
        mode,
    })
}

/// A view with one secret (`db`) and one templated config (`app`), and a task's
/// references to them.
fn view_and_refs(
    secret: &str,
    config_target: &str,
) -> (NodeView, Vec<SecretReference>, Vec<ConfigReference>) {
    let mut view: NodeView = serde_json::from_value(serde_json::json!({
        "node": null, "tasks": [], "networks": [], "managers": [],
        "endpoints": [{"service_id": "svc-files", "service_name": "files", "mode": "vip", "ports": [], "virtual_ips": [], "backends": []}],
        "heartbeat_period_ns": 5000000000u64, "data_path_port": 4789
    }))
    .unwrap();
    view.secrets = vec![SecretPayload {
        id: "sec-db".into(),
        spec: SecretSpec {
            name: "db".into(),
            ..Default::default()
        },
        data: SensitiveBytes::new(secret.as_bytes().to_vec()),
    }];
    let config: Config = serde_json::from_value(serde_json::json!({
        "ID": "cfg-app", "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
        "Spec": shoal_api::secrets::ConfigSpec {
            name: "app".into(),
            data: b"service={{.Service.Name}}\n".to_vec(),
            templating: Some(shoal_api::objects::Driver {
                name: GOLANG_TEMPLATE_DRIVER.into(),
                options: Default::default(),
            }),
            ..Default::default()
        }
    }))
    .unwrap();
    view.configs = vec![config];
    let secrets = vec![SecretReference {
        file: file_target("db", "1000", "1001", 0o440),
        secret_id: "sec-db".into(),
        secret_name: "db".into(),
    }];
    let configs = vec![ConfigReference {
        file: file_target(config_target, "0", "0", 0o644),
        config_id: "cfg-app".into(),
        config_name: "app".into(),
    }];
    (view, secrets, configs)
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs `args` inside the task until it succeeds (its mounts may not be made yet).
fn inside(enter: &dyn Fn() -> Command, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut cmd = enter();
        cmd.args(args);
        match output(&mut cmd) {
            Ok(out) => return out,
            Err(e) if Instant::now() > deadline => panic!("{args:?} inside the task: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Whether `needle` is in any file under `dirs` (grep's own answer, as an operator would ask).
fn grep(needle: &str, dirs: &[&Path]) -> Vec<String> {
    let out = Command::new("grep")
        .args(["-r", "-l", "-F", "--", needle])
        .args(dirs)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

async fn wait_exit(started: Started) -> Exit {
    tokio::time::timeout(Duration::from_secs(30), started.exit)
        .await
        .expect("the task ends")
        .expect("its exit is reported")
}

fn check_gone(node: &Node, task_id: &str, secret: &str) {
    assert!(
        !node.store.root().join(task_id).exists(),
        "the task's files are removed with it"
    );
    assert_eq!(
        store::mounted_fs(node.store.root()),
        None,
        "with no task holding files, the store is unmounted"
    );
    assert!(!node.store.root().exists(), "and its mount point removed");
    assert_eq!(
        grep(
            secret,
            &[node.state.path(), Path::new("/var/lib/docker/containers")]
        ),
        Vec::<String>::new(),
        "nor is anything of it on disk afterwards"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reads_its_secret_and_config_from_memory_only() {
    let test = "a_container_reads_its_secret_and_config_from_memory_only";
    if !can_run(test, true) {
        return;
    }
    let mut node = Node::new(true).await;
    let secret = format!("s3cret-{}", random_id());
    let (view, secrets, configs) = view_and_refs(&secret, "/etc/app.conf");
    let id = random_id();
    let mut t = task(
        &id,
        "docker",
        serde_json::json!({"Image": TEST_IMAGE, "Command": ["sleep", "300"],
            "Labels": {"com.shoal.test": "taskfiles"}}),
    );
    t.spec.container_spec.secrets = secrets;
    t.spec.container_spec.configs = configs;
    let started = node.start(&t, &view);
    let name = format!("shoal-{id}");
    let enter = || {
        let mut c = Command::new("docker");
        c.args(["exec", &name]);
        c
    };
    assert_eq!(inside(&enter, &["cat", "/run/secrets/db"]), secret);
    assert_eq!(
        inside(&enter, &["stat", "-c", "%u %g %a", "/run/secrets/db"]).trim(),
        "1000 1001 440"
    );
    assert_eq!(inside(&enter, &["cat", "/etc/app.conf"]), "service=files\n");
    assert_eq!(
        inside(&enter, &["stat", "-c", "%u %g %a", "/etc/app.conf"]).trim(),
        "0 0 644"
    );
    let write = enter()
        .args(["sh", "-c", "echo x > /run/secrets/db"])
        .output()
        .unwrap();
    assert!(!write.status.success(), "the secret is read-only");
    assert_eq!(
        grep(
            &secret,
            &[node.state.path(), Path::new("/var/lib/docker/containers")]
        ),
        Vec::<String>::new(),
        "the secret is in neither the state dir nor Docker's container dirs"
    );
    assert_eq!(
        grep(&secret, &[node.store.root()]).len(),
        1,
        "it is in the store (so the grep above would have found it)"
    );
    node.executor.kill(started.pid);
    wait_exit(started).await;
    check_gone(&node, &id, &secret);
    let gone = Command::new("docker")
        .args(["inspect", &name])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the container is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_task_reads_its_secret_and_config_from_memory_only() {
    let test = "a_native_task_reads_its_secret_and_config_from_memory_only";
    if !can_run(test, false) {
        return;
    }
    let mut node = Node::new(false).await;
    // A config target in /etc that the host does not have: made for the task alone.
    let new_target = format!("/etc/shoal-tf-{}.conf", random_id());
    let secret = format!("s3cret-{}", random_id());
    let (view, secrets, mut configs) = view_and_refs(&secret, &new_target);
    // And one that exists on the host: covered for the task alone.
    let host_file = node.state.path().join("app.conf");
    std::fs::write(&host_file, "the host's own\n").unwrap();
    let mut covering = configs[0].clone();
    covering.file.as_mut().unwrap().name = host_file.display().to_string();
    configs.push(covering);
    let secrets_dir_on_host = Path::new("/run/secrets").exists();
    let id = random_id();
    let mut t = task(
        &id,
        "native",
        serde_json::json!({"Command": ["sleep", "300"]}),
    );
    t.spec.container_spec.secrets = secrets;
    t.spec.container_spec.configs = configs;
    let started = node.start(&t, &view);
    let pid = started.pid.to_string();
    // Its mount script has run once the process is the command itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        let log = node.state.path().join("tasks").join(&id).join("output.log");
        assert!(
            Instant::now() < deadline,
            "the task's mounts are not made in time; its output: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let enter = || {
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid, "-m", "--"]);
        c
    };
    assert_eq!(inside(&enter, &["cat", "/run/secrets/db"]), secret);
    assert_eq!(
        inside(&enter, &["stat", "-c", "%u %g %a", "/run/secrets/db"]).trim(),
        "1000 1001 440"
    );
    for conf in [new_target.clone(), host_file.display().to_string()] {
        assert_eq!(inside(&enter, &["cat", &conf]), "service=files\n");
        assert_eq!(
            inside(&enter, &["stat", "-c", "%u %g %a", &conf]).trim(),
            "0 0 644"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&host_file).unwrap(),
        "the host's own\n",
        "the host still sees its own file"
    );
    assert!(
        !Path::new(&new_target).exists(),
        "the new config is only in the task's mount namespace"
    );
    // /etc in the task still shows the host's entries, and the sandbox's resolv.conf.
    assert_eq!(
        inside(&enter, &["cat", "/etc/passwd"]),
        std::fs::read_to_string("/etc/passwd").unwrap()
    );
    assert!(
        inside(&enter, &["cat", "/etc/resolv.conf"]).contains("nameserver 127.0.0.11"),
        "the embedded DNS server, as without files"
    );
    let fs = inside(&enter, &["stat", "-f", "-c", "%T", "/run/secrets"]);
    assert_eq!(fs.trim(), "tmpfs", "/run/secrets is in memory");
    assert_eq!(
        Path::new("/run/secrets").exists(),
        secrets_dir_on_host,
        "nothing is made on the host's /run"
    );
    let store = node.store.root().display().to_string();
    assert_eq!(
        inside(&enter, &["ls", "-A", &store]).trim(),
        "",
        "the task does not see the store (other tasks' files)"
    );
    assert!(
        !Path::new("/run/secrets/db").exists(),
        "nothing is mounted on the host's /run/secrets"
    );
    assert_eq!(
        grep(
            &secret,
            &[node.state.path(), Path::new("/var/lib/docker/containers")]
        ),
        Vec::<String>::new(),
        "the secret is in neither the state dir nor Docker's container dirs"
    );
    assert_eq!(grep(&secret, &[node.store.root()]).len(), 1);
    node.executor.kill(started.pid);
    wait_exit(started).await;
    check_gone(&node, &id, &secret);
}
