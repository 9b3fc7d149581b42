//! The ptrace engine as a session holds it: the injection counter of each of its rules (kept
//! after the tracer stops, for the last report) and, once started, the tracer thread, which also
//! serves the stop engine's rules (their counts are the kernel's).
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{PtraceRule, PtraceTarget, SkippedCalls, StopFaults, TracerThread};
use crate::{
    ebpf::kernel_now_ns,
    inject::{InjectError, engine::Engine, injector::InstalledRule, rule::Fault},
};

#[derive(Default)]
pub struct PtraceEngine {
    /// Rule index -> injections.
    counts: BTreeMap<u32, Arc<AtomicU64>>,
    tracer: Option<TracerThread>,
}

impl PtraceEngine {
    /// A rule the tracer will carry out.
    pub fn add_rule(&mut self, index: u32) {
        self.counts.insert(index, Arc::default());
    }

    /// Injections of a ptrace rule; None for other rules.
    pub fn injections(&self, index: u32) -> Option<u64> {
        self.counts
            .get(&index)
            .map(|count| count.load(Ordering::Relaxed))
    }

    /// Starts the tracer for the ptrace and stop rules among `rules` ((rule, expiry in
    /// CLOCK_MONOTONIC ns)); `cgroup_dir` gives a target's cgroup v2 directory, id and slot by
    /// label; `skipped` tells the monitor of the calls ptrace skips, `stop_faults` gives the
    /// kernel's stop-engine faults. Nothing to do without such rules that can still apply. A
    /// tracer started before is detached first.
    pub fn start(
        &mut self,
        rules: &[(InstalledRule, u64)],
        cgroup_dir: impl Fn(&str) -> Option<(PathBuf, u64, u32)>,
        skipped: SkippedCalls,
        stop_faults: impl FnOnce() -> Result<StopFaults, InjectError>,
    ) -> Result<(), InjectError> {
        self.stop();
        let now = kernel_now_ns();
        let mut targets: Vec<PtraceTarget> = Vec::new();
        let mut specs = Vec::new();
        let live = |(rule, expires_ns): &&(InstalledRule, u64)| {
            matches!(rule.engine, Engine::Ptrace | Engine::Stop)
                && (*expires_ns == 0 || *expires_ns > now)
        };
        let mut stop_rules = false;
        for (rule, expires_ns) in rules.iter().filter(live) {
            let target = match targets.iter().position(|t| t.label == rule.target) {
                Some(index) => index,
                None => {
                    let Some((dir, id, slot)) = cgroup_dir(&rule.target) else {
                        continue;
                    };
                    targets.push(PtraceTarget {
                        label: rule.target.clone(),
                        cgroup_dir: dir,
                        cgroup_id: id,
                        slot,
                    });
                    targets.len() - 1
                }
            };
            if rule.engine == Engine::Stop {
                stop_rules = true;
                continue;
            }
            let spec = &rule.spec;
            specs.push(PtraceRule {
                target,
                syscall_nr: spec.syscall_nr,
                errno: match spec.fault {
                    Fault::Errno(errno) => Some(errno),
                    _ => None,
                },
                delay_ns: spec.delay.map_or(0, |delay| delay.as_nanos() as u64),
                probability: spec.probability,
                nth: spec.nth,
                count: spec.count,
                path: spec
                    .path_arg
                    .zip(spec.path_prefix.as_ref())
                    .map(|(arg, prefix)| (arg, prefix.as_bytes().to_vec())),
                expires_ns: *expires_ns,
                injections: self.counts.get(&rule.index).cloned().unwrap_or_default(),
            });
        }
        if specs.is_empty() && !stop_rules {
            return Ok(());
        }
        let stop_faults = stop_rules.then(stop_faults).transpose()?;
        self.tracer = Some(TracerThread::start(targets, specs, skipped, stop_faults)?);
        Ok(())
    }

    /// Seizes `targets` with no rule: every call of theirs stops in the tracer as under a rule,
    /// and none is perturbed. An experiment's baseline and recovery run so when its perturbation
    /// runs on ptrace, so that the phases compare like with like. Detaches a tracer started
    /// before.
    pub fn hold(&mut self, targets: Vec<PtraceTarget>) -> Result<(), InjectError> {
        self.stop();
        self.tracer = Some(TracerThread::start(
            targets,
            Vec::new(),
            SkippedCalls::none(),
            None,
        )?);
        Ok(())
    }

    /// A target restarted in another cgroup: the tracer seizes the threads there.
    pub fn retarget(&mut self, label: &str, cgroup_dir: PathBuf, cgroup_id: u64) {
        if let Some(tracer) = &mut self.tracer {
            tracer.retarget(label, cgroup_dir, cgroup_id);
        }
    }

    /// Detaches from every tracee (see [`TracerThread::stop`]). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut tracer) = self.tracer.take() {
            tracer.stop();
        }
    }
}
