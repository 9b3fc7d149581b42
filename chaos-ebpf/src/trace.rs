//! Per-call trace: one [`TraceEvent`] per completed call of the traced syscalls, through a ring
//! buffer. When user space falls behind, events are dropped (and counted), never the counters.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use chaos_common::{
    InflightCall, MAX_SYSCALLS, MAX_TARGETS, NO_ARG, TRACE_RING_BYTES, TraceEvent, TraceSpec,
};

#[map]
static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);

#[map]
static TRACE_SYSCALLS: Array<TraceSpec> = Array::with_max_entries(MAX_SYSCALLS, 0);

#[map]
static TRACE_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_TARGETS, 0);

/// Calls seen by this CPU, for `--sample`.
#[map]
static TRACE_SEEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Set by the loader for `chaos-user trace`.
#[unsafe(no_mangle)]
static TRACE_ENABLED: u8 = 0;
/// Only failed calls (`--failed`).
#[unsafe(no_mangle)]
static TRACE_FAILED_ONLY: u8 = 0;
/// Keep one call in N (`--sample N`).
#[unsafe(no_mangle)]
static TRACE_SAMPLE: u64 = 1;

#[inline(always)]
pub fn enabled() -> bool {
    unsafe { core::ptr::read_volatile(&TRACE_ENABLED) != 0 }
}

#[inline(always)]
pub fn emit(call: &InflightCall, start_ns: u64, ret: i64, latency_ns: u64) {
    let Some(spec) = TRACE_SYSCALLS.get(call.syscall) else {
        return;
    };
    if spec.traced == 0 {
        return;
    }
    if unsafe { core::ptr::read_volatile(&TRACE_FAILED_ONLY) } != 0 && ret >= 0 {
        return;
    }
    let sample = unsafe { core::ptr::read_volatile(&TRACE_SAMPLE) };
    if sample > 1 {
        let Some(seen) = TRACE_SEEN.get_ptr_mut(0) else {
            return;
        };
        let seen = unsafe {
            *seen += 1;
            *seen
        };
        if seen % sample != 0 {
            return;
        }
    }
    let Some(mut entry) = TRACE_EVENTS.reserve::<TraceEvent>(0) else {
        if let Some(drops) = TRACE_DROPS.get_ptr_mut(call.slot) {
            unsafe { *drops += 1 };
        }
        return;
    };
    let event = unsafe { &mut *entry.as_mut_ptr() };
    event.start_ns = start_ns;
    event.latency_ns = latency_ns;
    event.pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    event.args = call.args;
    event.ret = ret;
    event.slot = call.slot;
    event.syscall = call.syscall;
    event.injected = call.injected;
    event._pad = 0;
    event.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    event.path[0] = 0;
    if let Some(address) = arg(call, spec.path_arg)
        && unsafe { bpf_probe_read_user_str_bytes(address as *const u8, &mut event.path) }.is_err()
    {
        event.path[0] = 0;
    }
    event.addr[0] = 0;
    event.addr[1] = 0;
    if let Some(address) = arg(call, spec.addr_arg)
        && unsafe { bpf_probe_read_user_buf(address as *const u8, &mut event.addr) }.is_err()
    {
        event.addr[0] = 0;
        event.addr[1] = 0;
    }
    entry.submit(0);
}

#[inline(always)]
fn arg(call: &InflightCall, index: u8) -> Option<u64> {
    if index == NO_ARG {
        return None;
    }
    let address = *call.args.get(index as usize)?;
    (address != 0).then_some(address)
}
