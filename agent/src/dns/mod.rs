//! The embedded DNS server: every local task is answered on 127.0.0.11:53 (UDP and TCP)
//! inside its own namespace, by sockets that shoald opens there; internal names come from
//! the node's view, everything else goes to the task's own `--dns` servers, or to the
//! host's resolvers when it has none.

pub mod answer;
pub mod records;

use answer::{Outcome, answer, servfail};
use records::{Scope, scope_for};
use shoal_api::dispatch::NodeView;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The host's resolvers, from the resolv.conf shoald sees.
fn upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        // Our own address would loop back into a task namespace's server.
        .filter(|ip| !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
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
    scopes: Arc<RwLock<HashMap<String, Arc<Scope>>>>,
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
            tokio::spawn(serve_udp(udp, task_id.to_string(), self.scopes.clone())),
            tokio::spawn(serve_tcp(tcp, task_id.to_string(), self.scopes.clone())),
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

fn scope_of(scopes: &RwLock<HashMap<String, Arc<Scope>>>, task: &str) -> Arc<Scope> {
    scopes
        .read()
        .expect("lock")
        .get(task)
        .cloned()
        .unwrap_or_default()
}

/// An answer for `packet`: ours, the upstream's, or SERVFAIL; counted in the metrics.
async fn respond(scope: &Scope, packet: &[u8]) -> Option<Vec<u8>> {
    let started = std::time::Instant::now();
    let (result, reply) = match answer(scope, packet) {
        Outcome::Reply(r) => ("answered", Some(r)),
        Outcome::Drop => ("dropped", None),
        Outcome::Forward => ("forwarded", forwarded(&scope.forwarders, packet).await),
    };
    crate::metrics::global().dns(result, started.elapsed().as_secs_f64());
    reply
}

async fn forwarded(own: &[SocketAddr], packet: &[u8]) -> Option<Vec<u8>> {
    let ups = if own.is_empty() {
        upstreams()
    } else {
        own.to_vec()
    };
    for up in ups {
        if let Some(r) = forward(up, packet).await {
            return Some(r);
        }
    }
    match servfail(packet) {
        Outcome::Reply(r) => Some(r),
        _ => None,
    }
}

async fn forward(up: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    sock.send_to(packet, up).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

async fn serve_udp(
    sock: tokio::net::UdpSocket,
    task: String,
    scopes: Arc<RwLock<HashMap<String, Arc<Scope>>>>,
) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let packet = buf[..n].to_vec();
        let scope = scope_of(&scopes, &task);
        let sock = sock.clone();
        tokio::spawn(async move {
            if let Some(r) = respond(&scope, &packet).await {
                let _ = sock.send_to(&r, from).await;
            }
        });
    }
}

async fn serve_tcp(
    listener: tokio::net::TcpListener,
    task: String,
    scopes: Arc<RwLock<HashMap<String, Arc<Scope>>>>,
) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let scopes = scopes.clone();
        let task = task.clone();
        tokio::spawn(async move {
            // Length-prefixed messages until the client closes.
            loop {
                let Ok(len) = conn.read_u16().await else {
                    return;
                };
                let mut packet = vec![0u8; len as usize];
                if conn.read_exact(&mut packet).await.is_err() {
                    return;
                }
                let scope = scope_of(&scopes, &task);
                let Some(r) = respond(&scope, &packet).await else {
                    return;
                };
                if conn.write_u16(r.len() as u16).await.is_err()
                    || conn.write_all(&r).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
