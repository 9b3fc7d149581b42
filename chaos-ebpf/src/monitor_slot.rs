//! Which target, if any, the current thread's calls belong to: the cgroup id against
//! `TARGET_FILTER` (or `TARGETS`), remembered per CPU in `CPU_CALL` while `GENERATION` holds.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id,
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use chaos_common::{MAX_TARGETS, TARGET_FILTER_IDS, TargetFilter};

#[map]
static TARGET_FILTER: Array<TargetFilter> = Array::with_max_entries(1, 0);

#[map]
static TARGETS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// The thread that last made a syscall on this CPU: its saved registers, which sit at the top of
/// its kernel stack and so tell threads apart for free, and its slot. While `GENERATION` stays
/// the same, the thread's next calls on this CPU (entry and exit) need no cgroup lookup: the
/// common case of a thread that makes calls in a row.
#[map]
static CPU_CALL: PerCpuArray<CpuCall> = PerCpuArray::with_max_entries(1, 0);

#[derive(Clone, Copy)]
struct CpuCall {
    /// `struct pt_regs *` of the thread.
    regs: u64,
    /// `GENERATION` when `slot` was looked up.
    generation: u64,
    /// The thread's slot, or [`NOT_TARGET`].
    slot: u32,
    _pad: u32,
}

const NOT_TARGET: u32 = u32::MAX;

/// Changes (kernel: +1, chaos-user: +2^32) whenever a remembered slot may be wrong: a fork (the
/// child may get a dead thread's kernel stack, hence its `regs`), a task moved to another
/// cgroup, the targets changed. A `CPU_CALL` of another generation is looked up again.
#[map]
static GENERATION: Array<u64> = Array::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn monitor_task_fork(_ctx: RawTracePointContext) -> i32 {
    next_generation();
    0
}

#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn monitor_cgroup_attach(_ctx: RawTracePointContext) -> i32 {
    next_generation();
    0
}

/// Atomic `+= 1`. Relaxed, its result unused: LLVM emits the plain XADD, which 5.10 takes.
#[inline(always)]
fn next_generation() {
    if let Some(generation) = GENERATION.get_ptr_mut(0) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(generation, 1) };
    }
}

/// The current thread's slot, None if it is not a target's: remembered in `CPU_CALL` if this
/// thread made the last call on this CPU, else from its cgroup (and remembered).
#[inline(always)]
pub(crate) fn current_slot(ctx: &RawTracePointContext) -> Option<u32> {
    let regs: u64 = ctx.arg(0);
    // Read before the cgroup: a change after this read makes what we remember stale at once.
    let generation = GENERATION.get(0).copied().unwrap_or(0);
    let last = CPU_CALL.get_ptr_mut(0)?;
    let last = unsafe { &mut *last };
    if last.regs == regs && last.generation == generation {
        return (last.slot != NOT_TARGET).then_some(last.slot);
    }
    let slot = target_slot(unsafe { bpf_get_current_cgroup_id() });
    last.regs = regs;
    last.generation = generation;
    last.slot = slot.unwrap_or(NOT_TARGET);
    slot
}

/// The slot of `cgroup_id` if it is a target: from the filter while it lists the targets,
/// from `TARGETS` beyond that.
#[inline(always)]
pub(crate) fn target_slot(cgroup_id: u64) -> Option<u32> {
    match listed_slot(cgroup_id)? {
        Listed::Slot(slot) => Some(slot),
        Listed::Unknown => unsafe { TARGETS.get(&cgroup_id) }.copied(),
    }
}

enum Listed {
    Slot(u32),
    /// The filter lists no targets one by one (too many): ask `TARGETS`.
    Unknown,
}

/// What the filter says of `cgroup_id`; None: surely not a target.
#[inline(always)]
fn listed_slot(cgroup_id: u64) -> Option<Listed> {
    let filter = TARGET_FILTER.get(0)?;
    if filter.len == TargetFilter::ALL {
        return Some(Listed::Unknown);
    }
    // Every position is compared, not only the first `len`: free ones and those past `len` hold
    // id 0, which no task's cgroup has. A loop bounded by `len` compiles to a count-down from
    // min(len, 8) that the 5.10 verifier cannot bound (it walks past the array and refuses).
    for i in 0..TARGET_FILTER_IDS {
        if filter.cgroup_ids[i] == cgroup_id {
            return Some(Listed::Slot(filter.slots[i]));
        }
    }
    None
}
