//! `chaos-user trace`: one line per call of a target, with decoded arguments and the result.
use anyhow::bail;
use clap::Args;

use super::common::{self, OutputArgs, TargetArgs, TraceSelection};
use crate::{inject::rule::RuleSpec, names, session::TraceOptions};

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these syscalls, comma-separated (default: all).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub syscall: Vec<String>,
    /// Only calls that failed.
    #[arg(long)]
    pub failed: bool,
    /// Keep one call in N.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub sample: u64,
    /// Also inject (as `attach --inject`); injected calls are marked in the trace.
    #[arg(long = "inject", value_name = "RULE")]
    pub inject: Vec<String>,
    /// --json prints one JSON object per call; --quiet and --interval do not apply.
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    if args.sample == 0 {
        bail!("--sample takes a number from 1 up (1: every call)");
    }
    let syscalls = if args.syscall.is_empty() {
        None
    } else {
        let numbers = args
            .syscall
            .iter()
            .map(|name| names::syscall_number(name))
            .collect::<Result<Vec<u32>, _>>()?;
        Some(numbers)
    };
    let rules = args
        .inject
        .iter()
        .map(|text| RuleSpec::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    let selection = TraceSelection {
        syscalls,
        options: TraceOptions {
            failed_only: args.failed,
            sample: args.sample,
        },
    };
    common::run_with(&args.targets, rules, &args.output, Some(selection)).await
}
