//! `shoal doctor` on this machine's kernel (2-node testbed): IPVS must show as absent, the
//! nftables dataplane and VXLAN as present, and each node lists the other as an overlay peer.

use serde_json::Value;
use shoal_integration::shoal_ok as shoal;
use shoal_integration::testbed::{Testbed, require_root};

#[test]
fn doctor_reports_the_kernel_and_the_peers() {
    if !require_root("doctor_reports_the_kernel_and_the_peers") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::up("shdoc", 2, 1, root.path()).unwrap();
    let report = |i: usize| -> Value {
        serde_json::from_str(&shoal(&bed.nodes[i].host(), &["doctor", "--json"])).unwrap()
    };
    // The peers arrive with the nodes' views; give them a moment after the swarm forms.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (manager, worker) = loop {
        let (m, w) = (report(0), report(1));
        let both = |r: &Value| r["Peers"].as_array().is_some_and(|p| !p.is_empty());
        if (both(&m) && both(&w) && m["Peers"][0]["State"] == "ready")
            || std::time::Instant::now() > deadline
        {
            break (m, w);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let check = |r: &Value, name: &str| {
        r["Checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["Name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check in {r}"))
    };
    for r in [&manager, &worker] {
        // `--dataplane auto` on a kernel with every eBPF hook (as these machines have).
        assert!(
            r["Dataplane"]
                .as_str()
                .unwrap_or_default()
                .starts_with("ebpf"),
            "{r}"
        );
        let ipvs = check(r, "ipvs");
        assert_eq!(ipvs["Present"], false, "this kernel has no IPVS: {ipvs}");
        assert!(ipvs["Detail"].as_str().unwrap().contains("absent"));
        assert_eq!(check(r, "vxlan")["Present"], true);
        assert_eq!(check(r, "nftables")["Present"], true);
        assert_eq!(check(r, "cgroup-v2")["Present"], true);
        for name in ["ebpf-hooks", "btf", "bpffs"] {
            check(r, name);
        }
    }
    // Ingress joins every node: each sees the other as a peer; the manager knows its state.
    let peer = &manager["Peers"][0];
    assert_eq!(peer["Addr"], bed.nodes[1].addr.as_str(), "{manager}");
    assert_eq!(peer["State"], "ready");
    assert_eq!(
        worker["Peers"][0]["Addr"],
        bed.nodes[0].addr.as_str(),
        "{worker}"
    );
    let text = shoal(&bed.nodes[1].host(), &["doctor"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ipvs") && l.contains("absent")),
        "{text}"
    );
}
