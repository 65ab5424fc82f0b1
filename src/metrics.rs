//! An optional Prometheus endpoint (`metrics: ADDR:PORT` in YAML; off by default).
//!
//! [`Metrics`] is a registry of atomics and small maps, rendered in the Prometheus text
//! exposition format 0.0.4. Most values come from the status report `hactl status` prints
//! ([`Metrics::observe_status`], refreshed by the server from the control socket at every
//! scrape, so a scrape costs one status query and never touches the heartbeat loop). The
//! rest are histograms only the node sees as things happen: heartbeat gaps, failover
//! durations, check latencies and dataplane apply times, fed through the `observe_*`
//! methods.
//!
//! [`serve`] is a deliberately tiny HTTP/1.1 server: `GET /metrics` only, one request per
//! connection, at most [`MAX_CONNECTIONS`] at once and [`REQUEST_TIMEOUT`] per request, so
//! a slow or hostile client cannot hold the daemon's memory or tasks.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::control::protocol::{Request, StatusReport};
use crate::director::runtime::RealReport;
use crate::telemetry::lock;
pub use crate::telemetry::{Histogram, Telemetry};

/// The process's registry: the daemon's server renders it and the node feeds its
/// histograms through it (one daemon per process).
pub fn registry() -> Arc<Metrics> {
    static REGISTRY: std::sync::OnceLock<Arc<Metrics>> = std::sync::OnceLock::new();
    REGISTRY
        .get_or_init(|| Arc::new(Metrics::with(crate::telemetry::global())))
        .clone()
}

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head accepted.
const MAX_REQUEST: usize = 8192;
/// How long a scrape waits for the daemon's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// The content type of exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Node states a status report uses (heartbeat's `init`, `up`, `active`, `dead`).
const NODE_STATES: &[&str] = &["init", "up", "active", "dead"];
/// Link states.
const LINK_STATES: &[&str] = &["init", "up", "dead"];
/// Group states on this node.
const GROUP_STATES: &[&str] = &[
    "stopped",
    "starting",
    "running",
    "stopping",
    "failed",
    "stop_failed",
];

/// Writes `h` as a Prometheus histogram: cumulative buckets, sum and count.
fn render_histogram(out: &mut String, h: &Histogram, name: &str, labels: &[(&str, &str)]) {
    let mut count = 0;
    for (bound, cumulative) in h.cumulative() {
        count = cumulative;
        let le = bound.map_or_else(|| "+Inf".to_string(), |b| b.to_string());
        let mut l = labels.to_vec();
        l.push(("le", &le));
        sample(out, &format!("{name}_bucket"), &l, cumulative as f64);
    }
    sample(out, &format!("{name}_sum"), labels, h.sum_seconds());
    sample(out, &format!("{name}_count"), labels, count as f64);
}

/// What the last status query said; `None` when the daemon did not answer.
#[derive(Debug, Default)]
struct Observed {
    status: Option<StatusReport>,
    reals: Vec<RealReport>,
}

/// hbd's metrics: the last status report plus what the daemon feeds as it happens
/// ([`Telemetry`]).
#[derive(Debug)]
pub struct Metrics {
    observed: Mutex<Observed>,
    telemetry: Arc<Telemetry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry with telemetry of its own.
    pub fn new() -> Metrics {
        Metrics::with(Arc::new(Telemetry::new()))
    }

    /// A registry rendering `telemetry`.
    pub fn with(telemetry: Arc<Telemetry>) -> Metrics {
        Metrics {
            observed: Mutex::new(Observed::default()),
            telemetry,
        }
    }

    /// Takes node, link and group states and the frame counters from a status report.
    pub fn observe_status(&self, report: &StatusReport) {
        lock(&self.observed).status = Some(report.clone());
    }

    /// Takes real-server states and weights from a `checks` answer.
    pub fn observe_reals(&self, reals: &[RealReport]) {
        lock(&self.observed).reals = reals.to_vec();
    }

    /// Forgets the last status: the daemon did not answer (`hbd_up` becomes 0).
    pub fn observe_unreachable(&self) {
        *lock(&self.observed) = Observed::default();
    }

    /// What the daemon feeds as it happens.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The exposition text (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let observed = lock(&self.observed);
        family(
            &mut out,
            "hbd_up",
            "gauge",
            "1 when the daemon answered the status query behind this scrape.",
        );
        sample(
            &mut out,
            "hbd_up",
            &[],
            f64::from(u8::from(observed.status.is_some())),
        );
        if let Some(r) = &observed.status {
            render_status(&mut out, r);
        }
        render_reals(&mut out, &observed.reals);
        drop(observed);

        family(
            &mut out,
            "hbd_heartbeat_interval_seconds",
            "histogram",
            "Gaps between two heartbeats from a peer; late beats fill the high buckets.",
        );
        for (peer, h) in self.telemetry.heartbeat_gaps_by_peer().iter() {
            render_histogram(
                &mut out,
                h,
                "hbd_heartbeat_interval_seconds",
                &[("node", peer)],
            );
        }
        family(
            &mut out,
            "hbd_failovers_total",
            "counter",
            "Groups taken over by this node since start.",
        );
        for (group, n) in self.telemetry.failovers_by_group() {
            sample(
                &mut out,
                "hbd_failovers_total",
                &[("group", &group)],
                n as f64,
            );
        }
        family(
            &mut out,
            "hbd_last_failover_duration_seconds",
            "gauge",
            "How long the last takeover here took, from decision to running (0: none yet).",
        );
        let last = self.telemetry.last_failover_seconds();
        sample(&mut out, "hbd_last_failover_duration_seconds", &[], last);
        for (name, help, h) in [
            (
                "hbd_failover_duration_seconds",
                "Takeovers here, from decision to running.",
                &self.telemetry.failover_durations,
            ),
            (
                "hbd_check_duration_seconds",
                "Real-server health checks, from start to result.",
                &self.telemetry.check_latency,
            ),
            (
                "hbd_dataplane_apply_seconds",
                "Changes applied to IPVS or nftables.",
                &self.telemetry.dataplane_apply,
            ),
        ] {
            family(&mut out, name, "histogram", help);
            render_histogram(&mut out, h, name, &[]);
        }
        out
    }

    /// Asks the daemon at `socket` for its status and real servers, and keeps the answers.
    pub async fn refresh(&self, socket: &std::path::Path) {
        use crate::control::client;
        match client::call(socket, &Request::Status, STATUS_TIMEOUT).await {
            Ok(response) if response.ok => match response.status {
                Some(report) => self.observe_status(&report),
                None => self.observe_unreachable(),
            },
            _ => {
                self.observe_unreachable();
                return;
            }
        }
        if let Ok(response) = client::call(socket, &Request::Checks, STATUS_TIMEOUT).await {
            self.observe_reals(&response.checks.unwrap_or_default());
        }
    }
}

fn render_status(out: &mut String, r: &StatusReport) {
    family(
        out,
        "hbd_generation",
        "gauge",
        "This node's generation, raised at every start.",
    );
    sample(
        out,
        "hbd_generation",
        &[("node", &r.node)],
        r.generation as f64,
    );
    family(
        out,
        "hbd_pair_stable",
        "gauge",
        "1 when the pair is stable (no placement in flux).",
    );
    sample(
        out,
        "hbd_pair_stable",
        &[],
        f64::from(u8::from(r.unstable.is_empty())),
    );
    family(
        out,
        "hbd_queued_requests",
        "gauge",
        "Takeover or standby requests waiting for the pair to be stable.",
    );
    sample(out, "hbd_queued_requests", &[], r.queued.len() as f64);

    family(
        out,
        "hbd_node_state",
        "gauge",
        "Cluster members' state (one series per state, 1 for the current one).",
    );
    for n in &r.nodes {
        state_set(
            out,
            "hbd_node_state",
            &[("node", &n.name)],
            NODE_STATES,
            &n.state,
        );
    }
    family(
        out,
        "hbd_node_last_heard_seconds",
        "gauge",
        "Time since a peer's last heartbeat.",
    );
    for n in r.nodes.iter().filter(|n| !n.local) {
        if let Some(ms) = n.last_heard_ms {
            sample(
                out,
                "hbd_node_last_heard_seconds",
                &[("node", &n.name)],
                ms as f64 / 1e3,
            );
        }
    }
    family(
        out,
        "hbd_node_deadtime_seconds",
        "gauge",
        "Silence after which a member is declared dead.",
    );
    family(
        out,
        "hbd_node_late_heartbeats_total",
        "counter",
        "Heartbeats from a peer that came after warntime.",
    );
    family(
        out,
        "hbd_node_longest_gap_seconds",
        "gauge",
        "Longest gap between two heartbeats from a peer since start.",
    );
    for n in r.nodes.iter().filter(|n| !n.local) {
        let l = [("node", n.name.as_str())];
        sample(
            out,
            "hbd_node_deadtime_seconds",
            &l,
            n.deadtime_ms as f64 / 1e3,
        );
        sample(
            out,
            "hbd_node_late_heartbeats_total",
            &l,
            n.late_heartbeats as f64,
        );
        sample(
            out,
            "hbd_node_longest_gap_seconds",
            &l,
            n.longest_gap_ms as f64 / 1e3,
        );
    }
    family(
        out,
        "hbd_link_state",
        "gauge",
        "State of each link (member x medium), one series per state.",
    );
    for n in &r.nodes {
        for link in &n.links {
            state_set(
                out,
                "hbd_link_state",
                &[("node", &n.name), ("link", &link.name)],
                LINK_STATES,
                &link.status,
            );
        }
    }

    family(
        out,
        "hbd_frames_total",
        "counter",
        "Heartbeat frames received, by outcome.",
    );
    let c = &r.counters;
    for (outcome, n) in [
        ("accepted", c.accepted),
        ("duplicates", c.duplicates),
        ("bad_auth", c.bad_auth),
        ("malformed", c.malformed),
        ("oversize", c.oversize),
        ("replayed", c.replayed),
        ("unknown_node", c.unknown_node),
    ] {
        sample(out, "hbd_frames_total", &[("outcome", outcome)], n as f64);
    }
    family(
        out,
        "hbd_send_errors_total",
        "counter",
        "Heartbeat frames that could not be sent.",
    );
    sample(out, "hbd_send_errors_total", &[], c.send_errors as f64);

    family(
        out,
        "hbd_group_state",
        "gauge",
        "Resource groups' state on this node, one series per state.",
    );
    for g in &r.groups {
        state_set(
            out,
            "hbd_group_state",
            &[("group", &g.name)],
            GROUP_STATES,
            &g.state,
        );
    }
    family(
        out,
        "hbd_group_owner",
        "gauge",
        "The node holding each group (owner=\"\" when none), always 1.",
    );
    for g in &r.groups {
        let owner = g.owner.as_deref().unwrap_or("");
        sample(
            out,
            "hbd_group_owner",
            &[
                ("group", &g.name),
                ("owner", owner),
                ("preferred", &g.preferred),
            ],
            1.0,
        );
    }
}

fn render_reals(out: &mut String, reals: &[RealReport]) {
    family(
        out,
        "hbd_real_server_up",
        "gauge",
        "1 when a real server passes its checks.",
    );
    for r in reals {
        let l = [("virtual", r.virtual_service.as_str()), ("real", &r.real)];
        sample(
            out,
            "hbd_real_server_up",
            &l,
            f64::from(u8::from(r.state == "up")),
        );
    }
    family(
        out,
        "hbd_real_server_weight",
        "gauge",
        "Weight programmed for a real server (absent when not in the table).",
    );
    for r in reals {
        if let Some(w) = r.weight {
            let l = [("virtual", r.virtual_service.as_str()), ("real", &r.real)];
            sample(out, "hbd_real_server_weight", &l, f64::from(w));
        }
    }
}

/// `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// One series per possible state, 1 for `current` (an unforeseen state gets its own).
fn state_set(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    states: &[&str],
    current: &str,
) {
    let extra = (!states.contains(&current)).then_some(current);
    for s in states.iter().copied().chain(extra) {
        let mut l = labels.to_vec();
        l.push(("state", s));
        sample(out, name, &l, f64::from(u8::from(s == current)));
    }
}

/// A label value as the text format wants it: `\`, `"` and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until the task is dropped. At every scrape the
/// metrics are refreshed from the daemon's control socket `control` (when given).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, control: Option<PathBuf>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning.
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections, closing");
            continue;
        };
        let metrics = metrics.clone();
        let control = control.clone();
        tokio::spawn(async move {
            let served =
                tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &metrics, control)).await;
            if !matches!(served, Ok(Ok(()))) {
                tracing::debug!(%peer, "metrics: request timed out or failed");
            }
            drop(slot);
        });
    }
}

/// Reads one request and writes one response, then closes.
async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    control: Option<PathBuf>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let target = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf) {
            Parsed::Partial if buf.len() < MAX_REQUEST => continue,
            Parsed::Partial | Parsed::Bad => {
                return respond(&mut stream, "400 Bad Request", "bad request\n").await;
            }
            Parsed::Request { method, path } => break (method, path),
        };
    };
    match target {
        (m, _) if m != "GET" => respond(&mut stream, "405 Method Not Allowed", "only GET\n").await,
        (_, p) if p.split('?').next() != Some("/metrics") => {
            respond(&mut stream, "404 Not Found", "see /metrics\n").await
        }
        _ => {
            if let Some(socket) = &control {
                metrics.refresh(socket).await;
            }
            let body = metrics.render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            stream.shutdown().await
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await
}

/// A request head, parsed as far as it has arrived.
#[derive(Debug, PartialEq)]
enum Parsed {
    Partial,
    Bad,
    Request { method: String, path: String },
}

fn parse_request(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some(m), Some(p)) => Parsed::Request {
                method: m.to_string(),
                path: p.to_string(),
            },
            _ => Parsed::Bad,
        },
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A report built from JSON, the control protocol's public form (field names only).
    pub(crate) fn report() -> StatusReport {
        let node = |name: &str, state: &str, local: bool, link: &str| {
            json!({
                "name": name,
                "status": if state == "dead" { "dead" } else { "up" },
                "state": state,
                "local": local,
                "last_heard_ms": if local { None } else { Some(12) },
                "deadtime_ms": 400,
                "late_heartbeats": 3,
                "longest_gap_ms": 250,
                "links": [ { "name": "ucast:eth0:192.0.2.12", "status": link } ],
            })
        };
        serde_json::from_value(json!({
            "node": "n1",
            "state": "active",
            "generation": 7,
            "nodes": [node("n1", "active", true, "up"), node("n2", "dead", false, "dead")],
            "groups": [ {
                "name": "192.0.2.100",
                "preferred": "n1",
                "owner": "n1",
                "state": "running",
                "target": "n1",
                "epoch": 2,
                "resources": [ { "spec": "IPaddr::192.0.2.100/24/eth0", "state": "running" } ],
            } ],
            "queued": [],
            "unstable": "",
            "counters": {
                "accepted": 100, "duplicates": 0, "bad_auth": 2, "malformed": 0,
                "oversize": 0, "replayed": 0, "unknown_node": 0, "send_errors": 0,
            },
        }))
        .expect("a status report")
    }

    fn real(state: &str) -> RealReport {
        RealReport {
            fallback: false,
            virtual_service: "tcp 192.0.2.10:80".into(),
            real: "198.51.100.5:80".into(),
            state: state.into(),
            weight: Some(1),
            since_change_s: 1.0,
            last_check_s: Some(0.5),
            reason: None,
            service_name: None,
            comment: None,
        }
    }

    #[test]
    fn status_becomes_state_sets_counters_and_owners() {
        let m = Metrics::new();
        assert!(m.render().contains("\nhbd_up 0\n") || m.render().contains("hbd_up 0\n"));
        m.observe_status(&report());
        m.observe_reals(&[real("up")]);
        let text = m.render();
        for line in [
            "hbd_up 1",
            "hbd_node_state{node=\"n1\",state=\"active\"} 1",
            "hbd_node_state{node=\"n1\",state=\"up\"} 0",
            "hbd_node_state{node=\"n2\",state=\"dead\"} 1",
            "hbd_link_state{node=\"n2\",link=\"ucast:eth0:192.0.2.12\",state=\"dead\"} 1",
            "hbd_node_late_heartbeats_total{node=\"n2\"} 3",
            "hbd_node_longest_gap_seconds{node=\"n2\"} 0.25",
            "hbd_frames_total{outcome=\"accepted\"} 100",
            "hbd_frames_total{outcome=\"bad_auth\"} 2",
            "hbd_group_state{group=\"192.0.2.100\",state=\"running\"} 1",
            "hbd_group_owner{group=\"192.0.2.100\",owner=\"n1\",preferred=\"n1\"} 1",
            "hbd_real_server_up{virtual=\"tcp 192.0.2.10:80\",real=\"198.51.100.5:80\"} 1",
            "hbd_pair_stable 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in\n{text}");
        }
        m.observe_unreachable();
        let text = m.render();
        assert!(text.lines().any(|l| l == "hbd_up 0"));
        assert!(
            !text.contains("hbd_node_state{"),
            "stale states kept:\n{text}"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::new();
        let t = m.telemetry();
        let gaps = t.heartbeat_gaps("n2");
        gaps.observe(Duration::from_millis(10));
        gaps.observe(Duration::from_millis(10));
        t.observe_heartbeat_gap("n2", Duration::from_millis(150));
        t.observe_failover("192.0.2.100", Duration::from_millis(300));
        t.observe_check(Duration::from_millis(3));
        t.observe_dataplane_apply(Duration::from_micros(400));
        let text = m.render();
        for line in [
            "hbd_heartbeat_interval_seconds_bucket{node=\"n2\",le=\"0.005\"} 0",
            "hbd_heartbeat_interval_seconds_bucket{node=\"n2\",le=\"0.01\"} 2",
            "hbd_heartbeat_interval_seconds_bucket{node=\"n2\",le=\"0.1\"} 2",
            "hbd_heartbeat_interval_seconds_bucket{node=\"n2\",le=\"0.2\"} 3",
            "hbd_heartbeat_interval_seconds_bucket{node=\"n2\",le=\"+Inf\"} 3",
            "hbd_heartbeat_interval_seconds_sum{node=\"n2\"} 0.17",
            "hbd_heartbeat_interval_seconds_count{node=\"n2\"} 3",
            "hbd_failovers_total{group=\"192.0.2.100\"} 1",
            "hbd_last_failover_duration_seconds 0.3",
            "hbd_failover_duration_seconds_count 1",
            "hbd_check_duration_seconds_bucket{le=\"0.005\"} 1",
            "hbd_dataplane_apply_seconds_bucket{le=\"0.0005\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in\n{text}");
        }
        assert_eq!(gaps.count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn unforeseen_states_get_their_own_series() {
        let mut out = String::new();
        state_set(&mut out, "x", &[], &["up", "dead"], "weird");
        assert_eq!(
            out,
            "x{state=\"up\"} 0\nx{state=\"dead\"} 0\nx{state=\"weird\"} 1\n"
        );
    }

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_get_metrics_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Arc::new(Metrics::new());
        m.observe_status(&report());
        let server = tokio::spawn(serve(listener, m, None));
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE));
        assert!(ok.contains("\r\n\r\n# HELP hbd_up "), "{ok}");
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let other = get(addr, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let junk = get(addr, "\x01\x02 nonsense\r\n\r\n").await;
        assert!(junk.starts_with("HTTP/1.1 400"), "{junk}");
        server.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped_after_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::new()), None));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        let mut rest = Vec::new();
        // With the clock paused, the read resolves only once the server's timeout fires.
        let n = tokio::time::timeout(REQUEST_TIMEOUT * 2, s.read_to_end(&mut rest))
            .await
            .expect("the server closed the connection")
            .unwrap();
        assert_eq!(n, 0, "no answer to an unfinished request");
        server.abort();
    }

    #[test]
    fn request_heads_parse_incrementally() {
        assert_eq!(parse_request(b"GET /metr"), Parsed::Partial);
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
            Parsed::Request {
                method: "GET".into(),
                path: "/metrics?x=1".into()
            }
        );
        assert_eq!(parse_request(b"\x01 \r\n\r\n"), Parsed::Bad);
    }
}
