//! Verdicts: the abort conditions during a perturbation, then each perturbation's result.
use super::{Runner, short};
use crate::{
    experiment::{
        plan::Planned,
        results::{
            ConditionInfo, ConditionResult, EventRecord, PerturbationResult, Phase, PhaseSpans,
            Span,
        },
        spec::Condition,
        steady::Metric,
        verdict::{self, Findings},
    },
    inject::engine::Engine,
};

impl Runner {
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
    pub(super) fn abort_check(&self, perturbation: usize) -> Option<String> {
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn judge(
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
        let recovery_ran = phases.recovery.is_some();
        let mut findings = Findings {
            aborted_by,
            ..Default::default()
        };
        let conditions = self.condition_results(index, recovery_ran, &mut findings);
        let after_phases = [Phase::Perturbation, Phase::Recovery];
        findings.crashed = events
            .iter()
            .any(|e| e.event == "died" && after_phases.contains(&e.phase));
        findings.restarted = events
            .iter()
            .any(|e| e.event == "started" && after_phases.contains(&e.phase));
        findings.down_at_end = recovery_ran && findings.crashed && self.down.values().any(|d| *d);
        self.stall_check(index, recovery_ran, &mut findings);
        let (verdict, reason) = verdict::judge(&findings);
        PerturbationResult {
            index,
            name: planned.name.clone(),
            rule: planned.text.clone(),
            engine: Some(engine.to_string()),
            when: engine.when(),
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

    /// Each steady-state condition checked in the perturbation phase and at the end of the
    /// recovery; the violated ones noted in `findings`.
    fn condition_results(
        &self,
        index: usize,
        recovery_ran: bool,
        findings: &mut Findings,
    ) -> Vec<ConditionResult> {
        let significance = self.experiment.steady.significance;
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
        conditions
    }

    /// Notes in `findings` whether the target stalled.
    fn stall_check(&self, index: usize, recovery_ran: bool, findings: &mut Findings) {
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
    }
}
