//! The target and the phases' durations.
use std::time::Duration;

use serde_saphyr::Spanned;

use super::{
    SpecError, Validator,
    model::Phases,
    raw::{RawPhases, RawTarget},
    values::Dur,
};
use crate::target::TargetSpec;

impl Validator<'_> {
    pub(super) fn targets(&self, raw: &Spanned<RawTarget>) -> Result<Vec<TargetSpec>, SpecError> {
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

    pub(super) fn phases(
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
}
