//! Forgets UDP flows to backends that left, for the dataplanes that DNAT through conntrack
//! (nftables, iptables). A UDP "connection" lives in conntrack as long as its client keeps
//! sending, so without this a client with a fixed source port (a resolver, a metrics or
//! log shipper) would go on sending to a task that is gone, as kube-proxy's users met.
//! TCP needs nothing: a connection to a gone task fails, and the next one is balanced anew.
//!
//! Deletions run on a thread of their own (`conntrack -D` inside the namespace), so a
//! change is programmed without waiting for them; a namespace gone meanwhile is skipped.

use super::Netns;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

/// UDP flows to forget in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// Flows a task sent to `vip` that were DNATed to `backend`.
    Vip { vip: Ipv4Addr, backend: Ipv4Addr },
    /// Flows to published UDP port `port` that were DNATed to `backend`.
    Port { port: u16, backend: SocketAddrV4 },
}

impl Gone {
    /// The `conntrack -D` arguments that delete exactly these flows.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-D", "-p", "udp"].map(String::from).into();
        match self {
            Gone::Vip { vip, backend } => {
                a.extend(["--orig-dst".into(), vip.to_string()]);
                a.extend(["--reply-src".into(), backend.to_string()]);
            }
            Gone::Port { port, backend } => {
                a.extend(["--orig-port-dst".into(), port.to_string()]);
                a.extend(["--reply-src".into(), backend.ip().to_string()]);
                a.extend(["--reply-port-src".into(), backend.port().to_string()]);
            }
        }
        a
    }
}

/// What to forget for backends that left VIPs: (VIP, backend) pairs.
pub fn vips_gone(removed: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr)>) -> Vec<Gone> {
    removed
        .into_iter()
        .map(|(vip, backend)| Gone::Vip { vip, backend })
        .collect()
}

/// What to forget for backends that left published UDP ports: (port, backend) pairs.
pub fn ports_gone(removed: impl IntoIterator<Item = (u16, SocketAddrV4)>) -> Vec<Gone> {
    removed
        .into_iter()
        .map(|(port, backend)| Gone::Port { port, backend })
        .collect()
}

/// Flows to forget in one namespace, as queued.
type Job = (Netns, Vec<Gone>);

/// Runs deletions in the background, in order.
#[derive(Default)]
pub struct Flusher {
    tx: OnceLock<Mutex<Sender<Job>>>,
}

impl Flusher {
    /// Queues the deletion of `gone` in `ns`.
    pub fn flush(&self, ns: &Netns, gone: Vec<Gone>) {
        if gone.is_empty() {
            return;
        }
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            // Inside a namespace the command runs under nsenter, whose failure would hide a
            // missing conntrack: look for it once, here.
            let present = Command::new("conntrack")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !present {
                tracing::warn!("conntrack is not installed: UDP flows to removed tasks stay until they go idle (apt-get install conntrack)");
            }
            std::thread::Builder::new()
                .name("conntrack-flush".into())
                .spawn(move || {
                    for (ns, gone) in rx {
                        if present {
                            for g in gone {
                                run(&ns, &g);
                            }
                        }
                    }
                })
                .expect("spawning the conntrack thread");
            Mutex::new(tx)
        });
        let _ = tx.lock().expect("lock").send((ns.clone(), gone));
    }
}

fn run(ns: &Netns, gone: &Gone) {
    if let Some(path) = ns.path()
        && !std::path::Path::new(&path).exists()
    {
        return;
    }
    // Exit status 1 with "0 flow entries have been deleted" is the common case: nothing
    // to forget.
    if let Err(e) = ns
        .command("conntrack")
        .args(gone.args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        tracing::debug!(?ns, error = %e, "conntrack -D did not run");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_name_the_vip_or_port_and_the_backend() {
        let vip = Gone::Vip {
            vip: "198.19.1.2".parse().unwrap(),
            backend: "198.19.1.3".parse().unwrap(),
        };
        assert_eq!(
            vip.args().join(" "),
            "-D -p udp --orig-dst 198.19.1.2 --reply-src 198.19.1.3"
        );
        let port = Gone::Port {
            port: 30053,
            backend: "198.19.0.4:53".parse().unwrap(),
        };
        assert_eq!(
            port.args().join(" "),
            "-D -p udp --orig-port-dst 30053 --reply-src 198.19.0.4 --reply-port-src 53"
        );
    }
}
