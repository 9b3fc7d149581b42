//! The Prometheus endpoint. Every scrape reads the BPF maps afresh, so the numbers are exactly
//! what the kernel counted at that moment.
use std::{net::SocketAddr, sync::Arc};

use chaos_common::{HIST_BUCKETS, bucket_upper_ns};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder as _, TextEncoder,
    proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType},
};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::{
    session::Session,
    snapshot::{Snapshot, TargetSnapshot},
};

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error(
        "cannot serve metrics on {addr}: {source} (choose another address with --metrics-addr, or --no-metrics)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds first, so a busy port is reported before anything is attached.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `/metrics` in the background; returns the address it listens on.
pub fn spawn(listener: TcpListener, session: Arc<Session>) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let session = session.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let session = session.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&request, &session)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

fn respond(request: &Request<hyper::body::Incoming>, session: &Session) -> Response<Full<Bytes>> {
    let reply = |status, content_type: &str, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    match request.uri().path() {
        "/metrics" => match session.snapshot() {
            Ok(snapshot) => {
                let mut body = Vec::new();
                let encoder = TextEncoder::new();
                match encoder.encode(&families(&snapshot), &mut body) {
                    Ok(()) => reply(StatusCode::OK, encoder.format_type(), body),
                    Err(e) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        e.to_string().into(),
                    ),
                }
            }
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string().into(),
            ),
        },
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            b"syschaos: metrics at /metrics\n".to_vec(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

/// All metric families of a snapshot, in the exposition order of the README's reference.
pub fn families(snapshot: &Snapshot) -> Vec<MetricFamily> {
    let mut families = Families::new();
    for target in &snapshot.targets {
        families.add(target);
    }
    families.exposed()
}

/// The metric families, filled target by target.
struct Families {
    calls: MetricFamily,
    errors: MetricFamily,
    durations: MetricFamily,
    cpu: MetricFamily,
    memory: MetricFamily,
    io: MetricFamily,
    injections: MetricFamily,
    http_responses: MetricFamily,
    http_durations: MetricFamily,
    trace_drops: MetricFamily,
}

impl Families {
    /// Every family, without samples yet.
    fn new() -> Self {
        Self {
            calls: family(
                "syschaos_syscalls_total",
                "System calls completed, by syscall.",
                MetricType::COUNTER,
            ),
            errors: family(
                "syschaos_syscall_errors_total",
                "System calls that returned an error, by syscall and errno.",
                MetricType::COUNTER,
            ),
            durations: family(
                "syschaos_syscall_duration_seconds",
                "Time from syscall entry to exit.",
                MetricType::HISTOGRAM,
            ),
            cpu: family(
                "syschaos_container_cpu_seconds_total",
                "CPU time used by the target's cgroup.",
                MetricType::COUNTER,
            ),
            memory: family(
                "syschaos_container_memory_bytes",
                "Memory charged to the target's cgroup.",
                MetricType::GAUGE,
            ),
            io: family(
                "syschaos_container_io_bytes_total",
                "Block IO of the target's cgroup, by direction.",
                MetricType::COUNTER,
            ),
            injections: family(
                "syschaos_injections_total",
                "Faults injected, by rule: syscall, errno (or signal) and engine.",
                MetricType::COUNTER,
            ),
            http_responses: family(
                "syschaos_http_responses_total",
                "HTTP/1.x responses the target sent, by status code.",
                MetricType::COUNTER,
            ),
            http_durations: family(
                "syschaos_http_response_duration_seconds",
                "From a request segment's arrival to its response segment's departure, same connection.",
                MetricType::HISTOGRAM,
            ),
            trace_drops: family(
                "syschaos_trace_dropped_events_total",
                "Trace events lost because chaos-user trace fell behind (the counters are exact anyway).",
                MetricType::COUNTER,
            ),
        }
    }

    /// One target's samples: trace drops, HTTP, injections, syscalls and resources.
    fn add(&mut self, target: &TargetSnapshot) {
        let label = target.target.as_str();
        if let Some(drops) = target.trace_drops {
            self.trace_drops
                .mut_metric()
                .push(counter(&[("target", label)], drops as f64));
        }
        if let Some(http) = &target.http {
            for (code, count) in &http.responses {
                let code = code.to_string();
                let labels = [("target", label), ("code", code.as_str())];
                self.http_responses
                    .mut_metric()
                    .push(counter(&labels, *count as f64));
            }
            self.http_durations.mut_metric().push(histogram(
                &[("target", label)],
                &http.latency_hist,
                http.latency_sum_ns,
            ));
        }
        for injection in &target.injections {
            let labels = [
                ("target", label),
                ("syscall", injection.syscall.as_str()),
                ("errno", injection.fault.as_str()),
                ("engine", injection.engine),
            ];
            self.injections
                .mut_metric()
                .push(counter(&labels, injection.count as f64));
        }
        self.add_syscalls(target);
        self.add_resources(target);
    }

    fn add_syscalls(&mut self, target: &TargetSnapshot) {
        let label = target.target.as_str();
        for call in &target.syscalls {
            let labels = [("target", label), ("syscall", call.syscall.as_str())];
            self.calls
                .mut_metric()
                .push(counter(&labels, call.calls as f64));
            for (errno, count) in &call.errnos {
                let labels = [
                    ("target", label),
                    ("syscall", call.syscall.as_str()),
                    ("errno", errno.as_str()),
                ];
                self.errors
                    .mut_metric()
                    .push(counter(&labels, *count as f64));
            }
            self.durations.mut_metric().push(histogram(
                &labels,
                &call.latency_hist,
                call.latency_sum_ns,
            ));
        }
    }

    fn add_resources(&mut self, target: &TargetSnapshot) {
        let label = target.target.as_str();
        let resources = &target.resources;
        if let Some(seconds) = resources.cpu_seconds {
            self.cpu
                .mut_metric()
                .push(counter(&[("target", label)], seconds));
        }
        if let Some(bytes) = resources.memory_bytes {
            let mut metric = Metric::from_label(label_pairs(&[("target", label)]));
            let mut gauge = Gauge::default();
            gauge.set_value(bytes as f64);
            metric.set_gauge(gauge);
            self.memory.mut_metric().push(metric);
        }
        for (direction, bytes) in [
            ("read", resources.io_read_bytes),
            ("write", resources.io_write_bytes),
        ] {
            if let Some(bytes) = bytes {
                self.io.mut_metric().push(counter(
                    &[("target", label), ("direction", direction)],
                    bytes as f64,
                ));
            }
        }
    }

    /// The families in exposition order, those without samples left out.
    fn exposed(self) -> Vec<MetricFamily> {
        let Self {
            calls,
            errors,
            durations,
            cpu,
            memory,
            io,
            injections,
            http_responses,
            http_durations,
            trace_drops,
        } = self;
        // The text encoder refuses a family without samples (no rules, a target's cgroup gone).
        let mut families = vec![
            calls,
            errors,
            durations,
            injections,
            http_responses,
            http_durations,
            trace_drops,
            cpu,
            memory,
            io,
        ];
        families.retain(|family| !family.get_metric().is_empty());
        families
    }
}

fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

fn counter(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut metric = Metric::from_label(label_pairs(labels));
    let mut counter = Counter::default();
    counter.set_value(value);
    metric.set_counter(counter);
    metric
}

/// The kernel's log2 buckets as Prometheus cumulative buckets (`le` = bucket's upper bound).
fn histogram(labels: &[(&str, &str)], hist: &[u64; HIST_BUCKETS], sum_ns: u64) -> Metric {
    let mut cumulative = 0;
    let buckets = hist[..HIST_BUCKETS - 1]
        .iter()
        .enumerate()
        .map(|(i, count)| {
            cumulative += count;
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(bucket_upper_ns(i) as f64 / 1e9);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    let mut histogram = Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(hist.iter().sum());
    histogram.set_sample_sum(sum_ns as f64 / 1e9);
    let mut metric = Metric::from_label(label_pairs(labels));
    metric.set_histogram(histogram);
    metric
}
