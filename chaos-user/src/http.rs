//! HTTP responses counted in the kernel (`chaos-ebpf/src/http.rs`): attaching its `cgroup_skb`
//! programs to each target's cgroup, and reading its maps.
use std::{collections::BTreeMap, fs::File, path::Path};

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuHashMap},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, cgroup_skb::CgroupSkbLinkId},
};
use chaos_common::{HttpKey, HttpStats, MAP_HTTP_RESPONSES, PROG_HTTP_EGRESS, PROG_HTTP_INGRESS};
use serde::Serialize;
use thiserror::Error;

use crate::ebpf::{self, LoadError};

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("HTTP counting cannot load its programs (--no-http goes without it)")]
    Load(#[from] LoadError),
    #[error("HTTP counting cannot open {path} (--no-http goes without it)")]
    Cgroup {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP counting cannot attach {program} to {path} (--no-http goes without it)")]
    Attach {
        program: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: aya::programs::ProgramError,
    },
}

const PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    (PROG_HTTP_INGRESS, CgroupSkbAttachType::Ingress),
    (PROG_HTTP_EGRESS, CgroupSkbAttachType::Egress),
];

pub struct HttpCounting {
    responses: PerCpuHashMap<MapData, HttpKey, HttpStats>,
    /// cgroup id -> the links of the two programs on it.
    links: BTreeMap<u64, Vec<(&'static str, CgroupSkbLinkId)>>,
}

/// Summed over CPUs.
#[derive(Debug, Default, Clone)]
pub struct HttpCounters {
    /// (slot, status code) -> responses and their latency
    pub stats: BTreeMap<(u32, u32), HttpStats>,
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

impl HttpCounting {
    /// Loads the programs and takes the maps; nothing is attached until [`Self::attach`].
    pub fn load(ebpf: &mut Ebpf) -> Result<Self, HttpError> {
        for (name, _) in PROGRAMS {
            let program: &mut CgroupSkb = ebpf::program(ebpf, name)?;
            ebpf::loaded(name, program.load())?;
        }
        Ok(Self {
            responses: ebpf::take_map(ebpf, MAP_HTTP_RESPONSES)?,
            links: BTreeMap::new(),
        })
    }

    /// Starts counting the responses of the sockets of this cgroup (the monitor must know its
    /// slot already).
    pub fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        cgroup_id: u64,
        cgroup_dir: &Path,
    ) -> Result<(), HttpError> {
        if self.links.contains_key(&cgroup_id) {
            return Ok(());
        }
        let cgroup = File::open(cgroup_dir).map_err(|source| HttpError::Cgroup {
            path: cgroup_dir.to_owned(),
            source,
        })?;
        let mut links = Vec::new();
        for (name, attach_type) in PROGRAMS {
            // A bpf_link (kernels 5.7+): it coexists with the cgroup's other programs and goes
            // away with this process.
            let program: &mut CgroupSkb = ebpf::program(ebpf, name)?;
            match program.attach(&cgroup, attach_type, CgroupAttachMode::Single) {
                Ok(link) => links.push((name, link)),
                Err(source) => {
                    detach_all(ebpf, links);
                    return Err(HttpError::Attach {
                        program: name,
                        path: cgroup_dir.to_owned(),
                        source,
                    });
                }
            }
        }
        self.links.insert(cgroup_id, links);
        Ok(())
    }

    /// Stops counting for this cgroup (a target that went away or moved).
    pub fn detach(&mut self, ebpf: &mut Ebpf, cgroup_id: u64) {
        if let Some(links) = self.links.remove(&cgroup_id) {
            detach_all(ebpf, links);
        }
    }

    pub fn read(&self) -> Result<HttpCounters, MapError> {
        let mut counters = HttpCounters::default();
        for entry in self.responses.iter() {
            let (key, per_cpu) = entry?;
            let total = counters
                .stats
                .entry((key.slot, key.code))
                .or_insert(HttpStats::ZERO);
            per_cpu.iter().for_each(|stats| add(total, stats));
        }
        Ok(counters)
    }
}

impl HttpCounters {
    /// The slot's traffic, or None if it answered nothing.
    pub fn of(&self, slot: u32) -> Option<HttpSnapshot> {
        let of_slot = || self.stats.range((slot, 0)..=(slot, u32::MAX));
        let responses: BTreeMap<u32, u64> = of_slot()
            .map(|(&(_, code), stats)| (code, stats.responses))
            .collect();
        if responses.is_empty() {
            return None;
        }
        let mut all_codes = HttpStats::ZERO;
        of_slot().for_each(|(_, stats)| add(&mut all_codes, stats));
        Some(HttpSnapshot {
            responses,
            timed: all_codes.timed,
            latency_sum_ns: all_codes.sum_ns,
            latency_hist: all_codes.hist,
        })
    }
}

fn add(total: &mut HttpStats, stats: &HttpStats) {
    total.responses += stats.responses;
    total.timed += stats.timed;
    total.sum_ns += stats.sum_ns;
    for (sum, count) in total.hist.iter_mut().zip(stats.hist) {
        *sum += count;
    }
}

/// Best effort: a link that cannot be detached goes away with the process anyway.
fn detach_all(ebpf: &mut Ebpf, links: Vec<(&'static str, CgroupSkbLinkId)>) {
    for (name, link) in links {
        if let Ok(program) = ebpf::program::<CgroupSkb>(ebpf, name) {
            let _ = program.detach(link);
        }
    }
}
