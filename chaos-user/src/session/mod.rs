//! The session: the loaded eBPF object and its peers (monitor, HTTP, trace, injection), the
//! targets, and the installed rules, behind one lock. Every method takes that lock once and
//! nothing else, so there is no lock order to get wrong: the metrics endpoint, the live view,
//! the Docker event follower and the experiment runner only ever queue on it. Nothing here
//! awaits while holding it.
//!
//! Poisoned lock policy (the whole crate's, see [`crate::lock`]): a panic while holding a lock
//! leaves state that is at worst one map update behind; carrying on is what lets chaos-user
//! still detach and stop the tracer, so a poisoned lock is taken as it is.
//!
//! `open.rs` is the one way commands open a session (resolve targets, load, lock, add, install,
//! start, follow Docker).
pub mod open;
mod state;

use std::{
    sync::{Mutex, MutexGuard},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{MapData, MapError, RingBuf};
use thiserror::Error;

use self::state::State;
use crate::{
    ebpf::{self, LoadError},
    http::{HttpCounting, HttpError},
    inject::{InjectError, engine::Capabilities, injector::InstalledRule},
    monitor::{Monitor, MonitorError, MonitorMode},
    snapshot::Snapshot,
    target::Target,
    trace::TraceMaps,
};

#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Inject(#[from] InjectError),
    #[error("BPF map operation failed")]
    Map(#[from] MapError),
    #[error("no target {0} in this session")]
    UnknownTarget(String),
    #[error("the session was loaded without {0}")]
    NotLoaded(&'static str),
}

/// What to load besides the syscall counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub inject: bool,
    /// Count syscalls (the raw_syscalls tracepoints); injecting and tracing need them.
    pub syscalls: bool,
    pub http: bool,
    pub trace: Option<TraceOptions>,
    /// Time one call in N (0 and 1: every call).
    pub latency_sample: u32,
    /// No latency: the monitor attaches no entry program and counts each call at `sys_exit`
    /// (`--no-latency`). Only for sessions that neither inject nor trace (they need the entry).
    pub no_latency: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TraceOptions {
    pub failed_only: bool,
    /// Keep one call in N (0 and 1: all).
    pub sample: u64,
}

/// What became of a target: it came back in a new cgroup, or it is gone.
pub enum Change {
    Replaced(Target),
    Deactivated,
}

pub struct Session {
    state: Mutex<State>,
}

impl Session {
    /// Loads the eBPF object and its peers; nothing is attached until [`Session::start`].
    pub fn load(options: &LoadOptions) -> Result<Self, SessionError> {
        let trace = options.trace.unwrap_or_default();
        // Rules are decided and calls traced at entry: those sessions keep the entry program.
        let count_at_exit = options.no_latency && !options.inject && options.trace.is_none();
        let mut ebpf = ebpf::load(&ebpf::Globals {
            trace: options.trace.is_some(),
            trace_failed_only: trace.failed_only,
            trace_sample: trace.sample,
            latency_sample: options.latency_sample,
            injecting: options.inject,
            count_at_exit,
        })?;
        let monitor = Monitor::take(
            &mut ebpf,
            MonitorMode {
                count_syscalls: options.syscalls,
                inject: options.inject,
                count_at_exit,
            },
        )?;
        let http = match options.http {
            true => Some(HttpCounting::load(&mut ebpf)?),
            false => None,
        };
        let trace = match options.trace {
            Some(_) => Some(TraceMaps::take(&mut ebpf)?),
            None => None,
        };
        let injector = match options.inject {
            true => Some(crate::inject::injector::Injector::take(
                &mut ebpf,
                monitor.in_kernel_injection().clone(),
            )?),
            false => None,
        };
        Ok(Self {
            state: Mutex::new(State::new(ebpf, monitor, http, trace, injector)),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// Which injection engines this kernel offers, each tried for real.
    pub fn capabilities(&self) -> Result<Capabilities, SessionError> {
        self.state().capabilities()
    }

    /// Traces these syscalls (all when None) and hands over the ring buffer of their events.
    pub fn take_trace_events(
        &self,
        syscalls: Option<&[u32]>,
    ) -> Result<RingBuf<MapData>, SessionError> {
        let mut state = self.state();
        let trace = state
            .trace
            .as_mut()
            .ok_or(SessionError::NotLoaded("tracing"))?;
        trace.select(syscalls)?;
        trace
            .take_events()
            .ok_or(SessionError::NotLoaded("the trace ring buffer"))
    }

    /// Starts counting a target under the next slot.
    pub fn add(&self, target: Target) -> Result<(), SessionError> {
        self.state().add(target)
    }

    /// Puts a rule in the kernel (or in the tracer's list) for a target added before; the
    /// rule's cgroup id is the target's current one.
    pub fn install(&self, rule: InstalledRule, expires_ns: u64) -> Result<(), SessionError> {
        self.state().install(rule, expires_ns)
    }

    /// Stops applying the rule with this index at once; its count stays readable.
    pub fn uninstall(&self, index: u32) -> Result<(), SessionError> {
        self.state().uninstall(index)
    }

    pub fn installed(&self) -> Vec<InstalledRule> {
        self.state()
            .rules
            .iter()
            .map(|(rule, _)| rule.clone())
            .collect()
    }

    /// Attaches the syscall tracepoints: counting and injecting start.
    pub fn start(&self) -> Result<(), SessionError> {
        self.state().start()
    }

    /// Seizes every target with the ptrace tracer and no rule (see `PtraceEngine::hold`).
    pub fn hold_ptrace(&self) -> Result<(), SessionError> {
        self.state().hold_ptrace()
    }

    /// Seizes the targets of ptrace rules and starts applying them (nothing without such rules).
    pub fn start_ptrace(&self) -> Result<(), SessionError> {
        self.state().start_ptrace()
    }

    /// Detaches the ptrace engine from every tracee; its counts stay readable.
    pub fn stop_ptrace(&self) {
        self.state().stop_tracer();
    }

    /// A target came back in a new cgroup (a restarted container): counted under the same slot,
    /// its rules moved along. Or it went away: no longer counted.
    /// Returns how many targets are still active.
    pub fn change(&self, label: &str, change: Change) -> Result<usize, SessionError> {
        let mut state = self.state();
        match change {
            Change::Replaced(target) => state.replace(label, target)?,
            Change::Deactivated => state.deactivate(label)?,
        }
        Ok(state.active_targets())
    }

    /// The label of the target counted under `slot`.
    pub fn label(&self, slot: u32) -> String {
        let state = self.state();
        state
            .slots
            .get(slot as usize)
            .map_or_else(|| format!("slot {slot}"), |slot| slot.target.label.clone())
    }

    pub fn snapshot(&self) -> Result<Snapshot, SessionError> {
        let targets = self.state().read_targets()?;
        Ok(Snapshot {
            taken: Instant::now(),
            unix_time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            targets,
        })
    }
}
