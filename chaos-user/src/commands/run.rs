//! `chaos-user run experiment.yaml`: a chaos experiment with a verdict per perturbation and a
//! report (see `crate::experiment`).
use std::path::PathBuf;

use clap::Args;

use super::common::TargetArgs;
use crate::experiment::runner::{self, RunOptions};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment file (YAML, see the README's "Experiments" section).
    pub file: PathBuf,
    /// Where to write report.html, report.md, results.json and samples.csv
    /// (default: NAME-report in the current directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Check the file and the targets, print the expanded plan and the engines; inject nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Targets instead of the file's `target:` (the same flags as attach, inject and plan).
    #[command(flatten)]
    pub targets: TargetArgs,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    runner::run(RunOptions {
        file: args.file,
        out: args.out,
        dry_run: args.dry_run,
        targets: args.targets.specs(),
        cgroup_root: args.targets.cgroup_root()?,
    })
    .await
}
