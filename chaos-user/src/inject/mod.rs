//! Perturbator: rules (`rule.rs`), the engines that carry them out, one file each (`kprobe.rs`,
//! `fmod_ret.rs`, `lsm.rs`, `cgroup_sock.rs`, `signal.rs`, `ptrace/`, `stop/`; `engine.rs`
//! chooses among them), and the rule map in the kernel (`injector.rs`).
pub mod cgroup_sock;
pub mod choice;
pub mod engine;
pub mod fmod_ret;
pub mod injector;
pub mod kprobe;
pub mod lock;
pub mod lsm;
mod paths;
pub mod ptrace;
pub mod rule;
pub mod signal;
pub mod stop;

use thiserror::Error;

use self::engine::{Engine, EngineError};

#[derive(Debug, Error)]
pub enum InjectError {
    /// Misspelt, or a name of the other architecture's table (`open` on arm64).
    #[error(transparent)]
    UnknownSyscall(#[from] crate::names::UnknownSyscall),
    #[error("unknown errno `{0}` (a name such as EACCES, or a number from 1 to 4095)")]
    UnknownErrno(String),
    #[error("unknown signal `{0}` (a name such as SIGKILL or SIGSTOP)")]
    UnknownSignal(String),
    #[error(
        "unknown engine `{0}` (auto, kprobe, fmod-ret, lsm, cgroup-sock, signal, ptrace, stop)"
    )]
    UnknownEngine(String),
    #[error("bad rule `{rule}`: {why}")]
    BadRule { rule: String, why: String },
    #[error("probability {0} is outside (0, 1]")]
    Probability(f64),
    #[error("rule on {0}: nth and count start at 1")]
    ZeroLimit(String),
    #[error("rule on {0}: give either nth or count, not both")]
    NthAndCount(String),
    #[error("rule on {0}: {0} takes no path, so --path-prefix cannot apply")]
    NoPathArgument(String),
    #[error("path prefix `{0}` must be 1 to {1} bytes long")]
    PathPrefixLength(String, usize),
    #[error("two rules on {syscall} for {target}: one rule per syscall and target")]
    DuplicateRule { syscall: String, target: String },
    #[error("no engine can inject {syscall} errors on this kernel: {reasons}")]
    NoEngine { syscall: String, reasons: String },
    #[error("engine {engine} is not available on this kernel: {why}")]
    EngineUnavailable { engine: Engine, why: String },
    #[error("signal rules run on the signal engine, not {0}")]
    SignalNeedsSignalEngine(Engine),
    #[error("the signal engine sends signals: use --signal (or SYSCALL=SIGNAL) with it")]
    SignalEngineNeedsSignal,
    #[error(
        "{target} is already being perturbed by chaos-user (pid {holder}): one injecting chaos-user per target"
    )]
    AlreadyPerturbed { target: String, holder: String },
    #[error("cannot attach engine {engine} for {syscall}")]
    Attach {
        engine: Engine,
        syscall: String,
        #[source]
        source: Box<EngineError>,
    },
    #[error("rule on {0}: a delay is given as delay=DURATION (e.g. delay=10ms), longer than 0")]
    BadDelay(String),
    #[error("rule on {0}: a signal rule cannot delay the call; give an errno, or a delay alone")]
    SignalWithDelay(String),
    #[error("`{0}`: when is before or after (the errno before the call runs, or after it ran)")]
    UnknownWhen(String),
    #[error("rule on {0}: a signal rule has no when: the signal is delivered as the call returns")]
    SignalWithWhen(String),
    #[error("engine {0} cannot delay calls: delays run on the ptrace or stop engine")]
    DelayNeedsPtrace(Engine),
    #[error(
        "engine {engine} cannot honour when={}: it puts the errno {} the call",
        when.name(),
        if *when == rule::When::After { "before" } else { "after" }
    )]
    WhenNotHonoured { engine: Engine, when: rule::When },
    #[error(
        "{target}: thread {tid} is already traced by pid {tracer} ({tracer_name}); a thread has one tracer at a time: stop that tracer (a debugger, strace) or use an in-kernel engine"
    )]
    AlreadyTraced {
        target: String,
        tid: i32,
        tracer: i32,
        tracer_name: String,
    },
    #[error("ptrace engine: {0}")]
    Ptrace(String),
    #[error("cannot take the injection lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
}
