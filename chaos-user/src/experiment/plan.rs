//! The expanded plan: one rule and three phases per perturbation, matrices unrolled
//! (syscalls x errnos x delays, leaving out the combination with neither errno nor delay).
use std::time::Duration;

use super::spec::{Experiment, PerturbationKind, Phases, SpecError, apply_options};
use crate::inject::rule::{Fault, RuleSpec};

#[derive(Debug, Clone)]
pub struct Planned {
    /// 1-based.
    pub index: usize,
    pub name: String,
    pub rule: RuleSpec,
    /// The rule in `chaos-user inject --rule` form.
    pub text: String,
    pub phases: Phases,
}

impl Planned {
    pub fn duration(&self) -> Duration {
        self.phases.baseline + self.phases.perturbation + self.phases.recovery
    }
}

pub fn expand(experiment: &Experiment) -> Result<Vec<Planned>, SpecError> {
    let mut plan = Vec::new();
    for spec in &experiment.perturbations {
        let error = |message: String| SpecError {
            file: experiment.file.clone(),
            line: spec.at.0,
            column: spec.at.1,
            key: spec.key.clone(),
            message,
        };
        let rules = match &spec.kind {
            PerturbationKind::Rule(rule) => vec![rule.clone()],
            PerturbationKind::Matrix {
                syscalls,
                faults,
                delays,
                options,
            } => {
                let mut rules = Vec::new();
                for syscall in syscalls {
                    for fault in faults {
                        for delay in delays {
                            if fault.is_none() && delay.is_none() {
                                continue;
                            }
                            let mut rule = RuleSpec::new(syscall, fault.unwrap_or(Fault::Delay))
                                .map_err(|e| error(e.to_string()))?;
                            apply_options(&mut rule, options, *delay);
                            let combination = format!(
                                "{syscall} x {} x {}",
                                fault.map_or("no errno".into(), |f| f.name()),
                                delay.map_or("no delay".into(), |d| {
                                    humantime::format_duration(d).to_string()
                                })
                            );
                            rules.push(
                                rule.validate()
                                    .map_err(|e| error(format!("matrix {combination}: {e}")))?,
                            );
                        }
                    }
                }
                rules
            }
        };
        let matrix = rules.len() > 1;
        for rule in rules {
            let text = rule_text(&rule);
            let name = match (&spec.name, matrix) {
                (Some(name), false) => name.clone(),
                (Some(name), true) => format!("{name}: {text}"),
                (None, _) => text.clone(),
            };
            plan.push(Planned {
                index: plan.len() + 1,
                name,
                rule,
                text,
                phases: spec.phases,
            });
        }
    }
    Ok(plan)
}

/// `connect=ECONNREFUSED,probability=0.2`, `read,delay=10ms`: the form `RuleSpec::parse` reads.
pub fn rule_text(rule: &RuleSpec) -> String {
    let mut text = match rule.fault {
        Fault::Delay => rule.syscall.clone(),
        fault => format!("{}={}", rule.syscall, fault.name()),
    };
    if rule.probability < 1.0 {
        text.push_str(&format!(",probability={}", rule.probability));
    }
    if let Some(nth) = rule.nth {
        text.push_str(&format!(",nth={nth}"));
    }
    if let Some(count) = rule.count {
        text.push_str(&format!(",count={count}"));
    }
    if let Some(prefix) = &rule.path_prefix {
        text.push_str(&format!(",path-prefix={prefix}"));
    }
    if let Some(delay) = rule.delay {
        text.push_str(&format!(",delay={}", humantime::format_duration(delay)));
    }
    if let Some(duration) = rule.duration {
        text.push_str(&format!(
            ",duration={}",
            humantime::format_duration(duration)
        ));
    }
    if let crate::inject::engine::EngineChoice::Forced(engine) = rule.engine {
        text.push_str(&format!(",engine={engine}"));
    }
    text
}

/// The plan as `--dry-run` prints it: one line per perturbation with its engine (or why none).
pub fn describe(plan: &[Planned], engines: &[Result<String, String>]) -> String {
    let total: Duration = plan.iter().map(Planned::duration).sum();
    let mut out = format!(
        "{} perturbation(s), {} in all:\n",
        plan.len(),
        humantime::format_duration(total)
    );
    let width = plan.iter().map(|p| p.text.len()).max().unwrap_or(0).min(60);
    for (planned, engine) in plan.iter().zip(engines) {
        let p = planned.phases;
        out.push_str(&format!(
            "  {:>3}. {:<width$}  engine {:<12} phases {}s / {}s / {}s",
            planned.index,
            planned.text,
            match engine {
                Ok(engine) => engine.as_str(),
                Err(_) => "NONE",
            },
            p.baseline.as_secs(),
            p.perturbation.as_secs(),
            p.recovery.as_secs()
        ));
        if planned.name != planned.text {
            out.push_str(&format!("  ({})", planned.name));
        }
        if let Err(why) = engine {
            out.push_str(&format!("\n       cannot run: {why}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::spec::parse;

    #[test]
    fn expands_matrices_without_the_empty_combination() {
        let yaml = "target: {container: web}
steady_state: {conditions: [{metric: http.5xx_ratio, max: 0.01}]}
phases: {baseline: 2s, perturbation: 3s, recovery: 4s}
perturbations:
  - rule: connect=ECONNREFUSED,probability=0.2
    name: refused
  - matrix:
      syscalls: [read, write, openat]
      errnos: [none, EIO, EACCES]
      delays: [0s, 10ms]
    probability: 0.5
    phases: {perturbation: 5s}
";
        let experiment = parse(yaml, "x.yaml").unwrap();
        let plan = expand(&experiment).unwrap();
        // 1 + 3 x 3 x 2 - 3 (none x 0s for each syscall)
        assert_eq!(plan.len(), 1 + 3 * 3 * 2 - 3);
        assert_eq!(plan[0].name, "refused");
        assert_eq!(plan[0].text, "connect=ECONNREFUSED,probability=0.2");
        assert_eq!(plan[0].phases.perturbation, Duration::from_secs(3));
        assert_eq!(plan[1].text, "read,probability=0.5,delay=10ms");
        assert_eq!(plan[2].text, "read=EIO,probability=0.5");
        assert_eq!(plan[3].text, "read=EIO,probability=0.5,delay=10ms");
        assert_eq!(plan[1].phases.perturbation, Duration::from_secs(5));
        assert_eq!(plan[1].phases.baseline, Duration::from_secs(2));
        assert_eq!(plan.last().unwrap().index, plan.len());
        for planned in &plan {
            assert_eq!(RuleSpec::parse(&planned.text).unwrap(), planned.rule);
        }
        let dry = describe(&plan, &vec![Ok("ptrace".to_owned()); plan.len()]);
        assert!(dry.starts_with("16 perturbation(s)"), "{dry}");
    }

    #[test]
    fn bad_combinations_point_at_the_perturbation() {
        let yaml = "target: {container: web}
steady_state: {conditions: [{metric: http.5xx_ratio, max: 0.01}]}
perturbations:
  - matrix: {syscalls: [getppid], errnos: [EPERM]}
    path_prefix: /data
";
        let experiment = parse(yaml, "x.yaml").unwrap();
        let error = expand(&experiment).unwrap_err();
        assert_eq!((error.line, error.key.as_str()), (4, "perturbations[0]"));
        assert!(error.message.contains("getppid takes no path"), "{error}");
    }
}
