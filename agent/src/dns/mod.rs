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
//!
//! Over UDP one loop per socket reads datagrams in batches (`recvmmsg`), answers internal
//! names from the scope's table of pre-encoded answers (`fast`), sends those replies in one
//! `sendmmsg`, and queues everything else, boundedly, for a task that runs the general path
//! (`answer`) and the forwards. TCP always takes the general path.

pub mod answer;
pub mod fast;
pub mod records;

use answer::{Outcome, Transport, answer, servfail, upstream_reply, with_id};
use hickory_proto::op::Message;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use records::{Scope, scope_for};
use shoal_api::dispatch::NodeView;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
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

/// Datagrams read (and replies sent) per system call. Enough to amortise the call at a few
/// hundred thousand queries a second; small enough that a batch's wait stays in microseconds.
const BATCH: usize = 32;

/// Datagrams waiting for the general path per socket. What is over is dropped (the client
/// asks again), so a flood of external names cannot hold memory or delay internal ones.
const SLOW_QUEUE: usize = 256;

/// What one task is answered from: its scope, for the general path, and the pre-encoded
/// answers of the fast path, one table shared by every task whose names are the same.
#[derive(Debug, Default)]
pub struct Served {
    pub scope: Scope,
    pub table: Arc<fast::Table>,
}

impl Served {
    pub fn new(scope: Scope) -> Served {
        let table = Arc::new(fast::Table::new(&scope.names));
        Served { scope, table }
    }
}

type Scopes = Arc<RwLock<HashMap<String, Arc<Served>>>>;

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
    /// Recomputes what each local task may resolve. A table is built only for names no task had before: tasks with equal names share
    /// one, and a view that leaves a task's names alone leaves its table alone.
    pub fn update(&self, view: &NodeView) {
        let mut tables: Vec<Arc<fast::Table>> = vec![];
        for s in self.scopes.read().expect("lock").values() {
            if !tables.iter().any(|t| Arc::ptr_eq(t, &s.table)) {
                tables.push(s.table.clone());
            }
        }
        let kept = tables.len();
        let mut scopes: HashMap<String, Arc<Served>> = HashMap::new();
        for t in &view.tasks {
            let scope = scope_for(view, t);
            let table = fast::Table::reuse_or_build(&scope.names, &tables);
            if !tables.iter().any(|k| Arc::ptr_eq(k, &table)) {
                tables.push(table.clone());
            }
            scopes.insert(t.id.clone(), Arc::new(Served { scope, table }));
        }
        if tables.len() > kept {
            tracing::debug!(built = tables.len() - kept, "DNS answer tables rebuilt");
        }
        *self.scopes.write().expect("lock") = scopes;
    }

    /// The table `task` is answered from (tests and benchmarks check the sharing).
    pub fn table(&self, task: &str) -> Option<Arc<fast::Table>> {
        let scopes = self.scopes.read().expect("lock");
        scopes.get(task).map(|s| s.table.clone())
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

fn scope_of(scopes: &Scopes, task: &str) -> Arc<Served> {
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

/// A batch of datagrams in and of replies out, kept for the socket's life so that the
/// per-packet path allocates nothing.
struct Batch {
    bufs: Box<[[u8; RECV_MAX]; BATCH]>,
    got: [(usize, Option<SockaddrStorage>); BATCH],
    out: Box<[[u8; fast::REPLY_MAX]; BATCH]>,
    out_len: [usize; BATCH],
    to: [Option<SockaddrStorage>; BATCH],
}

/// The receive buffer: what we advertise, so an EDNS client's query fits.
const RECV_MAX: usize = answer::UDP_EDNS_MAX as usize;

fn boxed<const N: usize>() -> Box<[[u8; N]; BATCH]> {
    // Through a Vec, so that 128 KiB never sit on the stack.
    vec![[0u8; N]; BATCH]
        .into_boxed_slice()
        .try_into()
        .expect("BATCH buffers")
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: boxed(),
            got: [(0, None); BATCH],
            out: boxed(),
            out_len: [0; BATCH],
            to: [None; BATCH],
        }
    }
}

thread_local! {
    // nix's headers hold raw pointers, so they are not Send and cannot live in the task's
    // future; one set per runtime thread, used only inside a synchronous call, does.
    static RECV_HEADERS: RefCell<Option<MultiHeaders<SockaddrStorage>>> = const { RefCell::new(None) };
    static SEND_HEADERS: RefCell<Option<MultiHeaders<SockaddrStorage>>> = const { RefCell::new(None) };
}

/// Up to `BATCH` datagrams into `bufs`, their lengths and sources into `got`; WouldBlock
/// when there are none.
fn recv_batch(
    fd: RawFd,
    bufs: &mut [[u8; RECV_MAX]; BATCH],
    got: &mut [(usize, Option<SockaddrStorage>); BATCH],
) -> std::io::Result<usize> {
    RECV_HEADERS.with_borrow_mut(|headers| {
        let headers = headers.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
        let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
        let results = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
        let mut n = 0;
        for (slot, r) in got.iter_mut().zip(results) {
            *slot = (r.bytes, r.address);
            n += 1;
        }
        Ok(n)
    })
}

/// The first `n` replies in one call. nix does not say safely how many of them went (its
/// results read addresses that sendmmsg never wrote), and a UDP send stops early only when
/// the socket's buffer is full: a reply left out then is lost like any datagram, and the
/// client asks again.
fn send_batch(
    fd: RawFd,
    out: &[[u8; fast::REPLY_MAX]; BATCH],
    lens: &[usize; BATCH],
    to: &[Option<SockaddrStorage>; BATCH],
    n: usize,
) -> std::io::Result<()> {
    SEND_HEADERS.with_borrow_mut(|headers| {
        let headers = headers.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
        let iovs: [[IoSlice; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(&out[i][..lens[i]])]);
        let none: [ControlMessage; 0] = [];
        sendmmsg(
            fd,
            headers,
            &iovs[..n],
            &to[..n],
            none,
            MsgFlags::MSG_DONTWAIT,
        )?;
        Ok(())
    })
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// A counter of the DNS metric, looked up once: the lookup allocates its label.
fn counter(result: &str) -> prometheus_client::metrics::counter::Counter {
    let labels = crate::metrics::DnsLabels {
        result: result.into(),
    };
    (*crate::metrics::global().dns_queries.get_or_create(&labels)).clone()
}

/// The receive loop: internal names are answered here, in batches, from the scope's table;
/// the rest goes to `serve_udp_slow` through a bounded queue. Both run in a `JoinSet` of
/// this future's, so that stopping the server (aborting it) stops the forwards too.
async fn serve_udp(sock: UdpSocket, task: String, scopes: Scopes, limits: Limits) {
    let sock = Arc::new(sock);
    let fd = sock.as_raw_fd();
    let (queue, queued) = mpsc::channel(SLOW_QUEUE);
    let mut slow = JoinSet::new();
    slow.spawn(serve_udp_slow(
        sock.clone(),
        queued,
        task.clone(),
        scopes.clone(),
        limits,
    ));
    let (answered, dropped) = (counter("answered"), counter("dropped"));
    let seconds = crate::metrics::global().dns_seconds.clone();
    let mut backoff = Backoff::default();
    let mut b = Batch::new();
    loop {
        if let Err(e) = sock.readable().await {
            backoff.wait(&task, "waiting to receive", &e).await;
            continue;
        }
        let mut n = 0;
        // A short batch means recvmmsg found the queue empty before the batch was full: tell
        // tokio the socket is drained now (WouldBlock clears its readiness) rather than with
        // one more call that would find nothing. The epoll event of a datagram arriving
        // after that is still pending, so none waits unseen.
        let received = sock.try_io(Interest::READABLE, || {
            n = recv_batch(fd, &mut b.bufs, &mut b.got)?;
            if n < BATCH {
                Err(ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match received {
            Err(e) if e.kind() != ErrorKind::WouldBlock => {
                backoff.wait(&task, "receiving", &e).await;
                continue;
            }
            _ => backoff.succeeded(),
        }
        if n == 0 {
            continue;
        }
        let started = Instant::now();
        // Once a batch: the scope a view update put in place since the last one.
        let served = scope_of(&scopes, &task);
        let mut replies = 0;
        for (i, (len, from)) in b.got[..n].iter().enumerate() {
            let packet = &b.bufs[i][..*len];
            if let Some(out) = fast::answer(&served.table, packet, &mut b.out[replies]) {
                b.out_len[replies] = out;
                b.to[replies] = *from;
                replies += 1;
                continue;
            }
            let Some(from) = from.as_ref().and_then(socket_addr) else {
                dropped.inc();
                continue;
            };
            if queue.try_send((packet.to_vec(), from)).is_err() {
                dropped.inc();
            }
        }
        if replies == 0 {
            continue;
        }
        // One reply (a light load) goes by sendto, which copies no message header and
        // vector in the kernel; more go in one sendmmsg.
        let sent = match (replies, b.to[0].as_ref().and_then(socket_addr)) {
            (1, Some(to)) => sock.send_to(&b.out[0][..b.out_len[0]], to).await.map(drop),
            _ => {
                sock.async_io(Interest::WRITABLE, || {
                    send_batch(fd, &b.out, &b.out_len, &b.to, replies)
                })
                .await
            }
        };
        if let Err(error) = sent {
            tracing::debug!(task, %error, "DNS replies not sent");
        }
        answered.inc_by(replies as u64);
        // Every reply of a batch waited for the same send.
        let took = started.elapsed().as_secs_f64();
        for _ in 0..replies {
            seconds.observe(took);
        }
    }
}

/// The general path for UDP: what the fast path did not take, answered by `answer` or
/// forwarded, at most `limits.forwards` forwards at a time.
async fn serve_udp_slow(
    sock: Arc<UdpSocket>,
    mut queued: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
    task: String,
    scopes: Scopes,
    limits: Limits,
) {
    let mut forwards = JoinSet::new();
    while let Some((packet, from)) = queued.recv().await {
        let started = Instant::now();
        let served = scope_of(&scopes, &task);
        match answer(&served.scope, &packet, Transport::Udp) {
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
                let sock = sock.clone();
                forwards.spawn(async move {
                    let scope = &served.scope;
                    if let Some(r) = forwarded(scope, &req, &packet, Transport::Udp).await {
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
        let served = scope_of(scopes, task);
        let Some(out) = respond(&served.scope, &packet, Transport::Tcp)
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
