//! A point-in-time reading of every target's counters, and the rates between two readings.
use std::{collections::BTreeMap, time::Instant};

use chaos_common::{HIST_BUCKETS, SyscallStats, bucket_upper_ns};
use serde::Serialize;

use crate::{names, resources::ResourceUsage};

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    #[serde(skip)]
    pub taken: Instant,
    pub unix_time_ms: u128,
    pub targets: Vec<TargetSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetSnapshot {
    pub target: String,
    pub cgroup_id: u64,
    /// False once the container went away (its counters stay readable).
    pub active: bool,
    pub resources: ResourceUsage,
    pub syscalls: Vec<SyscallSnapshot>,
    /// One per rule on this target.
    pub injections: Vec<InjectionSnapshot>,
    /// HTTP/1.x responses it sent, if any.
    pub http: Option<crate::http::HttpSnapshot>,
    /// Trace events lost because the reader fell behind (when tracing).
    pub trace_drops: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InjectionSnapshot {
    pub syscall: String,
    /// errno or signal name.
    pub fault: String,
    pub engine: &'static str,
    /// Injections made so far.
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyscallSnapshot {
    pub syscall: String,
    pub nr: u32,
    pub calls: u64,
    pub errors: u64,
    /// errno name -> failures
    pub errnos: BTreeMap<String, u64>,
    pub latency_sum_ns: u64,
    #[serde(skip)]
    pub latency_hist: [u64; HIST_BUCKETS],
}

impl SyscallSnapshot {
    pub fn new(nr: u32, stats: &SyscallStats, errnos: BTreeMap<String, u64>) -> Self {
        Self {
            syscall: names::syscall_name(nr),
            nr,
            calls: stats.calls,
            errors: stats.errors,
            errnos,
            latency_sum_ns: stats.latency_sum_ns,
            latency_hist: stats.latency_hist,
        }
    }
}

/// What a target did between two snapshots, per syscall, busiest first.
#[derive(Debug, Clone, Serialize)]
pub struct SyscallRate {
    pub syscall: String,
    pub calls_total: u64,
    pub calls_per_sec: f64,
    pub errors_per_sec: f64,
    /// errno name -> failures in the interval
    pub errnos: BTreeMap<String, u64>,
    /// errno name -> failures since the target was first counted (like `calls_total`)
    pub errnos_total: BTreeMap<String, u64>,
    /// Latency percentiles over the interval's calls, in microseconds.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

pub fn rates(
    before: Option<&TargetSnapshot>,
    now: &TargetSnapshot,
    seconds: f64,
) -> Vec<SyscallRate> {
    let seconds = seconds.max(1e-3);
    let mut rates: Vec<SyscallRate> = now
        .syscalls
        .iter()
        .map(|call| {
            let previous = before.and_then(|b| b.syscalls.iter().find(|p| p.nr == call.nr));
            let calls = call.calls - previous.map_or(0, |p| p.calls);
            let errors = call.errors - previous.map_or(0, |p| p.errors);
            let mut hist = call.latency_hist;
            if let Some(previous) = previous {
                for (bucket, old) in hist.iter_mut().zip(previous.latency_hist) {
                    *bucket -= old;
                }
            }
            let errnos = call
                .errnos
                .iter()
                .map(|(name, count)| {
                    let old = previous
                        .and_then(|p| p.errnos.get(name))
                        .copied()
                        .unwrap_or(0);
                    (name.clone(), count - old)
                })
                .filter(|(_, count)| *count > 0)
                .collect();
            SyscallRate {
                syscall: call.syscall.clone(),
                calls_total: call.calls,
                calls_per_sec: calls as f64 / seconds,
                errors_per_sec: errors as f64 / seconds,
                errnos,
                errnos_total: call.errnos.clone(),
                p50_us: percentile_ns(&hist, 0.50).map(|ns| ns / 1e3),
                p99_us: percentile_ns(&hist, 0.99).map(|ns| ns / 1e3),
            }
        })
        .collect();
    rates.sort_by(|a, b| {
        b.calls_per_sec
            .total_cmp(&a.calls_per_sec)
            .then(b.calls_total.cmp(&a.calls_total))
    });
    rates
}

/// The `q` quantile of a log2 histogram, interpolated linearly inside its bucket.
pub fn percentile_ns(hist: &[u64; HIST_BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &count) in hist.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if (seen + count) as f64 >= rank {
            let low = if i == 0 {
                0.0
            } else {
                bucket_upper_ns(i - 1) as f64
            };
            let high = bucket_upper_ns(i) as f64;
            let within = ((rank - seen as f64) / count as f64).clamp(0.0, 1.0);
            return Some(low + (high - low) * within);
        }
        seen += count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_stay_in_their_bucket() {
        let mut hist = [0; HIST_BUCKETS];
        hist[10] = 99; // [1024, 2048) ns
        hist[20] = 1; // ~1 ms
        let p50 = percentile_ns(&hist, 0.5).unwrap();
        assert!((1024.0..2048.0).contains(&p50), "{p50}");
        let p99 = percentile_ns(&hist, 0.99).unwrap();
        assert!(p99 <= 2048.0, "{p99}");
        let p100 = percentile_ns(&hist, 1.0).unwrap();
        assert!((1_048_576.0..=2_097_152.0).contains(&p100), "{p100}");
        assert_eq!(percentile_ns(&[0; HIST_BUCKETS], 0.5), None);
    }
}
