//! `shoal doctor`: the node's dataplane backend, executor, kernel capabilities and overlay
//! peers, as its shoald sees them.

use crate::table::Table;
use shoal_api::local::DoctorReport;

pub fn render(r: &DoctorReport) -> String {
    let mut out = format!(
        "Node:       {}\nDataplane:  {}\nExecutor:   {}\n\n",
        if r.node_id.is_empty() {
            "(not in a swarm)"
        } else {
            &r.node_id
        },
        r.dataplane,
        r.executor
    );
    let mut checks = Table::new(["CHECK", "STATUS", "DETAIL"]);
    for c in &r.checks {
        checks.row([
            c.name.as_str(),
            if c.present { "present" } else { "absent" },
            c.detail.as_str(),
        ]);
    }
    out.push_str(&checks.render());
    if !r.peers.is_empty() {
        out.push('\n');
        let mut peers = Table::new(["PEER", "VTEP", "STATE", "NETWORKS"]);
        for p in &r.peers {
            peers.row([
                p.node_id.clone(),
                p.addr.clone(),
                p.state.clone(),
                p.networks.join(","),
            ]);
        }
        out.push_str(&peers.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::local::{Check, DoctorPeer};

    #[test]
    fn a_report_shows_every_check_and_peer() {
        let r = DoctorReport {
            node_id: "n1".into(),
            dataplane: "nftables".into(),
            executor: "docker".into(),
            checks: vec![Check {
                name: "ipvs".into(),
                present: false,
                detail: "absent: no IPVS".into(),
            }],
            peers: vec![DoctorPeer {
                node_id: "n2".into(),
                addr: "198.18.0.2".into(),
                networks: vec!["ingress".into(), "app".into()],
                state: "ready".into(),
            }],
        };
        let text = render(&r);
        assert!(text.contains("Dataplane:  nftables"));
        assert!(
            text.lines()
                .any(|l| l.starts_with("ipvs") && l.contains("absent"))
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("n2") && l.contains("ingress,app"))
        );
    }
}
