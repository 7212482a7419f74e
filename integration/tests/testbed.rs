//! The namespace testbed: nodes on an underlay bridge in 198.18.0.0/16, a swarm formed
//! across them, and nothing left behind.

use shoal_integration::testbed::{Testbed, require_root};
use shoal_integration::{bin_dir, shoal_ok as shoal};
use std::process::Command;
use std::time::{Duration, Instant};

fn netns() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn testbed_forms_a_swarm_over_the_underlay_and_cleans_up() {
    if !require_root("testbed_forms_a_swarm_over_the_underlay_and_cleans_up") {
        return;
    }
    // A leftover of a crashed run with the same prefix.
    assert!(
        Command::new("ip")
            .args(["netns", "add", "shtb-n9"])
            .status()
            .unwrap()
            .success()
    );
    let root = tempfile::tempdir().unwrap();
    {
        let mut bed = Testbed::create("shtb", 3, root.path()).unwrap();
        let list = netns();
        assert!(!list.contains("shtb-n9"), "leftover removed: {list}");
        for n in ["shtb-ul", "shtb-n1", "shtb-n2", "shtb-n3"] {
            assert!(list.contains(n), "{n} missing: {list}");
        }
        // The kernel's view: node 2 has its underlay address.
        let addrs = Command::new("ip")
            .args(["-j", "-n", "shtb-n2", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&addrs.stdout).unwrap();
        let local: Vec<&str> = json[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["local"].as_str())
            .collect();
        assert!(local.contains(&"198.18.0.2"), "{json}");

        let shoald = bin_dir().join("shoald");
        for i in 0..3 {
            bed.start(i, &shoald, &[]).unwrap();
        }
        let h1 = bed.nodes[0].host();
        shoal(
            &h1,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                "198.18.0.1",
                "--default-addr-pool",
                "198.19.0.0/16",
            ],
        );
        let token = shoal(&h1, &["swarm", "join-token", "-q", "worker"])
            .trim()
            .to_string();
        for n in &bed.nodes[1..] {
            shoal(
                &n.host(),
                &[
                    "swarm",
                    "join",
                    "--token",
                    &token,
                    "--advertise-addr",
                    &n.addr,
                    "198.18.0.1:2377",
                ],
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ls = shoal(&h1, &["node", "ls"]);
            if ls.matches("Ready").count() == 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nodes not ready over the underlay:\n{ls}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let list = netns();
    assert!(!list.contains("shtb-"), "namespaces left behind: {list}");
}
