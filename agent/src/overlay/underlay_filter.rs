//! VXLAN from the cluster's nodes only. The kernel takes a VXLAN datagram from any host that
//! can reach the data path port and, with a VNI it knows, delivers the inner frame onto that
//! overlay: anyone on the underlay could inject traffic into a network whose tasks trust
//! each other (Docker's overlay has the same exposure unless `--opt encrypted`). The node's
//! own nftables table `shoal_underlay` drops datagrams to the port from every address that is
//! not a peer of one of this node's networks, and counts them. It is the one filter this
//! kernel offers without IPsec; it does not stop a host that forges a node's source address
//! on the same L2 segment (keep the underlay a network the cluster owns, as Docker advises).

use super::apply::OverlayError;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

pub const TABLE: &str = "shoal_underlay";

/// What was last programmed: the data path port and the senders allowed.
#[derive(Default)]
pub struct UnderlayFilter {
    programmed: Mutex<Option<(u16, BTreeSet<Ipv4Addr>)>>,
    /// Set once `nft` turned out missing (an iptables-only host): said once, not at every
    /// reconcile.
    no_nft: std::sync::atomic::AtomicBool,
}

/// The whole table, replaced in one `nft -f` transaction.
pub fn ruleset(port: u16, local: Ipv4Addr, senders: &BTreeSet<Ipv4Addr>) -> String {
    let elements = if senders.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = senders.iter().map(Ipv4Addr::to_string).collect();
        format!("\n        elements = {{ {} }}", list.join(", "))
    };
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{
    set nodes {{
        type ipv4_addr{elements}
    }}
    chain input {{
        type filter hook input priority -150; policy accept;
        ip daddr {local} udp dport {port} ip saddr != @nodes counter drop
    }}
}}
"
    )
}

fn nft(script: &str) -> Result<(), OverlayError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| OverlayError::Missing {
            tool: "nft",
            source,
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|source| OverlayError::Missing {
            tool: "nft",
            source,
        })?;
    let out = child
        .wait_with_output()
        .map_err(|source| OverlayError::Missing {
            tool: "nft",
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(OverlayError::Command {
            cmd: format!("nft -f - (table ip {TABLE})"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl UnderlayFilter {
    /// Programs the filter when the port or the senders changed; with no overlay network on
    /// this node, removes it.
    pub fn sync(
        &self,
        port: u16,
        local: Ipv4Addr,
        senders: BTreeSet<Ipv4Addr>,
        networks: usize,
    ) -> Result<(), OverlayError> {
        let mut programmed = self.programmed.lock().expect("lock");
        if networks == 0 {
            if programmed.take().is_some() {
                nft(&format!("table ip {TABLE}\ndelete table ip {TABLE}\n"))?;
            }
            return Ok(());
        }
        let want = (port, senders);
        if programmed.as_ref() == Some(&want) || self.no_nft.load(Ordering::Relaxed) {
            return Ok(());
        }
        match nft(&ruleset(want.0, local, &want.1)) {
            Err(OverlayError::Missing { .. }) => {
                self.no_nft.store(true, Ordering::Relaxed);
                tracing::warn!(
                    "nft is not installed: VXLAN is taken from any underlay host; install nftables to let only the cluster's nodes in"
                );
                Ok(())
            }
            Err(e) => Err(e),
            Ok(()) => {
                *programmed = Some(want);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_senders_reach_the_data_path_port() {
        let senders: BTreeSet<Ipv4Addr> = ["198.18.0.2", "198.18.0.3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let r = ruleset(4789, "198.18.0.1".parse().unwrap(), &senders);
        assert!(r.contains("elements = { 198.18.0.2, 198.18.0.3 }"), "{r}");
        assert!(
            r.contains("ip daddr 198.18.0.1 udp dport 4789 ip saddr != @nodes counter drop"),
            "{r}"
        );
        // Replaced whole: the table is made if missing, then deleted and written anew.
        assert!(r.starts_with("table ip shoal_underlay\ndelete table ip shoal_underlay\n"));
        let none = ruleset(4789, "198.18.0.1".parse().unwrap(), &BTreeSet::new());
        assert!(
            !none.contains("elements"),
            "an empty set drops every sender: {none}"
        );
    }
}
