//! Types shared by the eBPF programs (`chaos-ebpf`) and the loader (`chaos-user`).
//!
//! Every struct here crosses the kernel/user boundary through a BPF map, so each one is
//! `#[repr(C)]`, `Copy`, padded explicitly and size-checked at compile time.
#![no_std]

pub mod regs;
pub use regs::RegsLayout;

/// cgroup v2 id (inode number) -> target slot. Decides in the kernel whether a call is counted.
pub const MAP_TARGETS: &str = "TARGETS";
/// Single-entry array: [`TargetFilter`], the cheap first check of every call.
pub const MAP_TARGET_FILTER: &str = "TARGET_FILTER";
/// Per-CPU `(slot, syscall)` -> [`SyscallStats`].
pub const MAP_SYSCALL_STATS: &str = "SYSCALL_STATS";
/// Per-CPU `(slot, syscall, errno)` -> failure count.
pub const MAP_SYSCALL_ERRORS: &str = "SYSCALL_ERRORS";
/// Thread id -> the call it is in ([`InflightCall`]), for latency. Used while a session may
/// inject or traces (engines and trace events need what entry saw); otherwise
/// [`MAP_THREAD_CALLS`] does its job for less.
pub const MAP_INFLIGHT: &str = "INFLIGHT";
/// Per-CPU array indexed by slot: [`SlotCounts`], the exact calls and failures of the first
/// [`COUNTED_SLOTS`] targets, without a hash lookup.
pub const MAP_SYSCALL_COUNTS: &str = "SYSCALL_COUNTS";
/// Kernel-only, per-CPU: the thread that last made a syscall on this CPU and its slot (or none),
/// so that its next entry and exit there need no cgroup lookup.
pub const MAP_CPU_CALL: &str = "CPU_CALL";
/// One-entry array: a number that changes whenever what `CPU_CALL` remembers may have gone stale
/// (a fork, a task moved between cgroups, the targets changed).
pub const MAP_GENERATION: &str = "GENERATION";
/// Array indexed by `tid % THREAD_CALL_ENTRIES`: [`ThreadCall`], what a target's thread entered.
pub const MAP_THREAD_CALLS: &str = "THREAD_CALLS";

/// `(cgroup id, syscall)` -> [`InjectRule`]: the Perturbator's rules.
pub const MAP_INJECT_RULES: &str = "INJECT_RULES";
/// Array indexed by syscall number: 1 when any target has a rule on it. Lets calls of other
/// syscalls skip the rule hash lookup (an array lookup is inlined by the verifier).
pub const MAP_RULE_SYSCALLS: &str = "RULE_SYSCALLS";
/// Per-CPU array: rule index -> injections made.
pub const MAP_INJECTIONS: &str = "INJECTIONS";
/// Engine `stop`: thread id -> [`StopFault`], the fault decided at entry that chaos-user's tracer
/// carries out at the thread's SIGSTOP signal-delivery-stop. The tracer puts an idle entry for
/// each thread it has seized: a thread without one is never stopped.
pub const MAP_STOP_FAULTS: &str = "STOP_FAULTS";

/// Single entry: the thread `doctor`'s probe of the signal engine sends a signal to.
pub const MAP_SIGNAL_PROBE_TID: &str = "SIGNAL_PROBE_TID";

/// Ring buffer of [`TraceEvent`]s for `chaos-user trace`.
pub const MAP_TRACE_EVENTS: &str = "TRACE_EVENTS";
/// Array indexed by syscall number: [`TraceSpec`], which calls to trace and how to decode them.
pub const MAP_TRACE_SYSCALLS: &str = "TRACE_SYSCALLS";
/// Per-CPU array indexed by slot: trace events lost because user space fell behind.
pub const MAP_TRACE_DROPS: &str = "TRACE_DROPS";
/// Per-CPU `(slot, status code)` -> [`HttpStats`].
pub const MAP_HTTP_RESPONSES: &str = "HTTP_RESPONSES";
/// Kernel-only: per connection, the request awaiting its response.
pub const MAP_HTTP_CONNECTIONS: &str = "HTTP_CONNECTIONS";
/// Kernel-only: per-CPU call counter for trace sampling.
pub const MAP_TRACE_SEEN: &str = "TRACE_SEEN";

/// Names of the monitor's programs, as `chaos-ebpf` exports them.
pub const PROG_SYS_ENTER: &str = "monitor_sys_enter";
/// The entry program that also decides injections (atomic fetch-and-add: kernel 5.12+).
pub const PROG_SYS_ENTER_INJECT: &str = "monitor_sys_enter_inject";
pub const PROG_SYS_EXIT: &str = "monitor_sys_exit";
/// Counts `exit` and `exit_group` (no `sys_exit` follows them) when no entry program runs
/// (`--no-latency`): on `sched_process_exit`, from the exiting thread's registers.
pub const PROG_NEVER_RETURNING: &str = "monitor_never_returning";
/// On `sched_process_fork` and `cgroup_attach_task`: bump [`MAP_GENERATION`].
pub const PROG_TASK_FORK: &str = "monitor_task_fork";
pub const PROG_CGROUP_ATTACH: &str = "monitor_cgroup_attach";
/// HTTP counting's `cgroup_skb` programs, attached to each target's cgroup.
pub const PROG_HTTP_INGRESS: &str = "http_ingress";
pub const PROG_HTTP_EGRESS: &str = "http_egress";

/// Enforcement programs, named `inject_<engine>[_<hook>]`: engine `kprobe`
/// (`chaos-ebpf/src/inject_kprobe.rs`, `chaos-user/src/inject/kprobe.rs`).
pub const PROG_INJECT_KPROBE: &str = "inject_kprobe";
/// Engine `lsm`: one program per LSM hook, `inject_lsm_<hook>` (the loader takes the hook from
/// the name).
pub const PROG_INJECT_LSM_PREFIX: &str = "inject_lsm_";
pub const PROG_INJECT_LSM_FILE_OPEN: &str = "inject_lsm_file_open";
pub const PROG_INJECT_LSM_FILE_PERMISSION: &str = "inject_lsm_file_permission";
pub const PROG_INJECT_LSM_SOCKET_CONNECT: &str = "inject_lsm_socket_connect";
pub const PROG_INJECT_LSM_SOCKET_BIND: &str = "inject_lsm_socket_bind";
pub const PROG_INJECT_LSM_SOCKET_SENDMSG: &str = "inject_lsm_socket_sendmsg";
pub const PROG_INJECT_LSM_SOCKET_RECVMSG: &str = "inject_lsm_socket_recvmsg";
pub const PROG_INJECT_LSM_INODE_CREATE: &str = "inject_lsm_inode_create";
pub const PROG_INJECT_LSM_INODE_UNLINK: &str = "inject_lsm_inode_unlink";
pub const PROG_INJECT_LSM_INODE_MKDIR: &str = "inject_lsm_inode_mkdir";
pub const PROG_INJECT_LSM_INODE_RMDIR: &str = "inject_lsm_inode_rmdir";
pub const PROG_INJECT_LSM_INODE_RENAME: &str = "inject_lsm_inode_rename";
pub const PROG_INJECT_LSM_MMAP_FILE: &str = "inject_lsm_mmap_file";
pub const PROG_INJECT_LSM_TASK_ALLOC: &str = "inject_lsm_task_alloc";
pub const PROG_INJECT_LSM_BPRM_CHECK_SECURITY: &str = "inject_lsm_bprm_check_security";
/// Engine `fmod-ret` (`chaos-ebpf/src/inject_fmod_ret.rs`, `chaos-user/src/inject/fmod_ret.rs`):
/// one program, loaded by chaos-user once per function it modifies the return of.
pub const PROG_INJECT_FMOD_RET: &str = "inject_fmod_ret";
/// Engine `signal`: no program of its own (the entry program sends the signals); this one is the
/// probe's, on `sys_enter` like it.
pub const PROG_INJECT_SIGNAL_PROBE: &str = "inject_signal_probe";
/// Engine `cgroup-sock`: `inject_cgroup_sock_<attach point>`.
pub const PROG_INJECT_CGROUP_SOCK_CONNECT4: &str = "inject_cgroup_sock_connect4";
pub const PROG_INJECT_CGROUP_SOCK_CONNECT6: &str = "inject_cgroup_sock_connect6";
pub const PROG_INJECT_CGROUP_SOCK_BIND4: &str = "inject_cgroup_sock_bind4";
pub const PROG_INJECT_CGROUP_SOCK_BIND6: &str = "inject_cgroup_sock_bind6";
pub const PROG_INJECT_CGROUP_SOCK_SENDMSG4: &str = "inject_cgroup_sock_sendmsg4";
pub const PROG_INJECT_CGROUP_SOCK_SENDMSG6: &str = "inject_cgroup_sock_sendmsg6";
pub const PROG_INJECT_CGROUP_SOCK_CREATE: &str = "inject_cgroup_sock_create";

/// Every program of the eBPF object. The loader's names test checks the object has exactly
/// these, so a program renamed on one side fails a unit test, not a user's run.
pub const PROGRAMS: &[&str] = &[
    PROG_SYS_ENTER,
    PROG_SYS_ENTER_INJECT,
    PROG_SYS_EXIT,
    PROG_NEVER_RETURNING,
    PROG_TASK_FORK,
    PROG_CGROUP_ATTACH,
    PROG_HTTP_INGRESS,
    PROG_HTTP_EGRESS,
    PROG_INJECT_KPROBE,
    PROG_INJECT_LSM_FILE_OPEN,
    PROG_INJECT_LSM_FILE_PERMISSION,
    PROG_INJECT_LSM_SOCKET_CONNECT,
    PROG_INJECT_LSM_SOCKET_BIND,
    PROG_INJECT_LSM_SOCKET_SENDMSG,
    PROG_INJECT_LSM_SOCKET_RECVMSG,
    PROG_INJECT_LSM_INODE_CREATE,
    PROG_INJECT_LSM_INODE_UNLINK,
    PROG_INJECT_LSM_INODE_MKDIR,
    PROG_INJECT_LSM_INODE_RMDIR,
    PROG_INJECT_LSM_INODE_RENAME,
    PROG_INJECT_LSM_MMAP_FILE,
    PROG_INJECT_LSM_TASK_ALLOC,
    PROG_INJECT_LSM_BPRM_CHECK_SECURITY,
    PROG_INJECT_FMOD_RET,
    PROG_INJECT_SIGNAL_PROBE,
    PROG_INJECT_CGROUP_SOCK_CONNECT4,
    PROG_INJECT_CGROUP_SOCK_CONNECT6,
    PROG_INJECT_CGROUP_SOCK_BIND4,
    PROG_INJECT_CGROUP_SOCK_BIND6,
    PROG_INJECT_CGROUP_SOCK_SENDMSG4,
    PROG_INJECT_CGROUP_SOCK_SENDMSG6,
    PROG_INJECT_CGROUP_SOCK_CREATE,
];

/// Every map of the eBPF object (checked like [`PROGRAMS`]).
pub const MAPS: &[&str] = &[
    MAP_TARGETS,
    MAP_TARGET_FILTER,
    MAP_SYSCALL_STATS,
    MAP_SYSCALL_ERRORS,
    MAP_INFLIGHT,
    MAP_SYSCALL_COUNTS,
    MAP_THREAD_CALLS,
    MAP_CPU_CALL,
    MAP_GENERATION,
    MAP_INJECT_RULES,
    MAP_RULE_SYSCALLS,
    MAP_INJECTIONS,
    MAP_SIGNAL_PROBE_TID,
    MAP_STOP_FAULTS,
    MAP_TRACE_EVENTS,
    MAP_TRACE_SYSCALLS,
    MAP_TRACE_DROPS,
    MAP_HTTP_RESPONSES,
    MAP_HTTP_CONNECTIONS,
    MAP_TRACE_SEEN,
];

pub const MAX_TARGETS: u32 = 1024;
/// Syscall numbers below this can be traced.
pub const MAX_SYSCALLS: u32 = 1024;
pub const TRACE_RING_BYTES: u32 = 4 << 20;
pub const TRACE_PATH_MAX: usize = 128;
/// Enough for a `sockaddr_un` (110 bytes).
pub const TRACE_ADDR_MAX: usize = 112;
/// `TraceSpec::path_arg` / `addr_arg` when the call has none.
pub const NO_ARG: u8 = 0xff;
pub const MAX_RULES: u32 = 4096;
/// Longest path prefix a rule can filter on.
pub const PATH_PREFIX_MAX: usize = 64;
/// `InjectRule::path_arg` when the rule has no path filter.
pub const NO_PATH_ARG: u32 = u32::MAX;
pub const MAX_STATS_ENTRIES: u32 = 32 * 1024;
pub const MAX_ERROR_ENTRIES: u32 = 16 * 1024;
pub const MAX_INFLIGHT_THREADS: u32 = 64 * 1024;
/// Targets whose counts live in [`MAP_SYSCALL_COUNTS`] (slots below this); later ones count in
/// [`MAP_SYSCALL_STATS`]. Slots are given in order and never reused.
pub const COUNTED_SLOTS: u32 = 64;
/// Syscall numbers below this count in [`MAP_SYSCALL_COUNTS`] (x86_64 has about 460).
pub const COUNTED_SYSCALLS: usize = 512;
/// Entries of [`MAP_THREAD_CALLS`] (a power of two).
pub const THREAD_CALL_ENTRIES: u32 = 64 * 1024;
/// Threads the stop engine's tracer can hold at once.
pub const MAX_STOP_FAULTS: u32 = 64 * 1024;

/// Latency histogram buckets: bucket `i` counts calls that took `[2^i, 2^(i+1))` ns
/// (bucket 0 also takes 0 ns); the last bucket is open-ended (2^39 ns is about 9 minutes).
pub const HIST_BUCKETS: usize = 40;

/// Target cgroups the filter lists one by one; with more, every call asks `TARGETS`.
pub const TARGET_FILTER_IDS: usize = 8;

/// Value of [`MAP_TARGET_FILTER`]: the targets, while there are few. Most calls on a host are
/// not a target's; comparing a handful of ids in an array the verifier inlines is cheaper than a
/// hash lookup, and gives a target's slot without one.
///
/// The loader rewrites it while the kernel reads it, without a lock, so it never moves an id
/// and never changes a live id's slot: a freed position gets its slot written first, its id after.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetFilter {
    /// Positions in use (some may be free: id 0), or [`TargetFilter::ALL`].
    pub len: u32,
    pub _pad: u32,
    pub cgroup_ids: [u64; TARGET_FILTER_IDS],
    pub slots: [u32; TARGET_FILTER_IDS],
}

impl TargetFilter {
    /// `len` meaning "too many targets to list: ask `TARGETS`".
    pub const ALL: u32 = u32::MAX;
}

/// Key of [`MAP_SYSCALL_STATS`]. Keyed by slot, not cgroup id, so a restarted container
/// (new cgroup, same target) keeps adding to the same series.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatsKey {
    pub slot: u32,
    pub syscall: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallStats {
    /// Completed calls (plus `exit`/`exit_group`, counted at entry since they never return).
    pub calls: u64,
    /// Calls that returned a negative errno.
    pub errors: u64,
    pub latency_sum_ns: u64,
    pub latency_hist: [u64; HIST_BUCKETS],
}

impl SyscallStats {
    pub const ZERO: Self = Self {
        calls: 0,
        errors: 0,
        latency_sum_ns: 0,
        latency_hist: [0; HIST_BUCKETS],
    };
}

/// Calls and failures of one (slot, syscall).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallCount {
    pub calls: u64,
    pub errors: u64,
}

/// Value of [`MAP_SYSCALL_COUNTS`]: one target's counts, indexed by syscall number. The
/// latency of timed calls, and the counts of syscalls past the array, are in
/// [`MAP_SYSCALL_STATS`]; user space adds the two.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SlotCounts {
    pub counts: [CallCount; COUNTED_SYSCALLS],
}

/// Value of [`MAP_THREAD_CALLS`]: the call a thread of a target is in. Threads whose ids share a
/// position overwrite each other: the one that loses finds another id at exit, reads its syscall
/// number from its registers and is counted all the same, untimed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadCall {
    /// `tid << 32 | syscall`, in one word so that a reader never pairs one thread's id with
    /// another's syscall; 0 once the call is counted.
    pub who: u64,
    /// `bpf_ktime_get_ns()` at entry, 0 if the call is not timed.
    pub start_ns: u64,
}

/// Key of [`MAP_SYSCALL_ERRORS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorKey {
    pub slot: u32,
    pub syscall: u32,
    pub errno: u32,
    pub _pad: u32,
}

/// Value of [`MAP_INFLIGHT`]: what a thread of a target entered. `start_ns == 0` means
/// "not in a counted call" (the entry is reused, not deleted, to keep the hot path cheap).
///
/// The injection decision is taken at syscall entry and parked here (`pending_*`) for the
/// engine's hook, which runs later in the same call, to carry out.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InflightCall {
    pub start_ns: u64,
    pub cgroup_id: u64,
    pub syscall: u32,
    pub slot: u32,
    /// errno to inject, 0 for none.
    pub pending_errno: u32,
    /// `ENGINE_*` that must carry it out.
    pub pending_engine: u32,
    /// Set when a fault was injected into this call (marks its trace event).
    pub injected: u32,
    /// errno of a fault carried out after `sys_exit` (by chaos-user's tracer: the stop and ptrace
    /// engines), 0 for none. The monitor counts the call as failed with it, as the application
    /// sees it, instead of the result the tracepoint saw.
    pub fault_errno: u32,
    /// The call's arguments, saved at entry when tracing.
    pub args: [u64; 6],
}

/// Value of [`MAP_TRACE_SYSCALLS`]: whether to trace a syscall, and which of its arguments is
/// a path or a socket address to copy into the event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceSpec {
    pub traced: u8,
    pub path_arg: u8,
    pub addr_arg: u8,
    pub _pad: u8,
}

/// One traced call, as the kernel hands it to user space.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TraceEvent {
    /// `bpf_ktime_get_ns()` at entry.
    pub start_ns: u64,
    pub latency_ns: u64,
    pub pid_tgid: u64,
    pub args: [u64; 6],
    pub ret: i64,
    pub slot: u32,
    pub syscall: u32,
    pub injected: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
    pub path: [u8; TRACE_PATH_MAX],
    pub addr: [u8; TRACE_ADDR_MAX],
}

/// Key of [`MAP_HTTP_RESPONSES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpKey {
    pub slot: u32,
    pub code: u32,
}

/// Value of [`MAP_HTTP_RESPONSES`]: responses with this code, and the latency (request seen ->
/// response seen, same histogram as syscalls) of those whose request was seen. One value for
/// both: a response costs one map update.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpStats {
    pub responses: u64,
    pub timed: u64,
    pub sum_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

impl HttpStats {
    pub const ZERO: Self = Self {
        responses: 0,
        timed: 0,
        sum_ns: 0,
        hist: [0; HIST_BUCKETS],
    };
}

/// How a rule's fault is carried out in the kernel.
pub const ENGINE_KPROBE: u32 = 1;
pub const ENGINE_LSM: u32 = 2;
pub const ENGINE_CGROUP_SOCK: u32 = 3;
pub const ENGINE_SIGNAL: u32 = 4;
pub const ENGINE_FMOD_RET: u32 = 5;
/// `SIGSTOP` to the thread at entry; chaos-user's tracer applies the fault at its stop.
pub const ENGINE_STOP: u32 = 6;

/// Key of [`MAP_INJECT_RULES`]: one rule per (target cgroup, syscall), so the cost of a call does
/// not grow with the number of rules or targets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub cgroup_id: u64,
    pub syscall: u32,
    pub _pad: u32,
}

/// A perturbation rule as the kernel applies it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InjectRule {
    /// Index into [`MAP_INJECTIONS`].
    pub index: u32,
    pub engine: u32,
    /// errno to return, or the signal number for [`ENGINE_SIGNAL`].
    pub errno_or_signal: u32,
    /// Which syscall argument holds the path for `path_prefix`, or [`NO_PATH_ARG`].
    pub path_arg: u32,
    /// Inject when `bpf_get_prandom_u32() < probability_threshold` (2^32 means always).
    pub probability_threshold: u64,
    /// Only the nth matching call (1-based); 0: every matching call.
    pub nth: u64,
    /// At most this many injections; 0: no limit.
    pub max_count: u64,
    /// `bpf_ktime_get_ns()` after which the rule no longer applies; 0: never expires.
    pub expires_ns: u64,
    /// Matching calls seen so far (atomic; for `nth`).
    pub matched: u64,
    /// Injections granted so far (atomic; for `max_count`).
    pub taken: u64,
    pub path_prefix_len: u32,
    pub _pad: u32,
    /// How long the stop engine's tracer holds the call; 0: no delay.
    pub delay_ns: u64,
    pub path_prefix: [u8; PATH_PREFIX_MAX],
}

/// Value of [`MAP_STOP_FAULTS`]: a stop-engine fault on its way to the tracer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StopFault {
    /// `InjectRule::index` of the rule.
    pub rule_index: u32,
    pub syscall: u32,
    /// errno the call returns; 0: a delay alone.
    pub errno: u32,
    /// [`StopFault::IDLE`], [`StopFault::DECIDED`], [`StopFault::REISSUE`] or
    /// [`StopFault::REISSUING`].
    pub state: u32,
    pub delay_ns: u64,
    /// The call's first argument at entry: on arm64 its register holds the return value by the
    /// stop, and a call that returned -EINTR is re-issued with it.
    pub arg0: u64,
    /// What the call returned at `sys_exit`, kernel-internal restart codes included (0 until
    /// then): arm64 rewinds a restartable call before the stop, so its register no longer says.
    pub ret: i64,
}

impl StopFault {
    /// A traced thread with no fault under way.
    pub const IDLE: u32 = 0;
    /// Decided at entry; SIGSTOP sent.
    pub const DECIDED: u32 = 1;
    /// A delay-only fault whose call the signal interrupted: the tracer re-issues the call, and
    /// its next entry is not decided again (nor its interrupted exit counted).
    pub const REISSUE: u32 = 2;
    /// The same, once the tracer has taken it (a later SIGSTOP is not the engine's).
    pub const REISSUING: u32 = 3;
}

/// The histogram bucket of a latency, without `leading_zeros` (BPF has no clz instruction).
#[inline(always)]
pub fn latency_bucket(ns: u64) -> usize {
    let mut v = ns;
    let mut log = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        log += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        log += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        log += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        log += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        log += 2;
    }
    if v >= 1 << 1 {
        log += 1;
    }
    if log >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        log
    }
}

/// Upper bound (exclusive) of bucket `i`, in nanoseconds.
pub const fn bucket_upper_ns(i: usize) -> u64 {
    1u64 << (i + 1)
}

const _: () = assert!(core::mem::size_of::<StatsKey>() == 8);
const _: () = assert!(core::mem::size_of::<SyscallStats>() == 8 * (3 + HIST_BUCKETS));
const _: () = assert!(core::mem::size_of::<ErrorKey>() == 16);
const _: () = assert!(core::mem::size_of::<SlotCounts>() == 16 * COUNTED_SYSCALLS);
const _: () = assert!(core::mem::size_of::<ThreadCall>() == 16);
const _: () = assert!(THREAD_CALL_ENTRIES.is_power_of_two());
const _: () = assert!(COUNTED_SYSCALLS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<InflightCall>() == 40 + 48);
const _: () = assert!(core::mem::size_of::<TargetFilter>() == 8 + 12 * TARGET_FILTER_IDS);
const _: () = assert!(core::mem::size_of::<TraceSpec>() == 4);
const _: () = assert!(
    core::mem::size_of::<TraceEvent>() == 24 + 48 + 8 + 16 + 16 + TRACE_PATH_MAX + TRACE_ADDR_MAX
);
const _: () = assert!(core::mem::size_of::<HttpKey>() == 8);
const _: () = assert!(core::mem::size_of::<HttpStats>() == 24 + 8 * HIST_BUCKETS);
const _: () = assert!(core::mem::size_of::<RuleKey>() == 16);
const _: () = assert!(core::mem::size_of::<InjectRule>() == 16 + 8 * 7 + 8 + PATH_PREFIX_MAX);
const _: () = assert!(core::mem::size_of::<StopFault>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, with no implicit padding.
    unsafe impl aya::Pod for super::TargetFilter {}
    unsafe impl aya::Pod for super::StatsKey {}
    unsafe impl aya::Pod for super::SyscallStats {}
    unsafe impl aya::Pod for super::ErrorKey {}
    unsafe impl aya::Pod for super::SlotCounts {}
    unsafe impl aya::Pod for super::ThreadCall {}
    unsafe impl aya::Pod for super::InflightCall {}
    unsafe impl aya::Pod for super::RuleKey {}
    unsafe impl aya::Pod for super::InjectRule {}
    unsafe impl aya::Pod for super::StopFault {}
    unsafe impl aya::Pod for super::TraceSpec {}
    unsafe impl aya::Pod for super::TraceEvent {}
    unsafe impl aya::Pod for super::HttpKey {}
    unsafe impl aya::Pod for super::HttpStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_floor_log2() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(2), 1);
        assert_eq!(latency_bucket(3), 1);
        assert_eq!(latency_bucket(1023), 9);
        assert_eq!(latency_bucket(1024), 10);
        assert_eq!(latency_bucket(u64::MAX), HIST_BUCKETS - 1);
        for i in 0..HIST_BUCKETS - 1 {
            assert_eq!(latency_bucket(bucket_upper_ns(i) - 1), i);
            assert_eq!(latency_bucket(bucket_upper_ns(i)), i + 1);
        }
    }
}
