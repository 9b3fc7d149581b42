//! The monitor's view of the calls the tracer skips. A skipped call reaches the monitor's
//! tracepoints as syscall -1, which it passes over: the fault would be invisible. So before the
//! thread goes on, the tracer writes the thread's in-flight entry as the entry program would
//! have, with the errno the application is about to see (`InflightCall::fault_errno`); the exit
//! program then counts the call under its real syscall and that errno (`chaos-ebpf/src/monitor.rs`).
use std::os::fd::AsFd as _;

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData},
};
use chaos_common::{InflightCall, MAP_INFLIGHT};

/// `start_ns` of a counted call that is not timed (the monitor's `UNTIMED`).
const UNTIMED: u64 = 1;

pub struct SkippedCalls {
    /// None when the session does not count syscalls (nothing to tell).
    inflight: Option<HashMap<MapData, u32, InflightCall>>,
}

impl SkippedCalls {
    /// A handle of the session's in-flight map of its own, for the tracer thread.
    pub fn open(ebpf: &Ebpf) -> Self {
        let inflight = ebpf.map(MAP_INFLIGHT).and_then(|map| {
            let data = match map {
                Map::LruHashMap(data) | Map::HashMap(data) => data,
                _ => return None,
            };
            let fd = data.fd().as_fd().try_clone_to_owned().ok()?;
            let map = Map::LruHashMap(MapData::from_fd(fd).ok()?);
            HashMap::try_from(map).ok()
        });
        Self { inflight }
    }

    /// For a tracer that skips nothing.
    pub fn none() -> Self {
        Self { inflight: None }
    }

    /// Thread `tid` of the target counted under `slot` will see `errno` from `syscall`.
    pub fn record(&mut self, tid: i32, slot: u32, cgroup_id: u64, syscall: u32, errno: u32) {
        let Some(inflight) = &mut self.inflight else {
            return;
        };
        let call = InflightCall {
            start_ns: UNTIMED,
            cgroup_id,
            syscall,
            slot,
            pending_errno: 0,
            pending_engine: 0,
            injected: 1,
            fault_errno: errno,
            args: [0; 6],
        };
        if let Err(error) = inflight.insert(tid as u32, call, 0) {
            log::debug!("cannot tell the monitor of thread {tid}'s skipped call: {error}");
        }
    }
}
