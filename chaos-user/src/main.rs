//! `chaos-user`: observe and perturb containers at the system-call level, from outside, with eBPF.
mod commands;
mod docker;
mod experiment;
mod http;
mod inject;
mod live;
mod metrics;
mod monitor;
mod names;
mod privileges;
mod ptrace;
mod resources;
mod session;
mod snapshot;
mod target;
mod trace;

use clap::{Parser, Subcommand};

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
