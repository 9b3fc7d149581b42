//! `chaos-user run`: checks the file and the targets, then runs each perturbation's phases
//! (baseline, perturbation, recovery), one sample per second, with a progress bar per phase and
//! a summary line per perturbation. Injection stops at once on an abort condition, SIGINT or
//! SIGTERM; the reports are written after every perturbation, so an interrupted run still has
//! one for what ran.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
};

use super::{
    plan::{self, Planned},
    probe::Probes,
    report,
    results::{
        ConditionInfo, ConditionResult, EventRecord, ExperimentInfo, PerturbationResult, Phase,
        PhaseSpans, Results, SCHEMA, Sample, Span,
    },
    spec::{self, Condition, Experiment},
    steady::{Interval, Metric, MetricRef, SyscallWhat},
    verdict::{self, Findings},
};
use crate::{
    docker::ContainerEvent,
    ebpf::kernel_now_ns,
    inject::{engine::Engine, injector::InstalledRule},
    session::{
        LoadOptions, Session,
        open::{self, Followed, Injection, Request},
    },
    snapshot::Snapshot,
    target::{CgroupRoot, TargetSpec},
};

pub struct RunOptions {
    pub file: PathBuf,
    pub out: Option<PathBuf>,
    pub dry_run: bool,
    /// Targets given on the command line: they replace the file's when there are any.
    pub targets: Vec<TargetSpec>,
    pub cgroup_root: CgroupRoot,
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let experiment = spec::load(&options.file)?;
    let plan = plan::expand(&experiment)?;
    let specs = match options.targets.is_empty() {
        true => experiment.targets.clone(),
        false => options.targets,
    };
    let resolved = open::resolve(Request {
        specs,
        cgroup_root: options.cgroup_root,
        load: LoadOptions {
            inject: true,
            syscalls: true,
            http: true,
            ..Default::default()
        },
    })
    .await?;
    let labels = resolved.labels();
    let prepared = resolved.load();
    if options.dry_run {
        let engines: Vec<Result<String, String>> = match prepared
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|p| p.capabilities().map_err(|e| e.to_string()))
        {
            Ok(capabilities) => plan
                .iter()
                .map(|p| {
                    capabilities
                        .choose(&p.rule)
                        .map(|e| e.to_string())
                        .map_err(|e| e.to_string())
                })
                .collect(),
            Err(e) => vec![Err(format!("cannot probe the kernel: {e}")); plan.len()],
        };
        println!("experiment {} on {}", experiment.name, labels.join(", "));
        print!("{}", plan::describe(&plan, &engines));
        return Ok(());
    }
    let prepared = prepared?;
    let capabilities = prepared.capabilities()?;
    let mut engines = Vec::new();
    let mut refused = Vec::new();
    for planned in &plan {
        match capabilities.choose(&planned.rule) {
            Ok(engine) => engines.push(engine),
            Err(e) => refused.push(format!("{}. {}: {e}", planned.index, planned.text)),
        }
    }
    if !refused.is_empty() {
        bail!(
            "no engine can run these perturbations here:\n  {}",
            refused.join("\n  ")
        );
    }
    if plan.len() * labels.len() > chaos_common::MAX_RULES as usize {
        bail!(
            "{} perturbations x {} targets is more than the {} rules a run can install",
            plan.len(),
            labels.len(),
            chaos_common::MAX_RULES
        );
    }
    let out = options
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}-report", sanitize(&experiment.name))));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // Locks taken, targets added and counted; rules come per perturbation.
    let mut opened = prepared.start(Some(Injection::default())).await?;
    let session = opened.session.clone();
    let events = opened.take_events();
    let cgroup_root = opened.cgroup_root().clone();
    let sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let total: Duration = plan.iter().map(Planned::duration).sum();
    eprintln!(
        "syschaos: attached to {}; experiment {}: {} perturbation(s), about {}; report in {}",
        labels.join(", "),
        experiment.name,
        plan.len(),
        humantime::format_duration(Duration::from_secs(total.as_secs())),
        out.display()
    );
    let metrics = recorded_metrics(&experiment, &plan);
    let first = session.snapshot()?;
    let started_unix_ms = now_unix_ms();
    let mut runner = Runner {
        results: Results {
            schema: SCHEMA,
            experiment: ExperimentInfo::of(&experiment, labels.clone()),
            started_unix_ms,
            finished_unix_ms: started_unix_ms,
            ended: "running".into(),
            summary: Default::default(),
            metrics: metrics.iter().map(MetricRef::key).collect(),
            perturbations: Vec::new(),
            events: Vec::new(),
            samples: Vec::new(),
        },
        experiment,
        session: session.clone(),
        cgroup_root,
        metrics,
        probes: None,
        events,
        sigint,
        sigterm,
        ticker: tokio::time::interval(Duration::from_secs(1)),
        started: Instant::now(),
        last: first,
        next_rule: 0,
        rules_per_target: HashMap::new(),
        down: HashMap::new(),
        load: None,
        out: out.clone(),
    };
    let outcome = runner.run_all(&plan, &engines).await;
    // Whatever happened: nothing injected any more, load and probes stopped, report written.
    for planned in 0..runner.next_rule {
        let _ = session.uninstall(planned);
    }
    session.stop_ptrace();
    drop(session);
    runner.probes = None;
    if let Some(load) = runner.load.take() {
        stop_load(load).await;
    }
    let ended = match &outcome {
        Ok(None) => "completed".to_owned(),
        Ok(Some(why)) => why.clone(),
        Err(e) => format!("failed: {e:#}"),
    };
    runner.results.ended = ended.clone();
    for (planned, engine) in plan
        .iter()
        .zip(&engines)
        .skip(runner.results.perturbations.len())
    {
        runner
            .results
            .perturbations
            .push(PerturbationResult::not_run(
                planned.index,
                &planned.name,
                &planned.text,
                Some(engine.to_string()),
            ));
    }
    runner.write_reports()?;
    let summary = summary_line(&runner.results.summary);
    drop(runner);
    drop(opened);
    eprintln!("syschaos: {summary}");
    eprintln!("syschaos: report: {}", out.join("report.html").display());
    match outcome {
        Ok(None) => Ok(()),
        Ok(Some(why)) => bail!("experiment stopped early ({why}); the report covers what ran"),
        Err(e) => Err(e),
    }
}

fn summary_line(summary: &std::collections::BTreeMap<&'static str, usize>) -> String {
    ["resilient", "degraded", "broken", "aborted", "not-run"]
        .iter()
        .map(|v| format!("{} {v}", summary.get(v).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn now_unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Recorded every second: the conditions' metrics, a standard set, and the error rate of
/// every perturbed syscall (it shows the injections at work).
fn recorded_metrics(experiment: &Experiment, plan: &[Planned]) -> Vec<MetricRef> {
    let mut metrics: Vec<MetricRef> = [
        Metric::HttpRequests,
        Metric::HttpClassRatio(5),
        Metric::HttpLatency(99),
        Metric::Calls,
        Metric::Errors,
        Metric::Cpu,
        Metric::MemoryMb,
        Metric::Injections,
    ]
    .into_iter()
    .map(MetricRef::all)
    .collect();
    let conditions = experiment
        .steady
        .conditions
        .iter()
        .chain(&experiment.abort.conditions);
    metrics.extend(conditions.map(|c| c.metric.clone()));
    for planned in plan {
        metrics.push(MetricRef::all(Metric::Syscall {
            name: planned.rule.syscall.clone(),
            nr: planned.rule.syscall_nr,
            what: SyscallWhat::ErrorsPerSec,
        }));
    }
    let mut seen = std::collections::HashSet::new();
    metrics.retain(|m| seen.insert(m.key()));
    metrics
}

/// A rule of the running perturbation on one target.
struct Installed {
    index: u32,
    target: String,
    /// Its position among the target's rules in a snapshot's `injections`.
    position: usize,
}

enum PhaseEnd {
    Completed,
    /// An abort condition was met (why): the injection stopped, recovery follows.
    Aborted(String),
    /// The experiment must stop now (SIGINT, SIGTERM, no target left).
    Stop(String),
}

struct Runner {
    experiment: Experiment,
    session: Arc<Session>,
    cgroup_root: CgroupRoot,
    metrics: Vec<MetricRef>,
    probes: Option<Probes>,
    events: Option<mpsc::Receiver<ContainerEvent>>,
    sigint: Signal,
    sigterm: Signal,
    ticker: tokio::time::Interval,
    started: Instant,
    last: Snapshot,
    /// Next rule index (rule indices are never reused: their counters stay readable).
    next_rule: u32,
    rules_per_target: HashMap<String, usize>,
    /// Targets that died and did not start again.
    down: HashMap<String, bool>,
    load: Option<tokio::process::Child>,
    out: PathBuf,
    results: Results,
}

impl Runner {
    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Runs every perturbation; Some(why) when the experiment stopped early.
    async fn run_all(
        &mut self,
        plan: &[Planned],
        engines: &[Engine],
    ) -> anyhow::Result<Option<String>> {
        if let Some(load) = self.experiment.load.clone() {
            let log = std::fs::File::create(self.out.join("load.log"))?;
            let child = tokio::process::Command::new(&load.argv[0])
                .args(&load.argv[1..])
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: the terminal's Ctrl-C reaches chaos-user only, which
                // then stops the whole group (a `sh -c` and what it started).
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting the load command {}", load.argv[0]))?;
            eprintln!(
                "syschaos: load started: {} (output in load.log)",
                load.argv.join(" ")
            );
            self.load = Some(child);
            if !load.warmup.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(load.warmup) => {}
                    _ = self.sigint.recv() => return Ok(Some("interrupted by SIGINT".into())),
                    _ = self.sigterm.recv() => return Ok(Some("interrupted by SIGTERM".into())),
                }
            }
        }
        self.probes = Some(Probes::start(&self.experiment.steady.probes));
        // Sampling starts now (an interval's first tick completes at once).
        self.ticker = tokio::time::interval(Duration::from_secs(1));
        self.ticker
            .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.ticker.tick().await;
        self.last = self.session.snapshot()?;
        if let Some(probes) = &self.probes {
            probes.take();
        }
        for (planned, engine) in plan.iter().zip(engines) {
            let (result, stop) = self.perturbation(planned, *engine, plan.len()).await?;
            let line = format!(
                "[{}/{}] {}: {} ({}){}",
                planned.index,
                plan.len(),
                planned.name,
                result.verdict.name().to_uppercase(),
                result.reason,
                match result.injections {
                    0 => String::new(),
                    n => format!("; {n} injections"),
                }
            );
            eprintln!("syschaos: {line}");
            let aborted = result.verdict == verdict::Verdict::Aborted;
            self.results.perturbations.push(result);
            self.write_reports()?;
            let so_far = &self.results.summary;
            eprintln!(
                "syschaos: so far: {} resilient, {} degraded, {} broken, {} aborted",
                so_far["resilient"], so_far["degraded"], so_far["broken"], so_far["aborted"]
            );
            if let Some(why) = stop {
                return Ok(Some(why));
            }
            if aborted && self.experiment.abort.stop_experiment {
                return Ok(Some(format!(
                    "stopped after perturbation {} was aborted (abort.stop_experiment)",
                    planned.index
                )));
            }
        }
        Ok(None)
    }

    fn write_reports(&mut self) -> anyhow::Result<()> {
        self.results.finished_unix_ms = now_unix_ms();
        self.results.summarize();
        report::write_all(&self.out, &self.results)
    }

    /// One perturbation's three phases and its verdict; the second value says the experiment
    /// must stop (why).
    async fn perturbation(
        &mut self,
        planned: &Planned,
        engine: Engine,
        count: usize,
    ) -> anyhow::Result<(PerturbationResult, Option<String>)> {
        let mut spans = PhaseSpans::default();
        let mut aborted_by = None;
        let mut stop = None;
        let mut window = None;
        let mut installed = Vec::new();
        let events_before = self.results.events.len();

        eprintln!(
            "syschaos: [{}/{count}] {} via {engine}{}",
            planned.index,
            planned.text,
            match planned.name == planned.text {
                true => String::new(),
                false => format!(" ({})", planned.name),
            }
        );
        let start = self.now_s();
        let end = self
            .phase(
                planned,
                count,
                Phase::Baseline,
                planned.phases.baseline,
                &[],
            )
            .await?;
        spans.baseline = Some(Span {
            start_s: start,
            end_s: self.now_s(),
        });
        if let PhaseEnd::Stop(why) = end {
            aborted_by = Some(why.clone());
            stop = Some(why);
        } else {
            installed = self.install(planned, engine)?;
            let start = self.now_s();
            let end = self
                .phase(
                    planned,
                    count,
                    Phase::Perturbation,
                    planned.phases.perturbation,
                    &installed,
                )
                .await;
            // At once, whatever ended the phase (errors included).
            self.uninstall(&installed, engine);
            let end = end?;
            let stopped = self.now_s();
            spans.perturbation = Some(Span {
                start_s: start,
                end_s: stopped,
            });
            window = Some(Span {
                start_s: start,
                end_s: stopped,
            });
            match end {
                PhaseEnd::Stop(why) => {
                    aborted_by = Some(why.clone());
                    stop = Some(why);
                }
                PhaseEnd::Aborted(why) => aborted_by = Some(why),
                PhaseEnd::Completed => {}
            }
            if stop.is_none() {
                let start = self.now_s();
                let end = self
                    .phase(
                        planned,
                        count,
                        Phase::Recovery,
                        planned.phases.recovery,
                        &[],
                    )
                    .await?;
                spans.recovery = Some(Span {
                    start_s: start,
                    end_s: self.now_s(),
                });
                if let PhaseEnd::Stop(why) = end {
                    stop = Some(why);
                }
            }
        }
        let injections = self.injections(&installed, &self.last);
        let events: Vec<EventRecord> = self.results.events[events_before..].to_vec();
        let result = self.judge(
            planned, engine, spans, window, aborted_by, injections, events,
        );
        Ok((result, stop))
    }

    fn install(&mut self, planned: &Planned, engine: Engine) -> anyhow::Result<Vec<Installed>> {
        let now = kernel_now_ns();
        // The kernel stops applying it at the end of the phase even if chaos-user hangs.
        let limit = planned
            .rule
            .duration
            .into_iter()
            .chain([planned.phases.perturbation + Duration::from_secs(1)])
            .min()
            .unwrap_or_default();
        let expires_ns = now + limit.as_nanos() as u64;
        let mut installed = Vec::new();
        for label in self.results.experiment.targets.clone() {
            let index = self.next_rule;
            self.next_rule += 1;
            let position = self.rules_per_target.entry(label.clone()).or_default();
            installed.push(Installed {
                index,
                target: label.clone(),
                position: *position,
            });
            *position += 1;
            self.session.install(
                InstalledRule {
                    index,
                    target: label,
                    // The session's: the target's current cgroup.
                    cgroup_id: 0,
                    spec: planned.rule.clone(),
                    engine,
                },
                expires_ns,
            )?;
        }
        if engine == Engine::Ptrace {
            self.session.start_ptrace()?;
        }
        Ok(installed)
    }

    fn uninstall(&self, installed: &[Installed], engine: Engine) {
        for rule in installed {
            if let Err(e) = self.session.uninstall(rule.index) {
                eprintln!(
                    "syschaos: removing rule {} from {}: {e}",
                    rule.index, rule.target
                );
            }
        }
        if engine == Engine::Ptrace {
            self.session.stop_ptrace();
        }
    }

    fn injections(&self, installed: &[Installed], snapshot: &Snapshot) -> u64 {
        installed
            .iter()
            .filter_map(|rule| {
                let target = snapshot.targets.iter().find(|t| t.target == rule.target)?;
                target.injections.get(rule.position).map(|i| i.count)
            })
            .sum()
    }

    async fn phase(
        &mut self,
        planned: &Planned,
        count: usize,
        phase: Phase,
        duration: Duration,
        installed: &[Installed],
    ) -> anyhow::Result<PhaseEnd> {
        let seconds = duration.as_secs_f64().round().max(1.0) as u64;
        let bar = ProgressBar::new(seconds).with_style(
            ProgressStyle::with_template("{prefix} {bar:24.cyan/blue} {pos:>3}/{len}s {msg}")
                .expect("a valid template")
                .progress_chars("█▉▊▋▌▍▎▏ "),
        );
        let mut rule: String = planned.text.chars().take(32).collect();
        if rule.len() < planned.text.len() {
            rule.push('…');
        }
        bar.set_prefix(format!(
            "[{}/{count}] {rule} {:<12}",
            planned.index,
            phase.name()
        ));
        if bar.is_hidden() {
            eprintln!(
                "syschaos: [{}/{count}] {}: {} {seconds}s",
                planned.index,
                planned.text,
                phase.name()
            );
        }
        let mut injected_before = self.injections(installed, &self.last);
        let mut done = 0;
        let end = loop {
            if done >= seconds {
                break PhaseEnd::Completed;
            }
            tokio::select! {
                _ = self.ticker.tick() => {
                    let now = self.session.snapshot()?;
                    let injected = self.injections(installed, &now);
                    let sample = self.sample(now, planned.index, phase, injected.saturating_sub(injected_before));
                    injected_before = injected;
                    done += 1;
                    bar.set_position(done);
                    bar.set_message(self.live_message(&sample, injected));
                    if phase == Phase::Perturbation
                        && let Some(why) = self.abort_check(planned.index)
                    {
                        break PhaseEnd::Aborted(why);
                    }
                }
                Some(event) = next_event(&mut self.events) => {
                    if let Some(why) = self.on_event(event, planned.index, phase).await? {
                        break PhaseEnd::Stop(why);
                    }
                }
                status = wait_load(&mut self.load) => {
                    eprintln!("syschaos: warning: the load command exited ({status}); see load.log");
                    self.load = None;
                }
                _ = self.sigint.recv() => break PhaseEnd::Stop("interrupted by SIGINT".into()),
                _ = self.sigterm.recv() => break PhaseEnd::Stop("interrupted by SIGTERM".into()),
            }
        };
        bar.finish_and_clear();
        Ok(end)
    }

    fn sample(
        &mut self,
        now: Snapshot,
        perturbation: usize,
        phase: Phase,
        injections: u64,
    ) -> Sample {
        let seconds = now.taken.duration_since(self.last.taken).as_secs_f64();
        let probes = self.probes.as_ref().map(Probes::take).unwrap_or_default();
        let interval = Interval {
            before: &self.last,
            now: &now,
            seconds,
            injections,
            probes: &probes,
        };
        let values = self
            .metrics
            .iter()
            .filter_map(|m| m.value(&interval).map(|v| (m.key(), v)))
            .collect();
        let sample = Sample {
            t: (self.now_s() * 1000.0).round() / 1000.0,
            unix_ms: now.unix_time_ms,
            perturbation,
            phase,
            injections,
            values,
        };
        self.last = now;
        self.results.samples.push(sample.clone());
        sample
    }

    fn live_message(&self, sample: &Sample, injected: u64) -> String {
        let mut parts: Vec<String> = self
            .experiment
            .steady
            .conditions
            .iter()
            .take(3)
            .map(|c| {
                let key = c.metric.key();
                match sample.values.get(&key) {
                    Some(v) => format!("{key} {}", short(*v)),
                    None => format!("{key} -"),
                }
            })
            .collect();
        parts.push(format!("injections {injected}"));
        parts.join("  ")
    }

    /// Values of a metric in one phase of a perturbation, in time order.
    fn values(&self, perturbation: usize, phase: Phase, key: &str) -> Vec<f64> {
        self.results
            .samples_of(perturbation)
            .filter(|s| s.phase == phase)
            .filter_map(|s| s.values.get(key).copied())
            .collect()
    }

    fn window_samples(&self, condition: &Condition) -> usize {
        condition
            .window
            .unwrap_or(self.experiment.steady.window)
            .as_secs_f64()
            .round()
            .max(1.0) as usize
    }

    /// The first abort condition met over its trailing window, if any.
    fn abort_check(&self, perturbation: usize) -> Option<String> {
        for condition in &self.experiment.abort.conditions {
            let key = condition.metric.key();
            let values = self.values(perturbation, Phase::Perturbation, &key);
            let window = self.window_samples(condition);
            let tail = &values[values.len().saturating_sub(window)..];
            let baseline = self.values(perturbation, Phase::Baseline, &key);
            let base = verdict::aggregate(&baseline, condition.aggregate);
            if let Some(value) = verdict::aggregate(tail, condition.aggregate)
                && !verdict::threshold_holds(condition, value, base)
            {
                return Some(format!(
                    "abort condition `{}` met: {key} = {} over the last {}s",
                    condition.name,
                    short(value),
                    tail.len()
                ));
            }
        }
        None
    }

    /// Follows a container through restarts; Some(why) once no target is left.
    async fn on_event(
        &mut self,
        event: ContainerEvent,
        perturbation: usize,
        phase: Phase,
    ) -> anyhow::Result<Option<String>> {
        let name = event.name.clone();
        let mut record = EventRecord {
            t: self.now_s(),
            perturbation,
            phase,
            target: name.clone(),
            event: String::new(),
            detail: None,
        };
        let mut stop = None;
        match open::follow(&self.session, &self.cgroup_root, &event).await? {
            Followed::Restarted { cgroup_id } => {
                record.event = "started".into();
                record.detail = Some(format!("followed into cgroup {cgroup_id}"));
                self.down.insert(name.clone(), false);
            }
            Followed::Unfollowable(e) => {
                record.event = "started".into();
                record.detail = Some(format!("cannot follow it: {e}"));
                self.down.insert(name.clone(), false);
            }
            Followed::Died { exit_code } => {
                record.event = "died".into();
                record.detail = exit_code.map(|code| format!("exit code {code}"));
                self.down.insert(name.clone(), true);
            }
            Followed::Removed { left } => {
                record.event = "removed".into();
                if left == 0 {
                    stop = Some("every target was removed".to_owned());
                }
            }
        }
        eprintln!(
            "syschaos: container {name} {}{}",
            record.event,
            record
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        self.results.events.push(record);
        Ok(stop)
    }

    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        planned: &Planned,
        engine: Engine,
        phases: PhaseSpans,
        injection_window: Option<Span>,
        aborted_by: Option<String>,
        injections: u64,
        events: Vec<EventRecord>,
    ) -> PerturbationResult {
        let index = planned.index;
        let significance = self.experiment.steady.significance;
        let recovery_ran = phases.recovery.is_some();
        let mut findings = Findings {
            aborted_by,
            ..Default::default()
        };
        let mut conditions = Vec::new();
        for condition in &self.experiment.steady.conditions {
            let key = condition.metric.key();
            let baseline = self.values(index, Phase::Baseline, &key);
            let during = self.values(index, Phase::Perturbation, &key);
            let after = self.values(index, Phase::Recovery, &key);
            let tail = &after[after.len().saturating_sub(self.window_samples(condition))..];
            let perturbation = verdict::check(condition, &baseline, &during, significance);
            let recovery =
                recovery_ran.then(|| verdict::check(condition, &baseline, tail, significance));
            if perturbation.violated {
                findings.violated.push(condition.name.clone());
            }
            if recovery.as_ref().is_some_and(|r| r.violated) {
                findings.not_recovered.push(condition.name.clone());
            }
            conditions.push(ConditionResult {
                condition: ConditionInfo::of(condition),
                baseline: verdict::aggregate(&baseline, condition.aggregate),
                perturbation,
                recovery,
            });
        }
        let after_phases = [Phase::Perturbation, Phase::Recovery];
        findings.crashed = events
            .iter()
            .any(|e| e.event == "died" && after_phases.contains(&e.phase));
        findings.restarted = events
            .iter()
            .any(|e| e.event == "started" && after_phases.contains(&e.phase));
        findings.down_at_end = recovery_ran && findings.crashed && self.down.values().any(|d| *d);
        // Stalled: no progress for stall_after seconds where the baseline always had some.
        // Progress is HTTP responses when the target serves HTTP, completed syscalls otherwise.
        let min_run = self.experiment.stall_after.as_secs_f64().round().max(1.0) as usize;
        for metric in [Metric::HttpRequests, Metric::Calls] {
            let key = metric.to_string();
            let baseline: Vec<Option<f64>> = self
                .results
                .samples_of(index)
                .filter(|s| s.phase == Phase::Baseline)
                .map(|s| s.values.get(&key).copied())
                .collect();
            if baseline.is_empty() || baseline.iter().any(|v| v.is_none_or(|v| v <= 0.0)) {
                continue;
            }
            let series: Vec<Option<f64>> = self
                .results
                .samples_of(index)
                .filter(|s| s.phase != Phase::Baseline)
                .map(|s| s.values.get(&key).copied())
                .collect();
            let (longest, at_end) = verdict::stall_runs(&series, min_run);
            findings.stalled = longest >= min_run;
            findings.stalled_at_end = recovery_ran && at_end;
            break;
        }
        let (verdict, reason) = verdict::judge(&findings);
        PerturbationResult {
            index,
            name: planned.name.clone(),
            rule: planned.text.clone(),
            engine: Some(engine.to_string()),
            verdict,
            reason,
            crashed: findings.crashed,
            restarted: findings.restarted,
            stalled: findings.stalled,
            aborted_by: findings.aborted_by,
            injections,
            phases,
            injection_window,
            conditions,
            events,
        }
    }
}

/// A value in a few significant digits.
pub fn short(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

async fn next_event(events: &mut Option<mpsc::Receiver<ContainerEvent>>) -> Option<ContainerEvent> {
    match events {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// SIGTERM to the load command's process group, SIGKILL if it is still there after 2 s.
async fn stop_load(mut load: tokio::process::Child) {
    let Some(pid) = load.id() else {
        return;
    };
    let group = -(pid as libc::pid_t);
    // SAFETY: signals the process group we created for the load command.
    unsafe { libc::kill(group, libc::SIGTERM) };
    if tokio::time::timeout(Duration::from_secs(2), load.wait())
        .await
        .is_err()
    {
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = load.wait().await;
    }
}

/// Resolves when the load command exits (never without one).
async fn wait_load(load: &mut Option<tokio::process::Child>) -> String {
    match load {
        Some(child) => match child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        },
        None => std::future::pending().await,
    }
}
