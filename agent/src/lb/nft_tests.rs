use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn want(entries: &[(&str, &[&str])]) -> BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>> {
    entries
        .iter()
        .map(|(k, vs)| (ip(k), vs.iter().map(|v| ip(v)).collect()))
        .collect()
}

fn sets(ops: &[ElemOp]) -> Vec<String> {
    ops.iter()
        .map(|o| match o {
            ElemOp::Add { set, data, .. } => format!(
                "+{set}{}",
                match data {
                    Some(ElemData::Goto(c)) => format!("->{c}"),
                    _ => String::new(),
                }
            ),
            ElemOp::Delete { set, .. } => format!("-{set}"),
        })
        .collect()
}

#[test]
fn a_new_vip_adds_its_selector_and_one_element_per_backend() {
    let (slots, ops) = element_ops(
        &Slots::new(),
        &want(&[("198.19.1.2", &["198.19.1.3", "198.19.1.4"])]),
        Some("idle"),
    );
    assert_eq!(sets(&ops), ["+vips->pick2", "+backends", "+backends"]);
    assert_eq!(slots[&ip("198.19.1.2")].len(), 2);
}

#[test]
fn replacing_one_backend_touches_one_slot_only() {
    let (old, _) = element_ops(
        &Slots::new(),
        &want(&[("198.19.1.2", &["198.19.1.3", "198.19.1.4", "198.19.1.5"])]),
        Some("idle"),
    );
    let (next, ops) = element_ops(
        &old,
        &want(&[("198.19.1.2", &["198.19.1.3", "198.19.1.9", "198.19.1.5"])]),
        Some("idle"),
    );
    assert_eq!(
        sets(&ops),
        ["-backends", "+backends"],
        "same count: the selector stays"
    );
    assert_eq!(
        next[&ip("198.19.1.2")],
        [ip("198.19.1.3"), ip("198.19.1.9"), ip("198.19.1.5")]
    );
    // Losing a backend changes the count, and the last slot moves into the hole.
    let (next2, ops) = element_ops(
        &next,
        &want(&[("198.19.1.2", &["198.19.1.3", "198.19.1.5"])]),
        Some("idle"),
    );
    assert_eq!(
        sets(&ops),
        [
            "-vips",
            "-backends",
            "-backends",
            "+vips->pick2",
            "+backends"
        ]
    );
    assert_eq!(
        next2[&ip("198.19.1.2")],
        [ip("198.19.1.3"), ip("198.19.1.5")]
    );
}

#[test]
fn a_vip_without_backends_is_idle_and_a_removed_vip_leaves_nothing() {
    let (old, _) = element_ops(
        &Slots::new(),
        &want(&[("198.19.1.2", &["198.19.1.3"])]),
        Some("idle"),
    );
    let (idle, ops) = element_ops(&old, &want(&[("198.19.1.2", &[])]), Some("idle"));
    assert_eq!(sets(&ops), ["-vips", "-backends", "+idle"]);
    let (gone, ops) = element_ops(&idle, &want(&[]), Some("idle"));
    assert_eq!(sets(&ops), ["-idle"]);
    assert!(gone.is_empty());
    let (_, ops) = element_ops(&gone, &want(&[]), Some("idle"));
    assert!(ops.is_empty());
}

#[test]
fn keys_are_encoded_as_nf_tables_stores_them() {
    // ip daddr . numgen: address in network order, slot in host order.
    let mut k = slot_bytes(&ip("198.19.1.2"), 3);
    assert_eq!(&k[..4], &[198, 19, 1, 2]);
    assert_eq!(&k[4..], &3u32.to_ne_bytes());
    // meta l4proto . th dport: each field padded to 4 bytes, port big-endian.
    k = bytes_of(&PortKey(Protocol::Udp, 30080));
    assert_eq!(k, [17, 0, 0, 0, 0x75, 0x80, 0, 0]);
    assert_eq!(
        bytes_of(&SocketAddrV4::new(ip("198.19.0.3"), 80)),
        [198, 19, 0, 3, 0, 80, 0, 0]
    );
}

#[test]
fn the_vip_ruleset_is_one_transaction_with_a_chain_per_backend_count() {
    let (slots, _) = element_ops(
        &Slots::new(),
        &want(&[
            ("198.19.1.2", &["198.19.1.3", "198.19.1.4"]),
            ("198.19.1.6", &[]),
        ]),
        Some("idle"),
    );
    let text = vip_ruleset(&slots, 16);
    assert!(text.starts_with("table ip shoal {}\ndelete table ip shoal\ntable ip shoal {"));
    assert!(
        text.contains("chain pick16 { dnat to ip daddr . numgen random mod 16 map @backends; }")
    );
    assert!(!text.contains("pick17"));
    assert!(text.contains("add element ip shoal vips { 198.19.1.2 : goto pick2 }"));
    assert!(text.contains(
        "add element ip shoal backends { 198.19.1.2 . 0 : 198.19.1.3, 198.19.1.2 . 1 : 198.19.1.4 }"
    ));
    assert!(text.contains("add element ip shoal idle { 198.19.1.6 }"));
    assert!(text.contains("ip daddr @idle reject"));
}

#[test]
fn the_mesh_ruleset_snats_only_traffic_to_remote_backends() {
    let mut want: BTreeMap<PortKey, BTreeSet<SocketAddrV4>> = BTreeMap::new();
    want.insert(
        PortKey(Protocol::Tcp, 30080),
        [SocketAddrV4::new(ip("198.19.0.3"), 80)].into(),
    );
    let (slots, _) = element_ops(&Slots::new(), &want, None);
    let snat = (ip("198.19.0.250"), "sb4097".to_string());
    let text = mesh_ruleset(
        &slots,
        &[ip("198.19.0.3")].into(),
        Some(&snat),
        16,
        &BTreeMap::new(),
    );
    assert!(text.contains("add element ip shoal_mesh ports { tcp . 30080 : goto pick1 }"));
    assert!(
        text.contains("add element ip shoal_mesh backends { tcp . 30080 . 0 : 198.19.0.3 . 80 }")
    );
    assert!(
        text.contains("ct status dnat oifname \"sb4097\" ip daddr != @local snat to 198.19.0.250;")
    );
    assert!(text.contains("add element ip shoal_mesh local { 198.19.0.3 }"));
    assert!(text.contains(
        "iifname != \"sb4097\" oifname \"sb4097\" ct state new ct status & dnat != dnat drop;"
    ));
    assert!(!mesh_ruleset(&slots, &BTreeSet::new(), None, 16, &BTreeMap::new()).contains("snat"));
}

#[test]
fn chains_grow_with_the_largest_service() {
    let mut slots: Slots<Ipv4Addr, Ipv4Addr> = Slots::new();
    assert_eq!(chains_for(&slots), MIN_CHAINS);
    slots.insert(
        ip("198.19.1.2"),
        (0..17).map(|i| ip(&format!("198.19.2.{i}"))).collect(),
    );
    assert_eq!(chains_for(&slots), 32);
}

#[test]
fn affinity_objects_exist_before_elements_point_at_them_and_go_after() {
    let mut b: Balancer<Ipv4Addr, Ipv4Addr> = Balancer {
        slots: Slots::new(),
        chains: 16,
        sticky: BTreeMap::new(),
    };
    let w = want(&[("198.19.1.2", &["198.19.1.3", "198.19.1.4"])]);
    // Plain first: pick2, no scripts.
    let c = b.change(VIP_TABLE, &w, Some("idle"), BTreeMap::new());
    assert_eq!(sets(&c.ops), ["+vips->pick2", "+backends", "+backends"]);
    assert!(c.before.is_empty() && c.after.is_empty());
    // Affinity on: the stick chain is made before the selector moves to it.
    let sticky: BTreeMap<Ipv4Addr, u32> = [(ip("198.19.1.2"), 60)].into();
    let c = b.change(VIP_TABLE, &w, Some("idle"), sticky.clone());
    assert_eq!(sets(&c.ops), ["-vips", "+vips->stick_c6130102"]);
    assert!(
        c.before.contains("add chain ip shoal stick_c6130102"),
        "{}",
        c.before
    );
    assert!(c.after.is_empty());
    // One backend leaves: its slot's objects go in the same script that rewrites the
    // stick chain, and it is reported for the UDP flush.
    let one = want(&[("198.19.1.2", &["198.19.1.3"])]);
    let c = b.change(VIP_TABLE, &one, Some("idle"), sticky);
    assert!(
        c.before.contains("delete chain ip shoal ep_c6130102_1"),
        "{}",
        c.before
    );
    assert_eq!(c.removed, [(ip("198.19.1.2"), ip("198.19.1.4"))]);
    // Affinity off: the selector moves back first, the objects go after.
    let c = b.change(VIP_TABLE, &one, Some("idle"), BTreeMap::new());
    assert_eq!(sets(&c.ops), ["-vips", "+vips->pick1"]);
    assert!(c.before.is_empty());
    assert!(
        c.after
            .starts_with("delete chain ip shoal stick_c6130102\n"),
        "{}",
        c.after
    );
}
