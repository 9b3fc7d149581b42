//! Engine `signal` (kernel side: `chaos-ebpf/src/inject_signal.rs`): the syscall-entry program
//! sends the rule's signal to the calling thread with `bpf_send_signal_thread` (5.5+); it is
//! delivered when the call returns. No program of its own, nothing to attach.
use super::engine::{EngineError, KernelPrograms};

pub const COVERAGE: &str = "any syscall (signals only: --signal)";

pub fn programs(_syscall: &str) -> Option<Vec<&'static str>> {
    Some(Vec::new())
}

/// The helper is called by the entry program, which loaded with injection on: a kernel without
/// `bpf_send_signal_thread` would have refused it at load.
pub fn probe(_kernel: &mut KernelPrograms) -> Result<(), EngineError> {
    Ok(())
}
