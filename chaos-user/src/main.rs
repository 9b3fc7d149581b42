//! `chaos-user`: observe and perturb containers at the system-call level, from outside, with eBPF.
mod commands;
mod docker;
mod ebpf;
mod experiment;
mod http;
mod inject;
mod live;
mod metrics;
mod monitor;
mod names;
mod privileges;
mod resources;
mod session;
mod snapshot;
mod target;
mod trace;

use std::sync::{Mutex, MutexGuard, PoisonError};

use clap::{Parser, Subcommand};

/// Takes a lock, poisoned or not. The policy for every lock in chaos-user: a thread that
/// panicked while holding one left its data at worst one update behind, and going on is what
/// lets the session still detach its programs and release its tracees; refusing would turn one
/// panic into a hang or a target left stopped.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Parser)]
#[command(name = "chaos-user", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Count the system calls of containers, cgroups or processes: live view and Prometheus metrics.
    Attach(commands::attach::AttachArgs),
    /// Make chosen system calls of a target fail (errno) or signal it, decided in the kernel.
    Inject(commands::inject::InjectArgs),
    /// One line per call of a target: decoded arguments, result or errno, latency.
    Trace(commands::trace::TraceArgs),
    /// What this kernel offers: the monitor, and which injection engines work and cover what.
    Doctor(commands::doctor::DoctorArgs),
    /// Run a chaos experiment file: baseline, perturbation, recovery per fault; verdicts; report.
    Run(commands::run::RunArgs),
    /// Watch a target's natural failures and write an experiment that amplifies them.
    Plan(commands::plan::PlanArgs),
    /// Internal: the stop engine's guardian (see inject/stop/guardian.rs).
    #[command(name = "__stop-guardian", hide = true)]
    StopGuardian,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attach(args) => commands::attach::run(args).await,
        Command::Inject(args) => commands::inject::run(args).await,
        Command::Doctor(args) => commands::doctor::run(args).await,
        Command::Trace(args) => commands::trace::run(args).await,
        Command::Run(args) => commands::run::run(args).await,
        Command::Plan(args) => commands::plan::run(args).await,
        Command::StopGuardian => {
            inject::stop::guardian::run();
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("chaos-user: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
