//! The steady state: its conditions and probes.
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::{
    SpecError, Validator,
    model::{Aggregate, Condition, SteadyState},
    raw::{RawCondition, RawProbe, RawSteady},
    values::{Dur, Num},
};
use crate::experiment::{
    probe::{HttpUrl, ProbeKind, ProbeSpec},
    steady::{Metric, MetricRef, ProbeWhat},
};

/// Bounds relative to the baseline: (within, max_increase, max_decrease).
type RelativeBounds = (Option<f64>, Option<f64>, Option<f64>);

impl Validator<'_> {
    pub(super) fn steady(&self, raw: &Spanned<RawSteady>) -> Result<SteadyState, SpecError> {
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

    pub(super) fn condition(
        &self,
        raw: &Spanned<RawCondition>,
        key: &str,
        probes: &[ProbeSpec],
    ) -> Result<Condition, SpecError> {
        let c = &raw.value;
        let at = &raw.referenced;
        let metric = self.condition_metric(c, key, probes)?;
        let (within, max_increase, max_decrease) = self.relative_bounds(c, at, key)?;
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
        let bounds = bound_words(min, max, within, max_increase, max_decrease);
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

    /// The condition's metric; a probe's must be one of `probes`.
    fn condition_metric(
        &self,
        c: &RawCondition,
        key: &str,
        probes: &[ProbeSpec],
    ) -> Result<Metric, SpecError> {
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
        Ok(metric)
    }

    /// The bounds relative to the baseline, `within` standing for the two others when they are
    /// not given.
    fn relative_bounds(
        &self,
        c: &RawCondition,
        at: &Location,
        key: &str,
    ) -> Result<RelativeBounds, SpecError> {
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
        Ok((within, max_increase, max_decrease))
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
}

/// The bounds in words, for a condition's default name.
fn bound_words(
    min: Option<f64>,
    max: Option<f64>,
    within: Option<f64>,
    max_increase: Option<f64>,
    max_decrease: Option<f64>,
) -> Vec<String> {
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
    bounds
}
