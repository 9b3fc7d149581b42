//! A call's number and arguments from the registers saved at syscall entry (`struct pt_regs`),
//! at offsets the loader sets for the running architecture (`chaos_common::RegsLayout`). The
//! offsets are read-only globals: the verifier knows their values, so the reads below cost
//! what fixed offsets would.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use chaos_common::{RegsLayout, regs::ARGS_WINDOW_REGS};

/// Set by the loader; x86_64's until then.
#[unsafe(no_mangle)]
static REGS_LAYOUT: RegsLayout = RegsLayout::X86_64;

#[inline(always)]
fn layout_field(field: &u32) -> u32 {
    unsafe { core::ptr::read_volatile(field) }
}

/// The syscall number of the current call; None for a call the entry side passes over (-1:
/// skipped by a tracer or seccomp).
#[inline(always)]
pub(crate) fn syscall_nr(regs: *const u8) -> Option<u32> {
    let offset = layout_field(&REGS_LAYOUT.syscall_nr) as usize;
    let nr = unsafe { bpf_probe_read_kernel(regs.wrapping_add(offset) as *const i32) }.ok()?;
    u32::try_from(nr).ok()
}

/// The six syscall arguments, read in one go (one helper call) from the window that holds them.
#[inline(always)]
pub(crate) fn syscall_args(regs: *const u8) -> [u64; 6] {
    let start = layout_field(&REGS_LAYOUT.args_window);
    let window = regs.wrapping_add(start as usize) as *const [u64; ARGS_WINDOW_REGS];
    let Ok(window) = (unsafe { bpf_probe_read_kernel(window) }) else {
        return [0; 6];
    };
    let mut args = [0u64; 6];
    for (i, arg) in args.iter_mut().enumerate() {
        let offset = layout_field(&REGS_LAYOUT.args[i]);
        *arg = window[(offset.wrapping_sub(start) / 8) as usize % ARGS_WINDOW_REGS];
    }
    args
}

/// The `n`th syscall argument.
#[inline(always)]
pub(crate) fn syscall_arg(regs: *const u8, n: u32) -> Option<u64> {
    let offset = layout_field(REGS_LAYOUT.args.get(n as usize)?) as usize;
    unsafe { bpf_probe_read_kernel(regs.wrapping_add(offset) as *const u64) }.ok()
}
