//! Which load-balancer backend a node uses (`shoald --dataplane`), and why.

use super::LbBackend;
use super::ebpf::{EbpfOptions, SockLb};
use super::iptables::Iptables;
use super::nft::Nftables;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// eBPF when the kernel takes every program and attach point, else nftables, else
    /// iptables.
    Auto,
    Ebpf,
    Nftables,
    Iptables,
    Ipvs,
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Choice, String> {
        Ok(match s {
            "auto" => Choice::Auto,
            "ebpf" => Choice::Ebpf,
            "nftables" => Choice::Nftables,
            "iptables" => Choice::Iptables,
            "ipvs" => Choice::Ipvs,
            other => {
                return Err(format!(
                    "unknown dataplane {other:?}: use auto, ebpf, nftables, iptables or ipvs"
                ));
            }
        })
    }
}

/// The backend in use, and for `auto` the reason eBPF was not taken.
pub struct Dataplane {
    pub lb: Arc<dyn LbBackend>,
    pub fallback: Option<String>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Dataplane {
    /// What `node inspect` and `shoal doctor` show.
    pub fn describe(&self) -> String {
        match &self.fallback {
            None if self.lb.name() == "ebpf" => {
                "ebpf (VIPs at the socket, routing mesh in tc)".into()
            }
            None => self.lb.name().into(),
            Some(why) => format!("{} (eBPF not used: {why})", self.lb.name()),
        }
    }
}

/// Whether the nft command runs here (the nftables backend programs through it).
fn nft_available() -> bool {
    std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether this kernel has IPVS, loading the module if it can.
fn ipvs_present() -> Result<(), String> {
    if Path::new("/proc/net/ip_vs").exists() {
        return Ok(());
    }
    let out = std::process::Command::new("modprobe").arg("ip_vs").output();
    if Path::new("/proc/net/ip_vs").exists() {
        return Ok(());
    }
    Err(match out {
        Ok(o) if !o.status.success() => format!(
            "modprobe ip_vs: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => "no /proc/net/ip_vs after modprobe ip_vs".into(),
        Err(e) => format!("no /proc/net/ip_vs, and modprobe could not run: {e}"),
    })
}

pub fn choose(choice: Choice, ebpf: &EbpfOptions) -> Result<Dataplane, String> {
    let nft = |fallback| {
        // A node switched from eBPF: detach its programs, or they would go on balancing.
        if ebpf.pin_dir.exists() {
            tracing::info!(dir = %ebpf.pin_dir.display(), "removing the eBPF dataplane of an earlier run");
            SockLb::unpin_all(&ebpf.pin_dir);
        }
        Dataplane {
            lb: Arc::new(Nftables::default()),
            fallback,
        }
    };
    match choice {
        Choice::Nftables => Ok(nft(None)),
        Choice::Ebpf => SockLb::open(ebpf.clone())
            .map(|lb| Dataplane {
                lb: Arc::new(lb),
                fallback: None,
            })
            .map_err(|e| format!("--dataplane ebpf: {e}; use --dataplane nftables on this host")),
        Choice::Auto => match SockLb::open(ebpf.clone()) {
            Ok(lb) => Ok(Dataplane {
                lb: Arc::new(lb),
                fallback: None,
            }),
            // Programs of an earlier run still balance this node's tasks: falling back
            // would detach them before nftables has programmed anything.
            Err(e) if ebpf.pin_dir.join("link_shoal_connect4").exists() => Err(format!(
                "the eBPF dataplane pinned at {} by an earlier run cannot be taken over: {e}; \
                 fix that, or start with --dataplane nftables (which removes it)",
                ebpf.pin_dir.display()
            )),
            Err(e) if !nft_available() && Iptables::available().is_ok() => {
                tracing::warn!(reason = %e, "eBPF dataplane not available and no nft; using iptables");
                Ok(Dataplane {
                    lb: Arc::new(Iptables::default()),
                    fallback: Some(format!("{e}; and nft is not installed")),
                })
            }
            Err(e) => {
                tracing::warn!(reason = %e, "eBPF dataplane not available; using nftables");
                Ok(nft(Some(e.to_string())))
            }
        },
        Choice::Iptables => {
            Iptables::available().map_err(|e| {
                format!("--dataplane iptables: {e}; install iptables, or use nftables or ebpf")
            })?;
            if ebpf.pin_dir.exists() {
                tracing::info!(dir = %ebpf.pin_dir.display(), "removing the eBPF dataplane of an earlier run");
                SockLb::unpin_all(&ebpf.pin_dir);
            }
            Ok(Dataplane {
                lb: Arc::new(Iptables::default()),
                fallback: None,
            })
        }
        Choice::Ipvs => Err(match ipvs_present() {
            Err(why) => {
                format!("--dataplane ipvs: this kernel has no IPVS ({why}); use nftables or ebpf")
            }
            Ok(()) => "--dataplane ipvs: the kernel has IPVS, but this shoald has no IPVS \
                       backend yet; use nftables or ebpf"
                .into(),
        }),
    }
}
