//! The tracer thread: one loop that waits for the next stop of any tracee and handles it with the
//! few ptrace requests it needs; delays are deadlines in a queue, so a held thread never blocks
//! the others. The stop kinds and how each is resumed follow ptrace(2) for PTRACE_SEIZE:
//! syscall stops (PTRACE_SYSCALL + TRACESYSGOOD), signal-delivery stops (resumed with their
//! signal, so it is delivered), group-stops (PTRACE_LISTEN), PTRACE_EVENT_STOP after
//! PTRACE_INTERRUPT or for a new child, fork/clone/exec events.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    path::PathBuf,
    sync::{Arc, atomic::Ordering, mpsc::Sender},
};

use nix::errno::Errno;

use super::{
    PtraceRule, PtraceTarget, Shared, attach, detach,
    rules::{Decision, Rules},
    seen::SkippedCalls,
    stops::{self, StopAction, StopFaults},
    sys::{self, Event, Stop, SyscallInfo, WakeTimer},
};
use crate::inject::InjectError;

/// How often the target cgroups are scanned for processes that entered them other than by a
/// fork of a tracee (`docker exec`), and restarted containers followed.
const SCAN_PERIOD_NS: u64 = 100_000_000;
/// How long to wait for every seized thread's first stop before saying it is attached anyway
/// (a thread in uninterruptible sleep stops when it wakes).
const READY_TIMEOUT_NS: u64 = 5_000_000_000;
/// A new child whose parent's fork/clone event has not come after this long is placed by its
/// cgroup instead.
const ORPHAN_GRACE_NS: u64 = 200_000_000;

/// `target` of a new child whose parent is not known yet.
pub const NO_TARGET: usize = usize::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Seized and interrupted; its first stop has not come yet.
    Seized,
    /// Running under PTRACE_SYSCALL.
    Running,
    /// Held at a syscall-entry stop until its delay ends (`seq` names the hold in the queue).
    Held { seq: u64 },
    /// In group-stop, restarted with PTRACE_LISTEN.
    Listening,
    /// A new child whose first stop came before its parent's event: kept stopped until it is
    /// known which target it belongs to.
    Orphan { since_ns: u64 },
}

#[derive(Debug, Clone)]
pub struct Thread {
    /// Index into the targets, or [`NO_TARGET`].
    pub target: usize,
    pub run: Run,
    /// Between its syscall-entry and -exit stops.
    pub in_syscall: bool,
    /// errno to set at this call's exit stop (the call was skipped at entry); 0: none.
    pub pending_errno: u32,
    /// What a held thread does when its delay ends.
    pub held: Option<Decision>,
    /// The same for a thread the stop engine holds at its SIGSTOP.
    pub stop: Option<StopAction>,
}

impl Thread {
    pub fn new(target: usize, run: Run) -> Self {
        Self {
            target,
            run,
            in_syscall: false,
            pending_errno: 0,
            held: None,
            stop: None,
        }
    }
}

/// Thread ids are already well spread: hashing them is a multiply, not SipHash.
#[derive(Default)]
pub struct TidHasher(u64);

impl Hasher for TidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_i32(&mut self, tid: i32) {
        self.0 = (tid as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type Threads = HashMap<i32, Thread, BuildHasherDefault<TidHasher>>;

pub struct Target {
    pub label: String,
    pub dir: PathBuf,
    pub cgroup_id: u64,
    /// The slot the monitor counts the target under.
    pub slot: u32,
}

pub struct Tracer {
    pub targets: Vec<Target>,
    pub threads: Threads,
    pub rules: Rules,
    /// Held threads by deadline: (deadline ns, tid, hold seq).
    pub holds: BinaryHeap<Reverse<(u64, i32, u64)>>,
    next_seq: u64,
    pub timer: WakeTimer,
    shared: Arc<Shared>,
    /// Threads in [`Run::Seized`].
    pub seized: usize,
    /// Threads of the targets that cannot be traced (zombies, chaos-user itself, traced by
    /// another tracer after the start): not tried again.
    pub ignored: HashSet<i32>,
    pub scan_buffer: String,
    info: SyscallInfo,
    skipped: SkippedCalls,
    /// The stop engine's faults, when it has rules: its SIGSTOPs are handled, not delivered.
    pub stop_faults: Option<StopFaults>,
}

/// The tracer thread's body: attach, trace until asked to stop (or every rule is spent), detach.
pub fn run(
    targets: Vec<PtraceTarget>,
    rules: Vec<PtraceRule>,
    shared: Arc<Shared>,
    skipped: SkippedCalls,
    stop_faults: Option<StopFaults>,
    ready: Sender<Result<i32, InjectError>>,
) -> detach::Summary {
    // A tracer for the stop engine alone runs its tracees under PTRACE_CONT: only signals stop
    // them. With ptrace rules, or none at all (`PtraceEngine::hold`), every call stops.
    sys::set_syscall_stops(!rules.is_empty() || stop_faults.is_none());
    let timer = match WakeTimer::new() {
        Ok(timer) => timer,
        Err(e) => {
            let _ = ready.send(Err(InjectError::Ptrace(format!(
                "cannot create the tracer's timer: {e}"
            ))));
            return detach::Summary::default();
        }
    };
    let rules = Rules::new(targets.len(), rules);
    let mut tracer = Tracer {
        targets: targets
            .into_iter()
            .map(|t| Target {
                label: t.label,
                dir: t.cgroup_dir,
                cgroup_id: t.cgroup_id,
                slot: t.slot,
            })
            .collect(),
        threads: Threads::default(),
        rules,
        holds: BinaryHeap::with_capacity(1024),
        next_seq: 0,
        timer,
        shared,
        seized: 0,
        ignored: HashSet::new(),
        scan_buffer: String::new(),
        info: SyscallInfo::default(),
        skipped,
        stop_faults,
    };
    if let Err(error) = attach::scan(&mut tracer, true) {
        let summary = detach::all(&mut tracer);
        let _ = ready.send(Err(error));
        return summary;
    }
    tracer.trace(ready);
    let summary = detach::all(&mut tracer);
    stops::forget_all(&mut tracer);
    summary
}

impl Tracer {
    fn trace(&mut self, ready: Sender<Result<i32, InjectError>>) {
        let mut ready = Some(ready);
        let start = sys::now_ns();
        let mut next_scan = start + SCAN_PERIOD_NS;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let now = sys::now_ns();
            self.release_due(now);
            if now >= next_scan {
                self.housekeeping(now);
                next_scan = now + SCAN_PERIOD_NS;
                // Held threads first finish their delay. Stop rules end with the session.
                if self.rules.all_spent() && self.holds.is_empty() && self.stop_faults.is_none() {
                    eprintln!(
                        "syschaos: ptrace: every rule is spent (expired or its count reached): detaching"
                    );
                    return;
                }
            }
            if ready.is_some() && (self.seized == 0 || now > start + READY_TIMEOUT_NS) {
                let _ = ready.take().map(|tx| tx.send(Ok(sys::gettid())));
            }
            let next_hold = self
                .holds
                .peek()
                .map_or(u64::MAX, |Reverse((at, _, _))| *at);
            self.timer.arm(next_scan.min(next_hold));
            match sys::wait(false) {
                Ok((tid, status)) => self.handle(tid, status),
                Err(Errno::EINTR) => {}
                // Nobody to trace right now (the container stopped): wait for the next scan.
                Err(Errno::ECHILD) => sys::pause(),
                Err(e) => {
                    eprintln!("syschaos: ptrace: waitpid failed ({e}): detaching");
                    return;
                }
            }
        }
    }

    fn handle(&mut self, tid: i32, status: i32) {
        match Event::decode(status) {
            Event::Syscall => self.on_syscall(tid),
            Event::Gone => self.forget(tid),
            Event::Signal(signal) => self.on_signal(tid, signal),
            Event::NewChild => self.on_new_child(tid),
            Event::Exec => self.on_exec(tid),
            Event::GroupStop => self.on_group_stop(tid),
            Event::Interrupted => self.on_interrupted(tid),
            Event::Unrequested => resume(tid, 0),
        }
    }

    /// The hot path: a syscall-entry or -exit stop.
    fn on_syscall(&mut self, tid: i32) {
        let Some(thread) = self.threads.get_mut(&tid) else {
            resume(tid, 0);
            return;
        };
        if thread.run == Run::Seized {
            self.seized -= 1;
            thread.run = Run::Running;
        }
        if thread.in_syscall {
            thread.in_syscall = false;
            if thread.pending_errno != 0 {
                let _ = sys::set_return(tid, -i64::from(thread.pending_errno));
                thread.pending_errno = 0;
            }
            resume(tid, 0);
            return;
        }
        match sys::syscall_info(tid, &mut self.info) {
            Ok(Stop::Entry) => thread.in_syscall = true,
            // Out of step (cannot happen by construction, but costs nothing to survive).
            Ok(Stop::Exit) => {
                resume(tid, 0);
                return;
            }
            Ok(Stop::Other) => {
                thread.in_syscall = true;
                resume(tid, 0);
                return;
            }
            // Killed meanwhile: its exit is reported next.
            Err(_) => return,
        }
        let Some(decision) = self
            .rules
            .decide(thread.target, self.info.nr, &self.info.args, tid)
        else {
            resume(tid, 0);
            return;
        };
        if decision.delay_ns > 0 {
            let seq = self.next_seq;
            self.next_seq += 1;
            thread.run = Run::Held { seq };
            thread.held = Some(decision);
            self.holds
                .push(Reverse((sys::now_ns() + decision.delay_ns, tid, seq)));
            return;
        }
        if decision.errno != 0 {
            skip(
                tid,
                thread,
                &decision,
                &self.targets,
                &self.rules,
                &mut self.skipped,
            );
        }
        resume(tid, 0);
    }

    /// Lets the held threads whose delay is over go on (with their errno, if any).
    fn release_due(&mut self, now: u64) {
        while let Some(&Reverse((deadline, tid, seq))) = self.holds.peek() {
            if deadline > now {
                return;
            }
            self.holds.pop();
            let Some(thread) = self.threads.get_mut(&tid) else {
                continue;
            };
            if thread.run != (Run::Held { seq }) {
                continue;
            }
            thread.run = Run::Running;
            if let Some(action) = thread.stop.take() {
                stops::apply(tid, action);
            }
            if let Some(decision) = thread.held.take()
                && decision.errno != 0
            {
                skip(
                    tid,
                    thread,
                    &decision,
                    &self.targets,
                    &self.rules,
                    &mut self.skipped,
                );
            }
            resume(tid, 0);
        }
    }

    /// Queues a hold of `tid` for `delay_ns`; returns its seq (for [`Run::Held`]).
    pub fn hold(&mut self, tid: i32, delay_ns: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.holds
            .push(Reverse((sys::now_ns() + delay_ns, tid, seq)));
        seq
    }

    fn forget(&mut self, tid: i32) {
        let Some(thread) = self.threads.remove(&tid) else {
            return;
        };
        self.stop_untrack(tid);
        if thread.run == Run::Seized {
            self.seized -= 1;
        }
        // Killed while held: the call never went ahead.
        if let Some(decision) = thread.held {
            self.rules.undo(decision.rule);
        }
    }

    /// fork/vfork/clone: the child is traced already (options); it belongs to the parent's target.
    fn on_new_child(&mut self, parent: i32) {
        let target = self.threads.get(&parent).map_or(NO_TARGET, |t| t.target);
        if let Ok(child) = sys::event_message(parent) {
            self.stop_track(child);
            match self.threads.get_mut(&child) {
                // Its first stop came before this event.
                Some(known) => {
                    known.target = target;
                    if let Run::Orphan { .. } = known.run {
                        known.run = Run::Running;
                        resume(child, 0);
                    }
                }
                None => {
                    self.threads.insert(child, Thread::new(target, Run::Seized));
                    self.seized += 1;
                }
            }
        }
        resume(parent, 0);
    }

    /// A successful execve: a non-leader thread that execs takes the leader's thread id.
    fn on_exec(&mut self, tid: i32) {
        if let Ok(former) = sys::event_message(tid)
            && former != tid
            && self.threads.contains_key(&former)
        {
            self.stop_untrack(former);
            self.stop_track(tid);
        }
        if let Ok(former) = sys::event_message(tid)
            && former != tid
            && let Some(execing) = self.threads.remove(&former)
            && let Some(old_leader) = self.threads.insert(tid, execing)
            && old_leader.run == Run::Seized
        {
            self.seized -= 1;
        }
        resume(tid, 0);
    }

    fn on_group_stop(&mut self, tid: i32) {
        let thread = self
            .threads
            .entry(tid)
            .or_insert_with(|| Thread::new(NO_TARGET, Run::Listening));
        if thread.run == Run::Seized {
            self.seized -= 1;
        }
        thread.run = Run::Listening;
        let _ = sys::listen(tid);
    }

    /// After PTRACE_INTERRUPT, a new child's first stop, or SIGCONT ending a group-stop.
    fn on_interrupted(&mut self, tid: i32) {
        let now = sys::now_ns();
        let thread = self
            .threads
            .entry(tid)
            .or_insert_with(|| Thread::new(NO_TARGET, Run::Orphan { since_ns: now }));
        if thread.run == Run::Seized {
            self.seized -= 1;
        }
        if thread.target == NO_TARGET {
            thread.run = Run::Orphan { since_ns: now };
            return;
        }
        thread.run = Run::Running;
        resume(tid, 0);
    }

    /// Every scan period: follow restarted targets, seize newcomers, place late orphans.
    fn housekeeping(&mut self, now: u64) {
        let moved: Vec<(usize, PathBuf, u64)> =
            std::mem::take(&mut *crate::lock(&self.shared.retarget));
        for (index, dir, cgroup_id) in moved {
            if let Some(target) = self.targets.get_mut(index) {
                target.dir = dir;
                target.cgroup_id = cgroup_id;
            }
        }
        if let Err(e) = attach::scan(self, false) {
            eprintln!("syschaos: ptrace: {e}");
        }
        let late: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, t)| matches!(t.run, Run::Orphan { since_ns } if now > since_ns + ORPHAN_GRACE_NS))
            .map(|(&tid, _)| tid)
            .collect();
        for tid in late {
            match attach::target_of(self, tid) {
                Some(target) => {
                    if let Some(thread) = self.threads.get_mut(&tid) {
                        thread.target = target;
                        thread.run = Run::Running;
                    }
                    self.stop_track(tid);
                    resume(tid, 0);
                }
                None => {
                    self.threads.remove(&tid);
                    self.stop_untrack(tid);
                    let _ = sys::detach(tid, 0);
                }
            }
        }
    }
}

/// PTRACE_SYSCALL; a tracee killed meanwhile (ESRCH) reports its exit next.
fn resume(tid: i32, signal: i32) {
    let _ = sys::resume(tid, signal);
}

/// Skips the call at `tid`'s entry stop so that it returns the decision's errno at its exit
/// stop, and tells the monitor; a call that cannot be skipped runs and is not counted.
fn skip(
    tid: i32,
    thread: &mut Thread,
    decision: &Decision,
    targets: &[Target],
    rules: &Rules,
    skipped: &mut SkippedCalls,
) {
    if sys::skip_call(tid).is_err() {
        rules.undo(decision.rule);
        return;
    }
    thread.pending_errno = decision.errno;
    if let Some(target) = targets.get(thread.target) {
        skipped.record(
            tid,
            target.slot,
            target.cgroup_id,
            decision.syscall,
            decision.errno,
        );
    }
}
