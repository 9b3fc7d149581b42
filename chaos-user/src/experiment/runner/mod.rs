//! `chaos-user run`: checks the file and the targets, then runs each perturbation's phases
//! (baseline, perturbation, recovery), one sample per second, with a progress bar per phase and
//! a summary line per perturbation. Injection stops at once on an abort condition, SIGINT or
//! SIGTERM; the reports are written after every perturbation, so an interrupted run still has
//! one for what ran.
//!
//! `phase` runs the phases and samples, `judge` gives the verdicts, `load` drives the load
//! command.
mod judge;
mod load;
mod phase;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
};

use self::load::stop_load;
use super::{
    plan::{self, Planned},
    probe::Probes,
    report,
    results::{ExperimentInfo, PerturbationResult, Results, SCHEMA},
    spec::{self, Experiment},
    steady::{Metric, MetricRef, SyscallWhat},
    verdict,
};
use crate::{
    docker::ContainerEvent,
    inject::{
        choice::Asker,
        engine::{Capabilities, Engine},
    },
    session::{
        LoadOptions, Session, SessionError,
        open::{self, Injection, Prepared, Request},
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
        print_dry_run(&experiment, &plan, &labels, prepared.as_ref());
        return Ok(());
    }
    let prepared = prepared?;
    let engines = choose_engines(&plan, &prepared.capabilities()?)?;
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
    let events = opened.take_events();
    let cgroup_root = opened.cgroup_root().clone();
    let session = opened.session.clone();
    let mut runner = Runner::new(
        experiment,
        &plan,
        session.clone(),
        cgroup_root,
        events,
        labels,
        out.clone(),
    )?;
    let outcome = runner.run_all(&plan, &engines).await;
    // Whatever happened: nothing injected any more, load and probes stopped, report written.
    for planned in 0..runner.next_rule {
        let _ = session.uninstall(planned);
    }
    session.stop_ptrace();
    drop(session);
    let summary = runner.finish(&outcome, &plan, &engines).await?;
    drop(runner);
    drop(opened);
    conclude(&summary, &out, outcome)
}

/// `--dry-run`: the plan and the engine each perturbation would get.
fn print_dry_run(
    experiment: &Experiment,
    plan: &[Planned],
    labels: &[String],
    prepared: Result<&Prepared, &SessionError>,
) {
    let capabilities = prepared
        .map_err(|e| e.to_string())
        .and_then(|p| p.capabilities().map_err(|e| e.to_string()));
    let mut warnings = Vec::new();
    let engines: Vec<Result<String, String>> = match &capabilities {
        Ok(capabilities) => plan
            .iter()
            .map(|p| {
                let engine = capabilities.choose(&p.rule, Asker::Experiment);
                if let Ok(engine) = engine
                    && let Some(warning) = capabilities.ptrace_warning(&p.rule, engine)
                {
                    warnings.push(format!("{}. {warning}", p.index));
                }
                engine.map(|e| e.to_string()).map_err(|e| e.to_string())
            })
            .collect(),
        Err(e) => vec![Err(format!("cannot probe the kernel: {e}")); plan.len()],
    };
    println!("experiment {} on {}", experiment.name, labels.join(", "));
    print!("{}", plan::describe(plan, &engines));
    for warning in warnings {
        println!("warning: {warning}");
    }
}

/// The engine of every perturbation, or every refusal at once.
fn choose_engines(plan: &[Planned], capabilities: &Capabilities) -> anyhow::Result<Vec<Engine>> {
    let mut engines = Vec::new();
    let mut refused = Vec::new();
    for planned in plan {
        match capabilities.choose(&planned.rule, Asker::Experiment) {
            Ok(engine) => {
                if let Some(warning) = capabilities.ptrace_warning(&planned.rule, engine) {
                    eprintln!("syschaos: warning: {}. {warning}", planned.index);
                }
                engines.push(engine);
            }
            Err(e) => refused.push(format!("{}. {}: {e}", planned.index, planned.text)),
        }
    }
    if !refused.is_empty() {
        bail!(
            "no engine can run these perturbations here:\n  {}",
            refused.join("\n  ")
        );
    }
    Ok(engines)
}

/// The last lines of a run, and its result.
fn conclude(
    summary: &str,
    out: &Path,
    outcome: anyhow::Result<Option<String>>,
) -> anyhow::Result<()> {
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

    /// The runner of an opened session: the signal handlers installed, the run announced, the
    /// first snapshot taken.
    fn new(
        experiment: Experiment,
        plan: &[Planned],
        session: Arc<Session>,
        cgroup_root: CgroupRoot,
        events: Option<mpsc::Receiver<ContainerEvent>>,
        labels: Vec<String>,
        out: PathBuf,
    ) -> anyhow::Result<Self> {
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
        let metrics = recorded_metrics(&experiment, plan);
        let first = session.snapshot()?;
        let started_unix_ms = now_unix_ms();
        Ok(Runner {
            results: Results {
                schema: SCHEMA,
                experiment: ExperimentInfo::of(&experiment, labels),
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
            session,
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
            out,
        })
    }

    /// Runs every perturbation; Some(why) when the experiment stopped early.
    async fn run_all(
        &mut self,
        plan: &[Planned],
        engines: &[Engine],
    ) -> anyhow::Result<Option<String>> {
        if let Some(why) = self.start_load().await? {
            return Ok(Some(why));
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

    /// After the run, whatever happened: probes and load stopped, the perturbations that did
    /// not run listed, the reports written; the summary line.
    async fn finish(
        &mut self,
        outcome: &anyhow::Result<Option<String>>,
        plan: &[Planned],
        engines: &[Engine],
    ) -> anyhow::Result<String> {
        self.probes = None;
        if let Some(load) = self.load.take() {
            stop_load(load).await;
        }
        let ended = match outcome {
            Ok(None) => "completed".to_owned(),
            Ok(Some(why)) => why.clone(),
            Err(e) => format!("failed: {e:#}"),
        };
        self.results.ended = ended.clone();
        for (planned, engine) in plan
            .iter()
            .zip(engines)
            .skip(self.results.perturbations.len())
        {
            self.results.perturbations.push(PerturbationResult::not_run(
                planned.index,
                &planned.name,
                &planned.text,
                *engine,
            ));
        }
        self.write_reports()?;
        let summary = summary_line(&self.results.summary);
        Ok(summary)
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
