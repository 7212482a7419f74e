//! `shoal stack` on the 2-node testbed: a two-service stack with an overlay network and a
//! published port is deployed, answers through the routing mesh, is redeployed with one
//! change (only that service is updated), refuses a file with an unknown key (with its line,
//! nothing deployed) and one whose second service wants a taken port (nothing deployed
//! either), and is removed without leftovers.

use serde_json::Value;
use shoal_integration::shoal_ok as shoal;
use shoal_integration::testbed::{Testbed, require_root};
use std::process::Command;
use std::time::Duration;

const SERVER: &str = "import os, socket\\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8000)); s.listen()\\nwhile True:\\n    c, a = s.accept(); c.recv(65536); c.sendall(('HTTP/1.0 200 OK\\\\r\\\\n\\\\r\\\\nslot ' + os.environ['SHOAL_TASK_SLOT'] + '\\\\n').encode()); c.close()";

fn compose(replicas: u32) -> String {
    format!(
        r#"version: "3.8"
services:
  web:
    command: ["python3", "-c", "{SERVER}"]
    deploy:
      replicas: {replicas}
    ports:
      - "8080:8000"
    networks: [front]
  client:
    command: sleep 900905
    networks:
      front:
        aliases: [tester]
networks:
  front:
    driver: overlay
    attachable: true
    ipam:
      config:
        - subnet: 198.19.70.0/24
"#
    )
}

fn shoal_raw(host: &str, args: &[&str]) -> std::process::Output {
    Command::new(shoal_integration::bin_dir().join("shoal"))
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .unwrap()
}

fn version(h: &str, service: &str) -> u64 {
    let v: Value = serde_json::from_str(&shoal(h, &["service", "inspect", service])).unwrap();
    v[0]["Version"]["Index"].as_u64().unwrap()
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    shoal_integration::wait_until(what, Duration::from_secs(30), f);
}

#[test]
fn a_stack_deploys_redeploys_and_goes() {
    if !require_root("a_stack_deploys_redeploys_and_goes") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::up("shstk", 2, 1, root.path()).unwrap();
    let outside = bed.outside_client("out", "198.18.0.202").unwrap();
    let h = bed.nodes[0].host();
    let file = root.path().join("shop.yml");
    std::fs::write(&file, compose(2)).unwrap();
    let f = file.to_str().unwrap();

    let out = shoal(&h, &["stack", "deploy", "-c", f, "shop"]);
    assert!(out.contains("Creating network shop_front"), "{out}");
    assert!(
        out.contains("Creating service shop_web") && out.contains("Creating service shop_client")
    );
    let ls = shoal(&h, &["stack", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["shop", "2"]),
        "{ls}"
    );
    let services = shoal(&h, &["stack", "services", "shop"]);
    assert!(
        services.contains("shop_web") && services.contains("shop_client"),
        "{services}"
    );
    let net: Value =
        serde_json::from_str(&shoal(&h, &["network", "inspect", "shop_front"])).unwrap();
    assert_eq!(
        net[0]["Spec"]["Labels"]["com.docker.stack.namespace"],
        "shop"
    );
    assert_eq!(net[0]["Spec"]["Attachable"], true);

    // The published port answers through the mesh on both nodes.
    let get = |addr: &str| {
        let code = format!(
            "import urllib.request\nprint(urllib.request.urlopen('http://{addr}:8080/', timeout=3).read().decode().strip())"
        );
        let o = Command::new("ip")
            .args(["netns", "exec", &outside, "python3", "-c", &code])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    for n in &bed.nodes {
        eventually(&format!("the stack's port on {}", n.name), || {
            get(&n.addr).starts_with("slot ")
        });
    }
    eventually("stack ps lists 3 running tasks", || {
        shoal(&h, &["stack", "ps", "shop"])
            .matches("Running")
            .count()
            >= 6
    });

    // A redeploy with one change updates that service only.
    let (web_v, client_v) = (version(&h, "shop_web"), version(&h, "shop_client"));
    std::fs::write(&file, compose(3)).unwrap();
    let out = shoal(&h, &["stack", "deploy", "-c", f, "shop"]);
    assert_eq!(
        out.trim(),
        format!("Updating service shop_web (id: {})", {
            let v: Value =
                serde_json::from_str(&shoal(&h, &["service", "inspect", "shop_web"])).unwrap();
            v[0]["ID"].as_str().unwrap().to_string()
        })
    );
    assert!(version(&h, "shop_web") > web_v);
    assert_eq!(
        version(&h, "shop_client"),
        client_v,
        "an unchanged service is left alone"
    );
    let again = shoal(&h, &["stack", "deploy", "-c", f, "shop"]);
    assert!(again.trim().is_empty(), "nothing changed: {again}");

    // A file with an unknown key: refused with the key and its line, nothing deployed.
    let bad = root.path().join("bad.yml");
    std::fs::write(
        &bad,
        "services:\n  extra:\n    image: x\n    privilegd: true\n",
    )
    .unwrap();
    let o = shoal_raw(
        &h,
        &["stack", "deploy", "-c", bad.to_str().unwrap(), "other"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("bad.yml:4:5: unknown key \"privilegd\" in services.extra"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!shoal(&h, &["stack", "ls"]).contains("other"));

    // A file the manager refuses (its second service wants shop_web's published port):
    // refused whole, naming the service, with neither its network nor its first service
    // left behind.
    let taken = root.path().join("taken.yml");
    std::fs::write(
        &taken,
        "services:\n  a:\n    command: sleep 900906\n    networks: [back]\n  b:\n    command: sleep 900907\n    ports: [\"8080:8000\"]\n    networks: [back]\nnetworks:\n  back:\n    driver: overlay\n",
    )
    .unwrap();
    let o = shoal_raw(
        &h,
        &["stack", "deploy", "-c", taken.to_str().unwrap(), "late"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("service late_b") && err.contains("8080") && err.contains("shop_web"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!shoal(&h, &["stack", "ls"]).contains("late"));
    assert!(!shoal(&h, &["network", "ls"]).contains("late_back"));

    // Removal leaves nothing of the stack.
    shoal(&h, &["stack", "rm", "shop"]);
    let left = shoal(&h, &["service", "ls"]);
    assert!(!left.contains("shop_"), "{left}");
    let nets = shoal(&h, &["network", "ls"]);
    assert!(!nets.contains("shop_front"), "{nets}");
    let o = shoal_raw(&h, &["stack", "ps", "shop"]);
    assert!(!o.status.success());
}
