//! The in-memory store of task files: a tmpfs shoald mounts on `--task-files-dir` (mode
//! 0700, nosuid, nodev, noexec, `noswap` where the kernel has it, at most `SIZE_LIMIT`),
//! outside the state dir, so no secret reaches the node's disk. One directory per task,
//! removed when the task ends; what an earlier run left is removed at start-up, except
//! for tasks that are adopted. The tmpfs is mounted when a task first needs it and
//! unmounted when no task has files any more; it outlives a shoald that dies while tasks
//! have files, and the restarted one takes it over.

use super::TaskFile;
use shoal_api::secrets::Kind;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// At most this much memory for all task files of the node (a secret or config is under
/// 500 KiB; tmpfs takes only what the files use).
pub const SIZE_LIMIT: &str = "256m";

/// The default store of the shoald whose state dir is `state_dir`: one per daemon, since
/// the testbed runs several on one host.
pub fn default_dir(state_dir: &Path) -> PathBuf {
    match crate::identity::state_dir_tag(state_dir) {
        None => PathBuf::from("/run/shoal/task-files"),
        Some(tag) => PathBuf::from(format!("/run/shoal/task-files{tag}")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "this node keeps no secrets or configs: {reason}; run shoald as root, or give --task-files-dir a directory on a tmpfs"
    )]
    Unavailable { reason: String },
    #[error("task id {0:?} cannot name a directory")]
    BadTask(String),
    #[error(
        "the node's in-memory store of secrets and configs ({root}, {SIZE_LIMIT}) is full; free it by removing tasks"
    )]
    Full { root: PathBuf },
    #[error("{kind} {name}: writing {path}: {source}", kind = kind.word())]
    Write {
        kind: Kind,
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A task's file as written to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedFile {
    pub kind: Kind,
    pub source: String,
    /// Absolute path inside the task.
    pub target: String,
    /// The file in the store that is mounted at `target`.
    pub host: PathBuf,
}

/// A task's files in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFiles {
    /// The store's directory, which native tasks hide from themselves.
    pub root: PathBuf,
    /// This task's directory in it.
    pub dir: PathBuf,
    pub files: Vec<PlacedFile>,
}

impl TaskFiles {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct TaskFilesDir {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    how: How,
    /// Writes, removals and the mount and unmount they cause, one at a time.
    lock: Mutex<()>,
}

#[derive(Debug)]
enum How {
    /// shoald mounts its tmpfs on the root while some task has files, and unmounts it when
    /// none has (a node that runs no such task keeps no mount).
    Mount,
    /// The root is on an in-memory file system shoald cannot mount on (not root).
    OnTmpfs,
    /// Why files cannot be kept.
    Unusable(String),
}

/// Where `dir` is a mount point: its file system type (the last entry wins, as the kernel
/// shows the top mount).
pub(crate) fn mounted_fs(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            // mountinfo escapes spaces and the like as octal (\040).
            (point == dir).then(|| right.split(' ').next().unwrap_or("").to_string())
        })
        .next_back()
}

/// Whether `dir` is on a file system that lives in memory.
fn in_memory(dir: &Path) -> bool {
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    statfs(dir).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
}

fn mount_tmpfs(root: &Path) -> Result<(), nix::Error> {
    use nix::mount::{MsFlags, mount};
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let with_noswap = format!("mode=0700,size={SIZE_LIMIT},noswap");
    match mount(
        Some("shoal-task-files"),
        root,
        Some("tmpfs"),
        flags,
        Some(with_noswap.as_str()),
    ) {
        Err(nix::Error::EINVAL) => {
            // Kernels before 6.4 have no `noswap`: the files may then be swapped out.
            tracing::warn!(dir = %root.display(), "tmpfs without noswap on this kernel: task files may reach swap");
            let plain = format!("mode=0700,size={SIZE_LIMIT}");
            mount(
                Some("shoal-task-files"),
                root,
                Some("tmpfs"),
                flags,
                Some(plain.as_str()),
            )
        }
        r => r,
    }
}

impl TaskFilesDir {
    /// The store on `root`. Nothing is mounted until a task has files; a mount an earlier
    /// run left is taken over (its files may belong to tasks that will be adopted).
    pub fn open(root: &Path) -> TaskFilesDir {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let how = if mounted_fs(&root).as_deref() == Some("tmpfs")
            || nix::unistd::geteuid().is_root()
        {
            How::Mount
        } else {
            match std::fs::create_dir_all(&root) {
                Ok(()) if in_memory(&root) => How::OnTmpfs,
                Ok(()) => How::Unusable(format!(
                    "{} is not in memory, and shoald is not root and cannot mount a tmpfs there",
                    root.display()
                )),
                Err(e) => How::Unusable(format!("{}: {e}", root.display())),
            }
        };
        match &how {
            How::Unusable(reason) => {
                tracing::warn!(dir = %root.display(), %reason, "tasks with secrets or configs are refused on this node")
            }
            _ => tracing::info!(dir = %root.display(), "secrets and configs kept in memory"),
        }
        TaskFilesDir {
            inner: Arc::new(Inner {
                root,
                how,
                lock: Mutex::new(()),
            }),
        }
    }

    /// A store that refuses every file, with the reason (tests, hosts without tmpfs).
    pub fn disabled(reason: &str) -> TaskFilesDir {
        TaskFilesDir {
            inner: Arc::new(Inner {
                root: PathBuf::new(),
                how: How::Unusable(reason.to_string()),
                lock: Mutex::new(()),
            }),
        }
    }

    /// Makes sure the root is in memory before anything is written there.
    fn ready(&self) -> Result<(), StoreError> {
        let root = &self.inner.root;
        let io = |source: std::io::Error| StoreError::Io {
            path: root.clone(),
            source,
        };
        match &self.inner.how {
            How::Unusable(reason) => {
                return Err(StoreError::Unavailable {
                    reason: reason.clone(),
                });
            }
            How::Mount if mounted_fs(root).as_deref() != Some("tmpfs") => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(io)?;
                mount_tmpfs(root).map_err(|e| StoreError::Unavailable {
                    reason: format!("cannot mount a tmpfs on {}: {e}", root.display()),
                })?;
            }
            How::Mount => {}
            How::OnTmpfs => {
                std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
            }
        }
        // Whatever happened to the mount meanwhile, never a byte on disk.
        if !in_memory(root) {
            return Err(StoreError::Unavailable {
                reason: format!("{} is not a tmpfs", root.display()),
            });
        }
        Ok(())
    }

    /// Unmounts the tmpfs once no task has files in it.
    fn release_if_empty(&self) {
        let root = &self.inner.root;
        if !matches!(self.inner.how, How::Mount) || mounted_fs(root).as_deref() != Some("tmpfs") {
            return;
        }
        let empty = std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_none());
        if !empty {
            return;
        }
        // Detached: a mount a task namespace still holds keeps it alive, not us.
        match nix::mount::umount2(root, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {
                let _ = std::fs::remove_dir(root);
            }
            Err(e) => {
                tracing::warn!(dir = %root.display(), error = %e, "cannot unmount the task files store")
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Whether the root holds task files now (an unmounted root holds none, and is never
    /// read as if it did).
    fn live(&self) -> bool {
        match self.inner.how {
            How::Mount => mounted_fs(&self.inner.root).as_deref() == Some("tmpfs"),
            How::OnTmpfs => true,
            How::Unusable(_) => false,
        }
    }

    fn task_dir(&self, task_id: &str) -> Result<PathBuf, StoreError> {
        let ok = !task_id.is_empty()
            && task_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(StoreError::BadTask(task_id.to_string()));
        }
        Ok(self.inner.root.join(task_id))
    }

    /// Writes `files` for `task_id`, replacing what an earlier attempt left; nothing is
    /// left behind when it fails.
    pub fn write(&self, task_id: &str, files: &[TaskFile]) -> Result<TaskFiles, StoreError> {
        if files.is_empty() {
            return Ok(TaskFiles::default());
        }
        let dir = self.task_dir(task_id)?;
        let _held = self.inner.lock.lock().expect("lock");
        self.ready()?;
        let _ = std::fs::remove_dir_all(&dir);
        let result = self.write_all(&dir, files);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
            self.release_if_empty();
        }
        result
    }

    fn write_all(&self, dir: &Path, files: &[TaskFile]) -> Result<TaskFiles, StoreError> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let mut placed = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let path = dir.join(format!("{}-{i}", f.kind.word()));
            let fail = |source: std::io::Error| {
                if source.raw_os_error() == Some(nix::libc::ENOSPC) {
                    return StoreError::Full {
                        root: self.inner.root.clone(),
                    };
                }
                StoreError::Write {
                    kind: f.kind,
                    name: f.source.clone(),
                    path: path.clone(),
                    source,
                }
            };
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
                .map_err(fail)?;
            file.write_all(f.data.as_slice()).map_err(fail)?;
            // Owner first: chown clears set-id bits the mode may ask for.
            std::os::unix::fs::fchown(&file, Some(f.uid), Some(f.gid)).map_err(fail)?;
            file.set_permissions(std::fs::Permissions::from_mode(f.mode))
                .map_err(fail)?;
            placed.push(PlacedFile {
                kind: f.kind,
                source: f.source.clone(),
                target: f.target.clone(),
                host: path,
            });
        }
        Ok(TaskFiles {
            root: self.inner.root.clone(),
            dir: dir.to_path_buf(),
            files: placed,
        })
    }

    /// Removes a task's files (the memory is freed once no mount holds them any more).
    pub fn remove(&self, task_id: &str) {
        let _held = self.inner.lock.lock().expect("lock");
        if !self.live() {
            return;
        }
        if let Ok(dir) = self.task_dir(task_id)
            && let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(task = task_id, dir = %dir.display(), error = %e, "task files not removed");
        }
        self.release_if_empty();
    }

    /// Removes the files of every task but `keep` (what an earlier run left); returns how
    /// many tasks had some.
    pub fn discard_except(&self, keep: &[String]) -> usize {
        let _held = self.inner.lock.lock().expect("lock");
        if !self.live() {
            return 0;
        }
        let Ok(entries) = std::fs::read_dir(&self.inner.root) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let path = e.path();
            let r = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match r {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "leftover task files not removed")
                }
            }
        }
        if removed > 0 {
            tracing::info!(tasks = removed, "removed task files an earlier run left");
        }
        self.release_if_empty();
        removed
    }
}
