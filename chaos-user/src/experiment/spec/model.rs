//! The experiment as validated: what `plan`, `runner` and the reports read.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::{probe::ProbeSpec, steady::MetricRef};
use crate::{
    inject::{
        engine::EngineChoice,
        rule::{Fault, RuleSpec, When},
    },
    target::TargetSpec,
};

/// The three phases of a perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    pub baseline: Duration,
    pub perturbation: Duration,
    pub recovery: Duration,
}

impl Default for Phases {
    fn default() -> Self {
        let ten = Duration::from_secs(10);
        Self {
            baseline: ten,
            perturbation: ten,
            recovery: ten,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub argv: Vec<String>,
    /// Wait this long after starting it, before the first baseline.
    pub warmup: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Mean,
    Median,
    P95,
    Max,
    Min,
}

/// A bound on a metric: absolute (`min`/`max`) and/or relative to the baseline phase
/// (`max_increase`/`max_decrease`, `within` setting both).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub name: String,
    pub metric: MetricRef,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub max_increase: Option<f64>,
    pub max_decrease: Option<f64>,
    pub aggregate: Aggregate,
    /// Trailing window for abort and recovery checks; None: the steady state's.
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SteadyState {
    pub window: Duration,
    pub significance: f64,
    /// The file's conditions, then one per probe (success ratio).
    pub conditions: Vec<Condition>,
    pub probes: Vec<ProbeSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Abort {
    pub conditions: Vec<Condition>,
    /// Skip the perturbations after an aborted one.
    pub stop_experiment: bool,
}

/// Rule settings shared by a single rule and a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOptions {
    pub probability: f64,
    pub nth: Option<u64>,
    pub count: Option<u64>,
    pub path_prefix: Option<String>,
    pub engine: EngineChoice,
    pub when: Option<When>,
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PerturbationKind {
    Rule(RuleSpec),
    /// syscalls x faults (None: no errno) x delays (None: no delay); expanded by `plan`.
    Matrix {
        syscalls: Vec<String>,
        faults: Vec<Option<Fault>>,
        delays: Vec<Option<Duration>>,
        options: RuleOptions,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PerturbationSpec {
    pub name: Option<String>,
    pub kind: PerturbationKind,
    pub phases: Phases,
    /// Where it is written, for errors found while expanding it.
    pub at: (u64, u64),
    pub key: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub name: String,
    pub file: String,
    pub targets: Vec<TargetSpec>,
    pub load: Option<Load>,
    pub phases: Phases,
    pub steady: SteadyState,
    pub abort: Abort,
    pub perturbations: Vec<PerturbationSpec>,
    /// No progress for this long during a perturbation or its recovery: stalled.
    pub stall_after: Duration,
}
