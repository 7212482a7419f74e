//! Autolock, as in Docker: with it on, no file under a manager's state dir holds the cluster
//! data key, the node's TLS key or the unlock key in the clear; a restarted manager serves
//! nothing until `swarm unlock` with the right key; after `unlock-key --rotate` only the new
//! key unlocks, on every manager; turning autolock off writes the keys plain again; workers
//! restart as before.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD as B64_RAW};
use shoal_api::local::{LocalRequest, LocalResponse};
use shoal_integration::{LocalCluster, bin_dir, eventually};
use shoal_manager::ca::{DataKey, KeyFile, UnlockKey};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LOCKED: &str = "this node's swarm is locked: run `shoal swarm unlock` with the unlock key";

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The error line of a command that must fail.
fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "command succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn init(c: &LocalCluster, extra: &[&str]) -> String {
    let ip = &c.nodes[0].ip;
    let listen = format!("{ip}:2377");
    let mut args = vec![
        "swarm",
        "init",
        "--advertise-addr",
        ip,
        "--listen-addr",
        &listen,
        "--default-addr-pool",
        "198.19.0.0/16",
    ];
    args.extend_from_slice(extra);
    ok(c.shoal(0, &args))
}

fn join(c: &LocalCluster, i: usize, role: &str) {
    let token = ok(c.shoal(0, &["swarm", "join-token", "-q", role]))
        .trim()
        .to_string();
    let ip = c.nodes[i].ip.clone();
    ok(c.shoal(
        i,
        &[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &ip,
            "--listen-addr",
            &format!("{ip}:2377"),
            &c.nodes[0].grpc_addr(),
        ],
    ));
}

/// `shoal swarm unlock` with `key` on stdin, as `echo $KEY | shoal swarm unlock`.
fn unlock(c: &LocalCluster, i: usize, key: &str) -> Output {
    let mut child = Command::new(bin_dir().join("shoal"))
        .arg("-H")
        .arg(c.nodes[i].host())
        .args(["swarm", "unlock"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{key}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The `SWMKEY-1-...` a command printed.
fn key_in(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in {text:?}"))
        .to_string()
}

fn state(c: &LocalCluster, i: usize) -> PathBuf {
    c.nodes[i].dir.join("state")
}

fn data_key_path(c: &LocalCluster, i: usize) -> PathBuf {
    state(c, i).join("keys").join("swarm-data.key")
}

fn tls_key_path(c: &LocalCluster, i: usize) -> PathBuf {
    state(c, i).join("certificates").join("swarm-node.key")
}

/// Whether node `i`'s data key file is locked and opens with `key` (and no other).
fn locked_under(c: &LocalCluster, i: usize, key: &str) -> bool {
    let key = UnlockKey::parse(key).unwrap();
    let path = data_key_path(c, i);
    match DataKey::read_file(&path) {
        Ok(Some(file @ KeyFile::Locked(_))) => file.open(&path, Some(&key)).is_ok(),
        _ => false,
    }
}

fn local_state(c: &LocalCluster, i: usize) -> String {
    let out = ok(c.shoal(i, &["info"]));
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    info["LocalNodeState"].as_str().unwrap().to_string()
}

/// Every file under `dir` (raft log, snapshots, certificates, keys, task output, the
/// daemon's log) that contains one of `needles`.
fn files_containing(dir: &Path, needles: &[Vec<u8>]) -> Vec<PathBuf> {
    let mut found = vec![];
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file()
                && let Ok(bytes) = std::fs::read(&path)
                && needles
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
            {
                found.push(path);
            }
        }
    }
    found
}

/// What of a key must never be found in the clear: its raw bytes and its base64 text.
fn forms(raw: &[u8]) -> Vec<Vec<u8>> {
    vec![raw.to_vec(), B64.encode(raw).into_bytes()]
}

/// The first base64 line of a PEM private key, plenty to recognise it by.
fn pem_body(pem: &str) -> Vec<u8> {
    pem.lines()
        .find(|l| !l.starts_with("-----") && !l.is_empty())
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn no_key_in_the_clear(c: &LocalCluster, i: usize, needles: &[Vec<u8>]) {
    let found = files_containing(&c.nodes[i].dir, needles);
    assert!(
        found.is_empty(),
        "{}: keys in the clear in {found:?}",
        c.nodes[i].name
    );
}

async fn serves_node_ls(c: &LocalCluster, i: usize) {
    eventually(Duration::from_secs(30), "node ls answered", || async {
        c.shoal(i, &["node", "ls"]).status.success().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(i)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autolocked_managers_restart_locked_and_follow_rotation() {
    let mut c = LocalCluster::start(4, 241).expect("start daemons");
    init(&c, &[]);
    join(&c, 1, "manager");
    join(&c, 2, "manager");
    join(&c, 3, "worker");
    let managers = [0, 1, 2];

    // Before autolock: every manager holds the same data key, in base64 in the clear.
    let data_key_b64 = std::fs::read_to_string(data_key_path(&c, 0)).unwrap();
    for &i in &managers {
        assert_eq!(
            std::fs::read_to_string(data_key_path(&c, i)).unwrap(),
            data_key_b64
        );
    }
    let data_key_raw = B64.decode(data_key_b64.trim()).unwrap();
    assert_eq!(data_key_raw.len(), 32);
    let tls_keys: Vec<String> = managers
        .iter()
        .map(|&i| std::fs::read_to_string(tls_key_path(&c, i)).unwrap())
        .collect();
    assert!(tls_keys[0].contains("PRIVATE KEY"));
    assert!(!data_key_path(&c, 3).exists(), "workers hold no data key");
    // The scan finds keys where they are in the clear (here: the key files themselves).
    assert_eq!(
        files_containing(&c.nodes[1].dir, &forms(&data_key_raw)),
        vec![data_key_path(&c, 1)]
    );
    assert_eq!(
        files_containing(&c.nodes[1].dir, &[pem_body(&tls_keys[1])]),
        vec![tls_key_path(&c, 1)]
    );

    // Turning autolock on prints the key, once, in Docker's words; every manager shows it.
    let out = ok(c.shoal(0, &["swarm", "update", "--autolock=true"]));
    assert!(out.starts_with("Swarm updated.\nTo unlock a swarm manager after it restarts, run the `shoal swarm unlock`\ncommand and provide the following key:\n\n    SWMKEY-1-"), "{out}");
    let key = key_in(&out);
    for &i in &managers {
        assert_eq!(ok(c.shoal(i, &["swarm", "unlock-key", "-q"])).trim(), key);
    }
    let inspect = ok(c.shoal(1, &["swarm", "inspect"]));
    assert!(inspect.contains("\"AutoLockManagers\": true"), "{inspect}");
    assert_eq!(
        ok(c.shoal(0, &["swarm", "update", "--autolock=true"])),
        "Swarm updated.\n",
        "already on: no new key"
    );

    // Every manager locks its files; then nothing on disk holds a key in the clear.
    eventually(Duration::from_secs(10), "key files locked", || async {
        managers
            .iter()
            .all(|&i| locked_under(&c, i, &key))
            .then_some(())
    })
    .await
    .unwrap();
    let unlock_raw = B64_RAW.decode(key.trim_start_matches("SWMKEY-1-")).unwrap();
    let mut needles = forms(&data_key_raw);
    needles.extend(forms(&unlock_raw));
    needles.push(key.clone().into_bytes());
    for (n, &i) in managers.iter().enumerate() {
        let mut mine = needles.clone();
        mine.push(pem_body(&tls_keys[n]));
        no_key_in_the_clear(&c, i, &mine);
    }
    no_key_in_the_clear(&c, 3, &needles);

    // A restarted manager is locked: it says so, and serves nothing.
    c.restart(2).unwrap();
    assert_eq!(local_state(&c, 2), "locked");
    for args in [
        &["node", "ls"][..],
        &["service", "ls"],
        &["swarm", "join-token", "worker"],
    ] {
        let err = fails(c.shoal(2, args));
        assert!(err.contains(LOCKED), "{args:?}: {err}");
    }
    let err = fails(c.shoal(2, &["swarm", "leave"]));
    assert!(err.contains("Swarm is encrypted and locked"), "{err}");
    // Not even raft runs: no manager started since it came up locked.
    let log = c.log(2);
    let locked_at = log
        .rfind("this manager's keys are locked")
        .expect("locked in the log");
    assert!(!log[locked_at..].contains("manager started"), "{log}");

    // Wrong and malformed keys are refused, and it stays locked.
    let wrong = UnlockKey::generate().to_human().to_string();
    let err = fails(unlock(&c, 2, &wrong));
    assert!(err.contains("invalid key"), "{err}");
    let err = fails(unlock(&c, 2, "SWMKEY-1-nope"));
    assert!(err.contains("invalid key"), "{err}");
    assert_eq!(local_state(&c, 2), "locked");

    // The right key: it serves again.
    assert_eq!(ok(unlock(&c, 2, &key)), "");
    assert_eq!(local_state(&c, 2), "active");
    serves_node_ls(&c, 2).await;
    let err = fails(unlock(&c, 2, &key));
    assert!(err.contains("swarm is not locked"), "{err}");

    // A worker restarts as before: no lock, no key file.
    c.restart(3).unwrap();
    eventually(Duration::from_secs(10), "worker active", || async {
        (local_state(&c, 3) == "active").then_some(())
    })
    .await
    .unwrap();

    // A promoted worker gets the key with its manager certificate and locks at once; a
    // demoted manager keeps no data key and its TLS key goes back to plain.
    ok(c.shoal(0, &["node", "promote", "node-4"]));
    eventually(
        Duration::from_secs(30),
        "node-4 locked as a manager",
        || async {
            let tls = std::fs::read_to_string(tls_key_path(&c, 3)).ok()?;
            (locked_under(&c, 3, &key) && !tls.contains("PRIVATE KEY")).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(3)));
    serves_node_ls(&c, 3).await;
    ok(c.shoal(0, &["node", "demote", "node-4"]));
    eventually(Duration::from_secs(30), "node-4 a worker again", || async {
        let tls = std::fs::read_to_string(tls_key_path(&c, 3)).ok()?;
        (!data_key_path(&c, 3).exists() && tls.contains("PRIVATE KEY")).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(3)));

    // Rotation on any manager: every manager that is up re-locks under the new key; one
    // that was down keeps the old lock until it is unlocked with the old key, as in Docker.
    c.kill(2);
    let out = ok(c.shoal(1, &["swarm", "unlock-key", "--rotate"]));
    assert!(
        out.starts_with("Successfully rotated manager unlock key.\nTo unlock a swarm manager"),
        "{out}"
    );
    let new_key = key_in(&out);
    assert_ne!(new_key, key);
    assert_eq!(
        ok(c.shoal(0, &["swarm", "unlock-key", "-q"])).trim(),
        new_key
    );
    eventually(Duration::from_secs(10), "key files re-locked", || async {
        [0, 1]
            .iter()
            .all(|&i| locked_under(&c, i, &new_key) && !locked_under(&c, i, &key))
            .then_some(())
    })
    .await
    .unwrap();
    assert!(locked_under(&c, 2, &key), "node-3 was down");
    c.restart(2).unwrap();
    let err = fails(unlock(&c, 2, &new_key));
    assert!(err.contains("invalid key"), "{err}");
    ok(unlock(&c, 2, &key));
    eventually(Duration::from_secs(20), "node-3 re-locked", || async {
        locked_under(&c, 2, &new_key).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(2)));

    // After a restart of every manager, only the new key unlocks each of them.
    for &i in &managers {
        c.restart(i).unwrap();
    }
    for &i in &managers {
        assert_eq!(local_state(&c, i), "locked");
        let err = fails(unlock(&c, i, &key));
        assert!(err.contains("invalid key"), "{}: {err}", c.nodes[i].name);
        assert_eq!(local_state(&c, i), "locked");
        ok(unlock(&c, i, &new_key));
    }
    for &i in &managers {
        serves_node_ls(&c, i).await;
    }
    // The cluster is whole again: a write goes through.
    eventually(
        Duration::from_secs(30),
        "a write after unlocking",
        || async {
            c.shoal(0, &["swarm", "update", "--task-history-limit", "4"])
                .status
                .success()
                .then_some(())
        },
    )
    .await
    .unwrap();

    // Autolock off: the keys are written plain again, and a restart needs no key.
    let out = ok(c.shoal(2, &["swarm", "update", "--autolock=false"]));
    assert_eq!(out, "Swarm updated.\n");
    // Each manager rewrites its two files one after the other: wait for both.
    eventually(Duration::from_secs(10), "key files plain", || async {
        managers
            .iter()
            .enumerate()
            .all(|(n, &i)| {
                std::fs::read_to_string(data_key_path(&c, i))
                    .ok()
                    .as_deref()
                    == Some(data_key_b64.as_str())
                    && std::fs::read_to_string(tls_key_path(&c, i)).ok().as_deref()
                        == Some(tls_keys[n].as_str())
            })
            .then_some(())
    })
    .await
    .unwrap();
    let err = fails(c.shoal(0, &["swarm", "unlock-key"]));
    assert!(err.contains("no unlock key is set"), "{err}");
    let err = fails(c.shoal(0, &["swarm", "unlock-key", "--rotate"]));
    assert!(
        err.contains("cannot rotate because autolock is not turned on"),
        "{err}"
    );
    c.restart(1).unwrap();
    assert_eq!(local_state(&c, 1), "active");
    serves_node_ls(&c, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_with_autolock_locks_from_the_start() {
    let mut c = LocalCluster::start(2, 236).expect("start daemons");
    let out = init(&c, &["--autolock"]);
    assert!(
        out.contains("To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\nTo unlock a swarm manager after it restarts"),
        "{out}"
    );
    let key = key_in(&out);
    assert!(locked_under(&c, 0, &key), "locked from the first write");
    let tls = std::fs::read_to_string(tls_key_path(&c, 0)).unwrap();
    assert!(!tls.contains("PRIVATE KEY"), "the TLS key is locked too");
    // The data key, known only through the unlock key, is nowhere in the clear.
    let path = data_key_path(&c, 0);
    let data_key = DataKey::read_file(&path)
        .unwrap()
        .unwrap()
        .open(&path, Some(&UnlockKey::parse(&key).unwrap()))
        .unwrap();
    let raw = B64.decode(data_key.to_base64().as_bytes()).unwrap();
    no_key_in_the_clear(&c, 0, &forms(&raw));

    // A manager that joins locks its keys from its first write too.
    join(&c, 1, "manager");
    assert!(locked_under(&c, 1, &key));
    let tls = std::fs::read_to_string(tls_key_path(&c, 1)).unwrap();
    assert!(!tls.contains("PRIVATE KEY"));
    no_key_in_the_clear(&c, 1, &forms(&raw));
    ok(c.shoal(1, &["swarm", "leave", "--force"]));

    c.restart(0).unwrap();
    match c.local(0, LocalRequest::Info).await.unwrap() {
        LocalResponse::Info(info) => {
            assert_eq!(info.local_node_state, "locked");
            assert!(!info.control_available);
        }
        other => panic!("{other:?}"),
    }
    ok(unlock(&c, 0, &key));
    serves_node_ls(&c, 0).await;

    // `swarm leave --force` on a locked node drops the swarm, keys and all.
    c.restart(0).unwrap();
    assert_eq!(local_state(&c, 0), "locked");
    ok(c.shoal(0, &["swarm", "leave", "--force"]));
    assert_eq!(local_state(&c, 0), "inactive");
    assert!(!path.exists());
    let err = fails(unlock(&c, 0, &key));
    assert!(err.contains("This node is not part of a swarm"), "{err}");
}
