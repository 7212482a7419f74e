//! The embedded DNS server: every local task is answered on 127.0.0.11:53 (UDP and TCP)
//! inside its own namespace, by sockets that shoald opens there; internal names come from
//! the node's view, everything else goes to the task's own `--dns` servers, or to the
//! host's resolvers when it has none.
//!
//! Only the listening sockets live in the task's namespace. Forwarding sockets are made on
//! the runtime's threads, which stay in shoald's own namespace (only `bind_in`'s thread
//! enters another), so upstreams are reached as the host reaches them: a loopback resolver
//! such as systemd-resolved's 127.0.0.53 works, as it does for Docker's embedded DNS.
//!
//! Work is bounded per task: forwards in flight and TCP connections are capped (what is
//! over is dropped, and the client retries), idle TCP connections are closed, and a failing
//! accept or receive (EMFILE, ENFILE) backs off instead of spinning.

pub mod answer;
pub mod records;

use answer::{Outcome, Transport, answer, servfail, upstream_reply, with_id};
use hickory_proto::op::Message;
use records::{Scope, scope_for};
use shoal_api::dispatch::NodeView;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// How long one upstream has to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// What one task's server may hold at a time.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Forwards in flight. A query past this is dropped: the client asks again after its
    /// timeout, and a task flooding its resolver holds at most this many sockets.
    forwards: usize,
    /// TCP connections; one more is closed at once.
    tcp_conns: usize,
    /// A TCP client that sends nothing, or does not read its answer, for this long is
    /// closed (RFC 7766 §6.2.3: servers should not hold idle connections for long).
    tcp_idle: Duration,
}

const LIMITS: Limits = Limits {
    forwards: 64,
    tcp_conns: 16,
    tcp_idle: Duration::from_secs(10),
};

type Scopes = Arc<RwLock<HashMap<String, Arc<Scope>>>>;

/// The nameservers of a resolv.conf. Loopback ones are kept: forwarding happens in shoald's
/// own namespace, where they are the host's resolvers.
fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.parse::<std::net::IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The host's resolvers, from the resolv.conf shoald sees.
fn upstreams() -> Vec<SocketAddr> {
    nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// Binds 127.0.0.11:53 in the named network namespace `netns` (on a thread of its own,
/// since entering a namespace changes the calling thread).
fn bind_in(netns: String) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/run/netns/{netns}"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        let udp = std::net::UdpSocket::bind("127.0.0.11:53")?;
        let tcp = std::net::TcpListener::bind("127.0.0.11:53")?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
}

#[derive(Default)]
pub struct Dns {
    scopes: Scopes,
    listeners: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

impl Dns {
    /// Recomputes what each local task may resolve.
    pub fn update(&self, view: &NodeView) {
        let scopes: HashMap<String, Arc<Scope>> = view
            .tasks
            .iter()
            .map(|t| (t.id.clone(), Arc::new(scope_for(view, t))))
            .collect();
        *self.scopes.write().expect("lock") = scopes;
    }

    /// Starts answering the task whose network namespace is `netns`.
    pub fn serve(&self, task_id: &str, netns: String) {
        let (udp, tcp) = match bind_in(netns) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(task = task_id, error = %e, "no DNS server for the task");
                return;
            }
        };
        let (Ok(udp), Ok(tcp)) = (
            tokio::net::UdpSocket::from_std(udp),
            tokio::net::TcpListener::from_std(tcp),
        ) else {
            return;
        };
        let handles = vec![
            tokio::spawn(serve_udp(
                udp,
                task_id.to_string(),
                self.scopes.clone(),
                LIMITS,
            )),
            tokio::spawn(serve_tcp(
                tcp,
                task_id.to_string(),
                self.scopes.clone(),
                LIMITS,
            )),
        ];
        if let Some(old) = self
            .listeners
            .lock()
            .expect("lock")
            .insert(task_id.to_string(), handles)
        {
            old.iter().for_each(JoinHandle::abort);
        }
    }

    pub fn stop(&self, task_id: &str) {
        if let Some(handles) = self.listeners.lock().expect("lock").remove(task_id) {
            handles.iter().for_each(JoinHandle::abort);
        }
    }
}

fn scope_of(scopes: &Scopes, task: &str) -> Arc<Scope> {
    scopes
        .read()
        .expect("lock")
        .get(task)
        .cloned()
        .unwrap_or_default()
}

fn count(result: &str, started: Instant) {
    crate::metrics::global().dns(result, started.elapsed().as_secs_f64());
}

/// The pause after a failed accept or receive. Such errors tend to last (EMFILE until a
/// descriptor is freed), and retrying at once would spin a core.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// How long to wait after another failure, and whether it is the first in a row.
    fn failed(&mut self) -> (Duration, bool) {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        (wait, wait == Self::FIRST)
    }

    fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }

    async fn wait(&mut self, task: &str, doing: &str, error: &std::io::Error) {
        let (wait, first) = self.failed();
        if first {
            tracing::warn!(task, %error, "DNS server {doing} failed; backing off");
        }
        tokio::time::sleep(wait).await;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

/// An answer for `packet`: ours, the upstream's, or SERVFAIL; counted in the metrics.
async fn respond(scope: &Scope, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let started = Instant::now();
    let (result, reply) = match answer(scope, packet, transport) {
        Outcome::Reply(r) => ("answered", Some(r)),
        Outcome::Drop => ("dropped", None),
        Outcome::Forward(req) => ("forwarded", forwarded(scope, &req, packet, transport).await),
    };
    count(result, started);
    reply
}

/// The first answer to `req` from the task's forwarders (or the host's resolvers), over the
/// transport the client used, as Docker's resolver does: a client that got TC over UDP and
/// asks again over TCP gets the whole answer. SERVFAIL when none answers.
async fn forwarded(
    scope: &Scope,
    req: &Message,
    packet: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let ups = if scope.forwarders.is_empty() {
        upstreams()
    } else {
        scope.forwarders.clone()
    };
    for up in ups {
        let reply = match transport {
            Transport::Udp => forward_udp(up, req, packet).await,
            Transport::Tcp => forward_tcp(up, req, packet).await,
        };
        if reply.is_some() {
            return reply;
        }
    }
    servfail(req, transport)
}

fn unspecified(like: SocketAddr) -> SocketAddr {
    match like {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

async fn forward_udp(up: SocketAddr, req: &Message, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(unspecified(up)).await.ok()?;
    // Connected, the socket only takes datagrams from `up`, and an unreachable upstream
    // shows as an error at once instead of after the timeout.
    sock.connect(up).await.ok()?;
    // A random id the asking task never sees: with the source check, a local process
    // cannot answer in the upstream's place.
    let id = rand::random::<u16>();
    sock.send(&with_id(packet, id)).await.ok()?;
    // An upstream may answer an EDNS client with more than we advertise; read it whole.
    let mut buf = vec![0u8; answer::TCP_MAX];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        match upstream_reply(req, id, &buf[..n], Transport::Udp) {
            Some(reply) => return Some(reply),
            None => tracing::debug!(upstream = %up, "ignored an answer to another query"),
        }
    }
}

async fn forward_tcp(up: SocketAddr, req: &Message, packet: &[u8]) -> Option<Vec<u8>> {
    let id = rand::random::<u16>();
    let query = framed(&with_id(packet, id))?;
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut conn = TcpStream::connect(up).await.ok()?;
        conn.write_all(&query).await.ok()?;
        loop {
            let len = conn.read_u16().await.ok()?;
            let mut reply = vec![0u8; len.into()];
            conn.read_exact(&mut reply).await.ok()?;
            if let Some(reply) = upstream_reply(req, id, &reply, Transport::Tcp) {
                return Some(reply);
            }
        }
    })
    .await
    .ok()?
}

/// `message` behind its 16-bit length, for TCP; None if it is too long to say so, rather
/// than a wrapped length. `fit` keeps every reply of ours short enough.
fn framed(message: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(message.len()).ok()?;
    let mut out = Vec::with_capacity(2 + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Some(out)
}

/// Internal names are answered in the receive loop, without a task; forwards run on tasks
/// of their own, at most `limits.forwards` at a time. They are held in a `JoinSet`, so that
/// stopping the server (aborting this future) stops them too.
async fn serve_udp(sock: UdpSocket, task: String, scopes: Scopes, limits: Limits) {
    let sock = Arc::new(sock);
    let mut forwards = JoinSet::new();
    let mut backoff = Backoff::default();
    let mut buf = vec![0u8; answer::UDP_EDNS_MAX.into()];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(got) => {
                backoff.succeeded();
                got
            }
            Err(e) => {
                backoff.wait(&task, "receiving", &e).await;
                continue;
            }
        };
        let started = Instant::now();
        let scope = scope_of(&scopes, &task);
        match answer(&scope, &buf[..n], Transport::Udp) {
            Outcome::Reply(r) => {
                let _ = sock.send_to(&r, from).await;
                count("answered", started);
            }
            Outcome::Drop => count("dropped", started),
            Outcome::Forward(req) => {
                while forwards.try_join_next().is_some() {}
                if forwards.len() >= limits.forwards {
                    count("dropped", started);
                    continue;
                }
                let packet = buf[..n].to_vec();
                let sock = sock.clone();
                forwards.spawn(async move {
                    if let Some(r) = forwarded(&scope, &req, &packet, Transport::Udp).await {
                        let _ = sock.send_to(&r, from).await;
                    }
                    count("forwarded", started);
                });
            }
        }
    }
}

/// At most `limits.tcp_conns` connections at a time, in a `JoinSet` for the same reason as the
/// forwards.
async fn serve_tcp(listener: TcpListener, task: String, scopes: Scopes, limits: Limits) {
    let mut conns = JoinSet::new();
    let mut backoff = Backoff::default();
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => {
                backoff.succeeded();
                conn
            }
            Err(e) => {
                backoff.wait(&task, "accepting", &e).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        // Over the cap the connection is closed at once, which sends the client to its
        // next server sooner than a timeout would.
        if conns.len() >= limits.tcp_conns {
            continue;
        }
        let scopes = scopes.clone();
        let task = task.clone();
        conns.spawn(async move { serve_conn(conn, &task, &scopes, limits.tcp_idle).await });
    }
}

/// Length-prefixed messages until the client closes, stays idle for `idle`, or sends
/// something that gets no answer.
async fn serve_conn(mut conn: TcpStream, task: &str, scopes: &Scopes, idle: Duration) {
    use tokio::time::timeout;
    loop {
        let Ok(Ok(len)) = timeout(idle, conn.read_u16()).await else {
            return;
        };
        let mut packet = vec![0u8; len.into()];
        let Ok(Ok(_)) = timeout(idle, conn.read_exact(&mut packet)).await else {
            return;
        };
        let scope = scope_of(scopes, task);
        let Some(out) = respond(&scope, &packet, Transport::Tcp)
            .await
            .and_then(|r| framed(&r))
        else {
            return;
        };
        let Ok(Ok(())) = timeout(idle, conn.write_all(&out)).await else {
            return;
        };
    }
}

#[cfg(test)]
mod tests;
