//! The monitor: counts every call of the targets per (slot, syscall), failures per errno, and
//! latency, in the kernel (`chaos-ebpf/src/monitor.rs`, programs `monitor_sys_enter` (or
//! `monitor_sys_enter_inject`) and `monitor_sys_exit` on the raw_syscalls tracepoints, and
//! `monitor_task_fork` / `monitor_cgroup_attach`, which tell them when a remembered slot may be
//! stale). With `--no-latency` there is no entry program: `monitor_sys_exit` counts each call
//! alone, and `monitor_never_returning` (at thread exit) counts `exit` and `exit_group`, which
//! never reach it. It owns the target maps and the counters.
use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::{ProgramError, RawTracePoint},
};
use chaos_common::{
    COUNTED_SLOTS, COUNTED_SYSCALLS, ErrorKey, MAP_GENERATION, MAP_SYSCALL_COUNTS,
    MAP_SYSCALL_ERRORS, MAP_SYSCALL_STATS, MAP_TARGET_FILTER, MAP_TARGETS, PROG_CGROUP_ATTACH,
    PROG_NEVER_RETURNING, PROG_SYS_ENTER, PROG_SYS_ENTER_INJECT, PROG_SYS_EXIT, PROG_TASK_FORK,
    SlotCounts, StatsKey, SyscallStats, TARGET_FILTER_IDS, TargetFilter,
};
use thiserror::Error;

use crate::ebpf::{self, LoadError};

mod runs;

/// Attachments of a syscall program tried before giving up on one the kernel does not run.
const ATTACH_ATTEMPTS: u32 = 3;

#[derive(Debug, Error)]
pub enum MonitorError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "cannot attach to the {tracepoint} tracepoint: the kernel needs CONFIG_FTRACE_SYSCALLS and raw tracepoint BPF programs"
    )]
    Attach {
        tracepoint: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "the kernel does not run {program} on {tracepoint} although it is attached ({ATTACH_ATTEMPTS} attempts)"
    )]
    NotRunning {
        program: &'static str,
        tracepoint: &'static str,
    },
    #[error("BPF map operation failed")]
    Map(#[from] MapError),
}

/// Why the in-kernel engines cannot work where the injecting entry program is refused (they take
/// their decisions from it). Its exact `--nth`/`--count` counters use atomic fetch-and-add, which
/// verifiers before 5.12 refuse with "BPF_STX uses reserved fields".
fn in_kernel_refused(error: &LoadError) -> String {
    let error = error.to_string();
    if error.contains("BPF_STX uses reserved fields") {
        format!(
            "the kernel lacks BPF atomic fetch-and-add (Linux 5.12+), which the in-kernel engines \
             count with ({error})"
        )
    } else {
        format!("the in-kernel engines decide in {PROG_SYS_ENTER_INJECT}: {error}")
    }
}

pub struct Monitor {
    targets: HashMap<MapData, u64, u32>,
    /// The kernel's quick "surely not a target" check, kept in step with `targets`.
    target_filter: Array<MapData, TargetFilter>,
    target_ids: FilterIds,
    /// Changed after each change of the targets: the kernel's remembered slots are stale.
    generation: Array<MapData, u64>,
    stats: PerCpuHashMap<MapData, StatsKey, SyscallStats>,
    /// Calls and failures of the first `COUNTED_SLOTS` slots (the kernel counts the others in
    /// `stats`).
    counts: PerCpuArray<MapData, SlotCounts>,
    /// Slots given so far (they are given in order): the rows of `counts` to read.
    slots: u32,
    errors: PerCpuHashMap<MapData, ErrorKey, u64>,
    /// Whether `start` attaches the syscall tracepoints (off: HTTP and resources only).
    count_syscalls: bool,
    /// The entry program loaded: the injecting one, or the plain one; None with `--no-latency`.
    entry: Option<&'static str>,
    /// Whether the injecting entry program loaded (the in-kernel engines need it), and why not.
    in_kernel_injection: Result<(), String>,
}

/// What the monitor attaches.
#[derive(Debug, Clone, Copy)]
pub struct MonitorMode {
    /// Off: HTTP and resources only (the programs stay loaded for the target maps).
    pub count_syscalls: bool,
    /// The session may inject: the injecting entry program where the kernel takes it.
    pub inject: bool,
    /// No entry program: counts at `sys_exit` alone, no latency (not with `inject`).
    pub count_at_exit: bool,
}

/// Counters summed over CPUs.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub stats: BTreeMap<StatsKey, SyscallStats>,
    /// (slot, syscall, errno) -> failures
    pub errors: BTreeMap<(u32, u32, u32), u64>,
}

impl Monitor {
    /// Loads the tracepoint programs and takes the counting maps; nothing is attached until
    /// [`Monitor::start`]. Without `count_syscalls` the programs stay loaded but unattached
    /// (HTTP counting still needs the target maps). With `inject`, the entry program is the
    /// injecting one where the kernel takes it, else the plain one: the monitor (and the ptrace
    /// engine) still work, and [`Monitor::in_kernel_injection`] says why the other engines do not.
    pub fn take(ebpf: &mut Ebpf, mode: MonitorMode) -> Result<Self, MonitorError> {
        let in_kernel_injection = match mode.inject {
            true => load(ebpf, PROG_SYS_ENTER_INJECT).map_err(|e| in_kernel_refused(&e)),
            false => Err("not loaded for injection".to_owned()),
        };
        let entry = match (&in_kernel_injection, mode.count_at_exit) {
            (Ok(()), _) => Some(PROG_SYS_ENTER_INJECT),
            // Before 5.15 (no `bpf_task_pt_regs`) the entry program still counts `exit` and
            // `exit_group`; the exit program counts the rest, from the registers, untimed.
            (Err(_), true) if load(ebpf, PROG_NEVER_RETURNING).is_ok() => None,
            (Err(_), _) => {
                load(ebpf, PROG_SYS_ENTER)?;
                Some(PROG_SYS_ENTER)
            }
        };
        load(ebpf, PROG_SYS_EXIT)?;
        load(ebpf, PROG_TASK_FORK)?;
        load(ebpf, PROG_CGROUP_ATTACH)?;
        Ok(Self {
            targets: ebpf::take_map(ebpf, MAP_TARGETS)?,
            target_filter: ebpf::take_map(ebpf, MAP_TARGET_FILTER)?,
            target_ids: FilterIds::default(),
            generation: ebpf::take_map(ebpf, MAP_GENERATION)?,
            stats: ebpf::take_map(ebpf, MAP_SYSCALL_STATS)?,
            counts: ebpf::take_map(ebpf, MAP_SYSCALL_COUNTS)?,
            slots: 0,
            errors: ebpf::take_map(ebpf, MAP_SYSCALL_ERRORS)?,
            count_syscalls: mode.count_syscalls,
            entry,
            in_kernel_injection,
        })
    }

    /// Whether the in-kernel engines can work: the injecting entry program loaded.
    pub fn in_kernel_injection(&self) -> &Result<(), String> {
        &self.in_kernel_injection
    }

    /// Attaches the raw tracepoints: counting (and injecting) starts.
    pub fn start(&mut self, ebpf: &mut Ebpf) -> Result<(), MonitorError> {
        if !self.count_syscalls {
            return Ok(());
        }
        // The generation hooks first: the syscall programs' remembered slots rely on them.
        let entry = match self.entry {
            Some(entry) => (entry, "raw_syscalls:sys_enter"),
            None => (PROG_NEVER_RETURNING, "sched:sched_process_exit"),
        };
        // Attached is not always running (see `runs.rs`): each syscall program is attached
        // again until it runs.
        let run_counts = runs::RunCounts::start();
        for (name, tracepoint) in [
            (PROG_TASK_FORK, "sched:sched_process_fork"),
            (PROG_CGROUP_ATTACH, "cgroup:cgroup_attach_task"),
            entry,
            (PROG_SYS_EXIT, "raw_syscalls:sys_exit"),
        ] {
            let (_, event) = tracepoint.split_once(':').unwrap_or(("", tracepoint));
            let program = raw_tracepoint(ebpf, name)?;
            let attach_error = |source| MonitorError::Attach { tracepoint, source };
            let mut link = program.attach(event).map_err(attach_error)?;
            if !tracepoint.starts_with("raw_syscalls:") {
                continue;
            }
            let mut attempt = 1;
            while run_counts.as_ref().and_then(|counts| counts.runs(program)) == Some(false) {
                if attempt == ATTACH_ATTEMPTS {
                    return Err(MonitorError::NotRunning {
                        program: name,
                        tracepoint,
                    });
                }
                eprintln!(
                    "syschaos: warning: {name} attached to {tracepoint} but not running: attaching it again"
                );
                program.detach(link).map_err(attach_error)?;
                link = program.attach(event).map_err(attach_error)?;
                attempt += 1;
            }
        }
        Ok(())
    }

    /// Counts the calls of the tasks in cgroup `cgroup_id` under `slot`.
    /// `TARGETS` learns a target before the filter and forgets it after, so the two never
    /// disagree about a target that stays.
    pub fn add_cgroup(&mut self, cgroup_id: u64, slot: u32) -> Result<(), MonitorError> {
        self.slots = self.slots.max(slot + 1);
        self.targets.insert(cgroup_id, slot, 0)?;
        if let Some(position) = self.target_ids.reserve(cgroup_id, slot) {
            // Two writes: the slot lands before the id that makes the kernel read it.
            self.write_target_filter()?;
            self.target_ids.arm(position, cgroup_id);
        }
        self.write_target_filter()
    }

    pub fn remove_cgroup(&mut self, cgroup_id: u64) -> Result<(), MonitorError> {
        self.target_ids.remove(cgroup_id);
        self.write_target_filter()?;
        match self.targets.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the filter, then moves to a new generation, so that no thread goes on with a slot
    /// the kernel remembered from before.
    fn write_target_filter(&mut self) -> Result<(), MonitorError> {
        self.target_filter.set(0, self.target_ids.filter(), 0)?;
        // The kernel adds 1 at each fork, concurrently: whatever it adds meanwhile, the value
        // written differs from every value seen before.
        let generation = self.generation.get(&0, 0)?;
        Ok(self.generation.set(0, generation + (1 << 32), 0)?)
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
        for slot in 0..self.slots.min(COUNTED_SLOTS) {
            let per_cpu = self.counts.get(&slot, 0)?;
            for syscall in 0..COUNTED_SYSCALLS {
                let (calls, errors) = per_cpu.iter().fold((0, 0), |(calls, errors), row| {
                    let count = row.counts[syscall];
                    (calls + count.calls, errors + count.errors)
                });
                if calls == 0 {
                    continue;
                }
                let key = StatsKey {
                    slot,
                    syscall: syscall as u32,
                };
                let total = counters.stats.entry(key).or_insert(SyscallStats::ZERO);
                total.calls += calls;
                total.errors += errors;
            }
        }
        for entry in self.errors.iter() {
            let (key, per_cpu) = entry?;
            *counters
                .errors
                .entry((key.slot, key.syscall, key.errno))
                .or_default() += per_cpu.iter().sum::<u64>();
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

/// Loads one of the tracepoint programs, a refusal summed up in one line.
fn load(ebpf: &mut Ebpf, name: &'static str) -> Result<(), LoadError> {
    ebpf::loaded(name, raw_tracepoint(ebpf, name)?.load())
}

fn raw_tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut RawTracePoint, LoadError> {
    ebpf::program(ebpf, name)
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
