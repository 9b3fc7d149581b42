//! Engine `stop`: decided in the kernel, carried out by chaos-user's tracer for the perturbed
//! call only. The decision at entry records the fault in `STOP_FAULTS` (thread -> fault) and sends
//! the thread SIGSTOP; the thread stops at its next return to user space (a signal-delivery-stop
//! of that thread alone), where the tracer holds it and/or sets its return value, then resumes it
//! with the signal suppressed. Its threads run under PTRACE_CONT: other calls never stop.
//!
//! A blocking call finds the signal pending and returns at once (-ERESTARTSYS, -EINTR...): for a
//! delay alone the tracer re-issues it after the delay, so its interrupted exit is not counted
//! ([`reissued`]) and its re-entry not decided again ([`is_reissue`]).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_send_signal_thread},
    macros::map,
    maps::HashMap,
};
use chaos_common::{InflightCall, InjectRule, MAX_STOP_FAULTS, StopFault};

use crate::inject::grant;

// Not LRU: an evicted entry would be a traced thread no longer perturbed. The tracer adds and
// removes them.
#[map]
static STOP_FAULTS: HashMap<u32, StopFault> = HashMap::with_max_entries(MAX_STOP_FAULTS, 0);

const SIGSTOP: u32 = 19;
/// What an interruptible call returns when a signal is pending (kernel-internal codes included).
const EINTR: i64 = 4;
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Carries out a decision: records the fault (with the call's first argument, `arg0`), stops the
/// thread. Only a thread the tracer has
/// seized (it has an entry) is stopped: a SIGSTOP nobody handles would stop the process. An errno
/// is what the application will see, so the monitor counts it (`fault_errno`) whatever the call
/// returns.
#[inline(always)]
pub fn stop(rule: &mut InjectRule, call: &mut InflightCall, arg0: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(fault) = STOP_FAULTS.get_ptr_mut(&tid) else {
        return;
    };
    let fault = unsafe { &mut *fault };
    if fault.state != StopFault::IDLE || !grant(rule) {
        return;
    }
    fault.rule_index = rule.index;
    fault.syscall = call.syscall;
    fault.errno = rule.errno_or_signal;
    fault.delay_ns = rule.delay_ns;
    fault.arg0 = arg0;
    fault.ret = 0;
    fault.state = StopFault::DECIDED;
    unsafe { bpf_send_signal_thread(SIGSTOP) };
    call.injected = 1;
    call.fault_errno = rule.errno_or_signal;
}

/// Whether this entry is the tracer re-issuing a call interrupted by our signal: not decided
/// again (the marker is consumed).
#[inline(always)]
pub fn is_reissue(call: &InflightCall) -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(fault) = STOP_FAULTS.get_ptr_mut(&tid) else {
        return false;
    };
    let fault = unsafe { &mut *fault };
    let reissue = fault.state == StopFault::REISSUE || fault.state == StopFault::REISSUING;
    if !reissue || fault.syscall != call.syscall {
        return false;
    }
    fault.state = StopFault::IDLE;
    true
}

/// At `sys_exit` of a call this engine perturbed: records what it returned for the tracer, and
/// returns true when the signal interrupted it and the tracer will re-issue it (a delay alone),
/// so this exit is none the application sees. Marks the fault for the tracer and for the
/// re-entry.
#[inline(always)]
pub fn reissued(call: &InflightCall, ret: i64) -> bool {
    // A call no longer in flight (`start_ns` 0) is an old one of this thread's.
    if call.start_ns == 0 || call.injected == 0 {
        return false;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(fault) = STOP_FAULTS.get_ptr_mut(&tid) else {
        return false;
    };
    let fault = unsafe { &mut *fault };
    if fault.state != StopFault::DECIDED || fault.syscall != call.syscall {
        return false;
    }
    fault.ret = ret;
    if fault.errno != 0
        || !matches!(
            -ret,
            EINTR | ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
        )
    {
        return false;
    }
    fault.state = StopFault::REISSUE;
    true
}
