//! What the session's one lock guards, and the operations on it. Field order is drop order: the
//! tracer detaches first, the maps close, and the `Ebpf` (programs and links) goes last.
use std::collections::BTreeMap;

use aya::Ebpf;

use super::SessionError;
use crate::{
    http::HttpCounting,
    inject::{
        InjectError,
        engine::{Capabilities, Engine},
        injector::{Injector, InstalledRule},
        ptrace::{PtraceEngine, PtraceTarget, SkippedCalls},
    },
    monitor::Monitor,
    names, resources,
    snapshot::{InjectionSnapshot, SyscallSnapshot, TargetSnapshot},
    target::Target,
    trace::TraceMaps,
};

pub struct Slot {
    pub target: Target,
    pub active: bool,
}

pub struct State {
    /// Carries out the rules whose engine is ptrace.
    pub ptrace: PtraceEngine,
    /// Index = slot number the kernel counts under.
    pub slots: Vec<Slot>,
    /// Installed rules with their expiry (`bpf_ktime_get_ns`), in index order.
    pub rules: Vec<(InstalledRule, u64)>,
    monitor: Monitor,
    http: Option<HttpCounting>,
    pub trace: Option<TraceMaps>,
    injector: Option<Injector>,
    ebpf: Ebpf,
}

impl State {
    pub fn new(
        ebpf: Ebpf,
        monitor: Monitor,
        http: Option<HttpCounting>,
        trace: Option<TraceMaps>,
        injector: Option<Injector>,
    ) -> Self {
        Self {
            ptrace: PtraceEngine::default(),
            slots: Vec::new(),
            rules: Vec::new(),
            monitor,
            http,
            trace,
            injector,
            ebpf,
        }
    }

    pub fn capabilities(&mut self) -> Result<Capabilities, SessionError> {
        let injector = self
            .injector
            .as_mut()
            .ok_or(SessionError::NotLoaded("injection"))?;
        Ok(injector.capabilities(&mut self.ebpf))
    }

    pub fn start(&mut self) -> Result<(), SessionError> {
        Ok(self.monitor.start(&mut self.ebpf)?)
    }

    pub fn add(&mut self, target: Target) -> Result<(), SessionError> {
        let slot = self.slots.len() as u32;
        self.watch(&target, slot)?;
        self.slots.push(Slot {
            target,
            active: true,
        });
        Ok(())
    }

    /// The monitor learns the cgroup's slot before HTTP counting attaches to it.
    fn watch(&mut self, target: &Target, slot: u32) -> Result<(), SessionError> {
        self.monitor.add_cgroup(target.cgroup_id, slot)?;
        if let Some(http) = &mut self.http {
            http.attach(&mut self.ebpf, target.cgroup_id, &target.cgroup.v2)?;
        }
        Ok(())
    }

    fn unwatch(&mut self, cgroup_id: u64) -> Result<(), SessionError> {
        if let Some(http) = &mut self.http {
            http.detach(&mut self.ebpf, cgroup_id);
        }
        Ok(self.monitor.remove_cgroup(cgroup_id)?)
    }

    fn slot_of(&self, label: &str) -> Result<usize, SessionError> {
        self.slots
            .iter()
            .position(|slot| slot.target.label == label)
            .ok_or_else(|| SessionError::UnknownTarget(label.to_owned()))
    }

    pub fn install(
        &mut self,
        mut rule: InstalledRule,
        expires_ns: u64,
    ) -> Result<(), SessionError> {
        let target = &self.slots[self.slot_of(&rule.target)?].target;
        rule.cgroup_id = target.cgroup_id;
        if rule.engine == Engine::Ptrace {
            // Not in the kernel: the tracer carries it out once `start_ptrace` runs.
            self.ptrace.add_rule(rule.index);
        } else {
            let cgroup_dir = target.cgroup.v2.clone();
            let injector = self
                .injector
                .as_mut()
                .ok_or(SessionError::NotLoaded("injection"))?;
            injector.install(&mut self.ebpf, &rule, &cgroup_dir, expires_ns)?;
        }
        self.rules.push((rule, expires_ns));
        Ok(())
    }

    pub fn uninstall(&mut self, index: u32) -> Result<(), SessionError> {
        let Some((rule, expires_ns)) = self.rules.iter_mut().find(|(rule, _)| rule.index == index)
        else {
            return Ok(());
        };
        // Long expired: a restart moving the rules, or a later start_ptrace, leaves it off.
        *expires_ns = 1;
        if rule.engine == Engine::Ptrace {
            return Ok(());
        }
        let (cgroup_id, syscall) = (rule.cgroup_id, rule.spec.syscall_nr);
        if let Some(injector) = &mut self.injector {
            injector.remove_rule(cgroup_id, syscall)?;
        }
        Ok(())
    }

    /// The ptrace tracer on every active target, with no rule (`PtraceEngine::hold`).
    pub fn hold_ptrace(&mut self) -> Result<(), SessionError> {
        let targets = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.active)
            .map(|(index, slot)| PtraceTarget {
                label: slot.target.label.clone(),
                cgroup_dir: slot.target.cgroup.v2.clone(),
                cgroup_id: slot.target.cgroup_id,
                slot: index as u32,
            })
            .collect();
        Ok(self.ptrace.hold(targets)?)
    }

    pub fn start_ptrace(&mut self) -> Result<(), SessionError> {
        let slots = &self.slots;
        let cgroup_dir = |label: &str| {
            let index = slots.iter().position(|slot| slot.target.label == label)?;
            let target = &slots[index].target;
            Some((target.cgroup.v2.clone(), target.cgroup_id, index as u32))
        };
        let skipped = SkippedCalls::open(&self.ebpf);
        let injector = &self.injector;
        let stop_faults = || match injector {
            Some(injector) => injector.stop_faults(),
            None => Err(InjectError::Ptrace("injection is not loaded".into())),
        };
        Ok(self
            .ptrace
            .start(&self.rules, cgroup_dir, skipped, stop_faults)?)
    }

    /// Detaches the tracer. The stop engine's rules leave the kernel first: once detached, a
    /// SIGSTOP it sent would stop the target for real.
    pub fn stop_tracer(&mut self) {
        let stop_rules: Vec<u32> = self
            .rules
            .iter()
            .filter(|(rule, expires_ns)| rule.engine == Engine::Stop && *expires_ns != 1)
            .map(|(rule, _)| rule.index)
            .collect();
        for index in stop_rules {
            if let Err(e) = self.uninstall(index) {
                eprintln!("syschaos: stop: removing rule {index}: {e}");
            }
        }
        self.ptrace.stop();
    }

    /// Counts the target's new cgroup under its slot; its rules follow it, with their counters
    /// (a count limit is not renewed by a restart).
    pub fn replace(&mut self, label: &str, target: Target) -> Result<(), SessionError> {
        let index = self.slot_of(label)?;
        let old_cgroup = self.slots[index].target.cgroup_id;
        self.unwatch(old_cgroup)?;
        self.watch(&target, index as u32)?;
        for (rule, expires_ns) in self
            .rules
            .iter_mut()
            .filter(|(rule, _)| rule.target == label)
        {
            rule.cgroup_id = target.cgroup_id;
            if rule.engine == Engine::Ptrace {
                continue;
            }
            if let Some(injector) = &mut self.injector {
                injector.install(&mut self.ebpf, rule, &target.cgroup.v2, *expires_ns)?;
                injector.move_rules(old_cgroup, target.cgroup_id, &[rule.spec.syscall_nr])?;
            }
        }
        self.ptrace
            .retarget(label, target.cgroup.v2.clone(), target.cgroup_id);
        self.slots[index] = Slot {
            target,
            active: true,
        };
        Ok(())
    }

    pub fn deactivate(&mut self, label: &str) -> Result<(), SessionError> {
        let index = self.slot_of(label)?;
        let cgroup_id = self.slots[index].target.cgroup_id;
        self.unwatch(cgroup_id)?;
        self.slots[index].active = false;
        Ok(())
    }

    pub fn active_targets(&self) -> usize {
        self.slots.iter().filter(|slot| slot.active).count()
    }

    pub fn read_targets(&self) -> Result<Vec<TargetSnapshot>, SessionError> {
        let counters = self.monitor.read()?;
        let http = match &self.http {
            Some(http) => http.read()?,
            None => Default::default(),
        };
        Ok(self
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let index = index as u32;
                TargetSnapshot {
                    target: slot.target.label.clone(),
                    cgroup_id: slot.target.cgroup_id,
                    active: slot.active,
                    resources: if slot.active {
                        resources::read(&slot.target.cgroup)
                    } else {
                        Default::default()
                    },
                    syscalls: syscalls_of(&counters, index),
                    injections: self.injections_of(&slot.target.label),
                    http: http.of(index),
                    trace_drops: self.trace.as_ref().map(|trace| trace.drops(index)),
                }
            })
            .collect())
    }

    fn injections_of(&self, label: &str) -> Vec<InjectionSnapshot> {
        self.rules
            .iter()
            .filter(|(rule, _)| rule.target == label)
            .map(|(rule, _)| InjectionSnapshot {
                syscall: rule.spec.syscall.clone(),
                fault: rule.spec.fault.name(),
                engine: rule.engine.name(),
                count: self.ptrace.injections(rule.index).unwrap_or_else(|| {
                    self.injector
                        .as_ref()
                        .map_or(0, |injector| injector.injections(rule.index))
                }),
            })
            .collect()
    }
}

fn syscalls_of(counters: &crate::monitor::Counters, slot: u32) -> Vec<SyscallSnapshot> {
    counters
        .stats
        .iter()
        .filter(|(key, _)| key.slot == slot)
        .map(|(key, stats)| {
            let errnos: BTreeMap<String, u64> = counters
                .errors
                .range((slot, key.syscall, 0)..=(slot, key.syscall, u32::MAX))
                .map(|(&(_, _, errno), &count)| (names::errno_name(errno), count))
                .collect();
            SyscallSnapshot::new(key.syscall, stats, errnos)
        })
        .collect()
}
