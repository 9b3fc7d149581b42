//! Perturbator, shared part: the decision to inject, taken at syscall entry (from the monitor's
//! `monitor_sys_enter_inject`, for targets only), and the hand-over to the engine hook that
//! carries it out later in the same call (`take_pending`). Engines: `inject_kprobe.rs`,
//! `inject_fmod_ret.rs`, `inject_lsm.rs`, `inject_cgroup_sock.rs`, and `inject_signal.rs` and
//! `inject_stop.rs`, which act at once, from here.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns,
        bpf_probe_read_user_str_bytes,
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use chaos_common::{
    ENGINE_SIGNAL, ENGINE_STOP, InflightCall, InjectRule, MAX_RULES, MAX_SYSCALLS, NO_PATH_ARG,
    PATH_PREFIX_MAX, RuleKey,
};

use crate::monitor::INFLIGHT;

#[map]
static INJECT_RULES: HashMap<RuleKey, InjectRule> = HashMap::with_max_entries(MAX_RULES, 0);

#[map]
static INJECTIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_RULES, 0);

#[map]
static RULE_SYSCALLS: Array<u8> = Array::with_max_entries(MAX_SYSCALLS, 0);

/// Whether some rule names `syscall` (an inlined array read): the monitor sends only such calls
/// through `INFLIGHT`, where the decision is parked.
#[inline(always)]
pub fn ruled(syscall: u32) -> bool {
    RULE_SYSCALLS.get(syscall).copied() == Some(1)
}

/// Decides whether this call of a target gets a fault. Errno faults are parked in `call` for the
/// engine's hook; signals are sent now (they are delivered when the call returns to user space).
#[inline(always)]
pub fn decide(ctx: &RawTracePointContext, call: &mut InflightCall) {
    // Most calls are of syscalls no rule names: skip the hash lookup for them.
    if !ruled(call.syscall) {
        return;
    }
    let key = RuleKey {
        cgroup_id: call.cgroup_id,
        syscall: call.syscall,
        _pad: 0,
    };
    let Some(rule) = INJECT_RULES.get_ptr_mut(&key) else {
        return;
    };
    let rule = unsafe { &mut *rule };
    if rule.expires_ns != 0 && unsafe { bpf_ktime_get_ns() } > rule.expires_ns {
        return;
    }
    if rule.path_arg != NO_PATH_ARG && !path_matches(ctx, rule) {
        return;
    }
    // After the path: a re-issued call has the arguments that matched, and a call that does
    // not match spares the map lookup.
    if rule.engine == ENGINE_STOP && crate::inject_stop::is_reissue(call) {
        return;
    }
    if rule.nth != 0 {
        let seen = fetch_add(&mut rule.matched) + 1;
        if seen != rule.nth {
            return;
        }
    } else if (unsafe { bpf_get_prandom_u32() } as u64) >= rule.probability_threshold {
        return;
    }
    if rule.engine == ENGINE_SIGNAL {
        crate::inject_signal::send(rule, call);
        return;
    }
    if rule.engine == ENGINE_STOP {
        let arg0 = crate::regs::syscall_arg(ctx.arg(0), 0).unwrap_or(0);
        crate::inject_stop::stop(rule, call, arg0);
        return;
    }
    call.pending_errno = rule.errno_or_signal;
    call.pending_engine = rule.engine;
}

/// Called by an engine's hook: the errno to inject into the current call, if a decision for
/// `engine` is pending for this thread and the rule's count allows it. Consumes the decision.
#[inline(always)]
pub fn take_pending(engine: u32) -> Option<u32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let entry = INFLIGHT.get_ptr_mut(&tid)?;
    let call = unsafe { &mut *entry };
    if call.pending_errno == 0 || call.pending_engine != engine || call.start_ns == 0 {
        return None;
    }
    // Thread ids are reused: only a thread still in the target's cgroup may be perturbed.
    if unsafe { bpf_get_current_cgroup_id() } != call.cgroup_id {
        return None;
    }
    let errno = call.pending_errno;
    call.pending_errno = 0;
    let key = RuleKey {
        cgroup_id: call.cgroup_id,
        syscall: call.syscall,
        _pad: 0,
    };
    let rule = INJECT_RULES.get_ptr_mut(&key)?;
    if !grant(unsafe { &mut *rule }) {
        return None;
    }
    call.injected = 1;
    Some(errno)
}

/// Takes one injection from the rule's budget and counts it; false once `max_count` is spent.
#[inline(always)]
pub(crate) fn grant(rule: &mut InjectRule) -> bool {
    let taken = fetch_add(&mut rule.taken);
    if rule.max_count != 0 && taken >= rule.max_count {
        return false;
    }
    if let Some(count) = INJECTIONS.get_ptr_mut(rule.index) {
        unsafe { *count += 1 };
    }
    true
}

/// Atomic `+= 1` returning the old value: rule counters are shared by all CPUs.
/// `AtomicU64::fetch_add` is not offered on the BPF target, so this is the intrinsic. It must be
/// SeqCst: LLVM lowers a Relaxed one to the legacy XADD, which does not return the old value
/// (found with llvm-objdump). Needs BPF cpu v3 (see chaos-user/build.rs) and kernel 5.12+.
#[inline(always)]
fn fetch_add(value: &mut u64) -> u64 {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(value, 1) }
}

/// Whether the call's path argument starts with the rule's prefix.
#[inline(always)]
fn path_matches(ctx: &RawTracePointContext, rule: &InjectRule) -> bool {
    let Some(address) = crate::regs::syscall_arg(ctx.arg(0), rule.path_arg) else {
        return false;
    };
    let mut path = [0u8; PATH_PREFIX_MAX];
    if unsafe { bpf_probe_read_user_str_bytes(address as *const u8, &mut path) }.is_err() {
        return false;
    }
    // Every position is looked at, without a branch: those past the prefix count for nothing.
    // A loop that stops at the prefix's length compiles to a count-down from min(len, 64) that
    // verifiers before 6.x cannot bound (6.1 refuses it: "invalid access to map value").
    let len = rule.path_prefix_len;
    let mut differ = 0u8;
    for i in 0..PATH_PREFIX_MAX {
        // 0xff for i < len, else 0 (len is at most PATH_PREFIX_MAX).
        let care = ((i as u32).wrapping_sub(len) >> 31) as u8;
        differ |= (path[i] ^ rule.path_prefix[i]) & care.wrapping_neg();
    }
    differ == 0
}
