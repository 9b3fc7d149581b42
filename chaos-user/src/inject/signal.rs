//! Engine `signal` (kernel side: `chaos-ebpf/src/inject_signal.rs`): the syscall-entry program
//! sends the rule's signal to the calling thread with `bpf_send_signal_thread` (5.5+); it is
//! delivered when the call returns. No program of its own, nothing to attach.
use std::{sync::mpsc, thread, time::Duration};

use aya::{maps::Array, programs::RawTracePoint};
use chaos_common::{MAP_SIGNAL_PROBE_TID, PROG_INJECT_SIGNAL_PROBE};
use nix::sys::{
    signal::{SigSet, Signal},
    time::TimeSpec,
};

use super::engine::{EngineError, KernelPrograms};
use crate::ebpf;

pub const COVERAGE: &str = "any syscall (signals only: --signal)";

/// How long the probe's thread waits for its signal.
const PROBE_WAIT: Duration = Duration::from_secs(2);

pub fn programs(_syscall: &str) -> Option<Vec<&'static str>> {
    Some(Vec::new())
}

/// Tried for real: a `sys_enter` program sends SIGUSR1 with `bpf_send_signal_thread` to a thread
/// of ours that blocks it, at its next syscall; the thread must find it pending.
pub fn probe(kernel: &mut KernelPrograms) -> Result<(), EngineError> {
    kernel
        .load(PROG_INJECT_SIGNAL_PROBE)
        .map_err(|e| e.needs("bpf_send_signal_thread is refused", "Linux 5.5+"))?;
    let (from_tx, from_thread) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let waiter = thread::spawn(move || wait_for_signal(&from_tx, &go_rx));
    let result = from_thread
        .recv_timeout(PROBE_WAIT)
        .map_err(|_| host("the probe's thread did not start"))
        .and_then(|tid| send_to(kernel, tid, &go_tx, &from_thread));
    drop(go_tx);
    let received = waiter
        .join()
        .map_err(|_| host("the probe's thread panicked"))?;
    result?;
    match received {
        true => Ok(()),
        false => Err(host(
            "the probe's signal did not arrive (bpf_send_signal_thread from sys_enter)",
        )),
    }
}

/// Arms the program for `tid` and lets the thread make its syscall; disarms it after.
fn send_to(
    kernel: &mut KernelPrograms,
    tid: u32,
    go: &mpsc::Sender<()>,
    done: &mpsc::Receiver<u32>,
) -> Result<(), EngineError> {
    let map_error = |source| EngineError::Map {
        map: MAP_SIGNAL_PROBE_TID,
        source,
    };
    let map = kernel
        .ebpf
        .map_mut(MAP_SIGNAL_PROBE_TID)
        .ok_or(ebpf::LoadError::MissingMap(MAP_SIGNAL_PROBE_TID))?;
    let mut tids: Array<_, u32> = Array::try_from(map).map_err(map_error)?;
    tids.set(0, tid, 0).map_err(map_error)?;
    let program: &mut RawTracePoint = ebpf::program(kernel.ebpf, PROG_INJECT_SIGNAL_PROBE)?;
    let attach_error = |source| EngineError::Attach {
        program: PROG_INJECT_SIGNAL_PROBE,
        to: "sys_enter".to_owned(),
        source,
    };
    let link = program.attach("sys_enter").map_err(attach_error)?;
    // The thread's syscalls now get the signal; it says when it stopped waiting for it.
    let _ = go.send(());
    let _ = done.recv_timeout(PROBE_WAIT * 2);
    let detached = program.detach(link).map_err(attach_error);
    if let Some(map) = kernel.ebpf.map_mut(MAP_SIGNAL_PROBE_TID) {
        let mut tids: Array<_, u32> = Array::try_from(map).map_err(map_error)?;
        tids.set(0, 0, 0).map_err(map_error)?;
    }
    detached
}

/// The probe's thread: blocks SIGUSR1, says its id, makes a syscall when told, waits a while
/// for the signal (blocked, it stays pending for this thread alone), and says it is done.
fn wait_for_signal(to_probe: &mpsc::Sender<u32>, go: &mpsc::Receiver<()>) -> bool {
    let received = receive_signal(to_probe, go);
    let _ = to_probe.send(0);
    received
}

fn receive_signal(tid_tx: &mpsc::Sender<u32>, go: &mpsc::Receiver<()>) -> bool {
    let mut usr1 = SigSet::empty();
    usr1.add(Signal::SIGUSR1);
    if usr1.thread_block().is_err() {
        return false;
    }
    if tid_tx.send(nix::unistd::gettid().as_raw() as u32).is_err() {
        return false;
    }
    // The program is attached: any syscall triggers it, getppid for one.
    if go.recv_timeout(PROBE_WAIT).is_err() {
        return false;
    }
    let _ = nix::unistd::getppid();
    let timeout = TimeSpec::from_duration(PROBE_WAIT);
    // SAFETY: sigtimedwait reads the set and the timeout we pass; no siginfo is asked for.
    let signal =
        unsafe { libc::sigtimedwait(usr1.as_ref(), std::ptr::null_mut(), timeout.as_ref()) };
    signal == libc::SIGUSR1
}

fn host(why: &str) -> EngineError {
    EngineError::Host(why.to_owned())
}
