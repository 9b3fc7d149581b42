//! Engine `kprobe`: a kprobe on the syscall's entry function (`__x64_sys_*`) overrides its return
//! value, so the call is not executed. Needs CONFIG_BPF_KPROBE_OVERRIDE.
use aya_ebpf::{helpers::bpf_override_return, macros::kprobe, programs::ProbeContext};
use chaos_common::ENGINE_KPROBE;

use crate::inject::take_pending;

#[kprobe]
pub fn inject_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(errno) = take_pending(ENGINE_KPROBE) {
        unsafe { bpf_override_return(ctx.regs, (-(errno as i64)) as u64) };
    }
    0
}
