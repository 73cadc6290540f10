//! Metrics and health over plain HTTP on `metrics_listen` (off when the
//! node's config names none): Prometheus `/metrics` and `/health`.
//!
//! [`Metrics`] holds what requests move (prometheus-client counters, cheap
//! to clone and to bump); everything else is read from the node when
//! Prometheus scrapes: the Raft member's own view, the fast-sync journal,
//! the syncer's and the discs' totals, each account's bytes and limits.
//! `/health` answers 200 while the node knows a group leader and can read
//! its discs, 503 otherwise, with the reasons as JSON. Request counts come
//! from [`CountRequests`], a tower layer on the gRPC server: by service,
//! method and outcome (the gRPC status at the response's head).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use serde_json::json;
use tracing::{info, warn};

use crate::node::Node;

/// The counters requests move. A node holds one; clones share the counts.
#[derive(Clone, Default)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    pub connections_open: Gauge,
    pub login_failures: Counter,
    pub housekeeping_runs: Counter,
    pub housekeeping_bytes_freed: Counter,
    pub objects_counted: Counter,
    sets_forgotten: Family<ReasonLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    method: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl Metrics {
    /// Sets housekeeping forgot, by why: "retention" or "soft_limit".
    pub fn forgot_sets(&self, reason: &'static str, sets: usize) {
        self.sets_forgotten.get_or_create(&ReasonLabel { reason }).inc_by(sets as u64);
    }

    fn count_request(&self, path: &str, outcome: String) {
        // Only the node's own services and methods become labels: a caller
        // inventing paths must not grow the set of series.
        let (service, method) = match path.trim_start_matches('/').split_once('/') {
            Some((service, method)) if outcome != "Unimplemented" => (service, method),
            _ => ("unknown", "unknown"),
        };
        let service = service.strip_prefix("coffer.v1.").unwrap_or("unknown");
        let labels = RequestLabels { service: service.into(), method: method.into(), outcome };
        self.requests.get_or_create(&labels).inc();
    }

    fn register(&self, registry: &mut Registry) {
        let counters = [
            ("coffer_node_received_bytes", "Bytes received on TLS connections", &self.received_bytes),
            ("coffer_node_sent_bytes", "Bytes sent on TLS connections", &self.sent_bytes),
            ("coffer_node_login_failures", "Client logins refused (wrong keys)", &self.login_failures),
            ("coffer_housekeeping_runs", "Housekeeping passes", &self.housekeeping_runs),
            ("coffer_housekeeping_bytes_freed", "Bytes housekeeping freed", &self.housekeeping_bytes_freed),
            (
                "coffer_objects_counted",
                "Trees and sets whose references were counted in the background",
                &self.objects_counted,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "coffer_node_requests",
            "gRPC requests by service, method and outcome",
            self.requests.clone(),
        );
        registry.register(
            "coffer_housekeeping_sets_forgotten",
            "Backup sets housekeeping forgot, by reason",
            self.sets_forgotten.clone(),
        );
        registry.register(
            "coffer_node_connections_open",
            "TLS connections open",
            self.connections_open.clone(),
        );
    }
}

/// Serves `/metrics` and `/health` on `addr` until the node stops.
pub async fn serve(addr: SocketAddr, node: Arc<Node>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on metrics_listen {addr}: {e}"))?;
    info!(%addr, "serving /metrics and /health");
    let app =
        axum::Router::new().route("/metrics", get(metrics)).route("/health", get(health)).with_state(node);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(move || render(&node)).await;
    match text {
        Ok(Ok(text)) => {
            let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            (StatusCode::OK, [(header::CONTENT_TYPE, kind)], text)
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], e.to_string()),
    }
}

async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let name = node.name.clone();
    let (problems, leader) = tokio::task::spawn_blocking(move || {
        let status = node.group.local_status();
        (problems(&node, status.leader.is_some()), status.leader_name)
    })
    .await
    .unwrap_or_else(|e| (vec![format!("the health check failed: {e}")], String::new()));
    let code = if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let status = if problems.is_empty() { "ok" } else { "unhealthy" };
    (code, axum::Json(json!({ "node": name, "status": status, "leader": leader, "problems": problems })))
}

/// Why the node is not healthy; empty when it is.
fn problems(node: &Node, leader_known: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if !leader_known {
        problems.push("no group leader known: account changes are refused".to_string());
    }
    if let Err(e) = node.store.discs().usage() {
        problems.push(format!("the discs cannot be read: {e}"));
    }
    problems
}

/// Every metric of `node` in the OpenMetrics text format.
fn render(node: &Node) -> Result<String, String> {
    let mut registry = Registry::default();
    node.metrics.register(&mut registry);
    registry.register_collector(Box::new(gather(node).map_err(|e| e.to_string())?));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| e.to_string())?;
    Ok(text)
}

/// One value of a metric read at scrape time, with its labels.
#[derive(Debug)]
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: u64,
}

/// Metrics read from the node's state at scrape time, by name.
#[derive(Debug, Default)]
struct Snapshot {
    counters: BTreeMap<&'static str, (&'static str, Vec<Sample>)>,
    gauges: BTreeMap<&'static str, (&'static str, Vec<Sample>)>,
}

impl Snapshot {
    fn counter(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.counters.entry(name).or_insert((help, Vec::new())).1.push(Sample { labels: Vec::new(), value });
    }

    fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Vec<(&'static str, String)>,
        value: u64,
    ) {
        self.gauges.entry(name).or_insert((help, Vec::new())).1.push(Sample { labels, value });
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, (help, samples)) in &self.counters {
            for s in samples {
                let counter = ConstCounter::new(s.value);
                let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
                counter.encode(metric)?;
            }
        }
        for (name, (help, samples)) in &self.gauges {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for s in samples {
                let gauge = ConstGauge::new(i64::try_from(s.value).unwrap_or(i64::MAX));
                if s.labels.is_empty() {
                    gauge.encode(family.encode_family(&Vec::<(&str, String)>::new())?)?;
                } else {
                    gauge.encode(family.encode_family(&s.labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Reads what the node knows now: Raft, fast sync, store and discs.
fn gather(node: &Node) -> Result<Snapshot, coffer_store::StoreError> {
    let mut s = Snapshot::default();
    s.counter(
        "coffer_node_connections",
        "TLS connections accepted",
        node.connections.load(Ordering::Relaxed),
    );
    s.counter(
        "coffer_node_handshakes_failed",
        "Connections refused at the TLS handshake or for lack of room",
        node.handshakes_failed.load(Ordering::Relaxed),
    );
    let writers = node.writers.lock().unwrap().values().filter(|w| w.upgrade().is_some()).count();
    s.gauge("coffer_node_writers", "Accounts whose client writer this node holds", vec![], writers as u64);

    let raft = node.group.local_status();
    s.gauge("coffer_raft_term", "Raft term", vec![], raft.term);
    s.gauge(
        "coffer_raft_leader_known",
        "1 when this node knows a group leader",
        vec![],
        raft.leader.is_some().into(),
    );
    let leading = raft.leader == Some(node.group.id());
    s.gauge("coffer_raft_is_leader", "1 on the group's leader", vec![], leading.into());
    s.gauge("coffer_raft_last_log_index", "Last index of this node's Raft log", vec![], raft.last_log_index);
    s.gauge(
        "coffer_raft_last_applied",
        "Last log index applied to the account database",
        vec![],
        raft.last_applied,
    );
    let apply_lag = raft.last_log_index.saturating_sub(raft.last_applied);
    s.gauge("coffer_raft_apply_lag", "Log entries not yet applied", vec![], apply_lag);
    for m in raft.members.iter().filter(|_| leading) {
        let labels = vec![("member", m.member.name.clone())];
        s.gauge(
            "coffer_raft_member_lag",
            "Log entries a member is behind the leader (on the leader)",
            labels,
            m.lag,
        );
    }

    let owed = node.group.journal().owed()?;
    s.gauge(
        "coffer_sync_journal_entries",
        "(account, peer) syncs the journal holds",
        vec![],
        owed.len() as u64,
    );
    let now = coffer_proto::clock::now_ns();
    for lag in crate::status::sync_lag(node, &owed) {
        let peer = || vec![("peer", lag.peer.clone())];
        s.gauge(
            "coffer_sync_owed",
            "Account syncs owed to a peer (the fast-sync queue)",
            peer(),
            lag.accounts,
        );
        let behind = if lag.oldest_ns == 0 { 0 } else { (now - lag.oldest_ns).max(0) as u64 / 1_000_000_000 };
        s.gauge(
            "coffer_sync_lag_seconds",
            "How long the oldest sync owed to a peer has waited",
            peer(),
            behind,
        );
    }
    let c = &node.syncer.counters;
    let totals = [
        ("coffer_sync_runs", "Fast syncs run", &c.syncs),
        ("coffer_sync_failures", "Fast syncs that failed", &c.failures),
        ("coffer_sync_round_trips", "Fast-sync round trips", &c.round_trips),
        ("coffer_sync_sets_copied", "Backup sets fast sync copied", &c.sets_copied),
        ("coffer_sync_bytes_copied", "Bytes fast sync copied", &c.bytes_copied),
    ];
    for (name, help, value) in totals {
        s.counter(name, help, value.load(Ordering::Relaxed));
    }

    for a in node.store.accounts()? {
        let usage = node.store.usage(a.id)?;
        let account = || vec![("account", a.name.clone())];
        s.gauge("coffer_account_live_bytes", "Bytes the account's sets reach", account(), usage.live_bytes);
        s.gauge(
            "coffer_account_pack_bytes",
            "Bytes of the account's pack files",
            account(),
            usage.pack_bytes,
        );
        s.gauge("coffer_account_sets", "Backup sets of the account", account(), usage.sets);
        // An unlimited account has no limit series, so a comparison never fires.
        if a.limits.soft != u64::MAX {
            s.gauge("coffer_account_soft_limit_bytes", "The account's soft limit", account(), a.limits.soft);
        }
        if a.limits.hard != u64::MAX {
            s.gauge("coffer_account_hard_limit_bytes", "The account's hard limit", account(), a.limits.hard);
        }
    }
    let discs = node.store.discs();
    let usage = discs.usage()?;
    for (dir, bytes) in discs.dirs().iter().zip(usage) {
        s.gauge(
            "coffer_disc_bytes",
            "Bytes of pack files on each disc",
            vec![("disc", dir.display().to_string())],
            bytes,
        );
    }
    s.counter("coffer_raid_degraded_reads", "Reads served through parity", discs.degraded_reads());
    let healthy = problems(node, raft.leader.is_some()).is_empty();
    s.gauge("coffer_node_healthy", "1 while /health answers 200", vec![], healthy.into());
    Ok(s)
}

/// A tower layer counting every gRPC request by service, method and outcome.
#[derive(Clone)]
pub struct CountRequests(pub Metrics);

impl<S> tower::Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Metrics,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let (call, metrics) = (self.inner.call(request), self.metrics.clone());
        Box::pin(async move {
            let response = call.await;
            let outcome = match &response {
                // An error ends the call at its head (trailers-only); a
                // success says so in the trailers, after the body.
                Ok(r) => {
                    match r.headers().get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i32>().ok()) {
                        Some(code) if code != 0 => format!("{:?}", tonic::Code::from_i32(code)),
                        _ => "Ok".to_string(),
                    }
                }
                Err(_) => "TransportError".to_string(),
            };
            metrics.count_request(&path, outcome);
            response
        })
    }
}
