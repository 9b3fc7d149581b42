//! `chaos-user attach`: count the system calls of containers, cgroups or processes.
use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Args;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    docker::{self, ContainerEvent, Lifecycle},
    live, metrics,
    monitor::Monitor,
    session::Session,
    snapshot::Snapshot,
    target::{self, CgroupRoot, Target, TargetSpec},
};

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Container name or id (repeatable).
    #[arg(long = "container", value_name = "NAME_OR_ID")]
    pub containers: Vec<String>,
    /// cgroup v2 directory, absolute or relative to the cgroup v2 root (repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// A process whose cgroup to watch (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Stop after this long (e.g. 30s, 5m); default: until SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Refresh interval of the live view and JSON snapshots.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// No live view.
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,
    /// One JSON snapshot per interval on stdout instead of the live view.
    #[arg(long)]
    pub json: bool,
    /// Where to serve Prometheus metrics (path /metrics). Loopback unless you say otherwise.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    pub no_metrics: bool,
}

impl AttachArgs {
    fn specs(&self) -> Vec<TargetSpec> {
        let containers = self.containers.iter().cloned().map(TargetSpec::Container);
        let cgroups = self.cgroups.iter().cloned().map(TargetSpec::Cgroup);
        let pids = self.pids.iter().copied().map(TargetSpec::Pid);
        containers.chain(cgroups).chain(pids).collect()
    }
}

enum Output {
    Live { clear: bool },
    Json,
    Quiet,
}

pub async fn run(args: AttachArgs) -> anyhow::Result<()> {
    let specs = args.specs();
    if specs.is_empty() {
        bail!("nothing to attach to: give --container NAME, --cgroup PATH or --pid PID");
    }
    // Everything that can fail on the user's input fails here, before any program is loaded.
    let cgroup_root = CgroupRoot::discover()?;
    let mut targets: Vec<Target> = Vec::new();
    for spec in &specs {
        let target = target::resolve(spec, &cgroup_root).await?;
        if let Some(twin) = targets.iter().find(|t| t.cgroup_id == target.cgroup_id) {
            bail!(
                "{} and {} are the same cgroup ({}): give it once",
                twin.label,
                target.label,
                target.cgroup.v2.display()
            );
        }
        targets.push(target);
    }
    let listener = if args.no_metrics {
        None
    } else {
        Some(metrics::bind(args.metrics_addr).await?)
    };
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let session = Arc::new(Session::new(Monitor::load()?));
    let container_names: Vec<String> = targets
        .iter()
        .filter(|t| matches!(t.spec, TargetSpec::Container(_)))
        .map(|t| t.label.clone())
        .collect();
    let labels: Vec<String> = targets.iter().map(|t| t.label.clone()).collect();
    for target in targets {
        session.add(target)?;
    }
    let metrics_url = match listener {
        Some(listener) => {
            let addr = metrics::spawn(listener, session.clone());
            format!("http://{addr}/metrics")
        }
        None => "off".to_owned(),
    };
    let mut events = if container_names.is_empty() {
        None
    } else {
        Some(docker::watch(container_names).await?)
    };
    eprintln!(
        "syschaos: attached to {} (metrics: {metrics_url}); Ctrl-C to detach",
        labels.join(", ")
    );

    let output = if args.json {
        Output::Json
    } else if args.quiet {
        Output::Quiet
    } else {
        Output::Live {
            clear: std::io::stdout().is_terminal(),
        }
    };
    let deadline = async {
        match args.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(args.interval);
    ticker.tick().await;
    let mut previous: Option<Snapshot> = Some(session.snapshot()?);
    let header = format!("syschaos  metrics: {metrics_url}  Ctrl-C to detach");
    let reason = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = session.snapshot()?;
                show(&output, previous.as_ref(), &now, &header)?;
                previous = Some(now);
            }
            Some(event) = next_event(&mut events) => {
                if let Some(reason) = follow(&session, &cgroup_root, event).await? {
                    break reason;
                }
            }
            _ = &mut deadline => break "duration elapsed".to_owned(),
            _ = interrupt.recv() => break "SIGINT".to_owned(),
            _ = terminate.recv() => break "SIGTERM".to_owned(),
        }
    };
    // Dropping the session drops the Ebpf object: programs detached, maps freed.
    drop(session);
    eprintln!("syschaos: detached ({reason})");
    Ok(())
}

async fn next_event(events: &mut Option<mpsc::Receiver<ContainerEvent>>) -> Option<ContainerEvent> {
    match events {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Follows a container through restarts; returns why to stop once no target is left.
async fn follow(
    session: &Session,
    cgroup_root: &CgroupRoot,
    event: ContainerEvent,
) -> anyhow::Result<Option<String>> {
    let name = event.name;
    match event.lifecycle {
        Lifecycle::Started => {
            let spec = TargetSpec::Container(name.clone());
            match target::resolve(&spec, cgroup_root).await {
                Ok(target) => {
                    eprintln!(
                        "syschaos: container {name} (re)started in cgroup {}: following it",
                        target.cgroup_id
                    );
                    session.replace(&name, target)?;
                }
                Err(e) => {
                    eprintln!("syschaos: container {name} started but cannot be followed: {e}")
                }
            }
        }
        Lifecycle::Died { exit_code } => {
            let code = exit_code.unwrap_or_else(|| "?".to_owned());
            eprintln!(
                "syschaos: container {name} stopped (exit code {code}); waiting for it to restart"
            );
        }
        Lifecycle::Destroyed => {
            eprintln!("syschaos: container {name} was removed: dropped");
            if session.deactivate(&name)? == 0 {
                return Ok(Some("no target left".to_owned()));
            }
        }
    }
    Ok(None)
}

fn show(
    output: &Output,
    before: Option<&Snapshot>,
    now: &Snapshot,
    header: &str,
) -> anyhow::Result<()> {
    let report = live::interval_report(before, now);
    let mut stdout = std::io::stdout().lock();
    match output {
        Output::Quiet => {}
        Output::Json => writeln!(stdout, "{}", serde_json::to_string(&report)?)?,
        Output::Live { clear } => {
            if *clear {
                // Home the cursor and clear the screen, as top does.
                write!(stdout, "\x1b[H\x1b[2J")?;
            }
            write!(stdout, "{}", live::render_text(&report, header))?;
        }
    }
    stdout.flush()?;
    Ok(())
}
