//! What an experiment produced: every sample, each perturbation's phases, checks and verdict.
//! Serialized as `results.json` (schema `syschaos.experiment/v1`, documented in the README) and
//! rendered by `report`.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    spec::{Aggregate, Condition, Experiment},
    verdict::{Check, Verdict},
};
use crate::inject::{engine::Engine, rule::When};

pub const SCHEMA: &str = "syschaos.experiment/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Baseline,
    Perturbation,
    Recovery,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline",
            Phase::Perturbation => "perturbation",
            Phase::Recovery => "recovery",
        }
    }
}

/// One second of the experiment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the experiment started, at the end of the interval.
    pub t: f64,
    pub unix_ms: u128,
    /// 1-based index of the perturbation whose phase this is.
    pub perturbation: usize,
    pub phase: Phase,
    /// Injections made in the interval by the perturbation's rule.
    pub injections: u64,
    /// Metric key -> value (a metric without a value in this interval is absent).
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseSpans {
    pub baseline: Option<Span>,
    pub perturbation: Option<Span>,
    pub recovery: Option<Span>,
}

/// A condition's bounds, as judged.
#[derive(Debug, Clone, Serialize)]
pub struct Bounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Relative to the baseline: 0.2 = 20%.
    pub max_increase: Option<f64>,
    pub max_decrease: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConditionInfo {
    pub name: String,
    /// Sample key of its metric.
    pub metric: String,
    pub bounds: Bounds,
    pub aggregate: Aggregate,
}

impl ConditionInfo {
    pub fn of(condition: &Condition) -> Self {
        Self {
            name: condition.name.clone(),
            metric: condition.metric.key(),
            bounds: Bounds {
                min: condition.min,
                max: condition.max,
                max_increase: condition.max_increase,
                max_decrease: condition.max_decrease,
            },
            aggregate: condition.aggregate,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConditionResult {
    #[serde(flatten)]
    pub condition: ConditionInfo,
    /// The baseline phase's aggregate.
    pub baseline: Option<f64>,
    /// The perturbation phase against the baseline.
    pub perturbation: Check,
    /// The last `window` seconds of the recovery phase against the baseline (None: not run).
    pub recovery: Option<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub t: f64,
    pub perturbation: usize,
    pub phase: Phase,
    pub target: String,
    /// `died`, `started` or `removed`.
    pub event: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PerturbationResult {
    pub index: usize,
    pub name: String,
    /// The rule, as `chaos-user inject --rule` takes it.
    pub rule: String,
    pub engine: Option<String>,
    /// When its errno or delay came: `before` the call ran, or `after` (the stop engine; a call
    /// that blocked is interrupted, so for it the fault still comes before it completes).
    pub when: Option<When>,
    pub verdict: Verdict,
    pub reason: String,
    pub crashed: bool,
    pub restarted: bool,
    pub stalled: bool,
    pub aborted_by: Option<String>,
    /// Injections made by its rule, over all targets.
    pub injections: u64,
    pub phases: PhaseSpans,
    /// From rule installed to rule removed.
    pub injection_window: Option<Span>,
    pub conditions: Vec<ConditionResult>,
    pub events: Vec<EventRecord>,
}

impl PerturbationResult {
    /// `stop (after)`: the engine and when its fault came, for the reports.
    pub fn engine_label(&self) -> String {
        match (&self.engine, self.when) {
            (Some(engine), Some(when)) => format!("{engine} ({})", when.name()),
            (Some(engine), None) => engine.clone(),
            (None, _) => "-".to_owned(),
        }
    }

    pub fn not_run(index: usize, name: &str, rule: &str, engine: Engine) -> Self {
        Self {
            index,
            name: name.to_owned(),
            rule: rule.to_owned(),
            engine: Some(engine.to_string()),
            when: engine.when(),
            verdict: Verdict::NotRun,
            reason: "the experiment stopped before it".into(),
            crashed: false,
            restarted: false,
            stalled: false,
            aborted_by: None,
            injections: 0,
            phases: PhaseSpans::default(),
            injection_window: None,
            conditions: Vec::new(),
            events: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentInfo {
    pub name: String,
    pub file: String,
    pub targets: Vec<String>,
    pub load: Option<Vec<String>>,
    pub significance: f64,
    pub window_s: f64,
    pub stall_after_s: f64,
    pub conditions: Vec<ConditionInfo>,
    pub abort_conditions: Vec<ConditionInfo>,
}

impl ExperimentInfo {
    pub fn of(experiment: &Experiment, targets: Vec<String>) -> Self {
        Self {
            name: experiment.name.clone(),
            file: experiment.file.clone(),
            targets,
            load: experiment.load.as_ref().map(|l| l.argv.clone()),
            significance: experiment.steady.significance,
            window_s: experiment.steady.window.as_secs_f64(),
            stall_after_s: experiment.stall_after.as_secs_f64(),
            conditions: experiment
                .steady
                .conditions
                .iter()
                .map(ConditionInfo::of)
                .collect(),
            abort_conditions: experiment
                .abort
                .conditions
                .iter()
                .map(ConditionInfo::of)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub schema: &'static str,
    pub experiment: ExperimentInfo,
    pub started_unix_ms: u128,
    pub finished_unix_ms: u128,
    /// `completed`, or why it stopped early.
    pub ended: String,
    /// Verdict -> how many perturbations got it.
    pub summary: BTreeMap<&'static str, usize>,
    /// Every metric key recorded in samples (the CSV's columns).
    pub metrics: Vec<String>,
    pub perturbations: Vec<PerturbationResult>,
    pub events: Vec<EventRecord>,
    pub samples: Vec<Sample>,
}

impl Results {
    pub fn summarize(&mut self) {
        self.summary = BTreeMap::new();
        for verdict in [
            Verdict::Resilient,
            Verdict::Degraded,
            Verdict::Broken,
            Verdict::Aborted,
            Verdict::NotRun,
        ] {
            let count = self
                .perturbations
                .iter()
                .filter(|p| p.verdict == verdict)
                .count();
            self.summary.insert(verdict.name(), count);
        }
    }

    /// The samples of one perturbation.
    pub fn samples_of(&self, index: usize) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.perturbation == index)
    }
}
