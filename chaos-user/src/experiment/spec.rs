//! The experiment file: its YAML model (read with serde-saphyr, a maintained pure-Rust YAML
//! crate) and its validation. Every error names the file, the line and column, and the key path
//! (`perturbations[1].errno`): syntax and type errors through serde-saphyr's locations and
//! `serde_path_to_error`'s paths, semantic ones through `Spanned` values.
use std::{fmt, path::Path, time::Duration};

use serde::{Deserialize, Serialize, de};
use serde_saphyr::{Location, MessageFormatter as _, Spanned};

use super::{
    probe::{HttpUrl, ProbeKind, ProbeSpec},
    steady::{Metric, MetricRef, ProbeWhat},
};
use crate::{
    inject::{
        engine::EngineChoice,
        rule::{self, Fault, RuleSpec},
    },
    target::TargetSpec,
};

/// A problem in an experiment file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: u64,
    pub column: u64,
    /// Key path, e.g. `perturbations[1].errno` (empty: the whole document).
    pub key: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.file)?,
            line => write!(f, "{}:{line}:{}", self.file, self.column)?,
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

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

// ---- the file as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExperiment {
    name: Option<String>,
    target: Spanned<RawTarget>,
    load: Option<RawLoad>,
    phases: Option<RawPhases>,
    steady_state: Spanned<RawSteady>,
    abort: Option<RawAbort>,
    perturbations: Spanned<Vec<Spanned<RawPerturbation>>>,
    stall_after: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    container: Option<String>,
    #[serde(default)]
    containers: Vec<String>,
    cgroup: Option<String>,
    pid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    command: Spanned<CommandLine>,
    warmup: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhases {
    baseline: Option<Spanned<Dur>>,
    perturbation: Option<Spanned<Dur>>,
    recovery: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSteady {
    window: Option<Spanned<Dur>>,
    significance: Option<Spanned<Num>>,
    #[serde(default)]
    conditions: Vec<Spanned<RawCondition>>,
    #[serde(default)]
    probes: Vec<Spanned<RawProbe>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    name: Option<String>,
    metric: Spanned<String>,
    target: Option<String>,
    min: Option<Num>,
    max: Option<Num>,
    within: Option<Num>,
    max_increase: Option<Num>,
    max_decrease: Option<Num>,
    aggregate: Option<Aggregate>,
    window: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpProbe {
    url: Spanned<String>,
    status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: Spanned<String>,
    http: Option<RawHttpProbe>,
    command: Option<CommandLine>,
    exit_code: Option<i32>,
    interval: Option<Spanned<Dur>>,
    timeout: Option<Spanned<Dur>>,
    min_success_ratio: Option<Spanned<Num>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbort {
    #[serde(default)]
    conditions: Vec<Spanned<RawCondition>>,
    stop_experiment: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerturbation {
    name: Option<String>,
    rule: Option<Spanned<String>>,
    syscall: Option<Spanned<String>>,
    errno: Option<Spanned<Scalar>>,
    signal: Option<Spanned<String>>,
    delay: Option<Dur>,
    probability: Option<Spanned<Num>>,
    nth: Option<u64>,
    count: Option<u64>,
    path_prefix: Option<String>,
    engine: Option<Spanned<String>>,
    duration: Option<Dur>,
    phases: Option<RawPhases>,
    matrix: Option<Spanned<RawMatrix>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrix {
    syscalls: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    errnos: Vec<Spanned<Scalar>>,
    #[serde(default)]
    delays: Vec<Dur>,
}

/// A duration: `500ms`, `10s`, `2m` (humantime), or a number of seconds.
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?.0;
        if let Ok(seconds) = text.parse::<f64>() {
            return match (0.0..1e9).contains(&seconds) {
                true => Ok(Dur(Duration::from_secs_f64(seconds))),
                false => Err(de::Error::custom(format!("`{text}` is not a duration"))),
            };
        }
        humantime::parse_duration(&text).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "`{text}` is not a duration (e.g. 500ms, 10s, 2m): {e}"
            ))
        })
    }
}

/// A number, or a percentage written `20%`.
#[derive(Debug, Clone, Copy)]
struct Num(f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?.0;
        let bad = || de::Error::custom(format!("`{text}` is not a number or a percentage"));
        let value = match text.trim().strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
            None => text.trim().parse::<f64>().map_err(|_| bad())?,
        };
        match value.is_finite() {
            true => Ok(Num(value)),
            false => Err(bad()),
        }
    }
}

/// A scalar taken as text: a string or a number (`errno: 13`).
#[derive(Debug, Clone)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A command: a list of arguments, or a string run by `sh -c`.
#[derive(Debug, Clone)]
struct CommandLine(Vec<String>);

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = CommandLine;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command: a list of arguments, or a string for sh -c")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandLine, E> {
                match v.trim().is_empty() {
                    true => Err(E::custom("the command is empty")),
                    false => Ok(CommandLine(vec!["sh".into(), "-c".into(), v.to_owned()])),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<CommandLine, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<Scalar>()? {
                    argv.push(arg.0);
                }
                match argv.first().is_none_or(|a| a.is_empty()) {
                    true => Err(de::Error::custom("the command is empty")),
                    false => Ok(CommandLine(argv)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

// ---- parsing and validation ----

/// Reads and validates an experiment file.
pub fn load(path: &Path) -> Result<Experiment, SpecError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        file: file.clone(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(&text, &file)
}

/// Parses and validates an experiment; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Experiment, SpecError> {
    let mut path = String::new();
    let raw: RawExperiment = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| {
        let location = e.location().unwrap_or(Location::UNKNOWN);
        SpecError {
            file: file.to_owned(),
            line: location.line(),
            column: location.column(),
            key: clean_path(&path),
            message: serde_saphyr::UserMessageFormatter
                .format_message(&e)
                .into_owned(),
        }
    })?;
    Validator { file }.experiment(raw)
}

/// `perturbations[0].value.errno` -> `perturbations[0].errno` (`value` is `Spanned`'s field).
fn clean_path(path: &str) -> String {
    let cleaned: Vec<&str> = path
        .split('.')
        .filter(|part| *part != "value" && *part != "?")
        .collect();
    match cleaned.join(".").as_str() {
        "" | "." => String::new(),
        joined => joined.to_owned(),
    }
}

struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn error(
        &self,
        at: &Location,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> SpecError {
        SpecError {
            file: self.file.to_owned(),
            line: at.line(),
            column: at.column(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn experiment(&self, raw: RawExperiment) -> Result<Experiment, SpecError> {
        let targets = self.targets(&raw.target)?;
        let phases = self.phases(raw.phases.as_ref(), Phases::default(), "phases")?;
        let steady = self.steady(&raw.steady_state)?;
        let abort = match &raw.abort {
            None => Abort {
                conditions: Vec::new(),
                stop_experiment: true,
            },
            Some(abort) => Abort {
                conditions: abort
                    .conditions
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        self.condition(c, &format!("abort.conditions[{i}]"), &steady.probes)
                    })
                    .collect::<Result<_, _>>()?,
                stop_experiment: abort.stop_experiment.unwrap_or(true),
            },
        };
        if raw.perturbations.value.is_empty() {
            return Err(self.error(
                &raw.perturbations.referenced,
                "perturbations",
                "no perturbation: give at least one rule",
            ));
        }
        let perturbations = raw
            .perturbations
            .value
            .iter()
            .enumerate()
            .map(|(i, p)| self.perturbation(p, &format!("perturbations[{i}]"), phases))
            .collect::<Result<_, _>>()?;
        Ok(Experiment {
            name: raw.name.unwrap_or_else(|| {
                Path::new(self.file)
                    .file_stem()
                    .map_or("experiment".into(), |s| s.to_string_lossy().into_owned())
            }),
            file: self.file.to_owned(),
            targets,
            load: raw.load.map(|load| Load {
                argv: load.command.value.0,
                warmup: load.warmup.map_or(Duration::ZERO, |d| d.0),
            }),
            phases,
            steady,
            abort,
            perturbations,
            stall_after: raw.stall_after.map_or(Duration::from_secs(3), |d| d.0),
        })
    }

    fn targets(&self, raw: &Spanned<RawTarget>) -> Result<Vec<TargetSpec>, SpecError> {
        let target = &raw.value;
        let mut specs: Vec<TargetSpec> = target
            .container
            .iter()
            .chain(&target.containers)
            .cloned()
            .map(TargetSpec::Container)
            .collect();
        specs.extend(target.cgroup.iter().map(|c| TargetSpec::Cgroup(c.into())));
        specs.extend(target.pid.map(TargetSpec::Pid));
        if specs.is_empty() {
            return Err(self.error(
                &raw.referenced,
                "target",
                "no target: give container: NAME, containers: [..], cgroup: PATH or pid: PID",
            ));
        }
        Ok(specs)
    }

    fn phases(
        &self,
        raw: Option<&RawPhases>,
        defaults: Phases,
        key: &str,
    ) -> Result<Phases, SpecError> {
        let Some(raw) = raw else {
            return Ok(defaults);
        };
        let pick = |value: &Option<Spanned<Dur>>, default: Duration, name: &str| {
            let Some(value) = value else {
                return Ok(default);
            };
            if value.value.0 < Duration::from_secs(1) {
                return Err(self.error(
                    &value.referenced,
                    format!("{key}.{name}"),
                    "a phase lasts at least 1s (one sample per second)",
                ));
            }
            Ok(value.value.0)
        };
        Ok(Phases {
            baseline: pick(&raw.baseline, defaults.baseline, "baseline")?,
            perturbation: pick(&raw.perturbation, defaults.perturbation, "perturbation")?,
            recovery: pick(&raw.recovery, defaults.recovery, "recovery")?,
        })
    }

    fn steady(&self, raw: &Spanned<RawSteady>) -> Result<SteadyState, SpecError> {
        let steady = &raw.value;
        let window = match &steady.window {
            Some(w) if w.value.0 < Duration::from_secs(1) => {
                return Err(self.error(
                    &w.referenced,
                    "steady_state.window",
                    "the window is at least 1s",
                ));
            }
            Some(w) => w.value.0,
            None => Duration::from_secs(5),
        };
        let significance = match &steady.significance {
            Some(s) if !(s.value.0 > 0.0 && s.value.0 < 1.0) => {
                return Err(self.error(
                    &s.referenced,
                    "steady_state.significance",
                    format!("significance {} is outside (0, 1) (e.g. 0.05)", s.value.0),
                ));
            }
            Some(s) => s.value.0,
            None => 0.05,
        };
        let mut probes: Vec<ProbeSpec> = Vec::new();
        for (i, raw_probe) in steady.probes.iter().enumerate() {
            let probe = self.probe(raw_probe, &format!("steady_state.probes[{i}]"))?;
            if probes.iter().any(|p| p.name == probe.name) {
                return Err(self.error(
                    &raw_probe.value.name.referenced,
                    format!("steady_state.probes[{i}].name"),
                    format!("two probes named `{}`", probe.name),
                ));
            }
            probes.push(probe);
        }
        let mut conditions = steady
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| self.condition(c, &format!("steady_state.conditions[{i}]"), &probes))
            .collect::<Result<Vec<_>, _>>()?;
        for probe in &probes {
            conditions.push(Condition {
                name: format!(
                    "probe {} succeeds ≥ {}",
                    probe.name, probe.min_success_ratio
                ),
                metric: MetricRef::all(Metric::Probe {
                    name: probe.name.clone(),
                    what: ProbeWhat::SuccessRatio,
                }),
                min: Some(probe.min_success_ratio),
                max: None,
                max_increase: None,
                max_decrease: None,
                aggregate: Aggregate::Mean,
                window: None,
            });
        }
        if conditions.is_empty() {
            return Err(self.error(
                &raw.referenced,
                "steady_state",
                "the steady state needs at least one condition or probe",
            ));
        }
        Ok(SteadyState {
            window,
            significance,
            conditions,
            probes,
        })
    }

    fn condition(
        &self,
        raw: &Spanned<RawCondition>,
        key: &str,
        probes: &[ProbeSpec],
    ) -> Result<Condition, SpecError> {
        let c = &raw.value;
        let at = &raw.referenced;
        let metric: Metric =
            c.metric.value.parse().map_err(|e: String| {
                self.error(&c.metric.referenced, format!("{key}.metric"), e)
            })?;
        if let Metric::Probe { name, .. } = &metric
            && !probes.iter().any(|p| &p.name == name)
        {
            return Err(self.error(
                &c.metric.referenced,
                format!("{key}.metric"),
                format!("no probe named `{name}` in steady_state.probes"),
            ));
        }
        if c.within.is_some() && (c.max_increase.is_some() || c.max_decrease.is_some()) {
            return Err(self.error(
                at,
                key,
                "`within` sets both max_increase and max_decrease: give either",
            ));
        }
        let relative = |value: Option<Num>, name: &str| match value {
            Some(Num(v)) if v < 0.0 => Err(self.error(
                at,
                format!("{key}.{name}"),
                format!("{name} is a share of the baseline (e.g. 20%), not negative"),
            )),
            other => Ok(other.map(|n| n.0)),
        };
        let within = relative(c.within, "within")?;
        let max_increase = relative(c.max_increase, "max_increase")?.or(within);
        let max_decrease = relative(c.max_decrease, "max_decrease")?.or(within);
        let (min, max) = (c.min.map(|n| n.0), c.max.map(|n| n.0));
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            return Err(self.error(at, key, format!("min {min} is above max {max}")));
        }
        if [min, max, max_increase, max_decrease]
            .iter()
            .all(Option::is_none)
        {
            return Err(self.error(
                at,
                key,
                "a condition needs a bound: min, max (absolute), within, max_increase or max_decrease (relative to the baseline)",
            ));
        }
        let metric = MetricRef {
            metric,
            target: c.target.clone(),
        };
        let mut bounds = Vec::new();
        if let Some(min) = min {
            bounds.push(format!("≥ {min}"));
        }
        if let Some(max) = max {
            bounds.push(format!("≤ {max}"));
        }
        match (within, max_increase, max_decrease) {
            (Some(w), _, _) => bounds.push(format!("within {}% of baseline", w * 100.0)),
            (None, inc, dec) => {
                if let Some(inc) = inc {
                    bounds.push(format!("at most +{}% over baseline", inc * 100.0));
                }
                if let Some(dec) = dec {
                    bounds.push(format!("at most -{}% under baseline", dec * 100.0));
                }
            }
        }
        Ok(Condition {
            name: c
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {}", metric.key(), bounds.join(", "))),
            metric,
            min,
            max,
            max_increase,
            max_decrease,
            aggregate: c.aggregate.unwrap_or(Aggregate::Mean),
            window: c.window.map(|w| w.0.max(Duration::from_secs(1))),
        })
    }

    fn probe(&self, raw: &Spanned<RawProbe>, key: &str) -> Result<ProbeSpec, SpecError> {
        let p = &raw.value;
        let name = &p.name.value;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(self.error(
                &p.name.referenced,
                format!("{key}.name"),
                format!("probe name `{name}`: letters, digits, _ and - only"),
            ));
        }
        let kind = match (&p.http, &p.command) {
            (Some(http), None) => {
                if p.exit_code.is_some() {
                    return Err(self.error(
                        &raw.referenced,
                        format!("{key}.exit_code"),
                        "exit_code is for command probes",
                    ));
                }
                ProbeKind::Http {
                    url: http.url.value.parse::<HttpUrl>().map_err(|e| {
                        self.error(&http.url.referenced, format!("{key}.http.url"), e)
                    })?,
                    status: http.status.unwrap_or(200),
                }
            }
            (None, Some(command)) => ProbeKind::Command {
                argv: command.0.clone(),
                exit_code: p.exit_code.unwrap_or(0),
            },
            _ => {
                return Err(self.error(
                    &raw.referenced,
                    key,
                    "a probe has either http: {url, status} or command: [...]",
                ));
            }
        };
        let duration =
            |value: &Option<Spanned<Dur>>, name: &str, default: u64, floor_ms: u64| match value {
                Some(v) if v.value.0 < Duration::from_millis(floor_ms) => Err(self.error(
                    &v.referenced,
                    format!("{key}.{name}"),
                    format!("{name} is at least {floor_ms}ms"),
                )),
                Some(v) => Ok(v.value.0),
                None => Ok(Duration::from_secs(default)),
            };
        let min_success_ratio = match &p.min_success_ratio {
            Some(r) if !(0.0..=1.0).contains(&r.value.0) => {
                return Err(self.error(
                    &r.referenced,
                    format!("{key}.min_success_ratio"),
                    "min_success_ratio is in [0, 1] (e.g. 0.95 or 95%)",
                ));
            }
            Some(r) => r.value.0,
            None => 0.95,
        };
        Ok(ProbeSpec {
            name: name.clone(),
            kind,
            interval: duration(&p.interval, "interval", 1, 100)?,
            timeout: duration(&p.timeout, "timeout", 1, 1)?,
            min_success_ratio,
        })
    }

    fn perturbation(
        &self,
        raw: &Spanned<RawPerturbation>,
        key: &str,
        defaults: Phases,
    ) -> Result<PerturbationSpec, SpecError> {
        let p = &raw.value;
        let at = &raw.referenced;
        let phases = self.phases(p.phases.as_ref(), defaults, &format!("{key}.phases"))?;
        let options = self.rule_options(p, key)?;
        let forms = [p.rule.is_some(), p.syscall.is_some(), p.matrix.is_some()];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(self.error(
                at,
                key,
                "a perturbation is one of: rule: 'SYSCALL=ERRNO,...', syscall: NAME (with errno, signal and/or delay), or matrix: {syscalls, errnos, delays}",
            ));
        }
        let kind = if let Some(text) = &p.rule {
            let fields = [
                p.errno.is_some(),
                p.signal.is_some(),
                p.delay.is_some(),
                p.probability.is_some(),
                p.nth.is_some(),
                p.count.is_some(),
                p.path_prefix.is_some(),
                p.engine.is_some(),
                p.duration.is_some(),
            ];
            if fields.iter().any(|f| *f) {
                return Err(self.error(
                    at,
                    key,
                    "`rule` holds the whole rule: put probability, count... inside it, or use syscall: with separate keys",
                ));
            }
            let rule = RuleSpec::parse(&text.value)
                .map_err(|e| self.error(&text.referenced, format!("{key}.rule"), e.to_string()))?;
            PerturbationKind::Rule(rule)
        } else if let Some(syscall) = &p.syscall {
            let fault = self.fault(p, key)?;
            let mut rule = RuleSpec::new(&syscall.value, fault).map_err(|e| {
                self.error(&syscall.referenced, format!("{key}.syscall"), e.to_string())
            })?;
            apply_options(&mut rule, &options, p.delay.map(|d| d.0));
            PerturbationKind::Rule(
                rule.validate()
                    .map_err(|e| self.error(at, key, e.to_string()))?,
            )
        } else {
            let matrix = p.matrix.as_ref().expect("one form is given");
            if p.errno.is_some() || p.signal.is_some() || p.delay.is_some() {
                return Err(self.error(
                    at,
                    key,
                    "a matrix takes its errnos and delays inside matrix: {errnos: [...], delays: [...]}",
                ));
            }
            self.matrix(matrix, &format!("{key}.matrix"), options)?
        };
        Ok(PerturbationSpec {
            name: p.name.clone(),
            kind,
            phases,
            at: (at.line(), at.column()),
            key: key.to_owned(),
        })
    }

    fn rule_options(&self, p: &RawPerturbation, key: &str) -> Result<RuleOptions, SpecError> {
        let engine = match &p.engine {
            Some(engine) => engine.value.parse::<EngineChoice>().map_err(|e| {
                self.error(&engine.referenced, format!("{key}.engine"), e.to_string())
            })?,
            None => EngineChoice::Auto,
        };
        let probability = match &p.probability {
            Some(prob) if !(prob.value.0 > 0.0 && prob.value.0 <= 1.0) => {
                return Err(self.error(
                    &prob.referenced,
                    format!("{key}.probability"),
                    format!("probability {} is outside (0, 1]", prob.value.0),
                ));
            }
            Some(prob) => prob.value.0,
            None => 1.0,
        };
        Ok(RuleOptions {
            probability,
            nth: p.nth,
            count: p.count,
            path_prefix: p.path_prefix.clone(),
            engine,
            duration: p.duration.map(|d| d.0),
        })
    }

    fn fault(&self, p: &RawPerturbation, key: &str) -> Result<Fault, SpecError> {
        match (&p.errno, &p.signal) {
            (Some(_), Some(signal)) => Err(self.error(
                &signal.referenced,
                format!("{key}.signal"),
                "give errno or signal, not both",
            )),
            (Some(errno), None) => rule::parse_errno(&errno.value.0)
                .map(Fault::Errno)
                .map_err(|e| self.error(&errno.referenced, format!("{key}.errno"), e.to_string())),
            (None, Some(signal)) => rule::parse_signal(&signal.value)
                .map(Fault::Signal)
                .map_err(|e| {
                    self.error(&signal.referenced, format!("{key}.signal"), e.to_string())
                }),
            (None, None) if p.delay.is_some() => Ok(Fault::Delay),
            (None, None) => Err(self.error(
                &p.syscall
                    .as_ref()
                    .map_or(Location::UNKNOWN, |s| s.referenced),
                key,
                "give errno: ERRNO, signal: SIGNAL or delay: DURATION with the syscall",
            )),
        }
    }

    fn matrix(
        &self,
        raw: &Spanned<RawMatrix>,
        key: &str,
        options: RuleOptions,
    ) -> Result<PerturbationKind, SpecError> {
        let m = &raw.value;
        if m.syscalls.value.is_empty() {
            return Err(self.error(
                &m.syscalls.referenced,
                format!("{key}.syscalls"),
                "no syscall",
            ));
        }
        let mut syscalls = Vec::new();
        for (i, syscall) in m.syscalls.value.iter().enumerate() {
            RuleSpec::new(&syscall.value, Fault::Delay).map_err(|e| {
                self.error(
                    &syscall.referenced,
                    format!("{key}.syscalls[{i}]"),
                    e.to_string(),
                )
            })?;
            syscalls.push(syscall.value.clone());
        }
        let mut faults = Vec::new();
        for (i, errno) in m.errnos.iter().enumerate() {
            let text = errno.value.0.trim();
            faults.push(match text.eq_ignore_ascii_case("none") {
                true => None,
                false => Some(rule::parse_fault(text).map_err(|e| {
                    self.error(
                        &errno.referenced,
                        format!("{key}.errnos[{i}]"),
                        e.to_string(),
                    )
                })?),
            });
        }
        if faults.is_empty() {
            faults.push(None);
        }
        let mut delays: Vec<Option<Duration>> = m
            .delays
            .iter()
            .map(|d| (!d.0.is_zero()).then_some(d.0))
            .collect();
        if delays.is_empty() {
            delays.push(None);
        }
        if faults.iter().all(Option::is_none) && delays.iter().all(Option::is_none) {
            return Err(self.error(
                &raw.referenced,
                key,
                "the matrix has neither an errno nor a delay: give errnos: [...] and/or delays: [...]",
            ));
        }
        Ok(PerturbationKind::Matrix {
            syscalls,
            faults,
            delays,
            options,
        })
    }
}

/// Copies the shared settings onto a rule.
pub fn apply_options(rule: &mut RuleSpec, options: &RuleOptions, delay: Option<Duration>) {
    rule.probability = options.probability;
    rule.nth = options.nth;
    rule.count = options.count;
    rule.path_prefix = options.path_prefix.clone();
    rule.engine = options.engine;
    rule.duration = options.duration;
    rule.delay = delay;
}
