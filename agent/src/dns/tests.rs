use super::answer::{Outcome, Transport, answer};
use super::records::Scope;
use super::records::scope_for;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shoal_api::dispatch::*;
use shoal_api::objects::*;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

fn network(id: &str, ingress: bool) -> NetworkView {
    NetworkView {
        network: Network {
            id: id.into(),
            version: Version::default(),
            created_at: String::new(),
            updated_at: String::new(),
            spec: NetworkSpec {
                name: id.into(),
                labels: Default::default(),
                driver_configuration: Driver {
                    name: "overlay".into(),
                    options: Default::default(),
                },
                ingress,
                attachable: false,
                internal: false,
                ipam_options: IpamOptions::default(),
            },
            driver_state: Driver::default(),
            ipam_options: IpamOptions::default(),
        },
        peers: vec![],
    }
}

fn backend(name: &str, net: &str, addr: &str) -> Backend {
    Backend {
        task_id: name.into(),
        task_name: name.into(),
        node_id: "n".into(),
        network_id: net.into(),
        addr: addr.into(),
        state: TaskState::Running,
    }
}

fn endpoint(
    name: &str,
    mode: EndpointMode,
    vips: &[(&str, &str)],
    backends: Vec<Backend>,
) -> ServiceEndpoint {
    ServiceEndpoint {
        service_id: name.into(),
        service_name: name.into(),
        mode,
        ports: vec![],
        virtual_ips: vips
            .iter()
            .map(|(n, a)| VirtualIp {
                network_id: n.to_string(),
                addr: a.to_string(),
            })
            .collect(),
        backends,
        aliases: vec![
            ("app".into(), format!("{name}-alias")),
            ("other".into(), format!("{name}-elsewhere")),
        ],
        session_affinity: Default::default(),
    }
}

fn asker(nets: &[&str]) -> Task {
    Task {
        id: "asker".into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        service_id: "client".into(),
        slot: 1,
        node_id: "n".into(),
        spec: TaskSpec::default(),
        spec_version: Version::default(),
        status: TaskStatus::default(),
        desired_state: TaskState::Running,
        networks_attachments: nets
            .iter()
            .map(|n| NetworkAttachment {
                network_id: n.to_string(),
                addresses: vec![],
                aliases: vec![],
            })
            .collect(),
        restart_count: 0,
    }
}

const UDP: Transport = Transport::Udp;
const TCP: Transport = Transport::Tcp;

fn view() -> NodeView {
    NodeView {
        networks: vec![
            network("app", false),
            network("other", false),
            network("ing", true),
        ],
        endpoints: vec![
            endpoint(
                "web",
                EndpointMode::Vip,
                &[("app", "198.19.1.2/24"), ("ing", "198.19.0.2/24")],
                vec![
                    backend("web.1.aaa", "app", "198.19.1.3/24"),
                    backend("web.2.bbb", "app", "198.19.1.4/24"),
                    backend("web.1.aaa", "ing", "198.19.0.3/24"),
                ],
            ),
            endpoint(
                "db",
                EndpointMode::Dnsrr,
                &[],
                vec![backend("db.1.ccc", "app", "198.19.1.9/24")],
            ),
            endpoint(
                "secret",
                EndpointMode::Vip,
                &[("other", "198.19.2.2/24")],
                vec![backend("secret.1.ddd", "other", "198.19.2.3/24")],
            ),
        ],
        ..Default::default()
    }
}

#[test]
fn names_are_scoped_to_shared_networks() {
    let s = scope_for(&view(), &asker(&["app", "ing"]));
    let ips = |n: &str| {
        s.lookup(n)
            .map(|v| v.iter().map(|i| i.to_string()).collect::<Vec<_>>())
    };
    assert_eq!(
        ips("web"),
        Some(vec!["198.19.1.2".into()]),
        "the VIP on the shared network only"
    );
    assert_eq!(ips("WEB."), ips("web"), "case and trailing dot");
    assert_eq!(
        ips("tasks.web"),
        Some(vec!["198.19.1.3".into(), "198.19.1.4".into()])
    );
    assert_eq!(
        ips("db"),
        Some(vec!["198.19.1.9".into()]),
        "dnsrr: the task addresses"
    );
    assert_eq!(
        ips("web.2.bbb"),
        Some(vec!["198.19.1.4".into()]),
        "task names"
    );
    assert_eq!(
        ips("secret"),
        None,
        "another network's service is invisible"
    );
    assert_eq!(
        ips("web-alias"),
        ips("web"),
        "an alias answers like the name"
    );
    assert_eq!(
        ips("web-elsewhere"),
        None,
        "an alias only on its own network"
    );
    assert_eq!(
        s.lookup_ptr("3.1.19.198.in-addr.arpa.").map(String::as_str),
        Some("web.1.aaa")
    );
    assert_eq!(
        s.lookup_ptr("2.1.19.198.in-addr.arpa").map(String::as_str),
        Some("web")
    );
}

/// A stack's service `api` on networks `front` and `back`, with its Compose name as an alias
/// on `back` only, and a second service sharing that alias there.
fn alias_view(mode: EndpointMode) -> NodeView {
    let mut api = endpoint(
        "stack_api",
        mode,
        &[("front", "198.19.5.2/24"), ("back", "198.19.6.2/24")],
        vec![
            backend("stack_api.1.a", "front", "198.19.5.3/24"),
            backend("stack_api.1.a", "back", "198.19.6.3/24"),
            backend("stack_api.2.b", "back", "198.19.6.4/24"),
        ],
    );
    api.aliases = vec![("back".into(), "api".into())];
    let mut twin = endpoint(
        "other_api",
        mode,
        &[("back", "198.19.6.20/24")],
        vec![backend("other_api.1.c", "back", "198.19.6.21/24")],
    );
    twin.aliases = vec![("back".into(), "API".into())];
    NodeView {
        networks: vec![network("front", false), network("back", false)],
        endpoints: vec![api, twin],
        ..Default::default()
    }
}

#[test]
fn an_alias_and_tasks_alias_answer_on_the_alias_network_only() {
    let ips = |s: &super::records::Scope, n: &str| {
        s.lookup(n)
            .map(|v| v.iter().map(|i| i.to_string()).collect::<Vec<_>>())
    };
    let on_back = scope_for(&alias_view(EndpointMode::Vip), &asker(&["back"]));
    assert_eq!(
        ips(&on_back, "api"),
        Some(vec!["198.19.6.2".into(), "198.19.6.20".into()]),
        "both services' VIPs on back"
    );
    assert_eq!(
        ips(&on_back, "tasks.api"),
        Some(vec![
            "198.19.6.3".into(),
            "198.19.6.4".into(),
            "198.19.6.21".into()
        ])
    );
    let both = scope_for(&alias_view(EndpointMode::Vip), &asker(&["front", "back"]));
    assert_eq!(
        ips(&both, "api"),
        Some(vec!["198.19.6.2".into(), "198.19.6.20".into()]),
        "never the VIP on front, where the alias does not hold"
    );
    let on_front = scope_for(&alias_view(EndpointMode::Vip), &asker(&["front"]));
    assert_eq!(ips(&on_front, "api"), None);
    assert_eq!(ips(&on_front, "tasks.api"), None);
    assert_eq!(
        ips(&on_front, "stack_api"),
        Some(vec!["198.19.5.2".into()]),
        "the full name still answers"
    );
    let rr = scope_for(&alias_view(EndpointMode::Dnsrr), &asker(&["back"]));
    assert_eq!(
        ips(&rr, "api"),
        Some(vec![
            "198.19.6.3".into(),
            "198.19.6.4".into(),
            "198.19.6.21".into()
        ]),
        "dnsrr: the task addresses on back"
    );
}

#[test]
fn a_tasks_dns_servers_are_its_forwarders() {
    let mut t = asker(&["app"]);
    assert!(
        scope_for(&view(), &t).forwarders.is_empty(),
        "none: the host's"
    );
    t.spec.container_spec.dns_config = Some(DnsConfig {
        nameservers: vec!["198.18.0.53".into(), "not-an-ip".into()],
        ..Default::default()
    });
    assert_eq!(
        scope_for(&view(), &t).forwarders,
        ["198.18.0.53:53".parse::<std::net::SocketAddr>().unwrap()]
    );
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn reply(o: Outcome) -> Message {
    match o {
        Outcome::Reply(r) => Message::from_vec(&r).unwrap(),
        _ => panic!("expected a reply"),
    }
}

#[test]
fn answers_a_aaaa_ptr_and_forwards_the_rest() {
    let s = scope_for(&view(), &asker(&["app"]));
    let a = reply(answer(&s, &query("tasks.web.", RecordType::A), UDP));
    assert_eq!(a.metadata.id, 4242);
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    let got: Vec<String> = a
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(got, ["198.19.1.3", "198.19.1.4"]);
    assert!(a.answers.iter().all(|r| r.ttl == super::answer::TTL));
    let aaaa = reply(answer(&s, &query("web.", RecordType::AAAA), UDP));
    assert_eq!(
        (aaaa.metadata.response_code, aaaa.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let ptr = reply(answer(
        &s,
        &query("4.1.19.198.in-addr.arpa.", RecordType::PTR),
        UDP,
    ));
    assert_eq!(ptr.answers.len(), 1);
    assert!(matches!(
        answer(&s, &query("example.org.", RecordType::A), UDP),
        Outcome::Forward(_)
    ));
    assert!(matches!(
        answer(&s, &query("secret.", RecordType::A), UDP),
        Outcome::Forward(_)
    ));
}

#[test]
fn malformed_queries_get_formerr_and_headerless_packets_nothing() {
    let s = scope_for(&view(), &asker(&["app"]));
    // A query's header, then a question cut short.
    let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&[7, b'e', b'x']);
    let bad = reply(answer(&s, &p, UDP));
    assert_eq!(
        (bad.metadata.id, bad.metadata.response_code),
        (0x1234, ResponseCode::FormErr)
    );
    assert!(matches!(answer(&s, &[7], UDP), Outcome::Drop));
    assert!(
        matches!(answer(&s, &p[..11], UDP), Outcome::Drop),
        "no whole header: no way to tell a query from a response"
    );
}

/// A scope where `tasks.big` has `n` addresses and `web` one.
fn big(n: u32) -> Scope {
    let mut s = Scope::default();
    s.names.insert(
        "tasks.big".into(),
        (0..n).map(|i| Ipv4Addr::from(0x0a00_0000 + i)).collect(),
    );
    s.names
        .insert("web".into(), vec![Ipv4Addr::new(198, 19, 1, 2)]);
    s
}

/// An A query for `name` with an OPT advertising `size`, or none.
fn edns_query(name: &str, size: Option<u16>) -> Vec<u8> {
    let mut m = Message::from_vec(&query(name, RecordType::A)).unwrap();
    if let Some(size) = size {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn bytes(o: Outcome) -> Vec<u8> {
    match o {
        Outcome::Reply(r) => r,
        _ => panic!("expected a reply"),
    }
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_response_gets_no_answer() {
    let s = scope_for(&view(), &asker(&["app"]));
    // Our own answer, as a spoofed datagram from 127.0.0.11:53 would carry it back to us.
    let ours = bytes(answer(&s, &query("web.", RecordType::A), UDP));
    assert!(matches!(answer(&s, &ours, UDP), Outcome::Drop));
    let mut notify = query("web.", RecordType::A);
    notify[2] = 0x80 | (4 << 3);
    assert!(matches!(answer(&s, &notify, TCP), Outcome::Drop));
    let mut junk = vec![0xab; 40];
    junk[2] = 0x80;
    assert!(
        matches!(answer(&s, &junk, UDP), Outcome::Drop),
        "not even a FORMERR"
    );
}

#[test]
fn udp_without_edns_stays_within_512_bytes_with_tc_and_whole_records() {
    let s = big(60);
    let r = bytes(answer(&s, &edns_query("tasks.big.", None), UDP));
    assert!(r.len() <= 512, "{} bytes", r.len());
    let m = Message::from_vec(&r).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.edns.is_none());
    assert_eq!(m.metadata.id, 4242);
    // 12 bytes of header, 15 of question, 16 per A record (its name a pointer): 30 fit.
    assert_eq!(m.answers.len(), 30);
    let whole =
        Message::from_vec(&bytes(answer(&s, &edns_query("tasks.big.", None), TCP))).unwrap();
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), 60, "TCP has room for all");
}

#[test]
fn udp_with_edns_takes_the_clients_size_and_answers_with_an_opt() {
    let s = big(60);
    // (advertised, the limit we keep to, whether all 60 fit)
    for (advertised, limit, all) in [
        (1232, 1232, true),
        (600, 600, false),
        (100, 512, false),
        (65000, 4096, true),
    ] {
        let r = bytes(answer(&s, &edns_query("tasks.big.", Some(advertised)), UDP));
        assert!(r.len() <= limit, "{advertised}: {} bytes", r.len());
        let m = Message::from_vec(&r).unwrap();
        let opt = m.edns.as_ref().expect("an OPT in the reply");
        assert_eq!(opt.max_payload(), super::answer::UDP_EDNS_MAX);
        assert_eq!(m.metadata.truncation, !all, "{advertised}");
        if all {
            assert_eq!(m.answers.len(), 60);
        } else {
            // As many as fit: one more would not.
            assert!(
                r.len() + 16 > limit,
                "{advertised}: room left in {} bytes",
                r.len()
            );
        }
    }
    let r = bytes(answer(
        &big(300),
        &edns_query("tasks.big.", Some(65000)),
        UDP,
    ));
    let m = Message::from_vec(&r).unwrap();
    assert!(r.len() <= 4096 && m.metadata.truncation && m.edns.is_some());
}

#[test]
fn tcp_answers_stay_within_a_16_bit_length_and_keep_the_opt() {
    let r = bytes(answer(
        &big(5000),
        &edns_query("tasks.big.", Some(1232)),
        TCP,
    ));
    assert!(r.len() <= 65535, "{} bytes", r.len());
    let m = Message::from_vec(&r).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.edns.is_some(), "the OPT survives the truncation");
    // Past 16 KiB hickory stops compressing names: a record takes 16 to 25 bytes.
    assert!(
        r.len() + 25 > 65535,
        "{} bytes, {} answers: room for more",
        r.len(),
        m.answers.len()
    );
}

#[test]
fn an_unknown_edns_version_gets_badvers_and_several_questions_formerr() {
    let s = big(1);
    let mut m = Message::from_vec(&edns_query("web.", Some(1232))).unwrap();
    m.edns.as_mut().unwrap().set_version(1);
    let r = reply(answer(&s, &m.to_vec().unwrap(), UDP));
    // 16 reads back as BADSIG, which shares the code.
    let code = r.metadata.response_code;
    assert_eq!((code.high(), code.low()), (1, 0), "BADVERS is 16");
    assert_eq!(r.edns.as_ref().map(Edns::version), Some(0));
    assert!(r.answers.is_empty());
    let mut two = Message::from_vec(&query("web.", RecordType::A)).unwrap();
    two.add_query(Query::query(
        Name::from_ascii("web.").unwrap(),
        RecordType::AAAA,
    ));
    let r = reply(answer(&s, &two.to_vec().unwrap(), UDP));
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    assert!(
        r.queries.is_empty(),
        "a refusal need not repeat the questions"
    );
}

fn scopes_of(scope: Scope) -> super::Scopes {
    Arc::new(RwLock::new(HashMap::from([(
        "t".to_string(),
        Arc::new(super::Served::new(scope)),
    )])))
}

/// The limits shoald uses, but for a short idle time, for the test of it: tests run with a
/// real clock, since the workspace's tokio has no `test-util` for a paused one.
const SHORT_IDLE: super::Limits = super::Limits {
    tcp_idle: Duration::from_millis(300),
    ..super::LIMITS
};

async fn udp_server(scope: Scope) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(super::serve_udp(
        sock,
        "t".into(),
        scopes_of(scope),
        super::LIMITS,
    ));
    addr
}

async fn tcp_server(scope: Scope, limits: super::Limits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(super::serve_tcp(
        listener,
        "t".into(),
        scopes_of(scope),
        limits,
    ));
    addr
}

async fn ask_tcp(conn: &mut TcpStream, q: &[u8]) -> Message {
    conn.write_all(&super::framed(q).unwrap()).await.unwrap();
    let len = conn.read_u16().await.unwrap();
    let mut r = vec![0u8; len.into()];
    conn.read_exact(&mut r).await.unwrap();
    Message::from_vec(&r).unwrap()
}

#[tokio::test]
async fn the_server_is_silent_to_responses() {
    let server = udp_server(scope_for(&view(), &asker(&["app"]))).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut response = query("web.", RecordType::A);
    response[2] |= 0x80;
    client.send_to(&response, server).await.unwrap();
    let mut buf = [0u8; 4096];
    assert!(
        timeout(Duration::from_millis(300), client.recv(&mut buf))
            .await
            .is_err(),
        "a reply to a response"
    );
    client
        .send_to(&query("web.", RecordType::A), server)
        .await
        .unwrap();
    let n = timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Message::from_vec(&buf[..n]).unwrap().metadata.id, 4242);
}

#[tokio::test]
async fn tcp_lengths_say_what_follows() {
    let server = tcp_server(big(5000), super::LIMITS).await;
    let mut conn = TcpStream::connect(server).await.unwrap();
    let m = ask_tcp(&mut conn, &edns_query("tasks.big.", None)).await;
    assert!(m.metadata.truncation);
    // The stream is still in step: the next answer reads right.
    let m = ask_tcp(&mut conn, &edns_query("web.", None)).await;
    assert_eq!(a_records(&m), ["198.19.1.2"]);
}

#[tokio::test]
async fn forwards_in_flight_are_capped() {
    // An upstream that never answers: every forward waits out its timeout.
    let upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream.set_nonblocking(true).unwrap();
    let server = udp_server(Scope {
        forwarders: vec![upstream.local_addr().unwrap()],
        ..Scope::default()
    })
    .await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..150 {
        let q = query(&format!("n{i}.example."), RecordType::A);
        client.send_to(&q, server).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut buf = [0u8; 512];
    let mut forwarded = 0;
    while upstream.recv(&mut buf).is_ok() {
        forwarded += 1;
    }
    assert!(
        forwarded > 0 && forwarded <= super::LIMITS.forwards,
        "{forwarded} forwards in flight"
    );
}

#[tokio::test]
async fn tcp_connections_over_the_cap_are_closed_at_once() {
    let server = tcp_server(big(1), super::LIMITS).await;
    let mut held = Vec::new();
    for _ in 0..super::LIMITS.tcp_conns {
        let mut conn = TcpStream::connect(server).await.unwrap();
        // A round trip: the server has taken this one before the next connects.
        ask_tcp(&mut conn, &edns_query("web.", None)).await;
        held.push(conn);
    }
    let mut extra = TcpStream::connect(server).await.unwrap();
    let mut b = [0u8; 1];
    let read = timeout(Duration::from_secs(2), extra.read(&mut b))
        .await
        .expect("closed, not left open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let m = ask_tcp(&mut held[0], &edns_query("web.", None)).await;
    assert_eq!(
        a_records(&m),
        ["198.19.1.2"],
        "the held ones are still served"
    );
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let server = tcp_server(big(1), SHORT_IDLE).await;
    let mut conn = TcpStream::connect(server).await.unwrap();
    ask_tcp(&mut conn, &edns_query("web.", None)).await;
    let mut b = [0u8; 1];
    let read = timeout(SHORT_IDLE.tcp_idle * 10, conn.read(&mut b)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
}

#[test]
fn failing_accepts_back_off_up_to_a_second() {
    let mut b = super::Backoff::default();
    let waits: Vec<(u64, bool)> = (0..9)
        .map(|_| b.failed())
        .map(|(d, first)| (d.as_millis() as u64, first))
        .collect();
    assert_eq!(
        waits,
        [
            (10, true),
            (20, false),
            (40, false),
            (80, false),
            (160, false),
            (320, false),
            (640, false),
            (1000, false),
            (1000, false)
        ]
    );
    b.succeeded();
    assert_eq!(b.failed(), (Duration::from_millis(10), true));
}

/// An answer to `name` with `id`, as an upstream would send it.
fn upstream_answer(id: u16, name: &str, ip: [u8; 4]) -> Vec<u8> {
    let name = Name::from_ascii(name).unwrap();
    let mut m = Message::response(id, OpCode::Query);
    m.add_query(Query::query(name.clone(), RecordType::A));
    m.add_answer(Record::from_rdata(
        name,
        60,
        RData::from(Ipv4Addr::from(ip)),
    ));
    m.to_vec().unwrap()
}

#[tokio::test]
async fn the_forwarder_takes_only_its_upstreams_answer_to_its_question() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let scope = Scope {
        forwarders: vec![upstream.local_addr().unwrap()],
        ..Scope::default()
    };
    let packet = query("outside.example.", RecordType::A);
    let req = Message::from_vec(&packet).unwrap();
    let fake = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
        let id = Message::from_vec(&buf[..n]).unwrap().metadata.id;
        let name = "outside.example.";
        // Another local process answering first, with the asking task's id and with
        // the upstream's: neither comes from the upstream.
        for forged_id in [4242, id] {
            let forged = upstream_answer(forged_id, name, [6, 6, 6, 6]);
            forger.send_to(&forged, from).await.unwrap();
        }
        let wrong_id = upstream_answer(id ^ 0x8000, name, [7, 7, 7, 7]);
        let wrong_question = upstream_answer(id, "other.example.", [8, 8, 8, 8]);
        let not_a_response = super::answer::with_id(&query(name, RecordType::A), id);
        for junk in [wrong_id, wrong_question, not_a_response, vec![0; 5]] {
            upstream.send_to(&junk, from).await.unwrap();
        }
        let right = upstream_answer(id, name, [1, 2, 3, 4]);
        upstream.send_to(&right, from).await.unwrap();
    });
    let r = super::forwarded(&scope, &req, &packet, UDP).await.unwrap();
    fake.await.unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(m.metadata.id, 4242, "the client's id back");
    assert_eq!(a_records(&m), ["1.2.3.4"]);
}

/// A loopback upstream that answers every query with 192.0.2.1, over UDP and TCP on one
/// port; it reports the ids it was sent.
async fn echo_upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u16>) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let answer_to = |q: &[u8]| {
        let q = Message::from_vec(q).unwrap();
        let name = q.queries[0].name().to_ascii();
        (
            q.metadata.id,
            upstream_answer(q.metadata.id, &name, [192, 0, 2, 1]),
        )
    };
    let udp_tx = tx.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let (id, r) = answer_to(&buf[..n]);
            let _ = udp_tx.send(id);
            let _ = udp.send_to(&r, from).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = tcp.accept().await {
            let len = conn.read_u16().await.unwrap();
            let mut q = vec![0u8; len.into()];
            conn.read_exact(&mut q).await.unwrap();
            let (id, r) = answer_to(&q);
            let _ = tx.send(id);
            conn.write_all(&super::framed(&r).unwrap()).await.unwrap();
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn forwarded_queries_carry_ids_of_their_own_over_udp_and_tcp() {
    let (up, mut ids) = echo_upstream().await;
    let scope = Scope {
        forwarders: vec![up],
        ..Scope::default()
    };
    let packet = query("outside.example.", RecordType::A);
    let req = Message::from_vec(&packet).unwrap();
    for transport in [UDP, TCP] {
        let mut sent = Vec::new();
        // Three tries: a random id equals the client's once in 65536.
        for _ in 0..3 {
            let r = super::forwarded(&scope, &req, &packet, transport)
                .await
                .unwrap();
            let m = Message::from_vec(&r).unwrap();
            assert_eq!(
                (m.metadata.id, a_records(&m)),
                (4242, vec!["192.0.2.1".to_string()])
            );
            sent.push(ids.recv().await.unwrap());
        }
        assert!(
            sent.iter().any(|&id| id != 4242),
            "the client's id went upstream over {transport:?}: {sent:?}"
        );
    }
}

#[test]
fn loopback_resolvers_in_resolv_conf_are_kept() {
    let resolved =
        "# systemd-resolved stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n";
    assert_eq!(
        super::nameservers(resolved),
        ["127.0.0.53:53".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        super::nameservers(
            "nameserver 127.0.0.1\nnameserver ::1\nnameserver 192.0.2.1 # office\nnameserverx 1.1.1.1\n  nameserver\t198.51.100.1\n"
        ),
        [
            "127.0.0.1:53",
            "[::1]:53",
            "192.0.2.1:53",
            "198.51.100.1:53"
        ]
        .map(|a| a.parse::<SocketAddr>().unwrap())
    );
}

/// What a reply to `packet` over `transport` must be, whatever `packet` was.
fn check_reply(packet: &[u8], transport: Transport, r: &[u8]) {
    assert!(
        super::answer::is_query(packet),
        "a reply to a non-query: {packet:02x?}"
    );
    let m = Message::from_vec(r).unwrap_or_else(|e| panic!("{e}: {r:02x?} for {packet:02x?}"));
    assert_eq!(&r[..2], &packet[..2], "id echoed");
    assert_eq!(m.metadata.message_type, MessageType::Response);
    let req = Message::from_vec(packet).ok();
    let edns = req.as_ref().and_then(|q| q.edns.as_ref());
    let limit = match (transport, edns) {
        (Transport::Tcp, _) => 65535,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(e)) => usize::from(e.max_payload()).clamp(512, 4096),
    };
    assert!(
        r.len() <= limit,
        "{} bytes over {transport:?}, limit {limit}",
        r.len()
    );
    if req.is_some() {
        assert_eq!(
            m.edns.is_some(),
            edns.is_some(),
            "an OPT exactly when asked with one"
        );
    }
}

#[test]
fn the_answer_path_survives_random_and_mutated_packets() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut s = big(300);
    s.reverse
        .insert(Ipv4Addr::new(10, 0, 0, 1), "big.1.x".into());
    let names = [
        "tasks.big.",
        "web.",
        "WeB.",
        "outside.example.",
        "1.0.0.10.in-addr.arpa.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::PTR,
        RecordType::MX,
        RecordType::ANY,
    ];
    let (mut replies, mut forwards) = (0, 0);
    for i in 0..6000 {
        let mut m = Message::query();
        m.metadata.id = rng.random();
        m.metadata.op_code = OpCode::from_u8(rng.random_range(0u8..6));
        for _ in 0..rng.random_range(0..3) {
            let name = names[rng.random_range(0..names.len())];
            let t = types[rng.random_range(0..types.len())];
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        }
        if rng.random_bool(0.5) {
            let mut e = Edns::new();
            e.set_max_payload(rng.random());
            e.set_version(if rng.random_bool(0.9) {
                0
            } else {
                rng.random()
            });
            m.set_edns(e);
        }
        let mut p = match i % 3 {
            0 => (0..rng.random_range(0..600))
                .map(|_| rng.random())
                .collect(),
            _ => m.to_vec().unwrap(),
        };
        // Mangle: flip bytes (QR among them), cut, or append junk.
        if i % 3 == 2 && !p.is_empty() {
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..p.len());
                p[at] = rng.random();
            }
            match rng.random_range(0..3) {
                0 => p.truncate(rng.random_range(0..=p.len())),
                1 => p.extend((0..rng.random_range(1..40)).map(|_| rng.random::<u8>())),
                _ => {}
            }
        }
        if rng.random_bool(0.1) && p.len() > 2 {
            p[2] |= 0x80;
        }
        for transport in [UDP, TCP] {
            match answer(&s, &p, transport) {
                Outcome::Reply(r) => {
                    check_reply(&p, transport, &r);
                    replies += 1;
                }
                Outcome::Drop => {}
                Outcome::Forward(req) => {
                    assert!(super::answer::is_query(&p));
                    forwards += 1;
                    // What goes back for a forward: SERVFAIL, or an upstream's answer
                    // (here, ours for tasks.big, as if an upstream knew it).
                    check_reply(
                        &p,
                        transport,
                        &super::answer::servfail(&req, transport).unwrap(),
                    );
                    let big_answer = bytes(answer(&s, &edns_query("tasks.big.", Some(4096)), TCP));
                    let mut upstream = Message::from_vec(&big_answer).unwrap();
                    upstream.queries = req.queries.clone();
                    upstream.edns = req.edns.clone();
                    upstream.metadata.id = 99;
                    let upstream = upstream.to_vec().unwrap();
                    let r = super::answer::upstream_reply(&req, 99, &upstream, transport).unwrap();
                    check_reply(&p, transport, &r);
                    assert!(
                        super::answer::upstream_reply(&req, 98, &upstream, transport).is_none()
                    );
                }
            }
        }
    }
    assert!(
        replies > 1000 && forwards > 100,
        "{replies} replies, {forwards} forwards"
    );
}

// ---- the fast path against the general one ----

/// The fast path's reply to `p`, if it takes it, after checking that it is the general
/// path's to the byte.
fn fast_and_checked(s: &Scope, table: &super::fast::Table, p: &[u8]) -> Option<Vec<u8>> {
    let mut out = [0u8; super::fast::REPLY_MAX];
    let n = super::fast::answer(table, p, &mut out)?;
    match answer(s, p, UDP) {
        Outcome::Reply(r) => assert_eq!(
            out[..n],
            r[..],
            "fast path, then general path, for {p:02x?}"
        ),
        _ => panic!("the fast path answered what the general path does not: {p:02x?}"),
    }
    Some(out[..n].to_vec())
}

/// Names at the edges the fast path reads: the longest name a query can carry (255 bytes
/// on the wire) and one byte more, labels with `_` and `-`, and names the general path
/// spells with escapes.
fn edge_scope() -> Scope {
    let mut s = big(300);
    let ips = |n: u32| (0..n).map(|i| Ipv4Addr::from(0xc613_0000 + i)).collect();
    let longest = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    let too_long = format!("{longest}e");
    for (name, n) in [
        ("tasks.three".to_string(), 3),
        ("tasks.hundred".to_string(), 100),
        ("_srv-like.x-1".to_string(), 2),
        ("empty".to_string(), 0),
        ("we b".to_string(), 1),
        ("-dash".to_string(), 1),
        ("a.b\\c".to_string(), 1),
        (longest, 2),
        (too_long, 2),
    ] {
        s.names.insert(name, ips(n));
    }
    s
}

/// A query built byte by byte, so that every field the fast path reads can be odd.
fn raw_query(rng: &mut impl rand::Rng, name: &str) -> Vec<u8> {
    let mut p = rng.random::<u16>().to_be_bytes().to_vec();
    // Mostly RD alone; sometimes AD or CD (dig sets AD), sometimes any flag at all.
    let flags2 = match rng.random_range(0..10) {
        0 => rng.random::<u8>() & 0x7f,
        1..=5 => 0x01,
        _ => 0x00,
    };
    let flags3 = match rng.random_range(0..10) {
        0 => rng.random(),
        1 => 0x20,
        2 => 0x10,
        _ => 0,
    };
    p.extend_from_slice(&[flags2, flags3]);
    let counts: [u16; 4] = if rng.random_bool(0.9) {
        [1, 0, 0, u16::from(rng.random_bool(0.6))]
    } else {
        [
            rng.random_range(0..3),
            rng.random_range(0..2),
            0,
            rng.random_range(0..3),
        ]
    };
    for c in counts {
        p.extend_from_slice(&c.to_be_bytes());
    }
    for label in name.split('.') {
        // Any case: the reply must carry the client's.
        p.push(label.len() as u8);
        p.extend(label.bytes().map(|b| {
            if rng.random_bool(0.5) {
                b.to_ascii_uppercase()
            } else {
                b
            }
        }));
    }
    p.push(0);
    let qtype: u16 = [1, 1, 1, 28, 12, 15, 255][rng.random_range(0..7)];
    let class: u16 = if rng.random_bool(0.95) { 1 } else { 3 };
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&class.to_be_bytes());
    if counts[3] > 0 {
        let size: u16 =
            [0, 100, 511, 512, 513, 600, 1232, 4095, 4096, 4097, 65535][rng.random_range(0..11)];
        let version = if rng.random_bool(0.9) {
            0
        } else {
            rng.random()
        };
        let ext = if rng.random_bool(0.95) {
            0
        } else {
            rng.random()
        };
        let mut flags: u16 = if rng.random_bool(0.5) { 0x8000 } else { 0 };
        if rng.random_bool(0.05) {
            flags |= rng.random::<u16>() & 0x7fff;
        }
        p.extend_from_slice(&[0, 0, 41]);
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[ext, version]);
        p.extend_from_slice(&flags.to_be_bytes());
        if rng.random_bool(0.1) {
            // An option (a client cookie, as dig sends).
            p.extend_from_slice(&[0, 12, 0, 10, 0, 8]);
            p.extend((0..8).map(|_| rng.random::<u8>()));
        } else {
            p.extend_from_slice(&[0, 0]);
        }
    }
    p
}

#[test]
fn the_fast_path_answers_byte_for_byte_as_the_general_path() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let s = edge_scope();
    let table = super::fast::Table::new(&s.names);
    let names: Vec<String> = s
        .names
        .keys()
        .cloned()
        .chain(["outside.example".into(), "1.0.0.10.in-addr.arpa".into()])
        .collect();
    let (mut taken, mut truncated, mut truncated_edns, mut mangled_taken) = (0, 0, 0, 0);
    for i in 0..40_000 {
        let name = &names[rng.random_range(0..names.len())];
        let mut p = match i % 4 {
            0 => (0..rng.random_range(0..300))
                .map(|_| rng.random())
                .collect(),
            _ => raw_query(&mut rng, name),
        };
        let mangled = i % 4 == 3 && !p.is_empty();
        if mangled {
            for _ in 0..rng.random_range(1..3) {
                let at = rng.random_range(0..p.len());
                p[at] = rng.random();
            }
            match rng.random_range(0..4) {
                0 => p.truncate(rng.random_range(0..=p.len())),
                1 => p.extend((0..rng.random_range(1..20)).map(|_| rng.random::<u8>())),
                _ => {}
            }
        }
        if let Some(r) = fast_and_checked(&s, &table, &p) {
            taken += 1;
            mangled_taken += usize::from(mangled);
            if r[2] & 0x02 != 0 {
                truncated += 1;
                truncated_edns += usize::from(r[11] == 1);
            }
        }
    }
    // The generator must reach the fast path often, truncation with and without EDNS too.
    assert!(
        taken > 3000 && truncated > 500 && truncated_edns > 200 && mangled_taken > 30,
        "{taken} taken, {truncated} truncated ({truncated_edns} with EDNS), {mangled_taken} mangled"
    );
}

#[test]
fn the_fast_path_takes_what_hickory_encodes_and_leaves_the_rest() {
    let s = edge_scope();
    let table = super::fast::Table::new(&s.names);
    let took = |p: &[u8]| fast_and_checked(&s, &table, p).is_some();
    assert!(took(&query("tasks.three.", RecordType::A)));
    assert!(took(&query("TASKS.Hundred.", RecordType::A)));
    assert!(took(&query("web.", RecordType::AAAA)));
    assert!(took(&query("empty.", RecordType::A)));
    assert!(took(&query("_srv-like.X-1.", RecordType::A)));
    assert!(took(&edns_query("tasks.big.", Some(1232))));
    let longest = s.names.keys().find(|n| n.len() == 253).unwrap().clone();
    assert!(took(&query(&format!("{longest}."), RecordType::A)));
    // Left to the general path: PTR, external names, escaped labels, several questions.
    assert!(!took(&query("4.1.19.198.in-addr.arpa.", RecordType::PTR)));
    assert!(!took(&query("outside.example.", RecordType::A)));
    assert!(!took(&query("tasks.three.", RecordType::MX)));
    let mut two = Message::from_vec(&query("web.", RecordType::A)).unwrap();
    two.add_query(Query::query(
        Name::from_ascii("web.").unwrap(),
        RecordType::A,
    ));
    assert!(!took(&two.to_vec().unwrap()));
    for name in ["we b", "-dash"] {
        let mut p = query("x.", RecordType::A);
        p.truncate(12);
        p.push(name.len() as u8);
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(!took(&p), "{name}");
    }
    // tasks.<svc> with 100 tasks over UDP without EDNS: 30 whole records and TC.
    let r = fast_and_checked(&s, &table, &query("tasks.hundred.", RecordType::A)).unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert!(m.metadata.truncation && r.len() <= 512);
    assert_eq!(m.answers.len(), (512 - 12 - 19) / 16);
}

fn task_on(id: &str, nets: &[&str]) -> Task {
    Task {
        id: id.into(),
        ..asker(nets)
    }
}

#[test]
fn tasks_with_equal_names_share_a_table_rebuilt_only_when_names_change() {
    let dns = super::Dns::default();
    let mut v = view();
    v.tasks = vec![
        task_on("a", &["app"]),
        task_on("b", &["app", "ing"]),
        task_on("c", &["other"]),
    ];
    dns.update(&v);
    let table = |t: &str| dns.table(t).unwrap();
    assert!(
        Arc::ptr_eq(&table("a"), &table("b")),
        "ingress adds no names"
    );
    assert!(!Arc::ptr_eq(&table("a"), &table("c")));
    let (a, c) = (table("a"), table("c"));
    // A view that changes no names (another task's status) keeps the tables.
    v.tasks[2].status.message = "running".into();
    dns.update(&v);
    assert!(Arc::ptr_eq(&table("a"), &a) && Arc::ptr_eq(&table("c"), &c));
    // A new backend on `app` changes what a and b resolve, not what c does.
    v.endpoints[0]
        .backends
        .push(backend("web.3.eee", "app", "198.19.1.5/24"));
    dns.update(&v);
    assert!(!Arc::ptr_eq(&table("a"), &a));
    assert!(Arc::ptr_eq(&table("a"), &table("b")));
    assert!(Arc::ptr_eq(&table("c"), &c));
    assert_eq!(table("a").len(), a.len() + 1, "web.3.eee");
}

#[tokio::test]
async fn a_burst_gets_every_answer_the_general_path_gives() {
    use rand::SeedableRng;
    let s = edge_scope();
    let server = udp_server(s.clone()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Internal names (fast), PTR and malformed (general, through the queue); no external
    // names, which would wait on forwarders.
    let mut want = HashMap::new();
    for i in 0..200u16 {
        let mut p = match i % 4 {
            0 => query("4.1.19.198.in-addr.arpa.", RecordType::PTR),
            1 => vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'x'],
            _ => raw_query(&mut rng, "tasks.hundred"),
        };
        p[..2].copy_from_slice(&i.to_be_bytes());
        let Outcome::Reply(r) = answer(&s, &p, UDP) else {
            continue;
        };
        want.insert(i, r);
        client.send_to(&p, server).await.unwrap();
    }
    let mut buf = [0u8; 4096];
    for _ in 0..want.len() {
        let n = timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .expect("every query answered")
            .unwrap();
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        assert_eq!(
            want.remove(&id).as_deref(),
            Some(&buf[..n]),
            "the reply to {id}"
        );
    }
    assert!(want.is_empty());
}
