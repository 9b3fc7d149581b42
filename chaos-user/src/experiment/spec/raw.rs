//! The file as written: serde's view of the YAML, checked by `Validator` afterwards.
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    model::Aggregate,
    values::{CommandLine, Dur, Num, Scalar},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExperiment {
    pub(super) name: Option<String>,
    pub(super) target: Spanned<RawTarget>,
    pub(super) load: Option<RawLoad>,
    pub(super) phases: Option<RawPhases>,
    pub(super) steady_state: Spanned<RawSteady>,
    pub(super) abort: Option<RawAbort>,
    pub(super) perturbations: Spanned<Vec<Spanned<RawPerturbation>>>,
    pub(super) stall_after: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) container: Option<String>,
    #[serde(default)]
    pub(super) containers: Vec<String>,
    pub(super) cgroup: Option<String>,
    pub(super) pid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoad {
    pub(super) command: Spanned<CommandLine>,
    pub(super) warmup: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPhases {
    pub(super) baseline: Option<Spanned<Dur>>,
    pub(super) perturbation: Option<Spanned<Dur>>,
    pub(super) recovery: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSteady {
    pub(super) window: Option<Spanned<Dur>>,
    pub(super) significance: Option<Spanned<Num>>,
    #[serde(default)]
    pub(super) conditions: Vec<Spanned<RawCondition>>,
    #[serde(default)]
    pub(super) probes: Vec<Spanned<RawProbe>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCondition {
    pub(super) name: Option<String>,
    pub(super) metric: Spanned<String>,
    pub(super) target: Option<String>,
    pub(super) min: Option<Num>,
    pub(super) max: Option<Num>,
    pub(super) within: Option<Num>,
    pub(super) max_increase: Option<Num>,
    pub(super) max_decrease: Option<Num>,
    pub(super) aggregate: Option<Aggregate>,
    pub(super) window: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpProbe {
    pub(super) url: Spanned<String>,
    pub(super) status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    pub(super) name: Spanned<String>,
    pub(super) http: Option<RawHttpProbe>,
    pub(super) command: Option<CommandLine>,
    pub(super) exit_code: Option<i32>,
    pub(super) interval: Option<Spanned<Dur>>,
    pub(super) timeout: Option<Spanned<Dur>>,
    pub(super) min_success_ratio: Option<Spanned<Num>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAbort {
    #[serde(default)]
    pub(super) conditions: Vec<Spanned<RawCondition>>,
    pub(super) stop_experiment: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPerturbation {
    pub(super) name: Option<String>,
    pub(super) rule: Option<Spanned<String>>,
    pub(super) syscall: Option<Spanned<String>>,
    pub(super) errno: Option<Spanned<Scalar>>,
    pub(super) signal: Option<Spanned<String>>,
    pub(super) delay: Option<Dur>,
    pub(super) probability: Option<Spanned<Num>>,
    pub(super) nth: Option<u64>,
    pub(super) count: Option<u64>,
    pub(super) path_prefix: Option<String>,
    pub(super) engine: Option<Spanned<String>>,
    pub(super) when: Option<Spanned<String>>,
    pub(super) duration: Option<Dur>,
    pub(super) phases: Option<RawPhases>,
    pub(super) matrix: Option<Spanned<RawMatrix>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatrix {
    pub(super) syscalls: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) errnos: Vec<Spanned<Scalar>>,
    #[serde(default)]
    pub(super) delays: Vec<Dur>,
}
