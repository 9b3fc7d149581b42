//! Perturbations from the failures an application already meets (Phoebe, Zhang et al. 2021):
//! per (syscall, errno), the failure rate (failures / calls of that syscall) in each observation
//! window; then the injection probability: the largest window rate below 5%: 5%; the largest
//! over the smallest above 10 (bursty): the largest; otherwise 1.2 x the largest, at most 1.
//! `plan` writes them as an experiment file, the observed rates as comments.
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

/// Failures of one (syscall, errno) seen while observing.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub syscall: String,
    pub errno: String,
    /// Calls of the syscall and failures with this errno, over the whole observation.
    pub calls: u64,
    pub failures: u64,
    /// Failure rate in each window where the syscall was called.
    pub window_rates: Vec<f64>,
}

impl Observed {
    pub fn min_rate(&self) -> f64 {
        self.window_rates
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }

    pub fn max_rate(&self) -> f64 {
        self.window_rates.iter().copied().fold(0.0, f64::max)
    }

    pub fn mean_rate(&self) -> f64 {
        match self.calls {
            0 => 0.0,
            calls => self.failures as f64 / calls as f64,
        }
    }
}

/// The injection probability for failures observed between `min` and `max` per window, and
/// which rule gave it.
pub fn injection_rate(min: f64, max: f64) -> (f64, &'static str) {
    if max < 0.05 {
        (0.05, "observed below 5%: inject at 5%")
    } else if min <= 0.0 || max / min > 10.0 {
        (max, "max/min rate above 10: inject at the max")
    } else {
        ((1.2 * max).min(1.0), "1.2 x the max rate, capped at 1")
    }
}

/// Calls and failures per observation window.
#[derive(Debug, Default)]
pub struct Observation {
    /// syscall -> its calls in each window where it ran
    windows: BTreeMap<String, Vec<u64>>,
    /// (syscall, errno) -> (window position in `windows[syscall]`, failures in it)
    failures: BTreeMap<(String, String), Vec<(usize, u64)>>,
}

impl Observation {
    /// One window's counts: for each syscall, its calls and its failures by errno.
    pub fn add_window(&mut self, syscalls: &BTreeMap<String, (u64, BTreeMap<String, u64>)>) {
        for (syscall, (calls, errnos)) in syscalls {
            if *calls == 0 {
                continue;
            }
            let windows = self.windows.entry(syscall.clone()).or_default();
            let position = windows.len();
            windows.push(*calls);
            for (errno, failures) in errnos.iter().filter(|(_, n)| **n > 0) {
                self.failures
                    .entry((syscall.clone(), errno.clone()))
                    .or_default()
                    .push((position, *failures));
            }
        }
    }

    /// Every (syscall, errno) that failed, with its rate in every window where the syscall
    /// ran (0 where it ran without that failure).
    pub fn observed(&self) -> Vec<Observed> {
        self.failures
            .iter()
            .map(|((syscall, errno), failed)| {
                let windows = &self.windows[syscall];
                let window_rates = windows
                    .iter()
                    .enumerate()
                    .map(|(i, calls)| {
                        let failures = failed.iter().find(|(p, _)| *p == i).map_or(0, |f| f.1);
                        failures as f64 / *calls as f64
                    })
                    .collect();
                Observed {
                    syscall: syscall.clone(),
                    errno: errno.clone(),
                    calls: windows.iter().sum(),
                    failures: failed.iter().map(|f| f.1).sum(),
                    window_rates,
                }
            })
            .collect()
    }
}

/// Errnos user space never sees (kernel-internal restart codes) cannot be injected.
pub fn injectable_errno(errno: &str) -> bool {
    !errno.starts_with("ERESTART") && errno != "EIOCBQUEUED" && errno.starts_with('E')
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn probability(p: f64) -> String {
    let text = format!("{:.4}", p);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// What `plan` writes: a complete experiment file.
pub struct PlanFile<'a> {
    pub name: &'a str,
    /// `container: web`, `containers: [a, b]`, `cgroup: /x` or `pid: 42` lines (YAML).
    pub target_yaml: &'a str,
    pub targets: &'a str,
    pub observed_for: Duration,
    pub window: Duration,
    /// The target answered HTTP while observed: HTTP conditions, else a syscall rate one.
    pub serves_http: bool,
    pub observed: &'a [Observed],
}

pub fn render(plan: &PlanFile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Planned by `chaos-user plan` from {} of observing {} (failure rates per {} window).",
        humantime::format_duration(plan.observed_for),
        plan.targets,
        humantime::format_duration(plan.window)
    );
    out.push_str(
        "# Each perturbation amplifies an error the target already meets (Phoebe's rules): largest\n\
         # observed rate below 5%: inject at 5%; largest/smallest above 10: inject at the largest;\n\
         # otherwise 1.2 x the largest, capped at 1. Check it with `chaos-user run FILE --dry-run`.\n",
    );
    let _ = writeln!(out, "name: {}", plan.name);
    let _ = writeln!(out, "target:\n  {}", plan.target_yaml);
    out.push_str("phases:\n  baseline: 10s\n  perturbation: 20s\n  recovery: 10s\n");
    out.push_str("steady_state:\n  conditions:\n");
    if plan.serves_http {
        out.push_str(
            "    - metric: http.5xx_ratio\n      max: 0.01\n    - metric: http.requests_per_sec\n      within: 20%\n",
        );
    } else {
        out.push_str("    - metric: syscalls.calls_per_sec\n      max_decrease: 50%\n");
    }
    let (injectable, skipped): (Vec<&Observed>, Vec<&Observed>) = plan
        .observed
        .iter()
        .partition(|o| injectable_errno(&o.errno));
    for o in &skipped {
        let _ = writeln!(
            out,
            "# not injectable (kernel-internal code): {} {} in {} of {} calls",
            o.syscall, o.errno, o.failures, o.calls
        );
    }
    if injectable.is_empty() {
        out.push_str(
            "# No natural failure was observed: add perturbations by hand, e.g.\n\
             # - syscall: openat\n#   errno: EACCES\n#   probability: 0.05\nperturbations: []\n",
        );
        return out;
    }
    out.push_str("perturbations:\n");
    for o in injectable {
        let (min, max) = (o.min_rate(), o.max_rate());
        let (rate, rule) = injection_rate(min, max);
        let _ = writeln!(
            out,
            "  # {} {}: observed {} of {} calls ({} failures); per window min {}, max {}; {}",
            o.syscall,
            o.errno,
            percent(o.mean_rate()),
            o.calls,
            o.failures,
            percent(min),
            percent(max),
            rule
        );
        let _ = writeln!(
            out,
            "  - syscall: {}\n    errno: {}\n    probability: {}",
            o.syscall,
            o.errno,
            probability(rate)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{plan, spec};

    #[test]
    fn phoebe_rules() {
        assert_eq!(
            injection_rate(0.01, 0.02),
            (0.05, "observed below 5%: inject at 5%")
        );
        assert_eq!(injection_rate(0.01, 0.5).0, 0.5);
        assert_eq!(injection_rate(0.0, 0.2).0, 0.2);
        let (rate, _) = injection_rate(0.2, 0.25);
        assert!((rate - 0.3).abs() < 1e-12);
        assert_eq!(injection_rate(0.9, 0.95).0, 1.0);
    }

    #[test]
    fn windows_without_an_errno_count_as_zero() {
        let mut observation = Observation::default();
        let window = |calls: u64, failures: u64| {
            let errnos = match failures {
                0 => BTreeMap::new(),
                n => BTreeMap::from([("ENOENT".to_owned(), n)]),
            };
            BTreeMap::from([("openat".to_owned(), (calls, errnos))])
        };
        observation.add_window(&window(4, 1));
        observation.add_window(&window(8, 2));
        observation.add_window(&window(10, 0));
        let observed = observation.observed();
        assert_eq!(observed.len(), 1);
        let o = &observed[0];
        assert_eq!((o.calls, o.failures), (22, 3));
        assert_eq!(o.window_rates, vec![0.25, 0.25, 0.0]);
        assert_eq!(o.max_rate(), 0.25);
    }

    #[test]
    fn the_written_plan_is_a_valid_experiment() {
        let observed = vec![
            Observed {
                syscall: "openat".into(),
                errno: "ENOENT".into(),
                calls: 400,
                failures: 100,
                window_rates: vec![0.25; 10],
            },
            Observed {
                syscall: "connect".into(),
                errno: "ECONNREFUSED".into(),
                calls: 1000,
                failures: 10,
                window_rates: vec![0.0, 0.02, 0.01],
            },
            Observed {
                syscall: "read".into(),
                errno: "ERESTARTSYS".into(),
                calls: 10,
                failures: 1,
                window_rates: vec![0.1],
            },
        ];
        let text = render(&PlanFile {
            name: "web-planned",
            target_yaml: "container: web",
            targets: "web",
            observed_for: Duration::from_secs(60),
            window: Duration::from_secs(1),
            serves_http: true,
            observed: &observed,
        });
        assert!(
            text.contains("# openat ENOENT: observed 25.00% of 400 calls"),
            "{text}"
        );
        assert!(text.contains("probability: 0.3\n"), "{text}");
        assert!(text.contains("probability: 0.05\n"), "{text}");
        assert!(
            text.contains("not injectable (kernel-internal code): read ERESTARTSYS"),
            "{text}"
        );
        let experiment = spec::parse(&text, "planned.yaml").unwrap();
        let planned = plan::expand(&experiment).unwrap();
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[0].text, "openat=ENOENT,probability=0.3");
    }
}
