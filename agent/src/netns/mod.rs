//! Task sandboxes: each native task gets a named network namespace (`/run/netns/NAME`, lo
//! up) and a mount namespace in which `/etc/resolv.conf` points at the embedded DNS address
//! 127.0.0.11. iproute2 does both: `ip netns exec` enters the namespace, unshares the mount
//! namespace and bind-mounts `/etc/netns/NAME/*` over `/etc`.
//!
//! Names carry a prefix unique to this shoald (several run on one machine in tests), so a
//! restarted shoald finds and removes what an earlier run left.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where tasks find the embedded DNS server.
pub const TASK_RESOLVER: &str = "127.0.0.11";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("ip {args}: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run ip (install iproute2): {0}")]
    NoIp(#[source] std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetnsError::NoIp)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// What a task's `/etc` shows besides the embedded DNS server: the spec's resolver search
/// domains and options, and extra hosts lines (`IP NAME...`).
#[derive(Clone, Debug, Default)]
pub struct TaskFiles {
    pub search: Vec<String>,
    pub options: Vec<String>,
    pub hosts: Vec<String>,
}

/// The task's resolv.conf: always the embedded server, which forwards what it does not
/// know; `ndots:0` unless the spec sets ndots itself.
pub fn resolv_conf(files: &TaskFiles) -> String {
    let mut out = format!("nameserver {TASK_RESOLVER}\n");
    if !files.search.is_empty() {
        out.push_str(&format!("search {}\n", files.search.join(" ")));
    }
    let mut options = files.options.clone();
    if !options.iter().any(|o| o.starts_with("ndots:")) {
        options.insert(0, "ndots:0".into());
    }
    out.push_str(&format!("options {}\n", options.join(" ")));
    out
}

#[derive(Clone, Debug)]
pub struct Sandboxes {
    prefix: String,
    etc_netns: PathBuf,
}

impl Sandboxes {
    /// Sandboxes of the shoald whose state dir is `state_dir`.
    pub fn new(state_dir: &Path) -> Sandboxes {
        let mut h = DefaultHasher::new();
        state_dir.hash(&mut h);
        Sandboxes {
            prefix: format!("shoal-{:08x}", h.finish() as u32),
            etc_netns: PathBuf::from("/etc/netns"),
        }
    }

    /// Whether this process can make namespaces.
    pub fn available() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// What this shoald's names start with (also the owner label of its containers).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn name(&self, task_id: &str) -> String {
        format!("{}-{}", self.prefix, &task_id[..task_id.len().min(12)])
    }

    /// The namespace of a task, with loopback up and its resolv.conf.
    pub fn create(&self, task_id: &str) -> Result<String, NetnsError> {
        self.create_with(task_id, &TaskFiles::default())
    }

    /// Like `create`, with the task's resolver search list and options, and extra
    /// `/etc/hosts` lines (the host's file with them appended).
    pub fn create_with(&self, task_id: &str, files: &TaskFiles) -> Result<String, NetnsError> {
        let name = self.name(task_id);
        // A leftover of the same task (crash between create and remove) is replaced.
        let _ = ip(&["netns", "delete", &name]);
        ip(&["netns", "add", &name])?;
        let result = (|| {
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            let dir = self.etc_netns.join(&name);
            std::fs::create_dir_all(&dir).map_err(|source| NetnsError::Io {
                path: dir.clone(),
                source,
            })?;
            let conf = dir.join("resolv.conf");
            std::fs::write(&conf, resolv_conf(files))
                .map_err(|source| NetnsError::Io { path: conf, source })?;
            if !files.hosts.is_empty() {
                let hosts = dir.join("hosts");
                let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                for line in &files.hosts {
                    text.push_str(line);
                    text.push('\n');
                }
                std::fs::write(&hosts, text).map_err(|source| NetnsError::Io {
                    path: hosts,
                    source,
                })?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.remove(task_id);
            return Err(e);
        }
        Ok(name)
    }

    /// Removes a task's namespace and its files; missing ones are fine.
    pub fn remove(&self, task_id: &str) {
        let name = self.name(task_id);
        let _ = ip(&["netns", "delete", &name]);
        let _ = std::fs::remove_dir_all(self.etc_netns.join(&name));
    }

    /// Names the network namespace of a running task's process again, for a shoald that
    /// adopts it: a name made by an earlier shoald may live only in that one's mount
    /// namespace (as when shoald runs under `ip netns exec`).
    pub fn reattach(&self, task_id: &str, pid: u32) -> Result<String, NetnsError> {
        let name = self.name(task_id);
        let _ = ip(&["netns", "delete", &name]);
        ip(&["netns", "attach", &name, &pid.to_string()])?;
        Ok(name)
    }

    /// Removes a sandbox by its name.
    pub fn remove_name(&self, name: &str) {
        let _ = ip(&["netns", "delete", name]);
        let _ = std::fs::remove_dir_all(self.etc_netns.join(name));
    }

    /// Names of this shoald's sandboxes that exist now.
    pub fn list(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir("/run/netns") else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .collect()
    }

    /// Removes every sandbox an earlier run of this shoald left behind.
    pub fn remove_all(&self) -> usize {
        let names = self.list();
        for n in &names {
            let _ = ip(&["netns", "delete", n]);
            let _ = std::fs::remove_dir_all(self.etc_netns.join(n));
        }
        names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_keeps_the_embedded_server_and_adds_search_and_options() {
        assert_eq!(
            resolv_conf(&TaskFiles::default()),
            "nameserver 127.0.0.11\noptions ndots:0\n"
        );
        let files = TaskFiles {
            search: vec!["corp.example".into(), "example".into()],
            options: vec!["timeout:2".into()],
            hosts: vec![],
        };
        assert_eq!(
            resolv_conf(&files),
            "nameserver 127.0.0.11\nsearch corp.example example\noptions ndots:0 timeout:2\n"
        );
        let files = TaskFiles {
            options: vec!["ndots:2".into()],
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(&files),
            "nameserver 127.0.0.11\noptions ndots:2\n"
        );
    }
}
