//! Judging a perturbation: each condition's threshold on a phase's samples, confirmed by a
//! Mann-Whitney U test of those samples against the baseline's (statrs, two-sided), so that noise
//! alone does not flip a verdict; then resilient / degraded / broken / aborted.
//!
//! Mann-Whitney U rather than Kolmogorov-Smirnov: it asks whether one phase's values tend to be
//! larger than the other's (a shift), which is what a degraded metric looks like, it copes with
//! the ties of counters and ratios (many identical samples), and it has no distribution
//! assumption. We ask statrs for the normal approximation with tie and continuity corrections
//! (scipy's `method="asymptotic"`) every time: statrs 0.19.1's exact method, which its
//! `Automatic` picks for small tie-free samples, answers p = 1 whenever the first sample is not
//! the larger one (e.g. two fully separated samples of 4), see the test below.
use serde::Serialize;
use statrs::stats_tests::{
    Alternative,
    mannwhitneyu::{MannWhitneyUMethod, mannwhitneyu},
};

use super::spec::{Aggregate, Condition};

/// Fewer samples than this on either side: the threshold alone decides.
pub const MIN_SAMPLES_FOR_TEST: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The steady state held during the perturbation and after it.
    Resilient,
    /// Violated during the perturbation, back within the recovery phase.
    Degraded,
    /// Not back at the end of the recovery phase.
    Broken,
    /// Injection ended early: an abort condition, or SIGINT/SIGTERM.
    Aborted,
    /// Not run: the experiment stopped before it.
    NotRun,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Resilient => "resilient",
            Verdict::Degraded => "degraded",
            Verdict::Broken => "broken",
            Verdict::Aborted => "aborted",
            Verdict::NotRun => "not-run",
        }
    }
}

pub fn aggregate(values: &[f64], how: Aggregate) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let quantile = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Some(match how {
        Aggregate::Mean => values.iter().sum::<f64>() / values.len() as f64,
        Aggregate::Median => quantile(0.5),
        Aggregate::P95 => quantile(0.95),
        Aggregate::Max => sorted[sorted.len() - 1],
        Aggregate::Min => sorted[0],
    })
}

/// Two-sided Mann-Whitney U p-value; None with too few samples to test.
pub fn mann_whitney_p(baseline: &[f64], phase: &[f64]) -> Option<f64> {
    if baseline.len() < MIN_SAMPLES_FOR_TEST || phase.len() < MIN_SAMPLES_FOR_TEST {
        return None;
    }
    let first = baseline[0];
    if baseline.iter().chain(phase).all(|v| *v == first) {
        // All equal: no difference at all (the statistic's variance is 0).
        return Some(1.0);
    }
    let (_, p) = mannwhitneyu(
        baseline,
        phase,
        MannWhitneyUMethod::AsymptoticInclContinuityCorrection,
        Alternative::TwoSided,
    )
    .ok()?;
    Some(if p.is_nan() { 1.0 } else { p })
}

/// Whether `value` is within the condition's bounds (relative ones against `baseline`).
pub fn threshold_holds(condition: &Condition, value: f64, baseline: Option<f64>) -> bool {
    let tolerance = 1e-9;
    if condition.max.is_some_and(|max| value > max + tolerance) {
        return false;
    }
    if condition.min.is_some_and(|min| value < min - tolerance) {
        return false;
    }
    if let Some(base) = baseline {
        let scale = base.abs();
        if condition
            .max_increase
            .is_some_and(|inc| value > base + inc * scale + tolerance)
        {
            return false;
        }
        if condition
            .max_decrease
            .is_some_and(|dec| value < base - dec * scale - tolerance)
        {
            return false;
        }
    }
    true
}

/// A condition judged on one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The phase's aggregate (None: no sample had a value).
    pub value: Option<f64>,
    pub threshold_ok: bool,
    /// Baseline vs this phase (None: too few samples).
    pub p_value: Option<f64>,
    /// Threshold broken and, where testable, significantly different from the baseline.
    pub violated: bool,
}

pub fn check(condition: &Condition, baseline: &[f64], phase: &[f64], significance: f64) -> Check {
    let value = aggregate(phase, condition.aggregate);
    let base = aggregate(baseline, condition.aggregate);
    let threshold_ok = value.is_none_or(|v| threshold_holds(condition, v, base));
    let p_value = mann_whitney_p(baseline, phase);
    Check {
        value,
        threshold_ok,
        p_value,
        violated: !threshold_ok && p_value.is_none_or(|p| p < significance),
    }
}

/// Runs of "no progress" in a series (None counts as no progress): (longest run, whether the
/// series ends in a run of at least `min_run`).
pub fn stall_runs(progress: &[Option<f64>], min_run: usize) -> (usize, bool) {
    let mut longest = 0;
    let mut current = 0;
    for value in progress {
        match value {
            Some(v) if *v > 0.0 => current = 0,
            _ => {
                current += 1;
                longest = longest.max(current);
            }
        }
    }
    (longest, min_run > 0 && current >= min_run)
}

/// What the perturbation's phases showed.
#[derive(Debug, Default)]
pub struct Findings {
    /// An abort condition or a signal ended the injection early (why).
    pub aborted_by: Option<String>,
    /// Conditions violated during the perturbation.
    pub violated: Vec<String>,
    /// Conditions still violated at the end of the recovery phase.
    pub not_recovered: Vec<String>,
    pub crashed: bool,
    pub restarted: bool,
    /// A target died and was not running at the end.
    pub down_at_end: bool,
    pub stalled: bool,
    pub stalled_at_end: bool,
}

pub fn judge(findings: &Findings) -> (Verdict, String) {
    if let Some(why) = &findings.aborted_by {
        return (Verdict::Aborted, why.clone());
    }
    let mut broken = findings.not_recovered.clone();
    if findings.down_at_end {
        broken.push("a target crashed and was not running at the end".into());
    }
    if findings.stalled_at_end {
        broken.push("no progress at the end of the recovery phase".into());
    }
    if !broken.is_empty() {
        return (
            Verdict::Broken,
            format!("not recovered: {}", broken.join("; ")),
        );
    }
    let mut degraded = findings.violated.clone();
    if findings.crashed {
        degraded.push(if findings.restarted {
            "a target crashed (restarted)".to_owned()
        } else {
            "a target crashed".to_owned()
        });
    }
    if findings.stalled {
        degraded.push("a target stalled (no progress)".into());
    }
    if !degraded.is_empty() {
        return (
            Verdict::Degraded,
            format!("violated, then recovered: {}", degraded.join("; ")),
        );
    }
    (
        Verdict::Resilient,
        "the steady state held during the perturbation".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::steady::{Metric, MetricRef};

    fn condition(max: Option<f64>, within: Option<f64>) -> Condition {
        Condition {
            name: "c".into(),
            metric: MetricRef::all(Metric::HttpRequests),
            min: None,
            max,
            max_increase: within,
            max_decrease: within,
            aggregate: Aggregate::Mean,
            window: None,
        }
    }

    #[test]
    fn mann_whitney_matches_reference_values() {
        // scipy.stats.mannwhitneyu([19, 22, 16, 29, 24], [20, 11, 17, 12],
        // method="asymptotic") -> p = 0.1113, in either order.
        let (male, female) = ([19.0, 22.0, 16.0, 29.0, 24.0], [20.0, 11.0, 17.0, 12.0]);
        for p in [
            mann_whitney_p(&male, &female),
            mann_whitney_p(&female, &male),
        ] {
            assert!((p.unwrap() - 0.1113).abs() < 1e-3, "{p:?}");
        }
        // Two fully separated samples of 4 (statrs' exact method says p = 1 here).
        let p = mann_whitney_p(&[26.0, 31.0, 24.0, 35.0], &[37.8, 36.9, 43.9, 50.1]).unwrap();
        assert!((p - 0.0304).abs() < 1e-3, "{p}");
        // Fully separated with ties (asymptotic with tie correction): significant.
        let p = mann_whitney_p(&[0.0; 5], &[1.0; 5]).unwrap();
        assert!(p < 0.01, "{p}");
        assert_eq!(mann_whitney_p(&[0.0; 5], &[0.0; 5]), Some(1.0));
        assert_eq!(mann_whitney_p(&[0.0; 2], &[1.0; 5]), None);
    }

    #[test]
    fn noise_does_not_violate_but_a_shift_does() {
        let baseline = [50.0, 48.0, 52.0, 49.0, 51.0];
        let within = condition(None, Some(0.02));
        // Mean 47.6 breaks "within 2%", but the samples overlap the baseline's: not significant.
        let noisy = check(&within, &baseline, &[47.0, 51.0, 45.0, 50.0, 45.0], 0.05);
        assert!(!noisy.threshold_ok);
        assert!(noisy.p_value.unwrap() > 0.05);
        assert!(!noisy.violated);
        let shifted = check(&within, &baseline, &[20.0, 22.0, 19.0, 21.0, 20.0], 0.05);
        assert!(shifted.violated, "{shifted:?}");
        let absolute = check(&condition(Some(0.01), None), &[0.0; 5], &[0.5; 5], 0.05);
        assert!(absolute.violated);
        let fine = check(
            &condition(Some(0.01), None),
            &[0.0; 5],
            &[0.0, 0.0, 0.005, 0.0, 0.0],
            0.05,
        );
        assert!(fine.threshold_ok && !fine.violated);
        // Too few samples to test: the threshold decides.
        let short = check(&condition(Some(0.01), None), &[0.0], &[0.5], 0.05);
        assert!(short.violated && short.p_value.is_none());
    }

    #[test]
    fn aggregates() {
        let values = [1.0, 5.0, 2.0, 4.0, 3.0];
        assert_eq!(aggregate(&values, Aggregate::Mean), Some(3.0));
        assert_eq!(aggregate(&values, Aggregate::Median), Some(3.0));
        assert_eq!(aggregate(&values, Aggregate::Max), Some(5.0));
        assert_eq!(aggregate(&values, Aggregate::Min), Some(1.0));
        assert_eq!(aggregate(&values, Aggregate::P95), Some(5.0));
        assert_eq!(aggregate(&[], Aggregate::Mean), None);
    }

    #[test]
    fn verdicts() {
        let mut findings = Findings::default();
        assert_eq!(judge(&findings).0, Verdict::Resilient);
        findings.violated.push("5xx".into());
        assert_eq!(judge(&findings).0, Verdict::Degraded);
        findings.not_recovered.push("5xx".into());
        assert_eq!(judge(&findings).0, Verdict::Broken);
        findings.aborted_by = Some("abort condition".into());
        assert_eq!(judge(&findings).0, Verdict::Aborted);
        let crashed = Findings {
            crashed: true,
            restarted: true,
            ..Default::default()
        };
        assert_eq!(judge(&crashed).0, Verdict::Degraded);
        let down = Findings {
            crashed: true,
            down_at_end: true,
            ..Default::default()
        };
        assert_eq!(judge(&down).0, Verdict::Broken);
        assert_eq!(
            stall_runs(&[Some(1.0), Some(0.0), None, Some(0.0), Some(2.0)], 3),
            (3, false)
        );
        assert_eq!(
            stall_runs(&[Some(1.0), Some(0.0), Some(0.0), Some(0.0)], 3),
            (3, true)
        );
    }
}
