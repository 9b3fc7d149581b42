//! HTTP responses counted in the kernel (`chaos-ebpf/src/http.rs`): reading the maps.
use std::collections::BTreeMap;

use aya::maps::{Map, MapData, MapError, PerCpuHashMap};
use chaos_common::{HttpKey, HttpLatency, MAP_HTTP_LATENCY, MAP_HTTP_RESPONSES};
use serde::Serialize;

use crate::monitor::MonitorError;

pub struct HttpMaps {
    responses: PerCpuHashMap<MapData, HttpKey, u64>,
    latency: PerCpuHashMap<MapData, u32, HttpLatency>,
}

/// Summed over CPUs.
#[derive(Debug, Default, Clone)]
pub struct HttpCounters {
    /// (slot, status code) -> responses
    pub responses: BTreeMap<(u32, u32), u64>,
    pub latency: BTreeMap<u32, HttpLatency>,
}

/// One target's HTTP traffic, for snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct HttpSnapshot {
    /// status code -> responses
    pub responses: BTreeMap<u32, u64>,
    /// Responses whose request was seen (the latency histogram's count).
    pub timed: u64,
    pub latency_sum_ns: u64,
    #[serde(skip)]
    pub latency_hist: [u64; chaos_common::HIST_BUCKETS],
}

impl HttpMaps {
    pub fn take(
        take: &mut impl FnMut(&'static str) -> Result<Map, MonitorError>,
    ) -> Result<Self, MonitorError> {
        Ok(Self {
            responses: PerCpuHashMap::try_from(take(MAP_HTTP_RESPONSES)?)?,
            latency: PerCpuHashMap::try_from(take(MAP_HTTP_LATENCY)?)?,
        })
    }

    pub fn read(&self) -> Result<HttpCounters, MapError> {
        let mut counters = HttpCounters::default();
        for entry in self.responses.iter() {
            let (key, per_cpu) = entry?;
            *counters.responses.entry((key.slot, key.code)).or_default() +=
                per_cpu.iter().sum::<u64>();
        }
        for entry in self.latency.iter() {
            let (slot, per_cpu) = entry?;
            let total = counters.latency.entry(slot).or_insert(HttpLatency::ZERO);
            for latency in per_cpu.iter() {
                total.count += latency.count;
                total.sum_ns += latency.sum_ns;
                for (sum, count) in total.hist.iter_mut().zip(latency.hist) {
                    *sum += count;
                }
            }
        }
        Ok(counters)
    }
}

impl HttpCounters {
    /// The slot's traffic, or None if it answered nothing.
    pub fn of(&self, slot: u32) -> Option<HttpSnapshot> {
        let responses: BTreeMap<u32, u64> = self
            .responses
            .range((slot, 0)..=(slot, u32::MAX))
            .map(|(&(_, code), &count)| (code, count))
            .collect();
        if responses.is_empty() {
            return None;
        }
        let latency = self
            .latency
            .get(&slot)
            .copied()
            .unwrap_or(HttpLatency::ZERO);
        Some(HttpSnapshot {
            responses,
            timed: latency.count,
            latency_sum_ns: latency.sum_ns,
            latency_hist: latency.hist,
        })
    }
}
