//! HTTP/1.x responses by status code, seen from outside at the syscall boundary of the target:
//! a request is a read-like call whose data starts with a method; a response is a write-like
//! call whose data starts with `HTTP/1.x NNN`. Latency runs from the request's read to the
//! response's write on the same (process, fd).
//!
//! A server that reads and writes one connection through different fds (dup) gets its responses
//! counted but not timed.
//!
//! Why here and not in cgroup_skb: the syscall buffers hold the bytes the application wrote, in
//! order, unsplit by TCP segmentation, and these programs already run for the target's calls, so
//! the extra cost is a comparison for other calls and one small user read for reads/writes.
//! TLS is out of scope: encrypted bytes carry no status line.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::map,
    maps::{LruHashMap, PerCpuHashMap},
};
use chaos_common::{HttpKey, HttpLatency, InflightCall, latency_bucket};

use crate::monitor::get_or_zero;

#[map]
static HTTP_RESPONSES: PerCpuHashMap<HttpKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

#[map]
static HTTP_LATENCY: PerCpuHashMap<u32, HttpLatency> = PerCpuHashMap::with_max_entries(1024, 0);

/// (tgid << 32 | fd) -> when the request was read. LRU: connections that close are forgotten.
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
const STATUS_LINE_MIN: u64 = 12;

#[inline(always)]
pub fn enabled() -> bool {
    unsafe { core::ptr::read_volatile(&HTTP_ENABLED) != 0 }
}

#[inline(always)]
fn kind(syscall: u32) -> Option<usize> {
    let numbers = unsafe { core::ptr::read_volatile(&HTTP_SYSCALLS) };
    (0..8).find(|&i| numbers[i] == syscall)
}

#[inline(always)]
pub fn wants_args(syscall: u32) -> bool {
    enabled() && kind(syscall).is_some()
}

/// At entry of a write-like call: a response starts here if the data begins with a status line.
#[inline(always)]
pub fn on_enter(call: &InflightCall) {
    let Some(kind) = kind(call.syscall) else {
        return;
    };
    let data = match kind {
        WRITE | SENDTO if call.args[2] >= STATUS_LINE_MIN => call.args[1],
        WRITEV => first_iov_base(call.args[1], STATUS_LINE_MIN),
        SENDMSG => msghdr_iov_base(call.args[1], STATUS_LINE_MIN),
        _ => 0,
    };
    if data == 0 {
        return;
    }
    let Ok(head) = (unsafe { bpf_probe_read_user(data as *const [u8; 12]) }) else {
        return;
    };
    let Some(code) = status_code(&head) else {
        return;
    };
    let key = HttpKey {
        slot: call.slot,
        code,
    };
    if let Some(count) = get_or_zero(&HTTP_RESPONSES, &key, &0) {
        unsafe { *count += 1 };
    }
    let connection = connection(call.args[0]);
    if let Some(&started) = unsafe { HTTP_REQUESTS.get(&connection) } {
        let _ = HTTP_REQUESTS.remove(&connection);
        // The call itself may be untimed (latency sampling): read the clock here, responses are rare.
        let elapsed = unsafe { bpf_ktime_get_ns() }.saturating_sub(started);
        if let Some(latency) = get_or_zero(&HTTP_LATENCY, &call.slot, &HttpLatency::ZERO) {
            let latency = unsafe { &mut *latency };
            latency.count += 1;
            latency.sum_ns += elapsed;
            if let Some(bucket) = latency.hist.get_mut(latency_bucket(elapsed)) {
                *bucket += 1;
            }
        }
    }
}

/// At exit of a read-like call: a request starts here if the data read begins with a method.
#[inline(always)]
pub fn on_exit(call: &InflightCall, ret: i64) {
    if ret < 4 {
        return;
    }
    let Some(kind) = kind(call.syscall) else {
        return;
    };
    let data = match kind {
        READ | RECVFROM => call.args[1],
        READV => first_iov_base(call.args[1], 4),
        RECVMSG => msghdr_iov_base(call.args[1], 4),
        _ => 0,
    };
    if data == 0 {
        return;
    }
    let Ok(head) = (unsafe { bpf_probe_read_user(data as *const [u8; 4]) }) else {
        return;
    };
    if !is_method(&head) {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = HTTP_REQUESTS.insert(&connection(call.args[0]), &now, 0);
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
