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
//!   driver's name (output goes to the task's capped files; its `max-size` and `max-file`
//!   options set the cap), isolation.

use crate::taskfiles::TaskFiles;
use shoal_api::objects::{Mount, Task};
use shoal_api::secrets::SECRETS_DIR;
use std::path::{Path, PathBuf};

/// Carries out the mounts inside the task's mount namespace, then execs the rest of its
/// arguments. Each mount is four words: kind, source, target, comma-separated options.
/// `file` and `newfile` are secrets and configs: a file of shoald's in-memory store, bound
/// read-only, nosuid and nodev, but executable (a config may be a script, and is one in a
/// container, where runc's read-only remount drops the store's noexec too); `newfile`
/// first makes its mount point inside a tmpfs of this namespace, `file` covers an
/// existing host file. `entries` gives a host directory a tmpfs in which new mount points
/// can be made (see `file_words`).
const MOUNT_SCRIPT: &str = r#"set -e
# entries DIR STAGE: DIR becomes a tmpfs showing each host entry of DIR through a bind
# (recursive, so mounts below come along), taken from STAGE, a recursive bind of DIR.
# STAGE is read through the working directory, since covering DIR may cover its path;
# `mount -c` then leaves relative sources to the kernel; `-n` keeps mount(8) from writing
# its table under a /run it is covering.
entries() {
  stage=$2
  mkdir -p "$stage"
  mount --rbind "$1" "$stage"
  cd "$stage"
  set -- "$1" $(stat -c '%a %u %g' .)
  mount -n -t tmpfs -o "mode=$2,uid=$3,gid=$4,size=1m,nosuid,nodev" tmpfs "$1"
  for e in * .[!.]* ..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    if [ -L "$e" ]; then
      ln -s "$(readlink "$e")" "$1/$e"
    elif [ -d "$e" ]; then
      mkdir -p "$1/$e"; mount -n -c --rbind "./$e" "$1/$e"
    else
      : > "$1/$e"; mount -n -c --bind "./$e" "$1/$e"
    fi
  done
  cd /
  # Unreachable when DIR holds it (then it goes with the namespace).
  umount -n -l "$stage" 2>/dev/null || :
}
while [ "$1" != "--" ]; do
  kind=$1; src=$2; dst=$3; opts=$4; shift 4
  case $kind in
    entries)
      entries "$dst" "$src" ;;
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
      mount -o remount,bind,ro,nosuid,nodev "$dst" ;;
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

/// What is at a path on the host, for placing a task's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Missing,
    File,
    Dir,
    /// A device, socket or the like.
    Other,
}

/// The host's answer (following symlinks, as the task's own lookups would).
fn probe(path: &Path) -> Entry {
    match std::fs::metadata(path) {
        Err(_) => Entry::Missing,
        Ok(m) if m.is_file() => Entry::File,
        Ok(m) if m.is_dir() => Entry::Dir,
        Ok(_) => Entry::Other,
    }
}

/// The nearest ancestor of `path` that exists on the host.
fn existing_ancestor(path: &str, probe: &dyn Fn(&Path) -> Entry) -> PathBuf {
    let mut p = Path::new(path);
    while let Some(parent) = p.parent() {
        if probe(parent) != Entry::Missing {
            return parent.to_path_buf();
        }
        p = parent;
    }
    PathBuf::from("/")
}

/// The mounts that show a task its secrets and configs, after the spec's own. Nothing is
/// written to the host and no host file is hidden from the task:
/// - under `/run/secrets`: a tmpfs there when the host has the directory (Docker's: only
///   the task's secrets in it), else as below;
/// - under one of the spec's tmpfs mounts: a mount point made in it;
/// - over a file the host has: covered, for this task only;
/// - else, in a directory `D` the host has (the target's nearest existing ancestor): `D`
///   gets a tmpfs showing each of its host entries through a bind (so writes to them still
///   reach the host; only entries the task creates in `D` itself stay in memory), plus the
///   target. Not for `/` (Docker's default config target `/<name>`): a mount over the root
///   does not change a running process's root, so it is refused by name.
///
/// Last, the store itself is covered, so the task cannot read other tasks' files.
pub fn file_words(
    files: &TaskFiles,
    mounts: &[Mount],
    probe: &dyn Fn(&Path) -> Entry,
) -> Result<Vec<[String; 4]>, String> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let word =
        |kind: &str, src: &str, dst: &str, opts: &str| [kind, src, dst, opts].map(String::from);
    let mut in_memory: Vec<String> = mounts
        .iter()
        .filter(|m| m.kind == "tmpfs")
        .map(|m| m.target.clone())
        .collect();
    let mut secrets_tmpfs = false;
    let mut add_entries: Vec<PathBuf> = Vec::new();
    let mut kinds = Vec::new();
    for f in &files.files {
        let refuse = |why: &str| {
            Err(format!(
                "{} {}: target {} {why}",
                f.kind.word(),
                f.source,
                f.target
            ))
        };
        if inside(&f.target, SECRETS_DIR) && !in_memory.iter().any(|d| inside(&f.target, d)) {
            match probe(Path::new(SECRETS_DIR)) {
                Entry::Dir => secrets_tmpfs = true,
                Entry::Missing => {
                    let d = existing_ancestor(SECRETS_DIR, probe);
                    if d == Path::new("/") {
                        return refuse("needs /run on this node");
                    }
                    add_entries.push(d);
                }
                _ => {
                    return refuse(&format!(
                        "needs {SECRETS_DIR}, which is not a directory on this node"
                    ));
                }
            }
            in_memory.push(SECRETS_DIR.to_string());
        }
        let kind = if in_memory.iter().any(|d| inside(&f.target, d)) {
            "newfile"
        } else {
            match probe(Path::new(&f.target)) {
                Entry::File => "file",
                Entry::Dir | Entry::Other => {
                    return refuse(
                        "is not a file on this node; a native task sees the host's filesystem, so give a target where the node has a file or nothing",
                    );
                }
                Entry::Missing => {
                    let d = existing_ancestor(&f.target, probe);
                    if d == Path::new("/") {
                        return refuse(
                            "is in / of the host, which a native task shares: shoal can add a file to a directory such as /etc for the task alone, but not to /; give a target such as /etc/<name>, or run the service as a container",
                        );
                    }
                    if probe(&d) != Entry::Dir {
                        return refuse(&format!(
                            "is under {}, which is not a directory on this node",
                            d.display()
                        ));
                    }
                    // Not counted as wholly in memory: `d`'s subdirectories and files are
                    // the host's, seen through binds, so each later target in it is placed
                    // by what the host has there (covered, or its own nearest directory).
                    add_entries.push(d);
                    "newfile"
                }
            }
        };
        kinds.push(kind);
    }
    // Outer directories first: an inner one is then one of the outer one's binds.
    add_entries.sort_by_key(|d| (d.components().count(), d.clone()));
    add_entries.dedup();
    let stage = files.dir.display().to_string();
    let mut words: Vec<[String; 4]> = add_entries
        .iter()
        .enumerate()
        .map(|(i, d)| {
            word(
                "entries",
                &format!("{stage}/stage-{i}"),
                &d.display().to_string(),
                "",
            )
        })
        .collect();
    if secrets_tmpfs {
        // Holds only mount points; the data stays in the store.
        words.push(word(
            "tmpfs",
            "tmpfs",
            SECRETS_DIR,
            "size=1m,mode=755,nosuid,nodev,noexec",
        ));
    }
    for (f, kind) in files.files.iter().zip(kinds) {
        words.push(word(kind, &f.host.display().to_string(), &f.target, "ro"));
    }
    words.push(word(
        "tmpfs",
        "tmpfs",
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
        (
            task.spec
                .log_driver
                .as_ref()
                .is_some_and(|d| d.name != "json-file"),
            "log driver",
        ),
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
    let file_words = file_words(files, &cs.mounts, &probe)?;
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

    fn placed(kind: Kind, source: &str, target: &str) -> PlacedFile {
        let name = format!("{}-{}", kind.word(), target.len());
        PlacedFile {
            kind,
            source: source.into(),
            target: target.into(),
            host: PathBuf::from("/store/t1").join(name),
        }
    }

    fn store(files: Vec<PlacedFile>) -> TaskFiles {
        TaskFiles {
            root: "/store".into(),
            dir: "/store/t1".into(),
            files,
        }
    }

    /// A host with /etc/hosts, /etc, /run and /srv/app.conf, and whatever `more` adds.
    fn host(more: &'static [(&'static str, Entry)]) -> impl Fn(&Path) -> Entry {
        move |p: &Path| {
            let p = p.to_str().unwrap();
            let known = [
                ("/", Entry::Dir),
                ("/etc", Entry::Dir),
                ("/etc/hosts", Entry::File),
                ("/run", Entry::Dir),
                ("/srv", Entry::Dir),
                ("/srv/app.conf", Entry::File),
            ];
            known
                .iter()
                .chain(more)
                .find(|(k, _)| *k == p)
                .map(|(_, e)| *e)
                .unwrap_or(Entry::Missing)
        }
    }

    fn flat(words: Vec<[String; 4]>) -> Vec<String> {
        words.into_iter().flatten().collect()
    }

    #[test]
    fn files_go_where_they_cost_the_host_nothing() {
        let files = store(vec![
            placed(Kind::Secret, "db", "/run/secrets/db"),
            placed(Kind::Secret, "tls", "/run/secrets/tls/key.pem"),
            placed(Kind::Config, "site", "/etc/site.conf"),
            placed(Kind::Config, "app", "/srv/app.conf"),
            placed(Kind::Config, "deep", "/etc/app/conf.d/x.conf"),
        ]);
        let words = flat(file_words(&files, &[], &host(&[])).unwrap());
        assert_eq!(
            words,
            [
                // /run has no secrets dir: /run gets one in memory, beside its own entries.
                "entries",
                "/store/t1/stage-0",
                "/etc",
                "",
                "entries",
                "/store/t1/stage-1",
                "/run",
                "",
                "newfile",
                "/store/t1/secret-15",
                "/run/secrets/db",
                "ro",
                "newfile",
                "/store/t1/secret-24",
                "/run/secrets/tls/key.pem",
                "ro",
                "newfile",
                "/store/t1/config-14",
                "/etc/site.conf",
                "ro",
                // An existing file is covered for the task alone.
                "file",
                "/store/t1/config-13",
                "/srv/app.conf",
                "ro",
                "newfile",
                "/store/t1/config-22",
                "/etc/app/conf.d/x.conf",
                "ro",
                "tmpfs",
                "tmpfs",
                "/store",
                "ro,size=4k,mode=700",
            ]
        );
    }

    #[test]
    fn targets_beside_host_entries_never_write_through_to_the_host() {
        // /etc gets an in-memory copy for site.conf; /etc/hosts and a new file in /etc/ssl
        // (which the host has) must then be covered and get /etc/ssl's own copy, in either
        // order, rather than be written through the binds of /etc's copy.
        const MORE: &[(&str, Entry)] = &[("/etc/ssl", Entry::Dir)];
        let a = placed(Kind::Config, "site", "/etc/site.conf");
        let b = placed(Kind::Config, "pem", "/etc/ssl/x.pem");
        let c = placed(Kind::Config, "hosts", "/etc/hosts");
        for order in [
            vec![a.clone(), b.clone(), c.clone()],
            vec![c.clone(), b.clone(), a.clone()],
        ] {
            let words = file_words(&store(order), &[], &host(MORE)).unwrap();
            let kind_of = |target: &str| {
                words
                    .iter()
                    .find(|w| w[2] == target)
                    .map(|w| w[0].clone())
                    .unwrap()
            };
            assert_eq!(kind_of("/etc"), "entries");
            assert_eq!(kind_of("/etc/ssl"), "entries");
            assert_eq!(kind_of("/etc/site.conf"), "newfile");
            assert_eq!(kind_of("/etc/ssl/x.pem"), "newfile");
            assert_eq!(kind_of("/etc/hosts"), "file", "covered, not truncated");
            let pos = |t: &str| words.iter().position(|w| w[2] == t).unwrap();
            assert!(pos("/etc") < pos("/etc/ssl"), "outer copy first");
        }
    }

    #[test]
    fn a_hosts_secrets_dir_is_covered_by_the_tasks_own() {
        let files = store(vec![placed(Kind::Secret, "db", "/run/secrets/db")]);
        let words = flat(file_words(&files, &[], &host(&[("/run/secrets", Entry::Dir)])).unwrap());
        assert_eq!(
            words,
            [
                "tmpfs",
                "tmpfs",
                "/run/secrets",
                "size=1m,mode=755,nosuid,nodev,noexec",
                "newfile",
                "/store/t1/secret-15",
                "/run/secrets/db",
                "ro",
                "tmpfs",
                "tmpfs",
                "/store",
                "ro,size=4k,mode=700",
            ]
        );
    }

    #[test]
    fn a_config_under_a_tmpfs_of_the_service_is_made_there() {
        let mounts = [Mount {
            kind: "tmpfs".into(),
            target: "/conf".into(),
            ..Default::default()
        }];
        let files = store(vec![placed(Kind::Config, "app", "/conf/app.conf")]);
        let words = flat(file_words(&files, &mounts, &host(&[])).unwrap());
        assert_eq!(
            words,
            [
                "newfile",
                "/store/t1/config-14",
                "/conf/app.conf",
                "ro",
                "tmpfs",
                "tmpfs",
                "/store",
                "ro,size=4k,mode=700",
            ]
        );
    }

    #[test]
    fn targets_in_the_root_or_on_a_directory_are_refused_by_name() {
        let files = store(vec![placed(Kind::Config, "nginx_conf", "/nginx_conf")]);
        let err = file_words(&files, &[], &host(&[])).unwrap_err();
        assert!(
            err.starts_with("config nginx_conf: target /nginx_conf is in / of the host"),
            "{err}"
        );
        assert!(err.contains("/etc/<name>"), "{err}");
        let files = store(vec![placed(Kind::Config, "x", "/etc")]);
        let err = file_words(&files, &[], &host(&[])).unwrap_err();
        assert!(err.contains("is not a file on this node"), "{err}");
    }

    #[test]
    fn the_plan_runs_the_file_mounts_before_the_command_and_needs_root() {
        let t = task(serde_json::json!({"Command": ["true"]}));
        let existing = tempfile::NamedTempFile::new().unwrap();
        let target = existing.path().display().to_string();
        let files = store(vec![placed(Kind::Config, "app", &target)]);
        let p = plan(&t, Path::new("/v"), Path::new("/t"), true, &files).unwrap();
        let words: Vec<&str> = p.argv.iter().map(String::as_str).collect();
        assert_eq!(&words[..2], ["sh", "-c"]);
        assert_eq!(words[4], "file");
        assert_eq!(words[6], target);
        assert_eq!(&words[words.len() - 2..], ["--", "true"]);
        let err = plan(&t, Path::new("/v"), Path::new("/t"), false, &files).unwrap_err();
        assert!(err.contains("run shoald as root"), "{err}");
    }
}
