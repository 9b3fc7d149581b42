//! `chaos-user trace`: the kernel's per-call events (`chaos-ebpf/src/trace.rs`), decoded. The
//! trace peer owns its maps; the reader (`reader.rs`) owns the ring buffer once taken.
pub mod decode;
pub mod reader;

use std::fmt;

use aya::{
    Ebpf,
    maps::{Array, MapData, MapError, PerCpuArray, RingBuf},
};
use chaos_common::{
    MAP_TRACE_DROPS, MAP_TRACE_EVENTS, MAP_TRACE_SYSCALLS, MAX_SYSCALLS, TraceEvent, TraceSpec,
};
use serde::Serialize;

use crate::{
    ebpf::{self, LoadError},
    names,
};

pub struct TraceMaps {
    events: Option<RingBuf<MapData>>,
    syscalls: Array<MapData, TraceSpec>,
    drops: PerCpuArray<MapData, u64>,
}

impl TraceMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        Ok(Self {
            events: Some(ebpf::take_map(ebpf, MAP_TRACE_EVENTS)?),
            syscalls: ebpf::take_map(ebpf, MAP_TRACE_SYSCALLS)?,
            drops: ebpf::take_map(ebpf, MAP_TRACE_DROPS)?,
        })
    }

    /// Traces these syscalls (all when None), with what each needs decoded.
    pub fn select(&mut self, syscalls: Option<&[u32]>) -> Result<(), MapError> {
        for nr in 0..MAX_SYSCALLS {
            if syscalls.is_some_and(|chosen| !chosen.contains(&nr)) {
                continue;
            }
            let spec = decode::trace_spec(&names::syscall_name(nr));
            self.syscalls.set(nr, spec, 0)?;
        }
        Ok(())
    }

    /// The ring buffer, for the reader (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Events of this slot dropped because the reader fell behind.
    pub fn drops(&self, slot: u32) -> u64 {
        self.drops
            .get(&slot, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

/// A decoded call, as printed (text) or serialized (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct TraceLine {
    /// Wall-clock time of the call's entry, in nanoseconds since the epoch.
    pub time_ns: u128,
    pub target: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub syscall: String,
    pub args: Vec<String>,
    pub raw_args: [u64; 6],
    /// The return value; for failures -errno.
    pub ret: i64,
    pub errno: Option<String>,
    pub latency_ns: u64,
    pub injected: bool,
}

impl TraceLine {
    /// `monotonic_to_wall_ns`: what to add to `bpf_ktime_get_ns()` to get the wall clock.
    pub fn new(event: &TraceEvent, target: &str, monotonic_to_wall_ns: i128) -> Self {
        let syscall = names::syscall_name(event.syscall);
        let path = c_string(&event.path);
        let args = decode::arguments(&syscall, &event.args, &path, &event.addr);
        let failed = (-4095..0).contains(&event.ret);
        Self {
            time_ns: (event.start_ns as i128 + monotonic_to_wall_ns).max(0) as u128,
            target: target.to_owned(),
            pid: (event.pid_tgid >> 32) as u32,
            tid: event.pid_tgid as u32,
            comm: c_string(&event.comm),
            syscall,
            args,
            raw_args: event.args,
            ret: event.ret,
            errno: failed.then(|| names::errno_name((-event.ret) as u32)),
            latency_ns: event.latency_ns,
            injected: event.injected != 0,
        }
    }
}

impl fmt::Display for TraceLine {
    /// `12:00:01.123456 web 4242/4243 nginx openat(AT_FDCWD, "/x", O_RDONLY) = -1 ENOENT <3.1µs>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = (self.time_ns / 1_000_000_000) as u64;
        let micros = (self.time_ns / 1_000 % 1_000_000) as u64;
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        write!(
            f,
            "{h:02}:{m:02}:{s:02}.{micros:06} {} {}/{} {} {}({}) = ",
            self.target,
            self.pid,
            self.tid,
            self.comm,
            self.syscall,
            self.args.join(", ")
        )?;
        match &self.errno {
            Some(errno) => write!(f, "-1 {errno}")?,
            None => write!(f, "{}", self.ret)?,
        }
        write!(f, " <{:.1}µs>", self.latency_ns as f64 / 1e3)?;
        if self.injected {
            write!(f, " [injected]")?;
        }
        Ok(())
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The offset from CLOCK_MONOTONIC (`bpf_ktime_get_ns`) to the wall clock, now.
pub fn monotonic_to_wall_ns() -> i128 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    wall - crate::ebpf::kernel_now_ns() as i128
}
