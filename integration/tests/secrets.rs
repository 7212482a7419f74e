//! Secrets and configs on the 3-node testbed with the machine's Docker engine: mounted in a
//! container and in a native task and read back from inside, with their owners and modes;
//! none of the secret's bytes on any node's disk (state dirs, raft log and snapshot, task
//! dirs, the engine's container dirs), also while the tasks run; a node with no task using
//! the secret never holds it; removal of a secret in use refused; rotation by update.

use shoal_integration::shoal_ok as shoal;
use shoal_integration::testbed::{TEST_IMAGE as IMAGE, Testbed, require_docker, require_root};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `shoal` with `input` on stdin; (success, stdout, stderr).
fn shoal_with_stdin(h: &str, args: &[&str], input: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(shoal_integration::bin_dir().join("shoal"))
        .arg("-H")
        .arg(h)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn shoal_err(h: &str, args: &[&str]) -> String {
    let (ok, out, err) = shoal_with_stdin(h, args, b"");
    assert!(!ok, "shoal {args:?} should fail, printed {out}");
    err
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    shoal_integration::wait_until(what, Duration::from_secs(60), f);
}

/// The running container of a service on the testbed, if there is one.
fn container_of(bed: &Testbed, service_id: &str) -> Option<String> {
    bed.nodes.iter().find_map(|n| {
        let owner = shoal_agent::netns::Sandboxes::new(&n.dir.join("state"))
            .prefix()
            .to_string();
        docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.shoal.owner={owner}"),
            "--filter",
            &format!("label=com.shoal.service.id={service_id}"),
        ])
        .split_whitespace()
        .next()
        .map(str::to_string)
    })
}

fn service_id(h: &str, name: &str) -> String {
    shoal(h, &["service", "inspect", "-f", "{{.ID}}", name])
        .trim()
        .to_string()
}

/// Files under `dir` (not following into other file systems: a tmpfs is memory, not the
/// node's disk) whose bytes hold `needle`, raw or base64.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(needle);
    let dev = |p: &Path| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap());
    let root_dev = dev(dir);
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if std::os::unix::fs::MetadataExt::dev(&meta) != root_dev {
                continue;
            }
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && let Ok(bytes) = std::fs::read(&p)
                && (contains(&bytes, needle) || contains(&bytes, b64.as_bytes()))
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_and_configs_reach_only_their_tasks_from_memory() {
    if !require_root("secrets_and_configs_reach_only_their_tasks_from_memory")
        || !require_docker("secrets_and_configs_reach_only_their_tasks_from_memory")
    {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::up("shsec", 3, 1, root.path()).unwrap();
    let h = bed.nodes[0].host();
    let pw: Vec<u8> = format!("pw-{:016x}-{:016x}", rand_u64(), rand_u64()).into_bytes();
    let pw2: Vec<u8> = format!("pw2-{:016x}", rand_u64()).into_bytes();

    // Create: from stdin and from a file; bad input is one clear line and creates nothing.
    let (ok, id, err) = shoal_with_stdin(&h, &["secret", "create", "db_pw", "-"], &pw);
    assert!(ok, "{err}");
    assert_eq!(id.trim().len(), 25, "prints the new id: {id}");
    let site = root.path().join("site.conf");
    std::fs::write(&site, "listen 8080\n").unwrap();
    shoal(&h, &["config", "create", "site", site.to_str().unwrap()]);
    let err = shoal_err(&h, &["secret", "create", "db_pw", "/nonexistent/file"]);
    assert!(err.contains("/nonexistent/file"), "{err}");
    let (ok, _, err) = shoal_with_stdin(&h, &["secret", "create", "db_pw", "-"], b"again");
    assert!(!ok && err.contains("db_pw"), "{err}");
    let inspect = shoal(&h, &["secret", "inspect", "db_pw"]);
    assert!(!contains(inspect.as_bytes(), &pw), "inspect shows no data");
    assert!(inspect.contains("\"Name\": \"db_pw\""), "{inspect}");

    // An unknown secret in --secret, or a target that climbs out of /run/secrets: refused,
    // nothing created.
    let err = shoal_err(
        &h,
        &[
            "service", "create", "--name", "x", "--secret", "nope", IMAGE, "true",
        ],
    );
    assert!(err.contains("nope"), "{err}");
    let err = shoal_err(
        &h,
        &[
            "service",
            "create",
            "--name",
            "x",
            "--secret",
            "source=db_pw,target=../../etc/passwd",
            IMAGE,
            "true",
        ],
    );
    assert!(err.contains("/run/secrets"), "{err}");
    assert!(!shoal(&h, &["service", "ls", "-q"]).contains(char::is_alphanumeric));

    // A container on node 1 and a native task on node 2; node 3 runs nothing that uses them.
    shoal(
        &h,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--constraint",
            "node.hostname==node-1",
            "--secret",
            "db_pw",
            "--secret",
            "source=db_pw,target=app/pw,uid=1000,gid=1001,mode=0400",
            "--config",
            "source=site,target=/etc/site.conf,mode=0440",
            IMAGE,
            "sleep",
            "100000",
        ],
    );
    shoal(
        &h,
        &[
            "service",
            "create",
            "--name",
            "plain",
            "--runtime",
            "native",
            "--constraint",
            "node.hostname==node-2",
            "--secret",
            "source=db_pw,target=pw,uid=1000,gid=1001,mode=0400",
            "--config",
            "source=site,target=/etc/shoal-site-test.conf",
            "python3",
            "-c",
            "import time; time.sleep(100000) # secrets-plain-task",
        ],
    );
    let web = service_id(&h, "web");
    let mut container = None;
    eventually("the web container runs", || {
        container = container_of(&bed, &web);
        container.is_some()
    });
    let c = container.unwrap();
    let read = |path: &str| docker(&["exec", &c, "cat", path]);
    let stat = |path: &str| docker(&["exec", &c, "stat", "-c", "%u %g %a", path]);
    assert_eq!(read("/run/secrets/db_pw").as_bytes(), &pw[..]);
    assert_eq!(stat("/run/secrets/db_pw").trim(), "0 0 444");
    assert_eq!(read("/run/secrets/app/pw").as_bytes(), &pw[..]);
    assert_eq!(stat("/run/secrets/app/pw").trim(), "1000 1001 400");
    assert_eq!(read("/etc/site.conf"), "listen 8080\n");
    assert_eq!(stat("/etc/site.conf").trim(), "0 0 440");

    let marker = "secrets-plain-task";
    eventually("the native task runs", || {
        shoal_integration::python_in_task(marker, "print('up')") == "up"
    });
    let native = shoal_integration::python_in_task(
        marker,
        "import os\nfor p in ['/run/secrets/pw', '/etc/shoal-site-test.conf']:\n    s = os.stat(p)\n    print(open(p).read().strip(), s.st_uid, s.st_gid, oct(s.st_mode & 0o777))",
    );
    let pw_text = String::from_utf8(pw.clone()).unwrap();
    assert_eq!(
        native,
        format!("{pw_text} 1000 1001 0o400\nlisten 8080 0 0 0o444"),
        "read inside the native task"
    );
    assert!(
        !Path::new("/etc/shoal-site-test.conf").exists(),
        "the config is only inside the task's mount namespace"
    );

    // Not on any disk: state dirs (raft log, snapshot, task dirs) and the engine's
    // container dirs, while the tasks run.
    let mut dirs: Vec<std::path::PathBuf> = bed.nodes.iter().map(|n| n.dir.clone()).collect();
    dirs.push("/var/lib/docker/containers".into());
    for d in &dirs {
        let found = files_holding(d, &pw);
        assert!(found.is_empty(), "secret bytes on disk: {found:?}");
    }

    // Node 3 has no task using the secret: it never held it.
    // (`shoal info` shows the names of the secrets in the node's own view.)
    let held = |i: usize| -> Vec<String> {
        let info: serde_json::Value =
            serde_json::from_str(&shoal(&bed.nodes[i].host(), &["info"])).unwrap();
        serde_json::from_value(info["HeldSecrets"].clone()).unwrap_or_default()
    };
    assert_eq!(held(2), Vec::<String>::new(), "node 3 holds no secret");
    let node3_files = shoal_agent::taskfiles::store::default_dir(&bed.nodes[2].dir.join("state"));
    let node3_has = std::fs::read_dir(&node3_files)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        node3_has,
        0,
        "node 3 has no task files in {}",
        node3_files.display()
    );
    assert_eq!(held(0), ["db_pw"], "node 1");
    assert_eq!(held(1), ["db_pw"], "node 2");

    // In use: not removable, naming the services.
    let err = shoal_err(&h, &["secret", "rm", "db_pw"]);
    assert!(err.contains("plain") && err.contains("web"), "{err}");
    let err = shoal_err(&h, &["config", "rm", "site"]);
    assert!(err.contains("in use"), "{err}");

    // Rotation: a new secret at the same target rolls the tasks.
    let (ok, _, err) = shoal_with_stdin(&h, &["secret", "create", "db_pw_v2", "-"], &pw2);
    assert!(ok, "{err}");
    shoal(
        &h,
        &[
            "service",
            "update",
            "--secret-rm",
            "db_pw",
            "--secret-add",
            "source=db_pw_v2,target=db_pw",
            "web",
        ],
    );
    shoal(
        &h,
        &[
            "service",
            "update",
            "--secret-rm",
            "db_pw",
            "--secret-add",
            "source=db_pw_v2,target=pw,uid=1000,gid=1001,mode=0400",
            "plain",
        ],
    );
    eventually("web's new container reads the rotated secret", || {
        container_of(&bed, &web)
            .is_some_and(|c| docker(&["exec", &c, "cat", "/run/secrets/db_pw"]).as_bytes() == pw2)
    });
    eventually("the old secret can be removed once its tasks ended", || {
        shoal_with_stdin(&h, &["secret", "rm", "db_pw"], b"").0
    });
    eventually("node 1 holds only the new secret", || {
        held(0) == ["db_pw_v2"]
    });
    for d in &dirs {
        let found = files_holding(d, &pw2);
        assert!(found.is_empty(), "rotated secret bytes on disk: {found:?}");
    }

    // Removing the services frees the files.
    shoal(&h, &["service", "rm", "web", "plain"]);
    eventually("nobody holds a secret", || {
        (0..3).all(|i| held(i).is_empty())
    });
    eventually("the secret and the config can go", || {
        shoal_with_stdin(&h, &["secret", "rm", "db_pw_v2"], b"").0
            && shoal_with_stdin(&h, &["config", "rm", "site"], b"").0
    });
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}
