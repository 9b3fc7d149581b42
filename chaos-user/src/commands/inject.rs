//! `chaos-user inject`: make chosen syscalls of a target fail or wait, decided in the kernel (or
//! by the ptrace engine: delays, and errnos no in-kernel engine covers).
use std::{path::PathBuf, time::Duration};

use anyhow::bail;
use clap::Args;

use super::common::{self, OutputArgs, TargetArgs};
use crate::inject::{
    engine::EngineChoice,
    rule::{self, Fault, RuleSpec, When},
};

#[derive(Debug, Args)]
pub struct InjectArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Syscall to perturb, by name (repeatable; pairs with --errno in order).
    #[arg(long = "syscall", value_name = "NAME")]
    pub syscalls: Vec<String>,
    /// errno to return, by name or number (one for all syscalls, or one per --syscall).
    #[arg(long = "errno", value_name = "ERRNO", conflicts_with = "signal")]
    pub errnos: Vec<String>,
    /// Send this signal at the matching call instead (e.g. SIGKILL, SIGSTOP).
    #[arg(long)]
    pub signal: Option<String>,
    /// Chance that a matching call is perturbed, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub probability: f64,
    /// Only the N-th matching call.
    #[arg(long, conflicts_with = "count")]
    pub nth: Option<u64>,
    /// At most N injections per rule.
    #[arg(long)]
    pub count: Option<u64>,
    /// Only calls whose path argument starts with this.
    #[arg(long)]
    pub path_prefix: Option<String>,
    /// Hold each perturbed call this long before it runs (or fails with --errno), e.g. 10ms.
    /// Without --errno the call then runs normally. Runs on the ptrace engine, or the stop engine
    /// when forced (which holds the call after it ran, or before re-issuing a call that blocked).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "signal")]
    pub delay: Option<Duration>,
    /// auto, kprobe, fmod-ret, lsm, cgroup-sock, signal, ptrace or stop.
    #[arg(long, default_value = "auto")]
    pub engine: String,
    /// When the errno replaces the call: `before` it runs (the call is not executed) or `after`
    /// it ran (the application sees the errno instead of its result). Default: the engine's
    /// way, `before` for errnos.
    #[arg(long)]
    pub when: Option<When>,
    /// More rules, inline: SYSCALL=ERRNO_OR_SIGNAL[,key=value...] or SYSCALL,delay=D[,...]
    /// (repeatable).
    #[arg(long = "rule", value_name = "RULE")]
    pub inline: Vec<String>,
    /// A file of inline rules, one per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(args: InjectArgs) -> anyhow::Result<()> {
    let mut rules = flag_rules(&args)?;
    for text in &args.inline {
        rules.push(RuleSpec::parse(text)?);
    }
    if let Some(path) = &args.rules {
        rules.extend(rule::read_rule_file(path)?);
    }
    if rules.is_empty() {
        bail!(
            "no rule: give --syscall NAME with --errno ERRNO, --delay D or --signal SIG; --rule or --rules FILE"
        );
    }
    common::run(&args.targets, rules, &args.output).await
}

/// The rules the --syscall/--errno/--signal flags describe.
fn flag_rules(args: &InjectArgs) -> anyhow::Result<Vec<RuleSpec>> {
    if args.syscalls.is_empty() {
        if !args.errnos.is_empty() || args.signal.is_some() || args.delay.is_some() {
            bail!("--errno/--delay/--signal need a --syscall");
        }
        return Ok(Vec::new());
    }
    let faults: Vec<Fault> = match (&args.signal, args.errnos.as_slice()) {
        (Some(signal), _) => vec![Fault::Signal(rule::parse_signal(signal)?)],
        // A delay alone: the call runs after it.
        (None, []) if args.delay.is_some() => vec![Fault::Delay],
        (None, []) => bail!(
            "give --errno ERRNO, --delay DURATION or --signal SIGNAL for --syscall {}",
            args.syscalls[0]
        ),
        (None, errnos) => errnos
            .iter()
            .map(|errno| rule::parse_errno(errno).map(Fault::Errno))
            .collect::<Result<_, _>>()?,
    };
    if faults.len() != 1 && faults.len() != args.syscalls.len() {
        bail!(
            "{} --syscall but {} --errno: give one errno for all, or one per syscall",
            args.syscalls.len(),
            faults.len()
        );
    }
    let engine: EngineChoice = args.engine.parse()?;
    args.syscalls
        .iter()
        .enumerate()
        .map(|(i, syscall)| {
            let mut rule = RuleSpec::new(syscall, faults[i.min(faults.len() - 1)])?;
            rule.probability = args.probability;
            rule.nth = args.nth;
            rule.count = args.count;
            rule.path_prefix = args.path_prefix.clone();
            rule.delay = args.delay;
            rule.engine = engine;
            rule.when = args.when;
            Ok(rule.validate()?)
        })
        .collect()
}
