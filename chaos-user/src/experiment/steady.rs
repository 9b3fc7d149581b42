//! The steady state's metrics: their names as written in experiment files, and their value over
//! one sampling interval, computed from two session snapshots (and the probes' results).
use std::{collections::BTreeMap, fmt, str::FromStr};

use chaos_common::HIST_BUCKETS;

use super::probe::ProbeTally;
use crate::snapshot::{Snapshot, TargetSnapshot, percentile_ns};

/// What a syscall metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SyscallWhat {
    CallsPerSec,
    ErrorsPerSec,
    ErrorRatio,
    P50Us,
    P99Us,
}

/// What a probe metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeWhat {
    SuccessRatio,
    LatencyMs,
}

/// A metric of the steady state (see the README's "Experiments" section for the list).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// HTTP responses sent per second, any status.
    HttpRequests,
    /// Responses of one status class (2 = 2xx...) per second.
    HttpClass(u8),
    /// Share of responses of one class.
    HttpClassRatio(u8),
    /// Response latency percentile (50, 90, 99), in ms.
    HttpLatency(u8),
    /// Completed syscalls per second, all syscalls.
    Calls,
    /// Failed syscalls per second, all syscalls.
    Errors,
    Syscall {
        name: String,
        nr: u32,
        what: SyscallWhat,
    },
    /// CPU seconds per second.
    Cpu,
    MemoryMb,
    IoReadBytes,
    IoWriteBytes,
    /// Injections per second by the perturbation running.
    Injections,
    Probe {
        name: String,
        what: ProbeWhat,
    },
}

impl Metric {
    /// The unit values are in (chart axes).
    pub fn unit(&self) -> &'static str {
        match self {
            Metric::HttpRequests | Metric::HttpClass(_) => "responses/s",
            Metric::HttpClassRatio(_)
            | Metric::Probe {
                what: ProbeWhat::SuccessRatio,
                ..
            } => "ratio",
            Metric::HttpLatency(_)
            | Metric::Probe {
                what: ProbeWhat::LatencyMs,
                ..
            } => "ms",
            Metric::Calls | Metric::Errors => "calls/s",
            Metric::Syscall { what, .. } => match what {
                SyscallWhat::CallsPerSec | SyscallWhat::ErrorsPerSec => "calls/s",
                SyscallWhat::ErrorRatio => "ratio",
                SyscallWhat::P50Us | SyscallWhat::P99Us => "µs",
            },
            Metric::Cpu => "cores",
            Metric::MemoryMb => "MB",
            Metric::IoReadBytes | Metric::IoWriteBytes => "bytes/s",
            Metric::Injections => "injections/s",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::HttpRequests => f.write_str("http.requests_per_sec"),
            Metric::HttpClass(class) => write!(f, "http.{class}xx_per_sec"),
            Metric::HttpClassRatio(class) => write!(f, "http.{class}xx_ratio"),
            Metric::HttpLatency(q) => write!(f, "http.p{q}_ms"),
            Metric::Calls => f.write_str("syscalls.calls_per_sec"),
            Metric::Errors => f.write_str("syscalls.errors_per_sec"),
            Metric::Syscall { name, what, .. } => {
                let what = match what {
                    SyscallWhat::CallsPerSec => "calls_per_sec",
                    SyscallWhat::ErrorsPerSec => "errors_per_sec",
                    SyscallWhat::ErrorRatio => "error_ratio",
                    SyscallWhat::P50Us => "p50_us",
                    SyscallWhat::P99Us => "p99_us",
                };
                write!(f, "syscall.{name}.{what}")
            }
            Metric::Cpu => f.write_str("cpu.cores"),
            Metric::MemoryMb => f.write_str("memory.mb"),
            Metric::IoReadBytes => f.write_str("io.read_bytes_per_sec"),
            Metric::IoWriteBytes => f.write_str("io.write_bytes_per_sec"),
            Metric::Injections => f.write_str("injections_per_sec"),
            Metric::Probe { name, what } => match what {
                ProbeWhat::SuccessRatio => write!(f, "probe.{name}.success_ratio"),
                ProbeWhat::LatencyMs => write!(f, "probe.{name}.latency_ms"),
            },
        }
    }
}

pub const METRIC_NAMES: &str = "http.requests_per_sec, http.{2,3,4,5}xx_per_sec, http.{4,5}xx_ratio, http.p{50,90,99}_ms, syscalls.calls_per_sec, syscalls.errors_per_sec, syscall.NAME.{calls_per_sec,errors_per_sec,error_ratio,p50_us,p99_us}, cpu.cores, memory.mb, io.read_bytes_per_sec, io.write_bytes_per_sec, injections_per_sec, probe.NAME.{success_ratio,latency_ms}";

impl FromStr for Metric {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let unknown = || format!("unknown metric `{text}` (known: {METRIC_NAMES})");
        let fixed = match text {
            "http.requests_per_sec" => Some(Metric::HttpRequests),
            "syscalls.calls_per_sec" => Some(Metric::Calls),
            "syscalls.errors_per_sec" => Some(Metric::Errors),
            "cpu.cores" => Some(Metric::Cpu),
            "memory.mb" => Some(Metric::MemoryMb),
            "io.read_bytes_per_sec" => Some(Metric::IoReadBytes),
            "io.write_bytes_per_sec" => Some(Metric::IoWriteBytes),
            "injections_per_sec" => Some(Metric::Injections),
            _ => None,
        };
        if let Some(metric) = fixed {
            return Ok(metric);
        }
        if let Some(rest) = text.strip_prefix("http.") {
            let class = |suffix: &str| {
                let digit = rest.strip_suffix(suffix)?.strip_suffix("xx")?;
                let class: u8 = digit.parse().ok()?;
                (1..=5).contains(&class).then_some(class)
            };
            if let Some(class) = class("_per_sec") {
                return Ok(Metric::HttpClass(class));
            }
            if let Some(class) = class("_ratio") {
                return Ok(Metric::HttpClassRatio(class));
            }
            let quantile = rest
                .strip_prefix('p')
                .and_then(|r| r.strip_suffix("_ms"))
                .and_then(|q| q.parse::<u8>().ok())
                .filter(|q| matches!(q, 50 | 90 | 99));
            return quantile.map(Metric::HttpLatency).ok_or_else(unknown);
        }
        if let Some(rest) = text.strip_prefix("syscall.") {
            let (name, what) = rest.rsplit_once('.').ok_or_else(unknown)?;
            let what = match what {
                "calls_per_sec" => SyscallWhat::CallsPerSec,
                "errors_per_sec" => SyscallWhat::ErrorsPerSec,
                "error_ratio" => SyscallWhat::ErrorRatio,
                "p50_us" => SyscallWhat::P50Us,
                "p99_us" => SyscallWhat::P99Us,
                _ => return Err(unknown()),
            };
            let nr =
                crate::names::syscall_number(name).map_err(|e| format!("metric `{text}`: {e}"))?;
            return Ok(Metric::Syscall {
                name: name.to_owned(),
                nr,
                what,
            });
        }
        if let Some(rest) = text.strip_prefix("probe.") {
            let (name, what) = rest.rsplit_once('.').ok_or_else(unknown)?;
            let what = match what {
                "success_ratio" => ProbeWhat::SuccessRatio,
                "latency_ms" => ProbeWhat::LatencyMs,
                _ => return Err(unknown()),
            };
            if name.is_empty() {
                return Err(unknown());
            }
            return Ok(Metric::Probe {
                name: name.to_owned(),
                what,
            });
        }
        Err(unknown())
    }
}

/// A metric over all targets, or over one (`target:` in a condition).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricRef {
    pub metric: Metric,
    pub target: Option<String>,
}

impl MetricRef {
    pub fn all(metric: Metric) -> Self {
        Self {
            metric,
            target: None,
        }
    }

    /// The column name in samples: `http.5xx_ratio` or `http.5xx_ratio{web}`.
    pub fn key(&self) -> String {
        match &self.target {
            Some(target) => format!("{}{{{target}}}", self.metric),
            None => self.metric.to_string(),
        }
    }
}

/// One sampling interval: the snapshots at its ends and what the probes saw in it.
pub struct Interval<'a> {
    pub before: &'a Snapshot,
    pub now: &'a Snapshot,
    pub seconds: f64,
    /// Injections made in the interval by the running perturbation.
    pub injections: u64,
    pub probes: &'a BTreeMap<String, ProbeTally>,
}

/// Counter deltas over the interval, summed over the selected targets.
#[derive(Default)]
struct Deltas {
    http: BTreeMap<u32, u64>,
    http_hist: Vec<u64>,
    calls: u64,
    errors: u64,
    /// syscall nr -> (calls, errors, latency histogram)
    syscalls: BTreeMap<u32, (u64, u64, Vec<u64>)>,
    cpu_seconds: Option<f64>,
    memory_bytes: Option<u64>,
    io_read: Option<u64>,
    io_write: Option<u64>,
}

fn add_hist(sum: &mut Vec<u64>, now: &[u64; HIST_BUCKETS], before: Option<&[u64; HIST_BUCKETS]>) {
    sum.resize(HIST_BUCKETS, 0);
    for (i, slot) in sum.iter_mut().enumerate() {
        *slot += now[i].saturating_sub(before.map_or(0, |b| b[i]));
    }
}

fn add_opt<T: std::ops::Add<Output = T>>(sum: &mut Option<T>, value: Option<T>) {
    if let Some(value) = value {
        *sum = Some(match sum.take() {
            Some(s) => s + value,
            None => value,
        });
    }
}

fn deltas(interval: &Interval, target: Option<&str>) -> Deltas {
    let mut d = Deltas::default();
    let selected = interval
        .now
        .targets
        .iter()
        .filter(|t| target.is_none_or(|label| t.target == label));
    for now in selected {
        let before: Option<&TargetSnapshot> = interval
            .before
            .targets
            .iter()
            .find(|b| b.target == now.target);
        if let Some(http) = &now.http {
            let old = before.and_then(|b| b.http.as_ref());
            for (&code, &count) in &http.responses {
                let prev = old
                    .and_then(|o| o.responses.get(&code))
                    .copied()
                    .unwrap_or(0);
                *d.http.entry(code).or_default() += count.saturating_sub(prev);
            }
            add_hist(
                &mut d.http_hist,
                &http.latency_hist,
                old.map(|o| &o.latency_hist),
            );
        }
        for call in &now.syscalls {
            let old = before.and_then(|b| b.syscalls.iter().find(|s| s.nr == call.nr));
            let calls = call.calls.saturating_sub(old.map_or(0, |o| o.calls));
            let errors = call.errors.saturating_sub(old.map_or(0, |o| o.errors));
            d.calls += calls;
            d.errors += errors;
            let entry = d.syscalls.entry(call.nr).or_default();
            entry.0 += calls;
            entry.1 += errors;
            add_hist(
                &mut entry.2,
                &call.latency_hist,
                old.map(|o| &o.latency_hist),
            );
        }
        // Resource counters restart with a restarted container's new cgroup: no value then.
        let r = &now.resources;
        let b = before.map(|b| b.resources).unwrap_or_default();
        let grown = |now: Option<f64>, before: Option<f64>| match (now, before) {
            (Some(n), Some(b)) if n >= b => Some(n - b),
            _ => None,
        };
        add_opt(&mut d.cpu_seconds, grown(r.cpu_seconds, b.cpu_seconds));
        add_opt(&mut d.memory_bytes, r.memory_bytes);
        let bytes =
            |n: Option<u64>, b: Option<u64>| grown(n.map(|v| v as f64), b.map(|v| v as f64));
        add_opt(
            &mut d.io_read,
            bytes(r.io_read_bytes, b.io_read_bytes).map(|v| v as u64),
        );
        add_opt(
            &mut d.io_write,
            bytes(r.io_write_bytes, b.io_write_bytes).map(|v| v as u64),
        );
    }
    d
}

fn hist_percentile(hist: &[u64], q: f64) -> Option<f64> {
    let hist: [u64; HIST_BUCKETS] = hist.try_into().ok()?;
    percentile_ns(&hist, q)
}

impl MetricRef {
    /// The metric's value over the interval; None where it is undefined (a ratio of nothing).
    pub fn value(&self, interval: &Interval) -> Option<f64> {
        let seconds = interval.seconds.max(1e-3);
        if let Metric::Probe { name, what } = &self.metric {
            let tally = interval.probes.get(name)?;
            return match what {
                ProbeWhat::SuccessRatio => tally.success_ratio(),
                ProbeWhat::LatencyMs => tally.mean_latency_ms(),
            };
        }
        if self.metric == Metric::Injections {
            return Some(interval.injections as f64 / seconds);
        }
        let d = deltas(interval, self.target.as_deref());
        let responses: u64 = d.http.values().sum();
        let class = |class: u8| -> u64 {
            let range = u32::from(class) * 100..u32::from(class) * 100 + 100;
            d.http.range(range).map(|(_, n)| n).sum()
        };
        match &self.metric {
            Metric::HttpRequests => Some(responses as f64 / seconds),
            Metric::HttpClass(c) => Some(class(*c) as f64 / seconds),
            Metric::HttpClassRatio(c) => {
                (responses > 0).then(|| class(*c) as f64 / responses as f64)
            }
            Metric::HttpLatency(q) => {
                hist_percentile(&d.http_hist, f64::from(*q) / 100.0).map(|ns| ns / 1e6)
            }
            Metric::Calls => Some(d.calls as f64 / seconds),
            Metric::Errors => Some(d.errors as f64 / seconds),
            Metric::Syscall { nr, what, .. } => {
                let (calls, errors, hist) = d.syscalls.get(nr).cloned().unwrap_or_default();
                match what {
                    SyscallWhat::CallsPerSec => Some(calls as f64 / seconds),
                    SyscallWhat::ErrorsPerSec => Some(errors as f64 / seconds),
                    SyscallWhat::ErrorRatio => (calls > 0).then(|| errors as f64 / calls as f64),
                    SyscallWhat::P50Us => hist_percentile(&hist, 0.5).map(|ns| ns / 1e3),
                    SyscallWhat::P99Us => hist_percentile(&hist, 0.99).map(|ns| ns / 1e3),
                }
            }
            Metric::Cpu => d.cpu_seconds.map(|s| s / seconds),
            Metric::MemoryMb => d.memory_bytes.map(|b| b as f64 / 1e6),
            Metric::IoReadBytes => d.io_read.map(|b| b as f64 / seconds),
            Metric::IoWriteBytes => d.io_write.map(|b| b as f64 / seconds),
            Metric::Injections | Metric::Probe { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip() {
        for name in [
            "http.requests_per_sec",
            "http.5xx_per_sec",
            "http.2xx_per_sec",
            "http.5xx_ratio",
            "http.p99_ms",
            "syscalls.calls_per_sec",
            "syscalls.errors_per_sec",
            "syscall.openat.errors_per_sec",
            "syscall.connect.error_ratio",
            "syscall.read.p99_us",
            "cpu.cores",
            "memory.mb",
            "io.read_bytes_per_sec",
            "injections_per_sec",
            "probe.health.success_ratio",
            "probe.health.latency_ms",
        ] {
            let metric: Metric = name.parse().unwrap();
            assert_eq!(metric.to_string(), name);
        }
        for bad in [
            "http.6xx_ratio",
            "http.p42_ms",
            "syscall.opnat.calls_per_sec",
            "syscall.openat.colour",
            "probe..success_ratio",
            "cpu",
            "",
        ] {
            assert!(bad.parse::<Metric>().is_err(), "{bad}");
        }
    }
}
