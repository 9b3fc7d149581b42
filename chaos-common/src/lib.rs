//! Types shared by the eBPF programs (`chaos-ebpf`) and the loader (`chaos-user`).
//!
//! Every struct here crosses the kernel/user boundary through a BPF map, so each one is
//! `#[repr(C)]`, `Copy`, padded explicitly and size-checked at compile time.
#![no_std]

/// cgroup v2 id (inode number) -> target slot. Decides in the kernel whether a call is counted.
pub const MAP_TARGETS: &str = "TARGETS";
/// Per-CPU `(slot, syscall)` -> [`SyscallStats`].
pub const MAP_SYSCALL_STATS: &str = "SYSCALL_STATS";
/// Per-CPU `(slot, syscall, errno)` -> failure count.
pub const MAP_SYSCALL_ERRORS: &str = "SYSCALL_ERRORS";
/// Thread id -> the call it is in ([`InflightCall`]), for latency.
pub const MAP_INFLIGHT: &str = "INFLIGHT";

/// Names of the monitor's programs, as `chaos-ebpf` exports them.
pub const PROG_SYS_ENTER: &str = "monitor_sys_enter";
pub const PROG_SYS_EXIT: &str = "monitor_sys_exit";

pub const MAX_TARGETS: u32 = 1024;
pub const MAX_STATS_ENTRIES: u32 = 32 * 1024;
pub const MAX_ERROR_ENTRIES: u32 = 16 * 1024;
pub const MAX_INFLIGHT_THREADS: u32 = 64 * 1024;

/// Latency histogram buckets: bucket `i` counts calls that took `[2^i, 2^(i+1))` ns
/// (bucket 0 also takes 0 ns); the last bucket is open-ended (2^39 ns is about 9 minutes).
pub const HIST_BUCKETS: usize = 40;

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
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InflightCall {
    pub start_ns: u64,
    pub syscall: u32,
    pub slot: u32,
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
const _: () = assert!(core::mem::size_of::<InflightCall>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, with no implicit padding.
    unsafe impl aya::Pod for super::StatsKey {}
    unsafe impl aya::Pod for super::SyscallStats {}
    unsafe impl aya::Pod for super::ErrorKey {}
    unsafe impl aya::Pod for super::InflightCall {}
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
