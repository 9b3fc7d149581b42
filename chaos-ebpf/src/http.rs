//! HTTP/1.x responses by status code, seen from outside at the syscall boundary of the target:
//! a request is a read-like call whose data starts with a method; a response is a write-like
//! call whose data starts with `HTTP/1.x NNN`. Latency runs from the request's read to the
//! response's write on the same (process, fd).
//!
//! Everything happens at `sys_exit`: the return value says how many bytes moved, so failed and
//! short calls (EAGAIN reads of event-loop servers) cost a comparison, and the buffer still holds
//! what was written because the thread has not run since. The arguments come from the saved user
//! registers, which the syscall left alone.
//!
//! A server that reads and writes one connection through different fds (dup) gets its responses
//! counted but not timed.
//!
//! Why here and not in cgroup_skb: the syscall buffers hold the bytes the application wrote, in
//! order, unsplit by TCP segmentation, and these programs already run for the target's calls, so
//! the extra cost is a comparison for other calls and small user reads for reads/writes.
//! TLS is out of scope: encrypted bytes carry no status line.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::map,
    maps::{LruHashMap, PerCpuHashMap},
    programs::RawTracePointContext,
};
use chaos_common::{HttpKey, HttpLatency, InflightCall, latency_bucket};

use crate::monitor::get_or_zero;

#[map]
static HTTP_RESPONSES: PerCpuHashMap<HttpKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

#[map]
static HTTP_LATENCY: PerCpuHashMap<u32, HttpLatency> = PerCpuHashMap::with_max_entries(1024, 0);

/// (tgid << 32 | fd) -> when the pending request was read, 0 when none is. LRU: connections that
/// close are forgotten. Entries are rewritten in place: an LRU insert or delete costs far more.
#[map]
static HTTP_REQUESTS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

#[unsafe(no_mangle)]
static HTTP_ENABLED: u8 = 0;

/// Syscall numbers on the running architecture, set by the loader:
/// read, write, readv, writev, recvfrom, sendto, recvmsg, sendmsg.
#[unsafe(no_mangle)]
static HTTP_SYSCALLS: [u32; 8] = [u32::MAX; 8];

const READ: usize = 0;
const WRITE: usize = 1;
const READV: usize = 2;
const WRITEV: usize = 3;
const RECVFROM: usize = 4;
const SENDTO: usize = 5;
const RECVMSG: usize = 6;
const SENDMSG: usize = 7;

/// Shortest response start we look at: `HTTP/1.1 200`.
const STATUS_LINE_MIN: i64 = 12;
/// Shortest request start we look at: a method's first four bytes.
const METHOD_MIN: i64 = 4;

#[inline(always)]
pub fn enabled() -> bool {
    unsafe { core::ptr::read_volatile(&HTTP_ENABLED) != 0 }
}

#[inline(always)]
fn kind(syscall: u32) -> Option<usize> {
    let numbers = unsafe { core::ptr::read_volatile(&HTTP_SYSCALLS) };
    (0..8).find(|&i| numbers[i] == syscall)
}

/// At exit of a target's call that moved `ret` bytes; `now` is the exit time if the call was
/// timed.
#[inline(always)]
pub fn on_exit(ctx: &RawTracePointContext, call: &InflightCall, ret: i64, now: Option<u64>) {
    if ret < METHOD_MIN {
        return;
    }
    let Some(kind) = kind(call.syscall) else {
        return;
    };
    let is_write = matches!(kind, WRITE | WRITEV | SENDTO | SENDMSG);
    if is_write && ret < STATUS_LINE_MIN {
        return;
    }
    let [fd, buf] = fd_and_buf(ctx);
    let min = if is_write {
        STATUS_LINE_MIN
    } else {
        METHOD_MIN
    } as u64;
    let data = match kind {
        READ | WRITE | RECVFROM | SENDTO => buf,
        READV | WRITEV => first_iov_base(buf, min),
        RECVMSG | SENDMSG => msghdr_iov_base(buf, min),
        _ => 0,
    };
    if data == 0 {
        return;
    }
    let now = || now.unwrap_or_else(|| unsafe { bpf_ktime_get_ns() });
    if is_write {
        on_response(call.slot, fd, data, now);
    } else {
        on_request(fd, data, now);
    }
}

/// The first two syscall arguments (rdi, rsi on x86_64: contiguous in `struct pt_regs`).
#[inline(always)]
fn fd_and_buf(ctx: &RawTracePointContext) -> [u64; 2] {
    let regs: *const u8 = ctx.arg(0);
    match unsafe { bpf_probe_read_kernel(regs.add(104) as *const [u64; 2]) } {
        Ok([rsi, rdi]) => [rdi, rsi],
        Err(_) => [0, 0],
    }
}

/// A write-like call: a response if its data begins with a status line.
#[inline(always)]
fn on_response(slot: u32, fd: u64, data: u64, now: impl FnOnce() -> u64) {
    let Ok(head) = (unsafe { bpf_probe_read_user(data as *const [u8; 12]) }) else {
        return;
    };
    let Some(code) = status_code(&head) else {
        return;
    };
    if let Some(count) = get_or_zero(&HTTP_RESPONSES, &HttpKey { slot, code }, &0) {
        unsafe { *count += 1 };
    }
    let Some(started) = HTTP_REQUESTS.get_ptr_mut(&connection(fd)) else {
        return;
    };
    let started = unsafe { &mut *started };
    if *started == 0 {
        return;
    }
    let elapsed = now().saturating_sub(*started);
    *started = 0;
    if let Some(latency) = get_or_zero(&HTTP_LATENCY, &slot, &HttpLatency::ZERO) {
        let latency = unsafe { &mut *latency };
        latency.count += 1;
        latency.sum_ns += elapsed;
        if let Some(bucket) = latency.hist.get_mut(latency_bucket(elapsed)) {
            *bucket += 1;
        }
    }
}

/// A read-like call: a request starts here if the data read begins with a method.
#[inline(always)]
fn on_request(fd: u64, data: u64, now: impl FnOnce() -> u64) {
    let Ok(head) = (unsafe { bpf_probe_read_user(data as *const [u8; 4]) }) else {
        return;
    };
    if !is_method(&head) {
        return;
    }
    let connection = connection(fd);
    let now = now();
    match HTTP_REQUESTS.get_ptr_mut(&connection) {
        Some(started) => unsafe { *started = now },
        None => {
            let _ = HTTP_REQUESTS.insert(&connection, &now, 0);
        }
    }
}

#[inline(always)]
fn connection(fd: u64) -> u64 {
    (bpf_get_current_pid_tgid() & 0xffff_ffff_0000_0000) | (fd & 0xffff_ffff)
}

/// `iov[0].iov_base` of an iovec array, if that first buffer holds at least `min` bytes.
#[inline(always)]
fn first_iov_base(iov: u64, min: u64) -> u64 {
    match unsafe { bpf_probe_read_user(iov as *const [u64; 2]) } {
        Ok([base, len]) if len >= min => base,
        _ => 0,
    }
}

/// The first buffer of a `struct msghdr` (msg_iov is at offset 16 on 64-bit).
#[inline(always)]
fn msghdr_iov_base(msghdr: u64, min: u64) -> u64 {
    match unsafe { bpf_probe_read_user((msghdr + 16) as *const u64) } {
        Ok(iov) if iov != 0 => first_iov_base(iov, min),
        _ => 0,
    }
}

/// `HTTP/1.0 404` / `HTTP/1.1 200` -> the code.
#[inline(always)]
fn status_code(head: &[u8; 12]) -> Option<u32> {
    if &head[..7] != b"HTTP/1." || head[8] != b' ' {
        return None;
    }
    let mut code = 0u32;
    for &digit in &head[9..12] {
        if !digit.is_ascii_digit() {
            return None;
        }
        code = code * 10 + (digit - b'0') as u32;
    }
    Some(code)
}

#[inline(always)]
fn is_method(head: &[u8; 4]) -> bool {
    matches!(
        head,
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"PATC" | b"OPTI" | b"CONN" | b"TRAC"
    )
}
