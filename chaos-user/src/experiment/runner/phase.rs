//! Phases: the rules installed and removed, one sample per second, the live progress bar,
//! the containers' events.
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::{Installed, PhaseEnd, Runner, load::wait_load, short};
use crate::{
    docker::ContainerEvent,
    ebpf::kernel_now_ns,
    experiment::{
        plan::Planned,
        probe::Probes,
        results::{EventRecord, PerturbationResult, Phase, PhaseSpans, Sample, Span},
        steady::Interval,
    },
    inject::{engine::Engine, injector::InstalledRule},
    session::open::{self, Followed},
    snapshot::Snapshot,
};

/// What the perturbation and recovery phases leave for the verdict.
#[derive(Default)]
struct Injected {
    installed: Vec<Installed>,
    /// When the rules were in place.
    window: Option<Span>,
    aborted_by: Option<String>,
    /// The experiment must stop (why).
    stop: Option<String>,
}

impl Runner {
    /// One perturbation's three phases and its verdict; the second value says the experiment
    /// must stop (why).
    pub(super) async fn perturbation(
        &mut self,
        planned: &Planned,
        engine: Engine,
        count: usize,
    ) -> anyhow::Result<(PerturbationResult, Option<String>)> {
        let mut spans = PhaseSpans::default();
        let events_before = self.results.events.len();

        eprintln!(
            "syschaos: [{}/{count}] {} via {engine}{}",
            planned.index,
            planned.text,
            match planned.name == planned.text {
                true => String::new(),
                false => format!(" ({})", planned.name),
            }
        );
        // A tracer slows every call of the target: under ptrace, the baseline and the recovery
        // run traced too, or the verdict would blame the fault for the tracer's cost.
        if engine == Engine::Ptrace {
            self.session.hold_ptrace()?;
        }
        let start = self.now_s();
        let end = self
            .phase(
                planned,
                count,
                Phase::Baseline,
                planned.phases.baseline,
                &[],
            )
            .await?;
        spans.baseline = Some(Span {
            start_s: start,
            end_s: self.now_s(),
        });
        let injected = if let PhaseEnd::Stop(why) = end {
            Injected {
                aborted_by: Some(why.clone()),
                stop: Some(why),
                ..Default::default()
            }
        } else {
            self.inject_and_recover(planned, engine, count, &mut spans)
                .await?
        };
        if engine == Engine::Ptrace {
            self.session.stop_ptrace();
        }
        // Read now, not from the last 1 s sample: a phase that SIGINT, SIGTERM or an abort ends
        // early has injected since (a removed rule's count stays readable).
        let injections = self.injections(&injected.installed, &self.session.snapshot()?);
        let events: Vec<EventRecord> = self.results.events[events_before..].to_vec();
        let result = self.judge(
            planned,
            engine,
            spans,
            injected.window,
            injected.aborted_by,
            injections,
            events,
        );
        Ok((result, injected.stop))
    }

    /// The perturbation phase with the rules installed, then the recovery phase unless the
    /// experiment must stop.
    async fn inject_and_recover(
        &mut self,
        planned: &Planned,
        engine: Engine,
        count: usize,
        spans: &mut PhaseSpans,
    ) -> anyhow::Result<Injected> {
        let mut injected = Injected {
            installed: self.install(planned, engine)?,
            ..Default::default()
        };
        let start = self.now_s();
        let end = self
            .phase(
                planned,
                count,
                Phase::Perturbation,
                planned.phases.perturbation,
                &injected.installed,
            )
            .await;
        // At once, whatever ended the phase (errors included).
        self.uninstall(&injected.installed, engine);
        let end = end?;
        let stopped = self.now_s();
        spans.perturbation = Some(Span {
            start_s: start,
            end_s: stopped,
        });
        injected.window = Some(Span {
            start_s: start,
            end_s: stopped,
        });
        match end {
            PhaseEnd::Stop(why) => {
                injected.aborted_by = Some(why.clone());
                injected.stop = Some(why);
            }
            PhaseEnd::Aborted(why) => injected.aborted_by = Some(why),
            PhaseEnd::Completed => {}
        }
        if injected.stop.is_none() {
            let start = self.now_s();
            let end = self
                .phase(
                    planned,
                    count,
                    Phase::Recovery,
                    planned.phases.recovery,
                    &[],
                )
                .await?;
            spans.recovery = Some(Span {
                start_s: start,
                end_s: self.now_s(),
            });
            if let PhaseEnd::Stop(why) = end {
                injected.stop = Some(why);
            }
        }
        Ok(injected)
    }

    fn install(&mut self, planned: &Planned, engine: Engine) -> anyhow::Result<Vec<Installed>> {
        let now = kernel_now_ns();
        // The kernel stops applying it at the end of the phase even if chaos-user hangs.
        let limit = planned
            .rule
            .duration
            .into_iter()
            .chain([planned.phases.perturbation + Duration::from_secs(1)])
            .min()
            .unwrap_or_default();
        let expires_ns = now + limit.as_nanos() as u64;
        let mut installed = Vec::new();
        for label in self.results.experiment.targets.clone() {
            let index = self.next_rule;
            self.next_rule += 1;
            let position = self.rules_per_target.entry(label.clone()).or_default();
            installed.push(Installed {
                index,
                target: label.clone(),
                position: *position,
            });
            *position += 1;
            self.session.install(
                InstalledRule {
                    index,
                    target: label,
                    // The session's: the target's current cgroup.
                    cgroup_id: 0,
                    spec: planned.rule.clone(),
                    engine,
                },
                expires_ns,
            )?;
        }
        if matches!(engine, Engine::Ptrace | Engine::Stop) {
            self.session.start_ptrace()?;
        }
        Ok(installed)
    }

    fn uninstall(&self, installed: &[Installed], engine: Engine) {
        for rule in installed {
            if let Err(e) = self.session.uninstall(rule.index) {
                eprintln!(
                    "syschaos: removing rule {} from {}: {e}",
                    rule.index, rule.target
                );
            }
        }
        match engine {
            // The rules' tracer goes; the recovery runs traced as the baseline did.
            Engine::Ptrace => {
                if let Err(e) = self.session.hold_ptrace() {
                    eprintln!("syschaos: the tracer cannot stay attached for the recovery: {e}");
                    self.session.stop_ptrace();
                }
            }
            Engine::Stop => self.session.stop_ptrace(),
            _ => {}
        }
    }

    fn injections(&self, installed: &[Installed], snapshot: &Snapshot) -> u64 {
        installed
            .iter()
            .filter_map(|rule| {
                let target = snapshot.targets.iter().find(|t| t.target == rule.target)?;
                target.injections.get(rule.position).map(|i| i.count)
            })
            .sum()
    }

    async fn phase(
        &mut self,
        planned: &Planned,
        count: usize,
        phase: Phase,
        duration: Duration,
        installed: &[Installed],
    ) -> anyhow::Result<PhaseEnd> {
        let seconds = duration.as_secs_f64().round().max(1.0) as u64;
        let bar = progress_bar(planned, count, phase, seconds);
        let mut injected_before = self.injections(installed, &self.last);
        let mut done = 0;
        let end = loop {
            if done >= seconds {
                break PhaseEnd::Completed;
            }
            tokio::select! {
                _ = self.ticker.tick() => {
                    let now = self.session.snapshot()?;
                    let injected = self.injections(installed, &now);
                    let sample = self.sample(now, planned.index, phase, injected.saturating_sub(injected_before));
                    injected_before = injected;
                    done += 1;
                    bar.set_position(done);
                    bar.set_message(self.live_message(&sample, injected));
                    if phase == Phase::Perturbation
                        && let Some(why) = self.abort_check(planned.index)
                    {
                        break PhaseEnd::Aborted(why);
                    }
                }
                Some(event) = next_event(&mut self.events) => {
                    if let Some(why) = self.on_event(event, planned.index, phase).await? {
                        break PhaseEnd::Stop(why);
                    }
                }
                status = wait_load(&mut self.load) => {
                    eprintln!("syschaos: warning: the load command exited ({status}); see load.log");
                    self.load = None;
                }
                _ = self.sigint.recv() => break PhaseEnd::Stop("interrupted by SIGINT".into()),
                _ = self.sigterm.recv() => break PhaseEnd::Stop("interrupted by SIGTERM".into()),
            }
        };
        bar.finish_and_clear();
        Ok(end)
    }

    fn sample(
        &mut self,
        now: Snapshot,
        perturbation: usize,
        phase: Phase,
        injections: u64,
    ) -> Sample {
        let seconds = now.taken.duration_since(self.last.taken).as_secs_f64();
        let probes = self.probes.as_ref().map(Probes::take).unwrap_or_default();
        let interval = Interval {
            before: &self.last,
            now: &now,
            seconds,
            injections,
            probes: &probes,
        };
        let values = self
            .metrics
            .iter()
            .filter_map(|m| m.value(&interval).map(|v| (m.key(), v)))
            .collect();
        let sample = Sample {
            t: (self.now_s() * 1000.0).round() / 1000.0,
            unix_ms: now.unix_time_ms,
            perturbation,
            phase,
            injections,
            values,
        };
        self.last = now;
        self.results.samples.push(sample.clone());
        sample
    }

    fn live_message(&self, sample: &Sample, injected: u64) -> String {
        let mut parts: Vec<String> = self
            .experiment
            .steady
            .conditions
            .iter()
            .take(3)
            .map(|c| {
                let key = c.metric.key();
                match sample.values.get(&key) {
                    Some(v) => format!("{key} {}", short(*v)),
                    None => format!("{key} -"),
                }
            })
            .collect();
        parts.push(format!("injections {injected}"));
        parts.join("  ")
    }

    /// Follows a container through restarts; Some(why) once no target is left.
    async fn on_event(
        &mut self,
        event: ContainerEvent,
        perturbation: usize,
        phase: Phase,
    ) -> anyhow::Result<Option<String>> {
        let name = event.name.clone();
        let mut record = EventRecord {
            t: self.now_s(),
            perturbation,
            phase,
            target: name.clone(),
            event: String::new(),
            detail: None,
        };
        let mut stop = None;
        match open::follow(&self.session, &self.cgroup_root, &event).await? {
            Followed::Restarted { cgroup_id } => {
                record.event = "started".into();
                record.detail = Some(format!("followed into cgroup {cgroup_id}"));
                self.down.insert(name.clone(), false);
            }
            Followed::Unfollowable(e) => {
                record.event = "started".into();
                record.detail = Some(format!("cannot follow it: {e}"));
                self.down.insert(name.clone(), false);
            }
            Followed::Died { exit_code } => {
                record.event = "died".into();
                record.detail = exit_code.map(|code| format!("exit code {code}"));
                self.down.insert(name.clone(), true);
            }
            Followed::Removed { left } => {
                record.event = "removed".into();
                if left == 0 {
                    stop = Some("every target was removed".to_owned());
                }
            }
        }
        eprintln!(
            "syschaos: container {name} {}{}",
            record.event,
            record
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        self.results.events.push(record);
        Ok(stop)
    }
}

/// The phase's progress bar; a line instead when the bar is hidden (no terminal).
fn progress_bar(planned: &Planned, count: usize, phase: Phase, seconds: u64) -> ProgressBar {
    let bar = ProgressBar::new(seconds).with_style(
        ProgressStyle::with_template("{prefix} {bar:24.cyan/blue} {pos:>3}/{len}s {msg}")
            // A fixed template: the fallback is for form's sake.
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    let mut rule: String = planned.text.chars().take(32).collect();
    if rule.len() < planned.text.len() {
        rule.push('…');
    }
    bar.set_prefix(format!(
        "[{}/{count}] {rule} {:<12}",
        planned.index,
        phase.name()
    ));
    if bar.is_hidden() {
        eprintln!(
            "syschaos: [{}/{count}] {}: {} {seconds}s",
            planned.index,
            planned.text,
            phase.name()
        );
    }
    bar
}

async fn next_event(events: &mut Option<mpsc::Receiver<ContainerEvent>>) -> Option<ContainerEvent> {
    match events {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
