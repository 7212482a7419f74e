//! The service load balancer: VIPs balanced inside each task's namespace (east-west) and the
//! routing mesh in the node's namespace, behind one backend trait. `plan` computes what to
//! program from the node's view (pure); a backend makes the kernel match it. Backends:
//! `nft` (nftables verdict maps), `ebpf` (socket-level balancing by cgroup programs),
//! `iptables` (kube-proxy-style chains, the fallback), `none` (records what it was asked,
//! for tests).

pub mod choose;
pub mod conntrack;
pub mod ebpf;
pub mod ebpf_mesh;
pub mod iptables;
pub mod leftovers;
pub mod netlink;
pub mod nft;
pub mod nft_affinity;
pub mod none;
pub mod plan;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod ebpf_tests;

pub use plan::{MeshTable, VipTable};

/// The network namespace a table lives in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Netns {
    /// The namespace shoald runs in: the node's own.
    Node,
    /// A named namespace, `/run/netns/NAME` (a task's sandbox).
    Named(String),
}

impl Netns {
    pub fn path(&self) -> Option<String> {
        match self {
            Netns::Node => None,
            Netns::Named(n) => Some(format!("/run/netns/{n}")),
        }
    }

    /// `program` to run inside this namespace (under `nsenter --net`, or as it is for the
    /// node's own).
    pub fn command(&self, program: &str) -> std::process::Command {
        match self.path() {
            Some(path) => {
                let mut c = std::process::Command::new("nsenter");
                c.arg(format!("--net={path}")).arg(program);
                c
            }
            None => std::process::Command::new(program),
        }
    }

    /// Runs `f` inside this namespace: on a thread of its own that entered it (entering
    /// changes the calling thread's namespace), or right here for the node's.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        let Some(path) = self.path() else {
            return Ok(f());
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other(format!("thread in {path} panicked"))))
        })
    }
}

/// How a table was brought to its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    Unchanged,
    /// Element changes in one transaction.
    Incremental {
        ops: usize,
    },
    /// The whole table replaced in one transaction.
    Full,
}

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("cannot run nft (install nftables): {0}")]
    NoNft(#[source] std::io::Error),
    #[error("nft -f in {ns}: {stderr}")]
    Nft { ns: String, stderr: String },
    #[error("iptables in {ns}: {error}")]
    Iptables { ns: String, error: String },
    #[error("eBPF maps for {ns}: {error}")]
    Ebpf { ns: String, error: String },
}

/// One load-balancer implementation. Every implementation passes the conformance suite in
/// `conformance.rs`.
pub trait LbBackend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Makes the VIPs of `table` balance inside `ns` (a task's namespace).
    fn apply_vips(&self, ns: &Netns, table: &VipTable) -> Result<Synced, LbError>;
    /// Makes the published ports of the node whose namespace is `ns` match `table`.
    fn apply_mesh(&self, ns: &Netns, table: &MeshTable) -> Result<Synced, LbError>;
    /// Forgets a namespace that is gone (its task ended).
    fn forget(&self, ns: &Netns);
    /// Forgets every namespace but `live` (after a restart, what the previous instance
    /// programmed for tasks that ended meanwhile). Backends whose state lives inside each
    /// namespace need nothing here.
    fn sweep(&self, _live: &[Netns]) {}
    /// Removes the routing mesh of the node whose namespace is `ns` (leaving the swarm).
    fn remove_mesh(&self, ns: &Netns) -> Result<(), LbError>;
    /// Removes whatever outlives shoald (leaving the swarm, after every task stopped):
    /// pinned programs and maps. Tables inside task namespaces go with them.
    fn leave(&self) {}
    /// This node ran dataplane `previous` before: remove what it left in each namespace
    /// before programming it the first time (see `leftovers`).
    fn take_over_from(&self, _previous: &str) {}
}
