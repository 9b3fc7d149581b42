//! `chaos-user attach`: count the system calls of containers, cgroups or processes, optionally
//! injecting faults at the same time (`--inject`).
use std::path::PathBuf;

use clap::Args;

use super::common::{self, OutputArgs, TargetArgs};
use crate::inject::rule::{self, RuleSpec};

#[derive(Debug, Args)]
pub struct AttachArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Also inject: SYSCALL=ERRNO_OR_SIGNAL[,probability=P][,nth=N|,count=N][,path-prefix=P]
    /// [,duration=D][,delay=D][,engine=E] (repeatable), e.g. openat=EACCES,probability=0.5;
    /// SYSCALL,delay=D[,...] delays the call without an errno (ptrace or stop engine)
    #[arg(long = "inject", value_name = "RULE")]
    pub inject: Vec<String>,
    /// A file of such rules, one per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(args: AttachArgs) -> anyhow::Result<()> {
    let mut rules = args
        .inject
        .iter()
        .map(|text| RuleSpec::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &args.rules {
        rules.extend(rule::read_rule_file(path)?);
    }
    common::run(&args.targets, rules, &args.output).await
}
