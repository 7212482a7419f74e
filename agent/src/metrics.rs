//! Prometheus metrics of one shoald (`--metrics-addr`, `GET /metrics`): dataplane syncs and
//! what they programmed, DNS queries, and on managers raft's term, leader and commit index
//! and the nodes' session states. Counters are bumped where the work happens; raft and
//! node gauges are read when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// "vips" (a task namespace) or "mesh" (the node).
    pub table: String,
    /// "full", "incremental", "unchanged" or "error".
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    /// "answered", "forwarded" or "dropped".
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

pub struct Metrics {
    pub lb_syncs: Family<SyncLabels, Counter>,
    pub lb_sync_seconds: Family<TableLabel, Histogram>,
    /// VIPs programmed, summed over this node's task namespaces.
    pub lb_vips: Gauge,
    /// Backend slots behind those VIPs.
    pub lb_backends: Gauge,
    /// Published ports the node's routing mesh serves.
    pub mesh_ports: Gauge,
    pub dns_queries: Family<DnsLabels, Counter>,
    pub dns_seconds: Histogram,
    pub raft_term: Gauge,
    pub raft_commit_index: Gauge,
    pub raft_leader: Gauge,
    pub nodes: Family<StateLabel, Gauge>,
}

fn seconds_buckets() -> Histogram {
    // 10 µs to about 10 s.
    Histogram::new(exponential_buckets(1e-5, 4.0, 11))
}

impl Metrics {
    fn new() -> (Metrics, Registry) {
        let m = Metrics {
            lb_syncs: Family::default(),
            lb_sync_seconds: Family::new_with_constructor(seconds_buckets),
            lb_vips: Gauge::default(),
            lb_backends: Gauge::default(),
            mesh_ports: Gauge::default(),
            dns_queries: Family::default(),
            dns_seconds: seconds_buckets(),
            raft_term: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_leader: Gauge::default(),
            nodes: Family::default(),
        };
        let mut r = Registry::with_prefix("shoal");
        r.register(
            "dataplane_syncs",
            "Load-balancer table syncs, by table and how they were applied",
            m.lb_syncs.clone(),
        );
        r.register(
            "dataplane_sync_duration_seconds",
            "Time to bring one load-balancer table to its desired state",
            m.lb_sync_seconds.clone(),
        );
        r.register(
            "lb_vips",
            "VIPs programmed in this node's task namespaces",
            m.lb_vips.clone(),
        );
        r.register(
            "lb_backends",
            "Backends behind the VIPs programmed on this node",
            m.lb_backends.clone(),
        );
        r.register(
            "mesh_published_ports",
            "Published ports served by this node's routing mesh",
            m.mesh_ports.clone(),
        );
        r.register(
            "dns_queries",
            "Queries to the embedded DNS server, by outcome",
            m.dns_queries.clone(),
        );
        r.register(
            "dns_query_duration_seconds",
            "Time to answer a DNS query (forwarded ones included)",
            m.dns_seconds.clone(),
        );
        r.register(
            "raft_term",
            "Raft term seen by this manager",
            m.raft_term.clone(),
        );
        r.register(
            "raft_commit_index",
            "Raft commit index of this manager",
            m.raft_commit_index.clone(),
        );
        r.register(
            "raft_leader",
            "1 when this manager is the raft leader",
            m.raft_leader.clone(),
        );
        r.register(
            "nodes",
            "Nodes of the swarm by session state, as this manager sees them",
            m.nodes.clone(),
        );
        (m, r)
    }

    pub fn sync(&self, table: &str, kind: &str, seconds: f64) {
        self.lb_syncs
            .get_or_create(&SyncLabels {
                table: table.into(),
                kind: kind.into(),
            })
            .inc();
        self.lb_sync_seconds
            .get_or_create(&TableLabel {
                table: table.into(),
            })
            .observe(seconds);
    }

    pub fn dns(&self, result: &str, seconds: f64) {
        self.dns_queries
            .get_or_create(&DnsLabels {
                result: result.into(),
            })
            .inc();
        self.dns_seconds.observe(seconds);
    }
}

static GLOBAL: OnceLock<(Metrics, Registry)> = OnceLock::new();

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL.get_or_init(Metrics::new).0
}

/// The text exposition of every metric.
pub fn encode() -> String {
    let (_, registry) = GLOBAL.get_or_init(Metrics::new);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family() {
        global().sync("vips", "full", 0.002);
        global().dns("answered", 0.0001);
        global().raft_term.set(3);
        let text = encode();
        // The registry is the process's: other tests (the DNS server's) count too, so the
        // counters are checked to be there, not for their values.
        for name in [
            "shoal_dataplane_syncs_total{table=\"vips\",kind=\"full\"} ",
            "shoal_dataplane_sync_duration_seconds_bucket",
            "shoal_dns_queries_total{result=\"answered\"} ",
            "shoal_raft_term 3",
            "shoal_lb_vips 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
