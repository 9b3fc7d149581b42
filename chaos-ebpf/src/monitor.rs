//! Monitor: per-target syscall counts, failures by errno and latency histograms.
//!
//! Attached as raw tracepoints on `raw_syscalls:sys_enter` / `sys_exit`: they get the syscall id
//! and return value as plain arguments, without the record copy that a perf tracepoint makes,
//! which is most of the per-call cost a bpftrace script pays.
//!
//! What a call costs here is mostly function calls (helpers, and the functions of a hash map
//! lookup): with the host's return thunks (SRSO "safe RET") each return is dear, while array
//! lookups are inlined by the verifier. So the common path calls as little as it can:
//! - every thread, on each side: its slot or none (`monitor_slot.rs`), remembered per CPU for
//!   a thread that makes calls in a row (an inlined per-CPU array read), else from the cgroup id
//!   (one helper) and compares in an inlined array (`TargetFilter`);
//! - a target's call: the thread id at entry and exit, the clock on both sides for timed calls
//!   (`--latency-sample`), one array slot per thread (`THREAD_CALLS`) and counts in a per-CPU
//!   array (`SYSCALL_COUNTS`); the latency of a timed call goes to the `SYSCALL_STATS` hash, and
//!   failures to `SYSCALL_ERRORS`;
//! - a traced call, and a call that gets a fault, is kept in `INFLIGHT` instead (the engines'
//!   hooks and trace events read it), counted the same way; a call of a syscall a rule names is
//!   decided first, on the stack;
//! - with `--no-latency` (`COUNT_AT_EXIT`) there is no entry program: the exit counts the call
//!   from its registers.

pub(crate) use crate::monitor_slot::target_slot;
use crate::{inject, monitor_slot::current_slot, regs, trace};
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task_btf,
        bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_task_pt_regs,
    },
    macros::{map, raw_tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
};
use chaos_common::{
    COUNTED_SLOTS, ErrorKey, InflightCall, MAX_ERROR_ENTRIES, MAX_INFLIGHT_THREADS,
    MAX_STATS_ENTRIES, SlotCounts, StatsKey, SyscallStats, THREAD_CALL_ENTRIES, ThreadCall,
    latency_bucket,
};

#[map]
static SYSCALL_STATS: PerCpuHashMap<StatsKey, SyscallStats> =
    PerCpuHashMap::with_max_entries(MAX_STATS_ENTRIES, 0);

#[map]
static SYSCALL_ERRORS: PerCpuHashMap<ErrorKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_ERROR_ENTRIES, 0);

#[map]
static SYSCALL_COUNTS: PerCpuArray<SlotCounts> = PerCpuArray::with_max_entries(COUNTED_SLOTS, 0);

#[map]
static THREAD_CALLS: Array<ThreadCall> = Array::with_max_entries(THREAD_CALL_ENTRIES, 0);

// LRU: entries of threads that exited are recycled without a cleanup hook.
#[map]
pub(crate) static INFLIGHT: LruHashMap<u32, InflightCall> =
    LruHashMap::with_max_entries(MAX_INFLIGHT_THREADS, 0);

/// Syscall numbers of `exit` and `exit_group` on the running architecture, set by the loader.
/// These calls never reach `sys_exit`, so they are counted at entry.
#[unsafe(no_mangle)]
static SYS_EXIT_NR: u32 = u32::MAX;
#[unsafe(no_mangle)]
static SYS_EXIT_GROUP_NR: u32 = u32::MAX;

const MAX_ERRNO: i64 = 4095;

/// Set by the loader when the session may inject: each call of a target then goes through
/// `INFLIGHT`, where the engines (kernel hooks, chaos-user's tracer) find and leave decisions.
#[unsafe(no_mangle)]
static INJECTING: u8 = 0;

/// Whether this session may inject: a call the fast path does not know may be in `INFLIGHT`.
#[inline(always)]
fn injecting() -> bool {
    (unsafe { core::ptr::read_volatile(&INJECTING) }) != 0
}

/// Set by the loader when no entry program runs (`--no-latency`): `sys_exit` counts each call
/// from its registers, and `monitor_never_returning` counts `exit` and `exit_group`.
/// (Before 5.15 the entry program still runs, for those two alone.)
#[unsafe(no_mangle)]
static COUNT_AT_EXIT: u8 = 0;

#[inline(always)]
fn count_at_exit() -> bool {
    (unsafe { core::ptr::read_volatile(&COUNT_AT_EXIT) }) != 0
}

/// Time one call in N, at random (`--latency-sample N`, set by the loader; 1: every call).
/// Counts and errors stay exact; sampled latencies are weighted by N in the histogram.
#[unsafe(no_mangle)]
static LATENCY_SAMPLE: u32 = 1;

/// `start_ns` of a call that is in flight but not timed (0 means "not in a counted call").
const UNTIMED: u64 = 1;

static IDLE_CALL: InflightCall = InflightCall {
    start_ns: 0,
    cgroup_id: 0,
    syscall: 0,
    slot: 0,
    pending_errno: 0,
    pending_engine: 0,
    injected: 0,
    fault_errno: 0,
    args: [0; 6],
};

/// The entry program of a plain monitor (and of trace): no rule lookup, and no atomic
/// instruction, so it loads on kernels older than 5.12.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn monitor_sys_enter(ctx: RawTracePointContext) -> i32 {
    sys_enter(&ctx, false)
}

/// The entry program of a session that may inject: also decides the injections
/// (`inject::decide`), whose exact counts need BPF atomic fetch-and-add (5.12+). The loader
/// attaches one of the two.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn monitor_sys_enter_inject(ctx: RawTracePointContext) -> i32 {
    sys_enter(&ctx, true)
}

#[inline(always)]
fn sys_enter(ctx: &RawTracePointContext, inject: bool) -> i32 {
    let Some(slot) = current_slot(ctx) else {
        return 0;
    };
    let syscall: i64 = ctx.arg(1);
    if syscall < 0 {
        return 0;
    }
    let syscall = syscall as u32;
    if is_never_returning(syscall) {
        count(slot, syscall, false);
    }
    // Before 5.15 an entry program stays with `--no-latency`, for the two calls above alone.
    if count_at_exit() {
        return 0;
    }
    // Traced calls go through `INFLIGHT` (trace events are made from it), and so do calls that
    // get a fault (the decision is parked there for the engine's hook); every other call takes
    // the fast path, injecting or not.
    if trace::enabled() {
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        inflight_enter(ctx, inject, cgroup_id, slot, syscall);
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    if inject && inject::ruled(syscall) && decided_enter(ctx, tid, slot, syscall) {
        return 0;
    }
    if is_never_returning(syscall) {
        return 0;
    }
    let start_ns = if timed() {
        unsafe { bpf_ktime_get_ns() }
    } else {
        0
    };
    if let Some(entry) = THREAD_CALLS.get_ptr_mut(tid & (THREAD_CALL_ENTRIES - 1)) {
        let entry = unsafe { &mut *entry };
        entry.who = (u64::from(tid) << 32) | u64::from(syscall);
        entry.start_ns = start_ns;
    }
    0
}

/// Entry of a call whose syscall a rule names: decided on the stack, and only a call that gets a
/// fault is written to `INFLIGHT`, where the engine's hook, chaos-user's tracer and the exit find
/// it. False for a call left alone: it takes the fast path, as if no rule named it (a rule that
/// matches nothing costs its lookup and nothing more).
#[inline(always)]
fn decided_enter(ctx: &RawTracePointContext, tid: u32, slot: u32, syscall: u32) -> bool {
    let mut call = InflightCall {
        // The rules are keyed by cgroup id.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        syscall,
        slot,
        ..IDLE_CALL
    };
    inject::decide(ctx, &mut call);
    if call.pending_errno == 0 && call.injected == 0 {
        return false;
    }
    call.start_ns = if is_never_returning(syscall) {
        // No sys_exit follows: nothing to time, and an errno rule cannot apply.
        0
    } else if timed() {
        unsafe { bpf_ktime_get_ns() }
    } else {
        UNTIMED
    };
    // The exit must find this call in `INFLIGHT`, not a stale fast-path entry (of an exit it
    // missed) under this thread's id.
    if let Some(entry) = THREAD_CALLS.get_ptr_mut(tid & (THREAD_CALL_ENTRIES - 1)) {
        unsafe { (*entry).who = 0 };
    }
    let _ = INFLIGHT.insert(&tid, &call, 0);
    true
}

/// Entry of a traced call: the thread's call goes to `INFLIGHT`, decided there.
#[inline(always)]
fn inflight_enter(
    ctx: &RawTracePointContext,
    inject: bool,
    cgroup_id: u64,
    slot: u32,
    syscall: u32,
) {
    // The thread's entry is written field by field, in place: copying the whole struct costs
    // more than the rest of the hook (measured: `cargo xtask bench monitor`).
    let tid = bpf_get_current_pid_tgid() as u32;
    let entry = match INFLIGHT.get_ptr_mut(&tid) {
        Some(entry) => entry,
        None => {
            let _ = INFLIGHT.insert(&tid, &IDLE_CALL, 0);
            match INFLIGHT.get_ptr_mut(&tid) {
                Some(entry) => entry,
                None => return,
            }
        }
    };
    let call = unsafe { &mut *entry };
    call.syscall = syscall;
    call.slot = slot;
    call.cgroup_id = cgroup_id;
    call.pending_errno = 0;
    call.injected = 0;
    call.fault_errno = 0;
    if trace::enabled() {
        call.args = regs::syscall_args(ctx.arg(0));
    }
    if inject {
        inject::decide(ctx, call);
    }
    if is_never_returning(syscall) {
        // No sys_exit follows: nothing to time, and an errno rule cannot apply.
        call.start_ns = 0;
        return;
    }
    call.start_ns = if timed() {
        unsafe { bpf_ktime_get_ns() }
    } else {
        UNTIMED
    };
}

/// Whether this call is timed (always when tracing: events carry times). Chosen at random: every
/// N-th call of a thread would alias with its patterns (dd's read/write alternation would get
/// only its writes timed).
#[inline(always)]
fn timed() -> bool {
    let sample = unsafe { core::ptr::read_volatile(&LATENCY_SAMPLE) };
    sample <= 1 || trace::enabled() || unsafe { bpf_get_prandom_u32() } % sample == 0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn monitor_sys_exit(ctx: RawTracePointContext) -> i32 {
    // Threads of other cgroups stop here. (A thread that moved out of a target mid-call loses
    // that one call.)
    let Some(slot) = current_slot(&ctx) else {
        return 0;
    };
    if trace::enabled() {
        inflight_exit(&ctx);
        return 0;
    }
    if count_at_exit() {
        // No entry program: the one dispatch per call a monitor cannot do without.
        if let Some(syscall) = regs::syscall_nr(ctx.arg(0)) {
            record(slot, syscall, ctx.arg(1), UNTIMED_ELAPSED);
        }
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(entry) = THREAD_CALLS.get_ptr_mut(tid & (THREAD_CALL_ENTRIES - 1)) else {
        return 0;
    };
    let entry = unsafe { &mut *entry };
    let who = entry.who;
    let (syscall, elapsed) = if (who >> 32) as u32 == tid {
        entry.who = 0;
        let start_ns = entry.start_ns;
        let elapsed = match start_ns {
            0 => UNTIMED_ELAPSED,
            _ => unsafe { bpf_ktime_get_ns() }.saturating_sub(start_ns),
        };
        (who as u32, elapsed)
    } else {
        // The call went through `INFLIGHT` (a rule names its syscall, or chaos-user's tracer
        // skipped it), another thread took the position, or entry did not see this call: the
        // syscall number is in the registers, and the call is counted untimed.
        if injecting() && inflight_exit(&ctx) {
            return 0;
        }
        match regs::syscall_nr(ctx.arg(0)) {
            Some(syscall) => (syscall, UNTIMED_ELAPSED),
            None => return 0,
        }
    };
    record(slot, syscall, ctx.arg(1), elapsed);
    0
}

/// Exit of a call that went through `INFLIGHT`; false if the thread has no call there.
#[inline(always)]
fn inflight_exit(ctx: &RawTracePointContext) -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(entry) = INFLIGHT.get_ptr_mut(&tid) else {
        return false;
    };
    let call = unsafe { &mut *entry };
    // Engine stop: an exit the application never sees (its call is re-issued) is not counted.
    // First, before anything else is live: held across its map lookup, the start time is
    // spilled, and 6.1's verifier then refuses the latency code below (R8 !read_ok).
    if crate::inject_stop::reissued(call, ctx.arg(1)) {
        call.start_ns = 0;
        return true;
    }
    let start_ns = call.start_ns;
    if start_ns == 0 {
        return false;
    }
    call.start_ns = 0;
    // A decision no hook carried out (e.g. the call never reached it) dies with the call.
    call.pending_errno = 0;
    // A plain number on every path, not an Option: with the fault branch below, 6.1's verifier
    // loses track of an Option's payload register ("R8 !read_ok").
    let timed = start_ns != UNTIMED;
    let elapsed = match timed {
        true => unsafe { bpf_ktime_get_ns() }.saturating_sub(start_ns),
        false => UNTIMED_ELAPSED,
    };
    // A fault that chaos-user's tracer puts in place after this point is what the application
    // sees: count that. (A call the ptrace engine skips enters as syscall -1, which the entry
    // program passes over; the tracer wrote this entry for it.)
    let ret: i64 = if call.fault_errno != 0 {
        -(call.fault_errno as i64)
    } else {
        ctx.arg(1)
    };
    call.fault_errno = 0;
    record(call.slot, call.syscall, ret, elapsed);
    if trace::enabled() {
        trace::emit(call, start_ns, ret, if timed { elapsed } else { 0 });
    }
    true
}

/// `elapsed` of a call that was not timed.
const UNTIMED_ELAPSED: u64 = u64::MAX;

/// Counts a completed call, and its latency unless `elapsed` is [`UNTIMED_ELAPSED`].
#[inline(always)]
fn record(slot: u32, syscall: u32, ret: i64, elapsed: u64) {
    let failed = (-MAX_ERRNO..0).contains(&ret);
    count(slot, syscall, failed);
    if elapsed != UNTIMED_ELAPSED {
        with_stats(StatsKey { slot, syscall }, |stats| {
            let weight = unsafe { core::ptr::read_volatile(&LATENCY_SAMPLE) }.max(1) as u64;
            stats.latency_sum_ns += elapsed * weight;
            if let Some(count) = stats.latency_hist.get_mut(latency_bucket(elapsed)) {
                *count += weight;
            }
        });
    }
    if failed {
        count_error(ErrorKey {
            slot,
            syscall,
            errno: (-ret) as u32,
            _pad: 0,
        });
    }
}

/// One more call (and failure) of (`slot`, `syscall`): in the per-CPU array when both fit,
/// inlined and without a hash, else in the stats hash.
#[inline(always)]
fn count(slot: u32, syscall: u32, failed: bool) {
    if let Some(row) = SYSCALL_COUNTS.get_ptr_mut(slot) {
        // The index is bounded after the lookup, from a fresh load: no call in between, so it
        // stays in the register compared. (LLVM otherwise may spill it before the compare and
        // reload it after, and the 5.10 verifier refuses the reloaded copy as unbounded.)
        let index = unsafe { core::ptr::read_volatile(&syscall) } as usize;
        if let Some(counts) = unsafe { &mut *row }.counts.get_mut(index) {
            counts.calls += 1;
            if failed {
                counts.errors += 1;
            }
            return;
        }
    }
    with_stats(StatsKey { slot, syscall }, |stats| {
        stats.calls += 1;
        if failed {
            stats.errors += 1;
        }
    });
}

/// `exit` and `exit_group` of a target without an entry program (`COUNT_AT_EXIT`), counted
/// when the thread exits: its saved registers still hold the number of the call that ended it
/// (a thread killed by a signal shows another call's, or none). Runs once per thread, not per
/// call. `bpf_task_pt_regs`: Linux 5.15+.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn monitor_never_returning(_ctx: RawTracePointContext) -> i32 {
    let Some(slot) = target_slot(unsafe { bpf_get_current_cgroup_id() }) else {
        return 0;
    };
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if let Some(syscall) = regs::syscall_nr(regs)
        && is_never_returning(syscall)
    {
        count(slot, syscall, false);
    }
    0
}

#[inline(always)]
fn is_never_returning(syscall: u32) -> bool {
    let exit = unsafe { core::ptr::read_volatile(&SYS_EXIT_NR) };
    let exit_group = unsafe { core::ptr::read_volatile(&SYS_EXIT_GROUP_NR) };
    syscall == exit || syscall == exit_group
}

/// Runs `update` on this CPU's stats of `key`, creating the entry on first use.
#[inline(always)]
fn with_stats(key: StatsKey, update: impl FnOnce(&mut SyscallStats)) {
    if let Some(entry) = get_or_zero(&SYSCALL_STATS, &key, &SyscallStats::ZERO) {
        update(unsafe { &mut *entry });
    }
}

#[inline(always)]
fn count_error(key: ErrorKey) {
    if let Some(count) = get_or_zero(&SYSCALL_ERRORS, &key, &0) {
        unsafe { *count += 1 };
    }
}

/// This CPU's value of `key`, inserted as `zero` if absent. BPF_NOEXIST: when another CPU
/// created the entry first, the insert fails harmlessly and the second lookup finds theirs.
#[inline(always)]
pub(crate) fn get_or_zero<K, V>(map: &PerCpuHashMap<K, V>, key: &K, zero: &V) -> Option<*mut V> {
    if let Some(value) = map.get_ptr_mut(key) {
        return Some(value);
    }
    let _ = map.insert(key, zero, BPF_NOEXIST);
    map.get_ptr_mut(key)
}

const BPF_NOEXIST: u64 = 1;
