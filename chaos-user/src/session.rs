//! The attached monitor and the targets it counts for, shared by the live view, the metrics
//! endpoint and the Docker event follower.
use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    inject::{InjectError, engine::Engine, kernel::InstalledRule},
    monitor::{Monitor, MonitorError},
    names, resources,
    snapshot::{InjectionSnapshot, Snapshot, SyscallSnapshot, TargetSnapshot},
    target::Target,
};

struct Slot {
    target: Target,
    active: bool,
}

pub struct Session {
    monitor: Mutex<Monitor>,
    // Index = slot number the kernel counts under.
    slots: Mutex<Vec<Slot>>,
    /// Installed rules with their expiry (`bpf_ktime_get_ns`), index = rule index.
    rules: Mutex<Vec<(InstalledRule, u64)>>,
    /// Carries out the rules whose engine is ptrace (`crate::ptrace`).
    ptrace: crate::ptrace::PtraceEngine,
}

impl Session {
    pub fn new(monitor: Monitor) -> Self {
        Self {
            monitor: Mutex::new(monitor),
            slots: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
            ptrace: Default::default(),
        }
    }

    /// Attaches the monitor's tracepoints: counting and injecting start.
    pub fn start(&self) -> Result<(), MonitorError> {
        self.monitor.lock().unwrap().start()
    }

    /// The label of the target counted under `slot`.
    pub fn label(&self, slot: u32) -> String {
        let slots = self.slots.lock().unwrap();
        slots
            .get(slot as usize)
            .map_or_else(|| format!("slot {slot}"), |slot| slot.target.label.clone())
    }

    pub fn installed(&self) -> Vec<InstalledRule> {
        self.rules
            .lock()
            .unwrap()
            .iter()
            .map(|(rule, _)| rule.clone())
            .collect()
    }

    /// Puts a rule in the kernel for a target added before.
    pub fn install(&self, rule: InstalledRule, expires_ns: u64) -> Result<(), InjectError> {
        let slots = self.slots.lock().unwrap();
        let Some(slot) = slots.iter().find(|slot| slot.target.label == rule.target) else {
            return Ok(());
        };
        if rule.engine == Engine::Ptrace {
            // Not in the kernel: the tracer carries it out once `start_ptrace` runs.
            self.ptrace.add_rule(rule.index);
            self.rules.lock().unwrap().push((rule, expires_ns));
            return Ok(());
        }
        let mut monitor = self.monitor.lock().unwrap();
        monitor.install_rule(&rule, &slot.target.cgroup.v2, expires_ns)?;
        self.rules.lock().unwrap().push((rule, expires_ns));
        Ok(())
    }

    /// Stops applying the rule with this index at once: out of the kernel's rule map (a ptrace
    /// rule is marked expired; `stop_ptrace` detaches the tracer). Its count stays readable.
    pub fn uninstall(&self, index: u32) -> Result<(), InjectError> {
        let (cgroup_id, syscall_nr, engine) = {
            let mut rules = self.rules.lock().unwrap();
            let Some((rule, expires_ns)) = rules.iter_mut().find(|(rule, _)| rule.index == index)
            else {
                return Ok(());
            };
            // Long expired: a restart moving the rules, or a later start_ptrace, leaves it off.
            *expires_ns = 1;
            (rule.cgroup_id, rule.spec.syscall_nr, rule.engine)
        };
        if engine == Engine::Ptrace {
            return Ok(());
        }
        self.monitor
            .lock()
            .unwrap()
            .remove_rule(cgroup_id, syscall_nr)
            .map_err(|why| InjectError::Attach {
                engine,
                syscall: crate::names::syscall_name(syscall_nr),
                why,
            })
    }

    /// Seizes the targets of ptrace rules and starts applying them (nothing without such rules).
    pub fn start_ptrace(&self) -> Result<(), InjectError> {
        let rules = self.rules.lock().unwrap().clone();
        let slots = self.slots.lock().unwrap();
        let cgroup_dir = |label: &str| {
            let slot = slots.iter().find(|slot| slot.target.label == label)?;
            Some((slot.target.cgroup.v2.clone(), slot.target.cgroup_id))
        };
        self.ptrace.start(&rules, cgroup_dir)
    }

    /// Detaches the ptrace engine from every tracee; its counts stay readable.
    pub fn stop_ptrace(&self) {
        self.ptrace.stop();
    }

    pub fn add(&self, target: Target) -> Result<(), MonitorError> {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.len() as u32;
        self.monitor
            .lock()
            .unwrap()
            .add_cgroup(target.cgroup_id, &target.cgroup.v2, slot)?;
        slots.push(Slot {
            target,
            active: true,
        });
        Ok(())
    }

    /// A target came back in a new cgroup (a restarted container): count it under the same slot.
    pub fn replace(&self, label: &str, target: Target) -> Result<(), MonitorError> {
        let mut slots = self.slots.lock().unwrap();
        let Some((index, slot)) = slots
            .iter_mut()
            .enumerate()
            .find(|(_, slot)| slot.target.label == label)
        else {
            return Ok(());
        };
        let mut monitor = self.monitor.lock().unwrap();
        monitor.remove_cgroup(slot.target.cgroup_id)?;
        monitor.add_cgroup(target.cgroup_id, &target.cgroup.v2, index as u32)?;
        // Its rules follow it, with their counters (a count limit is not renewed by a restart).
        let mut rules = self.rules.lock().unwrap();
        for (rule, expires_ns) in rules.iter_mut().filter(|(rule, _)| rule.target == label) {
            let old_cgroup = rule.cgroup_id;
            rule.cgroup_id = target.cgroup_id;
            if rule.engine == Engine::Ptrace {
                continue;
            }
            monitor
                .install_rule(rule, &target.cgroup.v2, *expires_ns)
                .map_err(|e| MonitorError::Rules(e.to_string()))?;
            monitor
                .move_rules(old_cgroup, target.cgroup_id, &[rule.spec.syscall_nr])
                .map_err(MonitorError::Rules)?;
        }
        self.ptrace
            .retarget(label, target.cgroup.v2.clone(), target.cgroup_id);
        *slot = Slot {
            target,
            active: true,
        };
        Ok(())
    }

    /// Stops counting a target that went away. Returns how many targets are still active.
    pub fn deactivate(&self, label: &str) -> Result<usize, MonitorError> {
        let mut slots = self.slots.lock().unwrap();
        for slot in slots.iter_mut().filter(|slot| slot.target.label == label) {
            self.monitor
                .lock()
                .unwrap()
                .remove_cgroup(slot.target.cgroup_id)?;
            slot.active = false;
        }
        Ok(slots.iter().filter(|slot| slot.active).count())
    }

    pub fn snapshot(&self) -> Result<Snapshot, MonitorError> {
        let monitor = self.monitor.lock().unwrap();
        let counters = monitor.read()?;
        let rules = self.rules.lock().unwrap();
        let slots = self.slots.lock().unwrap();
        let targets = slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let index = index as u32;
                let syscalls = counters
                    .stats
                    .iter()
                    .filter(|(key, _)| key.slot == index)
                    .map(|(key, stats)| {
                        let errnos: BTreeMap<String, u64> = counters
                            .errors
                            .range((index, key.syscall, 0)..=(index, key.syscall, u32::MAX))
                            .map(|(&(_, _, errno), &count)| (names::errno_name(errno), count))
                            .collect();
                        SyscallSnapshot::new(key.syscall, stats, errnos)
                    })
                    .collect();
                TargetSnapshot {
                    target: slot.target.label.clone(),
                    cgroup_id: slot.target.cgroup_id,
                    active: slot.active,
                    resources: if slot.active {
                        resources::read(&slot.target.cgroup)
                    } else {
                        Default::default()
                    },
                    syscalls,
                    injections: rules
                        .iter()
                        .filter(|(rule, _)| rule.target == slot.target.label)
                        .map(|(rule, _)| InjectionSnapshot {
                            syscall: rule.spec.syscall.clone(),
                            fault: rule.spec.fault.name(),
                            engine: rule.engine.name(),
                            count: self
                                .ptrace
                                .injections(rule.index)
                                .unwrap_or_else(|| monitor.injections(rule.index)),
                        })
                        .collect(),
                    http: counters.http.of(index),
                    trace_drops: monitor.trace.as_ref().map(|trace| trace.drops(index)),
                }
            })
            .collect();
        Ok(Snapshot {
            taken: Instant::now(),
            unix_time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            targets,
        })
    }
}
