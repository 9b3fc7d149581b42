//! The live view (a `top` of system calls per target) and its JSON twin.
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    resources::ResourceUsage,
    snapshot::{self, InjectionSnapshot, Snapshot, SyscallRate, TargetSnapshot},
};

/// Rows shown per target in the terminal view; JSON carries them all.
const ROWS_PER_TARGET: usize = 15;

#[derive(Debug, Serialize)]
pub struct IntervalReport {
    pub unix_time_ms: u128,
    pub interval_seconds: f64,
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub cgroup_id: u64,
    pub active: bool,
    pub resources: ResourceUsage,
    pub syscalls: Vec<SyscallRate>,
    pub injections: Vec<InjectionSnapshot>,
    pub http: Option<HttpRate>,
}

/// A target's HTTP responses over the interval.
#[derive(Debug, Serialize)]
pub struct HttpRate {
    pub responses_total: u64,
    pub responses_per_sec: f64,
    /// status code -> responses in the interval
    pub codes: BTreeMap<u32, u64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn http_rate(
    before: Option<&TargetSnapshot>,
    now: &TargetSnapshot,
    seconds: f64,
) -> Option<HttpRate> {
    let http = now.http.as_ref()?;
    let previous = before.and_then(|b| b.http.as_ref());
    let codes: BTreeMap<u32, u64> = http
        .responses
        .iter()
        .map(|(code, count)| {
            let old = previous
                .and_then(|p| p.responses.get(code))
                .copied()
                .unwrap_or(0);
            (*code, count - old)
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    let mut hist = http.latency_hist;
    if let Some(previous) = previous {
        for (bucket, old) in hist.iter_mut().zip(previous.latency_hist) {
            *bucket -= old;
        }
    }
    Some(HttpRate {
        responses_total: http.responses.values().sum(),
        responses_per_sec: codes.values().sum::<u64>() as f64 / seconds.max(1e-3),
        codes,
        p50_ms: snapshot::percentile_ns(&hist, 0.50).map(|ns| ns / 1e6),
        p99_ms: snapshot::percentile_ns(&hist, 0.99).map(|ns| ns / 1e6),
    })
}

pub fn interval_report(before: Option<&Snapshot>, now: &Snapshot) -> IntervalReport {
    let seconds = before.map_or(1.0, |b| now.taken.duration_since(b.taken).as_secs_f64());
    let previous: BTreeMap<&str, _> = before
        .map(|b| b.targets.iter().map(|t| (t.target.as_str(), t)).collect())
        .unwrap_or_default();
    IntervalReport {
        unix_time_ms: now.unix_time_ms,
        interval_seconds: seconds,
        targets: now
            .targets
            .iter()
            .map(|target| TargetReport {
                target: target.target.clone(),
                cgroup_id: target.cgroup_id,
                active: target.active,
                resources: target.resources,
                syscalls: snapshot::rates(
                    previous.get(target.target.as_str()).copied(),
                    target,
                    seconds,
                ),
                injections: target.injections.clone(),
                http: http_rate(
                    previous.get(target.target.as_str()).copied(),
                    target,
                    seconds,
                ),
            })
            .collect(),
    }
}

pub fn render_text(report: &IntervalReport, header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    for target in &report.targets {
        let _ = writeln!(out);
        let state = if target.active { "" } else { "  [gone]" };
        let _ = writeln!(
            out,
            "{} (cgroup {}){state}   cpu {}  mem {}  io r {} w {}",
            target.target,
            target.cgroup_id,
            target
                .resources
                .cpu_seconds
                .map_or("-".into(), |s| format!("{s:.2}s")),
            target.resources.memory_bytes.map_or("-".into(), bytes),
            target.resources.io_read_bytes.map_or("-".into(), bytes),
            target.resources.io_write_bytes.map_or("-".into(), bytes),
        );
        if let Some(http) = &target.http {
            let _ = writeln!(out, "{}", http_line(http));
        }
        let _ = writeln!(
            out,
            "  {:<18} {:>10} {:>10} {:<24} {:>10} {:>10} {:>12}",
            "SYSCALL", "CALLS/s", "ERRORS/s", "ERRNO", "P50", "P99", "TOTAL"
        );
        for call in target.syscalls.iter().take(ROWS_PER_TARGET) {
            let errnos = call
                .errnos
                .iter()
                .map(|(name, count)| format!("{name}:{count}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "  {:<18} {:>10.1} {:>10.1} {:<24} {:>10} {:>10} {:>12}",
                call.syscall,
                call.calls_per_sec,
                call.errors_per_sec,
                if errnos.is_empty() {
                    "-".to_owned()
                } else {
                    errnos
                },
                micros(call.p50_us),
                micros(call.p99_us),
                call.calls_total,
            );
        }
        if target.syscalls.len() > ROWS_PER_TARGET {
            let _ = writeln!(
                out,
                "  ... {} more syscalls",
                target.syscalls.len() - ROWS_PER_TARGET
            );
        }
    }
    out
}

/// `  HTTP  1200.0 resp/s  200:1150 404:40 500:10  p50 1.2ms  p99 3.4ms  total 56789`, the codes
/// over the interval.
fn http_line(http: &HttpRate) -> String {
    let codes = match http.codes.is_empty() {
        true => "-".to_owned(),
        false => http
            .codes
            .iter()
            .map(|(code, count)| format!("{code}:{count}"))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let millis = |ms: Option<f64>| micros(ms.map(|ms| ms * 1000.0));
    format!(
        "  HTTP  {:.1} resp/s  {codes}  p50 {}  p99 {}  total {}",
        http.responses_per_sec,
        millis(http.p50_ms),
        millis(http.p99_ms),
        http.responses_total
    )
}

fn micros(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(us) if us >= 1000.0 => format!("{:.1}ms", us / 1000.0),
        Some(us) => format!("{us:.1}µs"),
    }
}

fn bytes(value: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut size = value as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_view_shows_http_beside_the_syscalls() {
        let report = IntervalReport {
            unix_time_ms: 0,
            interval_seconds: 1.0,
            targets: vec![TargetReport {
                target: "web".into(),
                cgroup_id: 7,
                active: true,
                resources: ResourceUsage::default(),
                syscalls: Vec::new(),
                injections: Vec::new(),
                http: Some(HttpRate {
                    responses_total: 1234,
                    responses_per_sec: 50.0,
                    codes: BTreeMap::from([(200, 45), (503, 5)]),
                    p50_ms: Some(1.5),
                    p99_ms: None,
                }),
            }],
        };
        let text = render_text(&report, "header");
        assert!(
            text.contains("  HTTP  50.0 resp/s  200:45 503:5  p50 1.5ms  p99 -  total 1234\n"),
            "{text}"
        );
    }
}
