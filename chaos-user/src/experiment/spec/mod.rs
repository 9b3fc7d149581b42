//! The experiment file: its YAML model (read with serde-saphyr, a maintained pure-Rust YAML
//! crate) and its validation. Every error names the file, the line and column, and the key path
//! (`perturbations[1].errno`): syntax and type errors through serde-saphyr's locations and
//! `serde_path_to_error`'s paths, semantic ones through `Spanned` values.
//!
//! `raw` and `values` are the file as written, `model` the experiment once validated; `targets`,
//! `conditions` and `perturbations` validate their parts of it.
mod conditions;
mod model;
mod perturbations;
mod raw;
mod targets;
#[cfg(test)]
mod tests;
mod values;

use std::{fmt, path::Path, time::Duration};

use serde_saphyr::{Location, MessageFormatter as _};

use self::raw::RawExperiment;
// The validated experiment's types keep their paths (`spec::Experiment`, ...).
pub use self::{model::*, perturbations::apply_options};

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
}
