//! What the commands share: the target flags (every command takes them), the output flags, and
//! the watch loop of `attach`, `inject` and `trace`.
use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Args;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    docker::ContainerEvent,
    inject::{injector::InstalledRule, rule::RuleSpec},
    live, metrics,
    session::{
        LoadOptions, Session, TraceOptions,
        open::{self, Followed, Opened},
    },
    snapshot::Snapshot,
    target::{self, CgroupRoot, TargetSpec},
    trace::reader::TraceReader,
};

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Container name or id (repeatable).
    #[arg(long = "container", value_name = "NAME_OR_ID")]
    pub containers: Vec<String>,
    /// cgroup v2 directory, absolute or relative to the cgroup v2 root (repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// A process whose cgroup to watch (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Watch the container whose pid namespace this one shares (a sidecar started with
    /// `--pid=container:X`): the cgroup of its pid 1, seen from that process's cgroup namespace.
    #[arg(long, conflicts_with_all = ["containers", "cgroups", "pids", "pod_uids", "cgroup_globs"])]
    pub shared_pid_namespace: bool,
    /// Every container of the Kubernetes pod with this UID on this node (repeatable).
    #[arg(long = "pod-uid", value_name = "UID")]
    pub pod_uids: Vec<String>,
    /// Every cgroup matching this glob, relative to the cgroup v2 root (repeatable), e.g.
    /// 'kubepods.slice/*/*pod1234*.slice/*.scope'.
    #[arg(long = "cgroup-glob", value_name = "PATTERN")]
    pub cgroup_globs: Vec<String>,
    /// The host's cgroup hierarchy, where /proc/self/mountinfo does not tell (e.g. a volume at
    /// /host/cgroup): a cgroup2 mount, or a hybrid host's /sys/fs/cgroup.
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<PathBuf>,
}

impl TargetArgs {
    /// What to open a session on: these targets, under the cgroup root they name.
    pub fn request(&self, load: LoadOptions) -> Result<open::Request, target::TargetError> {
        Ok(open::Request {
            specs: self.specs(),
            cgroup_root: self.cgroup_root()?,
            load,
        })
    }

    pub fn specs(&self) -> Vec<TargetSpec> {
        let containers = self.containers.iter().cloned().map(TargetSpec::Container);
        let cgroups = self.cgroups.iter().cloned().map(TargetSpec::Cgroup);
        let pids = self.pids.iter().copied().map(TargetSpec::Pid);
        let shared = self
            .shared_pid_namespace
            .then_some(TargetSpec::SharedPidNamespace);
        let pods = self.pod_uids.iter().cloned().map(TargetSpec::PodUid);
        let globs = self.cgroup_globs.iter().cloned();
        let specs = containers.chain(cgroups).chain(pids).chain(shared);
        specs
            .chain(pods)
            .chain(globs.map(TargetSpec::CgroupGlob))
            .collect()
    }

    /// Where the cgroup hierarchy is: `--cgroup-root`, a sidecar's view of its target's
    /// namespace, or the mount /proc/self/mountinfo shows.
    pub fn cgroup_root(&self) -> Result<CgroupRoot, target::TargetError> {
        match &self.cgroup_root {
            Some(path) => CgroupRoot::at(path),
            None if self.shared_pid_namespace => CgroupRoot::seen_from(1),
            None => CgroupRoot::discover(),
        }
    }
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Stop after this long (e.g. 30s, 5m); default: until SIGINT/SIGTERM. Injection rules
    /// expire in the kernel at the same moment, even if chaos-user hangs.
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
    /// Time one call in N, chosen at random (default: every call). Counts and errors stay exact; the
    /// latency histogram becomes an estimate (each timed call weighs N). Saves two clock reads
    /// per untimed call.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub latency_sample: u32,
    /// No latency histograms: counts and failures only, from one program at syscall exit (no
    /// entry program): the cheapest syscall monitor, for a busy server. Not with rules or trace,
    /// which work at syscall entry.
    #[arg(long, conflicts_with = "latency_sample")]
    pub no_latency: bool,
    /// Do not count HTTP responses: spares the targets' TCP segments a look at their first bytes.
    #[arg(long)]
    pub no_http: bool,
    /// Count HTTP responses and read resource usage, but not syscalls: the lightest watch of a
    /// busy server (syscall counting costs every process a little on each call).
    #[arg(long, conflicts_with = "no_http")]
    pub no_syscalls: bool,
}

enum Output {
    Live { clear: bool },
    Json,
    Quiet,
}

/// Resolves the targets, installs the rules, and watches until the duration ends, a signal
/// arrives or no target is left. Everything that can fail on the user's input fails before any
/// program is attached; on return every program is detached.
pub async fn run(
    targets: &TargetArgs,
    rules: Vec<RuleSpec>,
    output: &OutputArgs,
) -> anyhow::Result<()> {
    run_with(targets, rules, output, None).await
}

/// Which calls `chaos-user trace` prints.
#[derive(Debug, Clone, Default)]
pub struct TraceSelection {
    /// Syscall numbers; None: all.
    pub syscalls: Option<Vec<u32>>,
    pub options: TraceOptions,
}

/// [`run`], printing each call of the traced syscalls instead of the live view when `trace`.
pub async fn run_with(
    targets: &TargetArgs,
    rules: Vec<RuleSpec>,
    output: &OutputArgs,
    trace: Option<TraceSelection>,
) -> anyhow::Result<()> {
    if output.no_syscalls && (!rules.is_empty() || trace.is_some()) {
        bail!(
            "--no-syscalls leaves out the syscall programs that injecting and tracing work through"
        );
    }
    if output.no_latency && (!rules.is_empty() || trace.is_some()) {
        bail!(
            "--no-latency leaves out the syscall entry program, where rules are decided and calls traced"
        );
    }
    let inject = !rules.is_empty();
    let prepared = open::prepare(targets.request(LoadOptions {
        inject,
        syscalls: !output.no_syscalls,
        // Tracing shows every call already; HTTP counting is for the monitor's views.
        http: trace.is_none() && !output.no_http,
        trace: trace.as_ref().map(|selection| selection.options),
        latency_sample: output.latency_sample,
        no_latency: output.no_latency,
    })?)
    .await?;
    let listener = match output.no_metrics {
        true => None,
        false => Some(metrics::bind(output.metrics_addr).await?),
    };
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut trace_reader = match &trace {
        Some(selection) => Some(TraceReader::new(
            prepared.take_trace_events(selection.syscalls.as_deref())?,
            output.json,
        )?),
        None => None,
    };
    let labels = prepared.labels();
    let injection = inject.then_some(open::Injection {
        rules,
        expires_after: output.duration,
    });
    let mut opened = prepared.start(injection).await?;
    let session = opened.session.clone();
    let metrics_url = match listener {
        Some(listener) => format!(
            "http://{}/metrics",
            metrics::spawn(listener, session.clone())?
        ),
        None => "off".to_owned(),
    };
    // Before "attached": what the target does once told so falls in the first interval, not
    // in the baseline (where only the totals would show it).
    let baseline = session.snapshot()?;
    eprintln!(
        "syschaos: attached to {} (metrics: {metrics_url}); Ctrl-C to detach",
        labels.join(", ")
    );
    if inject {
        eprintln!(
            "syschaos: injecting {}",
            describe_rules(&session.installed())
        );
    }
    let reason = watch(
        &mut opened,
        baseline,
        output,
        &mut trace_reader,
        format!("syschaos  metrics: {metrics_url}  Ctrl-C to detach"),
        (&mut interrupt, &mut terminate),
    )
    .await?;
    let last = opened.close()?;
    // Dropping the last session reference drops the Ebpf object: programs detached, rules gone.
    drop(session);
    print_summary(&last, trace_reader.as_ref());
    eprintln!("syschaos: detached ({reason})");
    Ok(())
}

fn print_summary(last: &Snapshot, trace_reader: Option<&TraceReader>) {
    for target in &last.targets {
        for injection in &target.injections {
            eprintln!(
                "syschaos: {}: {} {} via {}: {} injected",
                target.target,
                injection.syscall,
                injection.fault,
                injection.engine,
                injection.count
            );
        }
    }
    if let Some(reader) = trace_reader {
        let dropped: u64 = last.targets.iter().filter_map(|t| t.trace_drops).sum();
        eprintln!(
            "syschaos: trace: {} calls shown, {dropped} dropped",
            reader.shown
        );
    }
}

/// Shows the live view (or JSON, or traced calls) until the duration ends, a signal arrives or no
/// target is left; returns which.
async fn watch(
    opened: &mut Opened,
    baseline: Snapshot,
    output: &OutputArgs,
    trace_reader: &mut Option<TraceReader>,
    header: String,
    (interrupt, terminate): (&mut Signal, &mut Signal),
) -> anyhow::Result<String> {
    let output_mode = if trace_reader.is_some() {
        Output::Quiet
    } else if output.json {
        Output::Json
    } else if output.quiet {
        Output::Quiet
    } else {
        Output::Live {
            clear: std::io::stdout().is_terminal(),
        }
    };
    let deadline = async {
        match output.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(output.interval);
    ticker.tick().await;
    let session = opened.session.clone();
    let mut previous: Option<Snapshot> = Some(baseline);
    Ok(loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = session.snapshot()?;
                show(&output_mode, previous.as_ref(), &now, &header)?;
                previous = Some(now);
            }
            result = next_trace_batch(trace_reader, &session) => result?,
            Some(event) = opened.next_event() => {
                if let Some(reason) = follow(opened, event).await? {
                    break reason;
                }
            }
            _ = &mut deadline => break "duration elapsed".to_owned(),
            _ = interrupt.recv() => break "SIGINT".to_owned(),
            _ = terminate.recv() => break "SIGTERM".to_owned(),
        }
    })
}

/// Prints the next batch of traced calls (never returns when not tracing).
async fn next_trace_batch(
    reader: &mut Option<TraceReader>,
    session: &Session,
) -> anyhow::Result<()> {
    match reader {
        Some(reader) => reader.print_next(|slot| session.label(slot)).await,
        None => std::future::pending().await,
    }
}

fn describe_rules(rules: &[InstalledRule]) -> String {
    rules
        .iter()
        .map(|installed| {
            let rule = &installed.spec;
            let mut text = format!(
                "{} {} into {} via {}",
                rule.syscall,
                rule.fault.name(),
                installed.target,
                installed.engine
            );
            if rule.probability < 1.0 {
                text.push_str(&format!(" p={}", rule.probability));
            }
            if let Some(nth) = rule.nth {
                text.push_str(&format!(" nth={nth}"));
            }
            if let Some(when) = rule.when {
                text.push_str(&format!(" when={}", when.name()));
            }
            if let Some(count) = rule.count {
                text.push_str(&format!(" count={count}"));
            }
            if let Some(prefix) = &rule.path_prefix {
                text.push_str(&format!(" path-prefix={prefix}"));
            }
            if let Some(delay) = rule.delay {
                text.push_str(&format!(" delay={}", humantime::format_duration(delay)));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Follows a container through restarts; returns why to stop once no target is left.
async fn follow(opened: &Opened, event: ContainerEvent) -> anyhow::Result<Option<String>> {
    let name = &event.name;
    match opened.follow(&event).await? {
        Followed::Restarted { cgroup_id } => {
            eprintln!("syschaos: container {name} (re)started in cgroup {cgroup_id}: following it")
        }
        Followed::Unfollowable(why) => {
            eprintln!("syschaos: container {name} started but cannot be followed: {why}")
        }
        Followed::Died { exit_code } => {
            let code = exit_code.unwrap_or_else(|| "?".to_owned());
            eprintln!(
                "syschaos: container {name} stopped (exit code {code}); waiting for it to restart"
            );
        }
        Followed::Removed { left } => {
            eprintln!("syschaos: container {name} was removed: dropped");
            if left == 0 {
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
