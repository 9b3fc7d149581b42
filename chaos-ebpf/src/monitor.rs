//! Monitor: per-target syscall counts, failures by errno and latency histograms.
//!
//! Attached as raw tracepoints on `raw_syscalls:sys_enter` / `sys_exit`: they get the syscall id
//! and return value as plain arguments, without the record copy that a perf tracepoint makes,
//! which is most of the per-call cost a bpftrace script pays.
//!
//! Cost for threads that are not targets, on each side: a cgroup-id read and a few compares in
//! an inlined array (`TargetFilter`, which also gives a target's slot). Targets pay the in-flight
//! lookup on each side and a per-CPU stats update at exit.

use crate::{inject, trace};
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap},
    programs::RawTracePointContext,
};
use chaos_common::{
    ErrorKey, InflightCall, MAX_ERROR_ENTRIES, MAX_INFLIGHT_THREADS, MAX_STATS_ENTRIES,
    MAX_TARGETS, StatsKey, SyscallStats, TARGET_FILTER_IDS, TargetFilter, latency_bucket,
};

#[map]
static TARGET_FILTER: Array<TargetFilter> = Array::with_max_entries(1, 0);

#[map]
static TARGETS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map]
static SYSCALL_STATS: PerCpuHashMap<StatsKey, SyscallStats> =
    PerCpuHashMap::with_max_entries(MAX_STATS_ENTRIES, 0);

#[map]
static SYSCALL_ERRORS: PerCpuHashMap<ErrorKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_ERROR_ENTRIES, 0);

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
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let Some(slot) = target_slot(cgroup_id) else {
        return 0;
    };
    let syscall: i64 = ctx.arg(1);
    if syscall < 0 {
        return 0;
    }
    let syscall = syscall as u32;
    if is_never_returning(syscall) {
        with_stats(StatsKey { slot, syscall }, |stats| stats.calls += 1);
    }
    // The thread's entry is written field by field, in place: copying the whole struct costs
    // more than the rest of the hook (measured: `cargo xtask bench monitor`).
    let tid = bpf_get_current_pid_tgid() as u32;
    let entry = match INFLIGHT.get_ptr_mut(&tid) {
        Some(entry) => entry,
        None => {
            let _ = INFLIGHT.insert(&tid, &IDLE_CALL, 0);
            match INFLIGHT.get_ptr_mut(&tid) {
                Some(entry) => entry,
                None => return 0,
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
        call.args = syscall_args(ctx);
    }
    if inject {
        inject::decide(ctx, call);
    }
    if is_never_returning(syscall) {
        // No sys_exit follows: nothing to time, and an errno rule cannot apply.
        call.start_ns = 0;
        return 0;
    }
    call.start_ns = if timed() {
        unsafe { bpf_ktime_get_ns() }
    } else {
        UNTIMED
    };
    0
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
    // Threads of other cgroups stop here, before the in-flight lookup. (A thread that moved
    // out of a target mid-call loses that one call; its entry is reused at its next call.)
    // With too many targets to list, the in-flight lookup below is the check.
    if listed_slot(unsafe { bpf_get_current_cgroup_id() }).is_none() {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(entry) = INFLIGHT.get_ptr_mut(&tid) else {
        return 0;
    };
    let call = unsafe { &mut *entry };
    // Engine stop: an exit the application never sees (its call is re-issued) is not counted.
    // First, before anything else is live: held across its map lookup, the start time is
    // spilled, and 6.1's verifier then refuses the latency code below (R8 !read_ok).
    if crate::inject_stop::reissued(call, ctx.arg(1)) {
        call.start_ns = 0;
        return 0;
    }
    let start_ns = call.start_ns;
    if start_ns == 0 {
        return 0;
    }
    call.start_ns = 0;
    // A decision no hook carried out (e.g. the call never reached it) dies with the call.
    call.pending_errno = 0;
    let elapsed_ns = if start_ns == UNTIMED {
        0
    } else {
        unsafe { bpf_ktime_get_ns() }.saturating_sub(start_ns)
    };
    // Read back so that it is set on the untimed path too: LLVM leaves an Option's payload unset
    // there, and 6.1's verifier, which loses track of the spilled start time, then sees it read
    // unset below (R8 !read_ok).
    let elapsed_ns = unsafe { core::ptr::read_volatile(&elapsed_ns) };
    let elapsed = (start_ns != UNTIMED).then_some(elapsed_ns);
    // A fault that chaos-user's tracer puts in place after this point is what the application
    // sees: count that. (A call the ptrace engine skips enters as syscall -1, which the entry
    // program passes over; the tracer wrote this entry for it.)
    let ret: i64 = if call.fault_errno != 0 {
        -(call.fault_errno as i64)
    } else {
        ctx.arg(1)
    };
    call.fault_errno = 0;
    let key = StatsKey {
        slot: call.slot,
        syscall: call.syscall,
    };
    let failed = (-MAX_ERRNO..0).contains(&ret);
    with_stats(key, |stats| {
        stats.calls += 1;
        if failed {
            stats.errors += 1;
        }
        if let Some(elapsed) = elapsed {
            let weight = unsafe { core::ptr::read_volatile(&LATENCY_SAMPLE) }.max(1) as u64;
            stats.latency_sum_ns += elapsed * weight;
            if let Some(count) = stats.latency_hist.get_mut(latency_bucket(elapsed)) {
                *count += weight;
            }
        }
    });
    if failed {
        count_error(ErrorKey {
            slot: call.slot,
            syscall: call.syscall,
            errno: (-ret) as u32,
            _pad: 0,
        });
    }
    if trace::enabled() {
        trace::emit(call, start_ns, ret, elapsed.unwrap_or(0));
    }
    0
}

/// The six syscall arguments from the user registers saved at entry (x86_64: rdi, rsi, rdx, r10,
/// r8, r9), read in one go: r10..rdi are contiguous in `struct pt_regs`.
#[inline(always)]
fn syscall_args(ctx: &RawTracePointContext) -> [u64; 6] {
    let regs: *const u8 = ctx.arg(0);
    // r10, r9, r8, rax, rcx, rdx, rsi, rdi
    let window: [u64; 8] = match unsafe { bpf_probe_read_kernel(regs.add(56) as *const [u64; 8]) } {
        Ok(window) => window,
        Err(_) => return [0; 6],
    };
    [
        window[7], window[6], window[5], window[0], window[2], window[1],
    ]
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
