//! `chaos-user plan --container X --observe 60s [--out experiment.yaml]`: watches the failures
//! the target meets on its own, per (syscall, errno), and writes an experiment whose
//! perturbations amplify them (`crate::experiment::amplify`), the observed rates as comments.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::common::TargetArgs;
use crate::{
    experiment::amplify::{self, Observation, PlanFile},
    session::{LoadOptions, Session, open},
    snapshot::Snapshot,
};

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// How long to watch (Ctrl-C ends it early and still writes the plan).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub observe: Duration,
    /// Length of the windows failure rates are computed over.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Write the experiment here (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    if args.window.is_zero() || args.window > args.observe {
        bail!("--window must be longer than 0 and at most --observe");
    }
    let resolved = open::resolve(args.targets.request(LoadOptions {
        syscalls: true,
        http: true,
        ..Default::default()
    })?)
    .await?;
    let labels = resolved.labels();
    let target_yaml = target_yaml(&args.targets, &resolved)?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let opened = resolved.load()?.start(None).await?;
    eprintln!(
        "syschaos: attached to {}; observing for {}",
        labels.join(", "),
        humantime::format_duration(args.observe)
    );
    let watched = observe(&opened.session, &args, &mut sigint, &mut sigterm).await?;
    drop(opened);
    let observed = watched.observation.observed();
    let name = format!(
        "{}-planned",
        labels.first().map_or("target", String::as_str)
    );
    let text = amplify::render(&PlanFile {
        name: &name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-"),
        target_yaml: &target_yaml,
        targets: &labels.join(", "),
        observed_for: watched.observed_for,
        window: args.window,
        serves_http: watched.served_http,
        observed: &observed,
    });
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "syschaos: {} failing (syscall, errno) observed; experiment written to {}",
                observed.len(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// What `observe` saw.
struct Watched {
    observation: Observation,
    served_http: bool,
    observed_for: Duration,
}

/// Takes a snapshot per window until `--observe` ends or a signal arrives.
async fn observe(
    session: &Session,
    args: &PlanArgs,
    sigint: &mut Signal,
    sigterm: &mut Signal,
) -> anyhow::Result<Watched> {
    let windows = (args.observe.as_secs_f64() / args.window.as_secs_f64())
        .round()
        .max(1.0) as u64;
    let bar = ProgressBar::new(windows).with_style(ProgressStyle::with_template(
        "observing {bar:30} {pos}/{len} windows {msg}",
    )?);
    let mut watched = Watched {
        observation: Observation::default(),
        served_http: false,
        observed_for: Duration::ZERO,
    };
    let mut ticker = tokio::time::interval(args.window);
    ticker.tick().await;
    let mut previous = session.snapshot()?;
    for _ in 0..windows {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        let now = session.snapshot()?;
        watched
            .observation
            .add_window(&window_counts(&previous, &now));
        watched.served_http |= now.targets.iter().any(|t| t.http.is_some());
        watched.observed_for += args.window;
        previous = now;
        bar.inc(1);
        bar.set_message(format!(
            "{} failing (syscall, errno)",
            watched.observation.observed().len()
        ));
    }
    bar.finish_and_clear();
    Ok(watched)
}

/// How the experiment file names the targets: as given, where the file's `target:` can say it
/// (containers, one cgroup, one pid), else the one cgroup they resolved to.
fn target_yaml(targets: &TargetArgs, resolved: &open::Resolved) -> anyhow::Result<String> {
    let only_containers =
        !targets.containers.is_empty() && targets.specs().len() == targets.containers.len();
    Ok(
        match (
            &targets.containers[..],
            &targets.cgroups[..],
            &targets.pids[..],
        ) {
            ([one], [], []) if only_containers => format!("container: {one}"),
            (many, [], []) if only_containers => format!("containers: [{}]", many.join(", ")),
            ([], [cgroup], []) if targets.specs().len() == 1 => {
                format!("cgroup: {}", cgroup.display())
            }
            ([], [], [pid]) if targets.specs().len() == 1 => format!("pid: {pid}"),
            _ => match &resolved.cgroup_dirs()[..] {
                [one] => format!("cgroup: {}", one.display()),
                _ => bail!(
                    "an experiment file names containers, one cgroup or one pid: give containers, or targets that resolve to one cgroup"
                ),
            },
        },
    )
}

/// Per syscall: its calls in the window and its failures by errno, over all targets.
fn window_counts(
    before: &Snapshot,
    now: &Snapshot,
) -> BTreeMap<String, (u64, BTreeMap<String, u64>)> {
    let mut counts: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for target in &now.targets {
        let old = before.targets.iter().find(|t| t.target == target.target);
        for call in &target.syscalls {
            let previous = old.and_then(|o| o.syscalls.iter().find(|s| s.nr == call.nr));
            let entry = counts.entry(call.syscall.clone()).or_default();
            entry.0 += call.calls.saturating_sub(previous.map_or(0, |p| p.calls));
            for (errno, count) in &call.errnos {
                let was = previous
                    .and_then(|p| p.errnos.get(errno))
                    .copied()
                    .unwrap_or(0);
                let new = count.saturating_sub(was);
                if new > 0 {
                    *entry.1.entry(errno.clone()).or_default() += new;
                }
            }
        }
    }
    counts
}
