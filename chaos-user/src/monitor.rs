//! Loads the monitor's eBPF programs, manages its target map and reads its counters.
//!
//! A [`Monitor`] owns its `Ebpf` and the links: dropping it detaches everything. Links are never
//! pinned, so the programs also go away when the process dies, however it dies.
use std::{collections::BTreeMap, path::Path};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuHashMap},
    programs::{ProgramError, RawTracePoint},
};
use chaos_common::{
    ErrorKey, MAP_SYSCALL_ERRORS, MAP_SYSCALL_STATS, MAP_TARGET_FILTER, MAP_TARGETS,
    PROG_SYS_ENTER, PROG_SYS_EXIT, StatsKey, SyscallStats, TARGET_FILTER_IDS, TargetFilter,
};
use thiserror::Error;

use crate::privileges;

#[derive(Debug, Error)]
pub enum MonitorError {
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error("cannot load the eBPF programs: {0}")]
    Load(#[source] EbpfError),
    #[error(
        "cannot attach to the raw_syscalls:{tracepoint} tracepoint ({source}): the kernel needs CONFIG_FTRACE_SYSCALLS and raw tracepoint BPF programs"
    )]
    Attach {
        tracepoint: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("HTTP counting cannot {what}: {why} (--no-http goes without it)")]
    Http { what: String, why: String },
    #[error("eBPF object has no {0}: chaos-user was built from mismatched sources")]
    Missing(&'static str),
    #[error("cannot move injection rules: {0}")]
    Rules(String),
    #[error("BPF map operation failed: {0}")]
    Map(#[from] MapError),
}

/// The monitor's eBPF object, compiled by build.rs from `chaos-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos-ebpf"));

pub struct Monitor {
    targets: HashMap<MapData, u64, u32>,
    /// The kernel's quick "surely not a target" check, kept in step with `targets`.
    target_filter: Array<MapData, TargetFilter>,
    target_ids: FilterIds,
    stats: PerCpuHashMap<MapData, StatsKey, SyscallStats>,
    errors: PerCpuHashMap<MapData, ErrorKey, u64>,
    /// Present when loaded with tracing on.
    pub(crate) trace: Option<crate::trace::TraceMaps>,
    /// Present when loaded with HTTP counting on.
    http: Option<crate::http::HttpCounting>,
    /// Whether `start` attaches the syscall tracepoints (off: HTTP and resources only).
    count_syscalls: bool,
    /// Present when loaded with injection on (see `inject::kernel`).
    pub(crate) injection: Option<crate::inject::kernel::InjectionMaps>,
    // Owns the programs and their links; declared last so the maps above are closed first.
    pub(crate) ebpf: Ebpf,
}

/// Counters summed over CPUs.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub stats: BTreeMap<StatsKey, SyscallStats>,
    /// (slot, syscall, errno) -> failures
    pub errors: BTreeMap<(u32, u32, u32), u64>,
    pub http: crate::http::HttpCounters,
}

impl Monitor {
    /// Loads the monitor's programs into the kernel; nothing is attached until [`Monitor::start`].
    /// With `inject`, the syscall-entry program also takes injection decisions (rules are added
    /// with `install_rule`). HTTP responses are counted too.
    pub fn load(inject: bool) -> Result<Self, MonitorError> {
        Self::load_with(&LoadOptions {
            inject,
            syscalls: true,
            http: true,
            trace: None,
            latency_sample: 1,
        })
    }

    pub fn load_with(options: &LoadOptions) -> Result<Self, MonitorError> {
        privileges::check()?;
        raise_memlock_limit();
        let exit_nr = syscalls::Sysno::exit.id() as u32;
        let exit_group_nr = syscalls::Sysno::exit_group.id() as u32;
        let inject_enabled = u8::from(options.inject);
        let trace_enabled = u8::from(options.trace.is_some());
        let trace = options.trace.unwrap_or_default();
        let failed_only = u8::from(trace.failed_only);
        let sample = trace.sample.max(1);
        let latency_sample = options.latency_sample.max(1);
        let mut ebpf = EbpfLoader::new()
            .override_global("SYS_EXIT_NR", &exit_nr, true)
            .override_global("SYS_EXIT_GROUP_NR", &exit_group_nr, true)
            .override_global("INJECT_ENABLED", &inject_enabled, true)
            .override_global("TRACE_ENABLED", &trace_enabled, true)
            .override_global("TRACE_FAILED_ONLY", &failed_only, true)
            .override_global("TRACE_SAMPLE", &sample, true)
            .override_global("LATENCY_SAMPLE", &latency_sample, true)
            .load(EBPF_OBJECT)
            .map_err(MonitorError::Load)?;
        for (name, tracepoint) in TRACEPOINTS {
            raw_tracepoint(&mut ebpf, name, tracepoint)?
                .load()
                .map_err(|source| MonitorError::Attach { tracepoint, source })?;
        }
        let http = if options.http {
            Some(crate::http::HttpCounting::load(&mut ebpf)?)
        } else {
            None
        };
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(MonitorError::Missing(name));
        let targets = HashMap::try_from(take(MAP_TARGETS)?)?;
        let target_filter = Array::try_from(take(MAP_TARGET_FILTER)?)?;
        let stats = PerCpuHashMap::try_from(take(MAP_SYSCALL_STATS)?)?;
        let errors = PerCpuHashMap::try_from(take(MAP_SYSCALL_ERRORS)?)?;
        let trace = if options.trace.is_some() {
            Some(crate::trace::TraceMaps::take(&mut take)?)
        } else {
            None
        };
        let injection = if options.inject {
            Some(crate::inject::kernel::InjectionMaps::take(&mut take)?)
        } else {
            None
        };
        Ok(Self {
            targets,
            target_filter,
            target_ids: FilterIds::default(),
            stats,
            errors,
            trace,
            http,
            count_syscalls: options.syscalls,
            injection,
            ebpf,
        })
    }

    /// Attaches the raw tracepoints: counting (and injecting) starts. Loaded without syscalls,
    /// nothing: HTTP counting attaches to each target's cgroup as the target is added.
    pub fn start(&mut self) -> Result<(), MonitorError> {
        if !self.count_syscalls {
            return Ok(());
        }
        for (name, tracepoint) in TRACEPOINTS {
            raw_tracepoint(&mut self.ebpf, name, tracepoint)?
                .attach(tracepoint)
                .map_err(|source| MonitorError::Attach { tracepoint, source })?;
        }
        Ok(())
    }

    /// Counts the calls (and HTTP responses) of the tasks in cgroup `cgroup_id`, whose
    /// directory is `cgroup_dir`, under `slot`.
    /// `TARGETS` learns a target before the filter and forgets it after, so the two never
    /// disagree about a target that stays.
    pub fn add_cgroup(
        &mut self,
        cgroup_id: u64,
        cgroup_dir: &Path,
        slot: u32,
    ) -> Result<(), MonitorError> {
        self.targets.insert(cgroup_id, slot, 0)?;
        if let Some(position) = self.target_ids.reserve(cgroup_id, slot) {
            // Two writes: the slot lands before the id that makes the kernel read it.
            self.write_target_filter()?;
            self.target_ids.arm(position, cgroup_id);
        }
        self.write_target_filter()?;
        if let Some(http) = &mut self.http {
            http.attach(&mut self.ebpf, cgroup_id, cgroup_dir)?;
        }
        Ok(())
    }

    pub fn remove_cgroup(&mut self, cgroup_id: u64) -> Result<(), MonitorError> {
        if let Some(http) = &mut self.http {
            http.detach(&mut self.ebpf, cgroup_id);
        }
        self.target_ids.remove(cgroup_id);
        self.write_target_filter()?;
        match self.targets.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn write_target_filter(&mut self) -> Result<(), MonitorError> {
        Ok(self.target_filter.set(0, self.target_ids.filter(), 0)?)
    }

    pub fn read(&self) -> Result<Counters, MonitorError> {
        let mut counters = Counters::default();
        for entry in self.stats.iter() {
            let (key, per_cpu) = entry?;
            let total = counters.stats.entry(key).or_insert(SyscallStats::ZERO);
            for stats in per_cpu.iter() {
                total.calls += stats.calls;
                total.errors += stats.errors;
                total.latency_sum_ns += stats.latency_sum_ns;
                for (sum, count) in total.latency_hist.iter_mut().zip(stats.latency_hist) {
                    *sum += count;
                }
            }
        }
        for entry in self.errors.iter() {
            let (key, per_cpu) = entry?;
            *counters
                .errors
                .entry((key.slot, key.syscall, key.errno))
                .or_default() += per_cpu.iter().sum::<u64>();
        }
        if let Some(http) = &self.http {
            counters.http = http.read()?;
        }
        Ok(counters)
    }
}

/// The targets at stable positions, as `(cgroup id, slot)`; id 0 marks a free position. The
/// kernel reads the filter while it is rewritten, without a lock: an id that stays keeps its
/// position and its slot, so their bytes do not change and a concurrent reader cannot miss them.
#[derive(Debug, Default)]
struct FilterIds(Vec<(u64, u32)>);

impl FilterIds {
    /// Takes a free position for `id` with `slot` but id 0 still, so that the slot can be
    /// written before the id; `arm` then sets the id. None if `id` is listed already.
    fn reserve(&mut self, id: u64, slot: u32) -> Option<usize> {
        if self.0.iter().any(|&(listed, _)| listed == id) {
            return None;
        }
        match self.0.iter().position(|&(listed, _)| listed == 0) {
            Some(free) => {
                self.0[free].1 = slot;
                Some(free)
            }
            None => {
                self.0.push((0, slot));
                Some(self.0.len() - 1)
            }
        }
    }

    fn arm(&mut self, position: usize, id: u64) {
        self.0[position].0 = id;
    }

    fn remove(&mut self, id: u64) {
        for entry in self.0.iter_mut().filter(|(listed, _)| *listed == id) {
            entry.0 = 0;
        }
        while self.0.last().is_some_and(|&(listed, _)| listed == 0) {
            self.0.pop();
        }
    }

    fn filter(&self) -> TargetFilter {
        let mut filter = TargetFilter::default();
        if self.0.len() > TARGET_FILTER_IDS {
            filter.len = TargetFilter::ALL;
            return filter;
        }
        filter.len = self.0.len() as u32;
        for (i, &(id, slot)) in self.0.iter().enumerate() {
            filter.cgroup_ids[i] = id;
            filter.slots[i] = slot;
        }
        filter
    }
}

/// What to load besides the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub inject: bool,
    /// Count syscalls (the raw_syscalls tracepoints); injecting and tracing need them.
    pub syscalls: bool,
    pub http: bool,
    pub trace: Option<TraceOptions>,
    /// Time one call in N per thread (0 and 1: every call).
    pub latency_sample: u32,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TraceOptions {
    pub failed_only: bool,
    /// Keep one call in N (0 and 1: all).
    pub sample: u64,
}

const TRACEPOINTS: [(&str, &str); 2] = [(PROG_SYS_ENTER, "sys_enter"), (PROG_SYS_EXIT, "sys_exit")];

fn raw_tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    tracepoint: &'static str,
) -> Result<&'a mut RawTracePoint, MonitorError> {
    ebpf.program_mut(name)
        .ok_or(MonitorError::Missing(name))?
        .try_into()
        .map_err(|source| MonitorError::Attach { tracepoint, source })
}

/// A load error in one line: the verifier's full log is long, its last verdict line says why.
pub(crate) fn short_error(error: impl std::fmt::Display) -> String {
    let text = error.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let first = first.split(". Verifier output").next().unwrap_or(first);
    let verdict = text.lines().rev().find(|line| {
        [
            "cannot use helper",
            "unknown func",
            "not supported",
            "invalid",
            "Permission denied",
            "should have been in",
        ]
        .iter()
        .any(|word| line.contains(word))
    });
    match verdict {
        Some(verdict) if verdict != first => format!("{first}: {}", verdict.trim()),
        _ => first.to_owned(),
    }
}

/// The program `name` of the object, as the program type `T`.
pub(crate) fn program<'a, T>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("no program {name} in the eBPF object"))?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(ids: &mut FilterIds, id: u64, slot: u32) {
        let position = ids.reserve(id, slot).expect("not listed yet");
        // What the kernel sees between the two writes: the slot, but not yet the id.
        let filter = ids.filter();
        if filter.len != TargetFilter::ALL {
            assert_eq!(filter.cgroup_ids[position], 0);
            assert_eq!(filter.slots[position], slot);
        }
        ids.arm(position, id);
    }

    #[test]
    fn filter_ids_keep_their_positions_and_slots() {
        let mut ids = FilterIds::default();
        for (id, slot) in [(11, 0), (12, 1), (13, 2)] {
            add(&mut ids, id, slot);
        }
        ids.remove(12);
        assert_eq!(ids.filter().cgroup_ids[..3], [11, 0, 13]);
        assert_eq!(ids.filter().len, 3);
        add(&mut ids, 14, 7);
        assert_eq!(ids.filter().cgroup_ids[..3], [11, 14, 13]);
        assert_eq!(ids.filter().slots[..3], [0, 7, 2]);
        assert_eq!(ids.reserve(14, 7), None);
        ids.remove(13);
        assert_eq!(ids.filter().len, 2);
    }

    #[test]
    fn too_many_targets_send_every_cgroup_to_the_hash() {
        let mut ids = FilterIds::default();
        for id in 1..=TARGET_FILTER_IDS as u64 {
            add(&mut ids, id, id as u32);
        }
        assert_eq!(ids.filter().len, TARGET_FILTER_IDS as u32);
        add(&mut ids, 100, 100);
        assert_eq!(ids.filter().len, TargetFilter::ALL);
        ids.remove(100);
        assert_eq!(ids.filter().len, TARGET_FILTER_IDS as u32);
    }
}
