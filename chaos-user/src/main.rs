//! `chaos-user`: observe and perturb containers at the system-call level, from outside, with eBPF.
mod commands;
mod docker;
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
    /// What this kernel offers: the monitor, and which injection engines work and cover what.
    Doctor(commands::doctor::DoctorArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attach(args) => commands::attach::run(args).await,
        Command::Inject(args) => commands::inject::run(args).await,
        Command::Doctor(args) => commands::doctor::run(args).await,
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
