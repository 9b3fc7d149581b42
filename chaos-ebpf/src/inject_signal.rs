//! Engine `signal`: the decision at syscall entry sends the signal to the calling thread at
//! once (`bpf_send_signal_thread`); the kernel delivers it when the call returns to user space.
//! It has no program of its own: it runs inside `monitor_sys_enter_inject` (`inject_signal_probe`
//! is only doctor's probe of it).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_send_signal_thread},
    macros::{map, raw_tracepoint},
    maps::Array,
    programs::RawTracePointContext,
};
use chaos_common::{InflightCall, InjectRule};

use crate::inject::grant;

const SIGUSR1: u32 = 10;

#[inline(always)]
pub fn send(rule: &mut InjectRule, call: &mut InflightCall) {
    if grant(rule) {
        unsafe { bpf_send_signal_thread(rule.errno_or_signal) };
        call.injected = 1;
    }
}

/// `doctor`'s probe of the engine (chaos-user/src/inject/signal.rs): the thread whose id is in
/// the map gets SIGUSR1 at its next syscall, sent as the engine sends its signals.
#[map]
static SIGNAL_PROBE_TID: Array<u32> = Array::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn inject_signal_probe(_ctx: RawTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if tid != 0 && SIGNAL_PROBE_TID.get(0).copied() == Some(tid) {
        unsafe { bpf_send_signal_thread(SIGUSR1) };
    }
    0
}
