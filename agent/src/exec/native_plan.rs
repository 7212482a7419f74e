//! What the native executor does with a task's container spec, as a pure plan: the program
//! line (mounts made inside the task's mount namespace, then resource limits, then the
//! user switch, then the command), the directories to make, the sysctls to set in its
//! network namespace. `native.rs` carries it out.
//!
//! Per field, what an operator would expect of a plain process on the host's filesystem:
//! - honoured: command and args, env, `dir` (must exist: it is the host's), `user`
//!   (`setpriv` after the mounts, so the task never holds root), mounts (below), ulimits
//!   (`prlimit`), `net.*` sysctls (the task has its own network namespace), the stop signal,
//!   DNS search domains and options (its resolv.conf), extra hosts (its /etc/hosts).
//! - mounts, made in the task's own mount namespace (`ip netns exec` gives it one): `bind`
//!   (with read-only and propagation), `tmpfs` (size, mode), and `volume` from the local
//!   driver without options, which is a directory `<state-dir>/volumes/<name>` kept across
//!   tasks (an anonymous one lives in the task's dir and goes with the task). A mount
//!   target that does not exist is created on the host as an empty directory.
//! - secrets and configs: files of shoald's in-memory store, bound read-only in the task's
//!   mount namespace. Under `/run/secrets` (secrets by default), the task gets a tmpfs there
//!   holding their mount points (only `/run/secrets` itself is made on the host when
//!   missing, empty); under one of the spec's tmpfs mounts, likewise. A target elsewhere is
//!   honoured when a file is there already: it is covered, for this task only. Any other
//!   target (Docker's default `/<config name>`, for one) is refused with the config and
//!   target named, since it would take a new file on the host's disk or a tmpfs hiding a
//!   host directory. The store itself is then covered, so the task cannot read the files
//!   of other tasks.
//! - refused with the reason, because ignoring them would run a task less confined than
//!   asked: capabilities, a read-only root filesystem, sysctls outside `net.*` (they are the
//!   host's), volume drivers or driver options, a health check, mounts without root.
//! - ignored (logged at debug), because they only mean something for a container: labels,
//!   hostname (native tasks share the host's UTS namespace), init, tty, open_stdin, the log
//!   driver (output goes to the task's log file), isolation.

use crate::taskfiles::TaskFiles;
use shoal_api::objects::{Mount, Task};
use shoal_api::secrets::SECRETS_DIR;
use std::path::{Path, PathBuf};

/// Carries out the mounts inside the task's mount namespace, then execs the rest of its
/// arguments. Each mount is four words: kind, source, target, comma-separated options.
/// `file` and `newfile` are secrets and configs: a file of shoald's in-memory store, bound
/// read-only (with the store's nosuid, nodev, noexec); `newfile` first makes its mount
/// point inside a tmpfs of this namespace, `file` covers an existing host file.
const MOUNT_SCRIPT: &str = r#"set -e
while [ "$1" != "--" ]; do
  kind=$1; src=$2; dst=$3; opts=$4; shift 4
  case $kind in
    tmpfs)
      mkdir -p "$dst"
      mount -t tmpfs -o "$opts" tmpfs "$dst" ;;
    file|newfile)
      if [ "$kind" = newfile ]; then
        mkdir -p "$(dirname "$dst")"
        [ -e "$dst" ] || : > "$dst"
      fi
      [ -f "$dst" ] || { echo "shoal: $dst is not a file" >&2; exit 1; }
      mount --bind "$src" "$dst"
      mount -o remount,bind,ro,nosuid,nodev,noexec "$dst" ;;
    *)
      mkdir -p "$dst"
      mount --bind "$src" "$dst"
      for o in $(echo "$opts" | tr , ' '); do
        case $o in
          ro) mount -o remount,bind,ro "$dst" ;;
          *) mount "--make-$o" "$dst" ;;
        esac
      done ;;
  esac
done
shift
exec "$@""#;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The program line: wrappers, then the task's command.
    pub argv: Vec<String>,
    /// Directories to make before the task starts (volume directories).
    pub dirs: Vec<PathBuf>,
    /// Directories that go when the task ends (anonymous volumes).
    pub scratch: Vec<PathBuf>,
    /// `net.*` sysctls to set in the task's network namespace: (path under /proc/sys, value).
    pub sysctls: Vec<(String, String)>,
    pub dir: Option<PathBuf>,
    /// Container-only fields the task has, for a debug line.
    pub ignored: Vec<&'static str>,
}

/// Docker's rule for volume names; also keeps a name from leaving the volumes directory.
fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn mount_words(
    m: &Mount,
    i: usize,
    volumes_dir: &Path,
    task_dir: &Path,
    plan: &mut Plan,
) -> Result<[String; 4], String> {
    if !m.target.starts_with('/') {
        return Err(format!(
            "mount target {:?} is not an absolute path",
            m.target
        ));
    }
    let mut opts = Vec::new();
    if m.read_only {
        opts.push("ro".to_string());
    }
    let source = match m.kind.as_str() {
        "bind" => {
            if !Path::new(&m.source).is_absolute() {
                return Err(format!(
                    "bind mount source {:?} is not an absolute path",
                    m.source
                ));
            }
            if !Path::new(&m.source).exists() {
                return Err(format!(
                    "bind mount source {} does not exist on this node",
                    m.source
                ));
            }
            if let Some(p) = m.bind_options.as_ref().map(|b| b.propagation.as_str())
                && !p.is_empty()
            {
                if !matches!(
                    p,
                    "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
                ) {
                    return Err(format!(
                        "bind propagation {p:?} is not one of private, rprivate, shared, rshared, slave, rslave"
                    ));
                }
                opts.push(p.to_string());
            }
            PathBuf::from(&m.source)
        }
        "volume" => {
            let vo = m.volume_options.clone().unwrap_or_default();
            if let Some(d) = &vo.driver_config
                && ((!d.name.is_empty() && d.name != "local") || !d.options.is_empty())
            {
                let what = if d.options.is_empty() {
                    format!("driver {}", d.name)
                } else {
                    "driver options".to_string()
                };
                let name = if m.source.is_empty() {
                    "(anonymous)"
                } else {
                    &m.source
                };
                return Err(format!(
                    "volume {name} at {}: a native task can only use local volumes without driver options (a directory on the node), and this one has {what}; drop them, or run the service as a container",
                    m.target
                ));
            }
            let dir = if m.source.is_empty() {
                let d = task_dir.join("volumes").join(format!("anon-{i}"));
                plan.scratch.push(d.clone());
                d
            } else if valid_volume_name(&m.source) {
                volumes_dir.join(&m.source)
            } else {
                return Err(format!(
                    "volume name {:?} is not valid (letters, digits, then also _ . -)",
                    m.source
                ));
            };
            plan.dirs.push(dir.clone());
            dir
        }
        "tmpfs" => {
            let t = m.tmpfs_options.clone().unwrap_or_default();
            opts.clear();
            if m.read_only {
                opts.push("ro".into());
            }
            if t.size_bytes > 0 {
                opts.push(format!("size={}", t.size_bytes));
            }
            opts.push(format!(
                "mode={:o}",
                if t.mode == 0 { 0o1777 } else { t.mode }
            ));
            PathBuf::from("tmpfs")
        }
        other => {
            return Err(format!(
                "mount {}: type {other:?} is not bind, volume or tmpfs",
                m.target
            ));
        }
    };
    Ok([
        m.kind.clone(),
        source.display().to_string(),
        m.target.clone(),
        opts.join(","),
    ])
}

/// `user[:group]` as ids, names looked up in the host's passwd and group files.
pub fn resolve_user(spec: &str) -> Result<(u32, u32, bool), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(uid.into()).ok().flatten(),
        Err(_) => Some(
            nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .ok_or_else(|| format!("user {user:?} does not exist on this node"))?,
        ),
    };
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry.as_ref().map(|e| e.uid.as_raw()).unwrap_or(0),
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| format!("group {g:?} does not exist on this node"))?
                .gid
                .as_raw(),
        },
        // A uid without a passwd entry: in a container Docker gives it group 0, but a
        // native task runs on the node itself, where group 0 is the real root group; it
        // gets nogroup (65534) instead, unless it is root.
        None => entry
            .as_ref()
            .map(|e| e.gid.as_raw())
            .unwrap_or(if uid == 0 { 0 } else { NOGROUP }),
    };
    // Supplementary groups from the group file only for a user it knows and no group given.
    let init_groups = entry.is_some() && group.is_none();
    Ok((uid, gid, init_groups))
}

/// The group a native task's unknown uid runs with.
const NOGROUP: u32 = 65534;

/// Whether `path` lies strictly inside `dir`.
fn inside(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(dir) && Path::new(path) != Path::new(dir)
}

/// The mounts that show a task its secrets and configs, after the spec's own. A file goes
/// where it costs the host nothing: inside a tmpfs of the task's namespace (`/run/secrets`,
/// which it gets when a file is there, or one of the spec's tmpfs mounts), or over a host
/// file that exists (covered for this task only). Any other target would need a new file
/// on the host's disk or a tmpfs hiding a host directory, so it is refused by name. Last,
/// the store itself is covered, so the task cannot read other tasks' files.
fn file_words(files: &TaskFiles, mounts: &[Mount]) -> Result<Vec<[String; 4]>, String> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let word = |kind: &str, src: &Path, dst: &str, opts: &str| {
        [
            kind.to_string(),
            src.display().to_string(),
            dst.to_string(),
            opts.to_string(),
        ]
    };
    let mut words = Vec::new();
    let mut in_memory: Vec<&str> = mounts
        .iter()
        .filter(|m| m.kind == "tmpfs")
        .map(|m| m.target.as_str())
        .collect();
    let own_secrets_dir = !in_memory.contains(&SECRETS_DIR)
        && files.files.iter().any(|f| inside(&f.target, SECRETS_DIR));
    if own_secrets_dir {
        // Holds only mount points; the data stays in the store.
        words.push(word(
            "tmpfs",
            Path::new("tmpfs"),
            SECRETS_DIR,
            "size=1m,mode=755,nosuid,nodev,noexec",
        ));
        in_memory.push(SECRETS_DIR);
    }
    for f in &files.files {
        let kind = if in_memory.iter().any(|dir| inside(&f.target, dir)) {
            "newfile"
        } else if Path::new(&f.target).is_file() {
            "file"
        } else {
            return Err(format!(
                "{} {}: target {} does not exist on this node, and a native task sees the host's filesystem: making it would write the host's disk or hide a host directory; give a target under {SECRETS_DIR} or under a tmpfs mount of the service, or an existing file (covered for this task only), or run the service as a container",
                f.kind.word(),
                f.source,
                f.target
            ));
        };
        words.push(word(kind, &f.host, &f.target, "ro"));
    }
    words.push(word(
        "tmpfs",
        Path::new("tmpfs"),
        &files.root.display().to_string(),
        "ro,size=4k,mode=700",
    ));
    Ok(words)
}

/// The plan for `task`; `sandboxed` says whether it gets its own namespaces (shoald is
/// root), which mounts, users and sysctls need.
pub fn plan(
    task: &Task,
    volumes_dir: &Path,
    task_dir: &Path,
    sandboxed: bool,
    files: &TaskFiles,
) -> Result<Plan, String> {
    let cs = &task.spec.container_spec;
    let mut plan = Plan::default();
    let command: Vec<String> = cs.command.iter().chain(cs.args.iter()).cloned().collect();
    if command.is_empty() {
        return Err("a native task needs a command".into());
    }
    if !cs.capability_add.is_empty() || !cs.capability_drop.is_empty() {
        return Err("capabilities (--cap-add, --cap-drop) apply to containers only; a native task runs with its user's own".into());
    }
    if cs.read_only {
        return Err("a read-only root filesystem applies to containers only; a native task runs on the host's filesystem".into());
    }
    if cs.healthcheck.is_some() {
        return Err("health checks apply to containers only".into());
    }
    for (k, v) in &cs.sysctls {
        if !k.starts_with("net.") {
            return Err(format!(
                "sysctl {k} is the host's, not the task's; a native task can set only net.* sysctls"
            ));
        }
        if !sandboxed {
            return Err(format!(
                "sysctl {k} needs the task's own network namespace (shoald runs as root)"
            ));
        }
        plan.sysctls.push((k.replace('.', "/"), v.clone()));
    }
    for (present, name) in [
        (!cs.labels.is_empty(), "labels"),
        (!cs.hostname.is_empty(), "hostname"),
        (cs.init.is_some(), "init"),
        (cs.tty, "tty"),
        (cs.open_stdin, "open_stdin"),
        (task.spec.log_driver.is_some(), "log driver"),
        (!cs.isolation.is_empty(), "isolation"),
    ] {
        if present {
            plan.ignored.push(name);
        }
    }
    if !cs.dir.is_empty() {
        let dir = PathBuf::from(&cs.dir);
        if !dir.is_absolute() || !dir.is_dir() {
            return Err(format!(
                "working directory {} does not exist on this node (a native task runs on the host's filesystem)",
                cs.dir
            ));
        }
        plan.dir = Some(dir);
    }
    let mut argv = Vec::new();
    if !files.is_empty() && !sandboxed {
        return Err(
            "secrets and configs need the task's own mount namespace: run shoald as root".into(),
        );
    }
    let file_words = file_words(files, &cs.mounts)?;
    if !cs.mounts.is_empty() || !file_words.is_empty() {
        if !sandboxed {
            return Err("mounts need the task's own mount namespace: run shoald as root".into());
        }
        argv.extend(["sh", "-c", MOUNT_SCRIPT, "sh"].map(String::from));
        for (i, m) in cs.mounts.iter().enumerate() {
            argv.extend(mount_words(m, i, volumes_dir, task_dir, &mut plan)?);
        }
        argv.extend(file_words.into_iter().flatten());
        argv.push("--".into());
    }
    if !cs.ulimits.is_empty() {
        argv.push("prlimit".into());
        for u in &cs.ulimits {
            if !u.name.chars().all(|c| c.is_ascii_lowercase()) || u.name.is_empty() {
                return Err(format!("ulimit name {:?} is not valid", u.name));
            }
            argv.push(format!("--{}={}:{}", u.name, u.soft, u.hard));
        }
        argv.push("--".into());
    }
    if !cs.user.is_empty() {
        if !sandboxed {
            return Err(format!(
                "running as user {} needs shoald to run as root",
                cs.user
            ));
        }
        let (uid, gid, init_groups) = resolve_user(&cs.user)?;
        argv.push("setpriv".into());
        argv.push(format!("--reuid={uid}"));
        argv.push(format!("--regid={gid}"));
        argv.push(
            if init_groups {
                "--init-groups"
            } else {
                "--clear-groups"
            }
            .into(),
        );
        argv.push("--".into());
    }
    argv.extend(command);
    plan.argv = argv;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskfiles::PlacedFile;
    use shoal_api::objects::{Driver, TmpfsOptions, Ulimit, VolumeOptions};
    use shoal_api::secrets::Kind;

    fn none() -> TaskFiles {
        TaskFiles::default()
    }

    fn task(cs: serde_json::Value) -> Task {
        serde_json::from_value(serde_json::json!({
            "ID": "t1", "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
            "ServiceID": "s1", "Slot": 1, "NodeID": "n1",
            "Spec": {"ContainerSpec": cs, "Runtime": "native"},
            "SpecVersion": {"Index": 1},
            "Status": {"Timestamp": "", "State": "new"},
            "DesiredState": "running"
        }))
        .unwrap()
    }

    #[test]
    fn a_plain_command_is_run_as_it_is() {
        let t = task(serde_json::json!({"Command": ["sleep", "1"]}));
        let p = plan(
            &t,
            Path::new("/s/volumes"),
            Path::new("/s/tasks/t1"),
            true,
            &none(),
        )
        .unwrap();
        assert_eq!(p.argv, ["sleep", "1"]);
        assert!(p.dirs.is_empty() && p.sysctls.is_empty() && p.dir.is_none());
    }

    #[test]
    fn volumes_are_directories_under_the_state_dir() {
        let mut t = task(serde_json::json!({"Command": ["true"]}));
        t.spec.container_spec.mounts = vec![
            Mount {
                kind: "volume".into(),
                source: "data".into(),
                target: "/data".into(),
                read_only: true,
                volume_options: Some(VolumeOptions {
                    driver_config: Some(Driver {
                        name: "local".into(),
                        options: Default::default(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Mount {
                kind: "volume".into(),
                target: "/scratch".into(),
                ..Default::default()
            },
            Mount {
                kind: "tmpfs".into(),
                target: "/tmp/x".into(),
                tmpfs_options: Some(TmpfsOptions {
                    size_bytes: 1 << 20,
                    mode: 0o700,
                }),
                ..Default::default()
            },
        ];
        let p = plan(
            &t,
            Path::new("/s/volumes"),
            Path::new("/s/tasks/t1"),
            true,
            &none(),
        )
        .unwrap();
        let words: Vec<&str> = p.argv.iter().map(String::as_str).collect();
        assert_eq!(&words[..2], ["sh", "-c"]);
        assert_eq!(
            &words[4..],
            [
                "volume",
                "/s/volumes/data",
                "/data",
                "ro",
                "volume",
                "/s/tasks/t1/volumes/anon-1",
                "/scratch",
                "",
                "tmpfs",
                "tmpfs",
                "/tmp/x",
                "size=1048576,mode=700",
                "--",
                "true"
            ]
        );
        assert_eq!(
            p.dirs,
            [
                PathBuf::from("/s/volumes/data"),
                PathBuf::from("/s/tasks/t1/volumes/anon-1")
            ]
        );
        assert_eq!(p.scratch, [PathBuf::from("/s/tasks/t1/volumes/anon-1")]);
    }

    #[test]
    fn a_volume_driver_or_its_options_are_refused_by_name() {
        let mut t = task(serde_json::json!({"Command": ["true"]}));
        t.spec.container_spec.mounts = vec![Mount {
            kind: "volume".into(),
            source: "nfsdata".into(),
            target: "/data".into(),
            volume_options: Some(VolumeOptions {
                driver_config: Some(Driver {
                    name: "local".into(),
                    options: [("type".to_string(), "nfs".to_string())].into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let err = plan(&t, Path::new("/v"), Path::new("/t"), true, &none()).unwrap_err();
        assert!(err.contains("volume nfsdata at /data"), "{err}");
        assert!(err.contains("driver options"), "{err}");
        assert!(err.contains("run the service as a container"), "{err}");
        t.spec.container_spec.mounts[0].source = "../escape".into();
        t.spec.container_spec.mounts[0].volume_options = None;
        assert!(plan(&t, Path::new("/v"), Path::new("/t"), true, &none()).is_err());
    }

    #[test]
    fn an_unknown_uid_gets_nogroup_not_root_group() {
        // 4242424 is in no passwd file of these machines.
        assert_eq!(resolve_user("4242424").unwrap(), (4242424, NOGROUP, false));
        assert_eq!(resolve_user("4242424:7").unwrap(), (4242424, 7, false));
        assert_eq!(resolve_user("0").unwrap().1, 0, "root keeps its group");
    }

    #[test]
    fn limits_then_user_then_command() {
        let mut t = task(serde_json::json!({"Command": ["id"], "User": "0:0"}));
        t.spec.container_spec.ulimits = vec![Ulimit {
            name: "nofile".into(),
            soft: 512,
            hard: 1024,
        }];
        t.spec.container_spec.sysctls =
            [("net.ipv4.ip_forward".to_string(), "1".to_string())].into();
        let p = plan(&t, Path::new("/v"), Path::new("/t"), true, &none()).unwrap();
        assert_eq!(
            p.argv,
            [
                "prlimit",
                "--nofile=512:1024",
                "--",
                "setpriv",
                "--reuid=0",
                "--regid=0",
                "--clear-groups",
                "--",
                "id"
            ]
        );
        assert_eq!(
            p.sysctls,
            [("net/ipv4/ip_forward".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn container_only_confinement_is_refused_and_the_rest_ignored() {
        let t = task(serde_json::json!({"Command": ["true"], "CapabilityDrop": ["ALL"]}));
        assert!(plan(&t, Path::new("/v"), Path::new("/t"), true, &none()).is_err());
        let t = task(serde_json::json!({"Command": ["true"], "ReadOnly": true}));
        assert!(plan(&t, Path::new("/v"), Path::new("/t"), true, &none()).is_err());
        let t = task(serde_json::json!({"Command": ["true"], "Sysctls": {"kernel.shmmax": "1"}}));
        assert!(plan(&t, Path::new("/v"), Path::new("/t"), true, &none()).is_err());
        let t = task(serde_json::json!({"Command": ["true"], "Dir": "/nonexistent/dir"}));
        assert!(plan(&t, Path::new("/v"), Path::new("/t"), true, &none()).is_err());
        let t = task(
            serde_json::json!({"Command": ["true"], "Hostname": "h", "TTY": true, "Labels": {"a": "b"}}),
        );
        let p = plan(&t, Path::new("/v"), Path::new("/t"), true, &none()).unwrap();
        assert_eq!(p.ignored, ["labels", "hostname", "tty"]);
        let t = task(serde_json::json!({"Command": ["true"], "User": "nobody"}));
        assert!(
            plan(&t, Path::new("/v"), Path::new("/t"), false, &none()).is_err(),
            "a user needs root"
        );
    }

    fn placed(kind: Kind, source: &str, target: &str, host: &str) -> PlacedFile {
        PlacedFile {
            kind,
            source: source.into(),
            target: target.into(),
            host: host.into(),
        }
    }

    #[test]
    fn secrets_get_a_tmpfs_of_mount_points_and_the_store_is_covered() {
        let t = task(serde_json::json!({"Command": ["true"]}));
        let existing = tempfile::NamedTempFile::new().unwrap();
        let existing = existing.path().display().to_string();
        let files = TaskFiles {
            root: "/run/shoal/task-files".into(),
            files: vec![
                placed(
                    Kind::Secret,
                    "db",
                    "/run/secrets/db",
                    "/run/shoal/task-files/t1/secret-0",
                ),
                placed(
                    Kind::Secret,
                    "tls",
                    "/run/secrets/tls/key.pem",
                    "/run/shoal/task-files/t1/secret-1",
                ),
                placed(
                    Kind::Config,
                    "app",
                    &existing,
                    "/run/shoal/task-files/t1/config-2",
                ),
            ],
        };
        let p = plan(&t, Path::new("/v"), Path::new("/t"), true, &files).unwrap();
        let words: Vec<&str> = p.argv.iter().map(String::as_str).collect();
        assert_eq!(&words[..2], ["sh", "-c"]);
        assert_eq!(
            &words[4..],
            [
                "tmpfs",
                "tmpfs",
                "/run/secrets",
                "size=1m,mode=755,nosuid,nodev,noexec",
                "newfile",
                "/run/shoal/task-files/t1/secret-0",
                "/run/secrets/db",
                "ro",
                "newfile",
                "/run/shoal/task-files/t1/secret-1",
                "/run/secrets/tls/key.pem",
                "ro",
                "file",
                "/run/shoal/task-files/t1/config-2",
                existing.as_str(),
                "ro",
                "tmpfs",
                "tmpfs",
                "/run/shoal/task-files",
                "ro,size=4k,mode=700",
                "--",
                "true"
            ]
        );
    }

    #[test]
    fn a_config_under_a_tmpfs_of_the_service_is_made_there() {
        let mut t = task(serde_json::json!({"Command": ["true"]}));
        t.spec.container_spec.mounts = vec![Mount {
            kind: "tmpfs".into(),
            target: "/conf".into(),
            ..Default::default()
        }];
        let files = TaskFiles {
            root: "/store".into(),
            files: vec![placed(
                Kind::Config,
                "app",
                "/conf/app.conf",
                "/store/t1/config-0",
            )],
        };
        let p = plan(&t, Path::new("/v"), Path::new("/t"), true, &files).unwrap();
        let words: Vec<&str> = p.argv.iter().map(String::as_str).collect();
        assert!(
            words
                .windows(3)
                .any(|w| w == ["newfile", "/store/t1/config-0", "/conf/app.conf"]),
            "{words:?}"
        );
        assert!(
            !words.contains(&"/run/secrets"),
            "no secrets dir without secrets"
        );
    }

    #[test]
    fn a_target_that_would_need_the_hosts_disk_is_refused_by_name() {
        let t = task(serde_json::json!({"Command": ["true"]}));
        let files = TaskFiles {
            root: "/store".into(),
            files: vec![placed(
                Kind::Config,
                "nginx_conf",
                "/nginx_conf",
                "/store/t1/config-0",
            )],
        };
        let err = plan(&t, Path::new("/v"), Path::new("/t"), true, &files).unwrap_err();
        assert!(
            err.starts_with("config nginx_conf: target /nginx_conf does not exist on this node"),
            "{err}"
        );
        assert!(err.contains("under /run/secrets"), "{err}");
        let files = TaskFiles {
            root: "/store".into(),
            files: vec![placed(
                Kind::Secret,
                "db",
                "/run/secrets/db",
                "/store/t1/secret-0",
            )],
        };
        let err = plan(&t, Path::new("/v"), Path::new("/t"), false, &files).unwrap_err();
        assert!(err.contains("run shoald as root"), "{err}");
    }
}
