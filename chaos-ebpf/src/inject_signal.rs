//! Engine `signal`: the decision at syscall entry sends the signal to the calling thread at
//! once (`bpf_send_signal_thread`); the kernel delivers it when the call returns to user space.
//! It has no program of its own: it runs inside `monitor_sys_enter_inject`.
use aya_ebpf::helpers::bpf_send_signal_thread;
use chaos_common::{InflightCall, InjectRule};

use crate::inject::grant;

#[inline(always)]
pub fn send(rule: &mut InjectRule, call: &mut InflightCall) {
    if grant(rule) {
        unsafe { bpf_send_signal_thread(rule.errno_or_signal) };
        call.injected = 1;
    }
}
