//! Perturbations: a rule, a syscall with its fault, or a matrix.
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::{
    SpecError, Validator,
    model::{PerturbationKind, PerturbationSpec, Phases, RuleOptions},
    raw::{RawMatrix, RawPerturbation},
};
use crate::inject::{
    engine::EngineChoice,
    rule::{self, Fault, RuleSpec, When},
};

const FORMS: &str = "a perturbation is one of: rule: 'SYSCALL=ERRNO,...', syscall: NAME (with errno, signal and/or delay), or matrix: {syscalls, errnos, delays}";

impl Validator<'_> {
    pub(super) fn perturbation(
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
            return Err(self.error(at, key, FORMS));
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
                p.when.is_some(),
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
        } else if let Some(matrix) = &p.matrix {
            if p.errno.is_some() || p.signal.is_some() || p.delay.is_some() {
                return Err(self.error(
                    at,
                    key,
                    "a matrix takes its errnos and delays inside matrix: {errnos: [...], delays: [...]}",
                ));
            }
            self.matrix(matrix, &format!("{key}.matrix"), options)?
        } else {
            return Err(self.error(at, key, FORMS));
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
        let when =
            match &p.when {
                Some(when) => Some(when.value.parse::<When>().map_err(|e| {
                    self.error(&when.referenced, format!("{key}.when"), e.to_string())
                })?),
                None => None,
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
            when,
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
    rule.when = options.when;
    rule.duration = options.duration;
    rule.delay = delay;
}
