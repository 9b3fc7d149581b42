//! Rules in the kernel: the rule itself in `INJECT_RULES`, keyed by (cgroup id, syscall), and
//! what its engine needs attached (`super::engine` dispatches to the engine's file).
use std::{collections::HashSet, os::fd::AsFd as _, path::Path};

use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray},
};
use chaos_common::{
    InjectRule, MAP_INJECT_RULES, MAP_INJECTIONS, MAP_RULE_SYSCALLS, MAP_STOP_FAULTS, NO_PATH_ARG,
    PATH_PREFIX_MAX, RuleKey,
};

use super::{
    InjectError,
    engine::{Capabilities, Engine, EngineError, KernelPrograms},
    fmod_ret::FmodRet,
    ptrace::StopFaults,
    rule::{Fault, RuleSpec},
};
use crate::ebpf::{self, LoadError};

/// The injection peer: owns the rule maps, and knows which programs it loaded and attached.
pub struct Injector {
    rules: HashMap<MapData, RuleKey, InjectRule>,
    rule_syscalls: Array<MapData, u8>,
    injections: PerCpuArray<MapData, u64>,
    /// The stop engine's faults: the tracer reads them through its own descriptor.
    stop_faults: StopFaults,
    /// Programs loaded, and attachments made, so far ("load:inject_kprobe", ...).
    done: HashSet<String>,
    /// Whether the injecting entry program loaded: the in-kernel engines need it.
    in_kernel: Result<(), String>,
    /// What the fmod-ret engine loaded and attached (dropped with the injector).
    fmod_ret: FmodRet,
}

/// A rule as installed for one target.
#[derive(Debug, Clone)]
pub struct InstalledRule {
    pub index: u32,
    pub target: String,
    pub cgroup_id: u64,
    pub spec: RuleSpec,
    pub engine: Engine,
}

impl Injector {
    /// The rule maps; `in_kernel` says whether the injecting entry program loaded.
    pub fn take(ebpf: &mut Ebpf, in_kernel: Result<(), String>) -> Result<Self, LoadError> {
        // Before the maps it shares are taken.
        let fmod_ret = FmodRet::new(ebpf);
        Ok(Self {
            rules: ebpf::take_map(ebpf, MAP_INJECT_RULES)?,
            rule_syscalls: ebpf::take_map(ebpf, MAP_RULE_SYSCALLS)?,
            injections: ebpf::take_map(ebpf, MAP_INJECTIONS)?,
            stop_faults: ebpf::take_map(ebpf, MAP_STOP_FAULTS)?,
            done: HashSet::new(),
            in_kernel,
            fmod_ret,
        })
    }

    /// Which engines this kernel offers, each tried for real.
    pub fn capabilities(&mut self, ebpf: &mut Ebpf) -> Capabilities {
        Capabilities::probe(
            &mut KernelPrograms::new(ebpf, &mut self.done, &mut self.fmod_ret),
            &self.in_kernel,
        )
    }

    /// Attaches what the rule's engine needs and puts the rule in the kernel.
    pub fn install(
        &mut self,
        ebpf: &mut Ebpf,
        rule: &InstalledRule,
        cgroup_dir: &Path,
        expires_ns: u64,
    ) -> Result<(), InjectError> {
        let attach_error = |source: EngineError| InjectError::Attach {
            engine: rule.engine,
            syscall: rule.spec.syscall.clone(),
            source: Box::new(source),
        };
        let mut kernel = KernelPrograms::new(ebpf, &mut self.done, &mut self.fmod_ret);
        rule.engine
            .attach(&mut kernel, &rule.spec.syscall, rule.cgroup_id, cgroup_dir)
            .map_err(attach_error)?;
        let (key, value) = kernel_rule(rule, expires_ns);
        let map_error = |map| move |source| attach_error(EngineError::Map { map, source });
        self.rules
            .insert(key, value, 0)
            .map_err(map_error(MAP_INJECT_RULES))?;
        self.rule_syscalls
            .set(key.syscall, 1, 0)
            .map_err(map_error(MAP_RULE_SYSCALLS))
    }

    /// Moves a target's rules to its new cgroup (a restarted container), keeping their counters.
    pub fn move_rules(
        &mut self,
        old_cgroup: u64,
        new_cgroup: u64,
        syscalls: &[u32],
    ) -> Result<(), MapError> {
        for &syscall in syscalls {
            let old = rule_key(old_cgroup, syscall);
            let Ok(rule) = self.rules.get(&old, 0) else {
                continue;
            };
            self.rules.insert(rule_key(new_cgroup, syscall), rule, 0)?;
            let _ = self.rules.remove(&old);
        }
        Ok(())
    }

    /// Takes the rule of (cgroup, syscall) out of the kernel: matching calls run normally again.
    pub fn remove_rule(&mut self, cgroup_id: u64, syscall: u32) -> Result<(), MapError> {
        match self.rules.remove(&rule_key(cgroup_id, syscall)) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `STOP_FAULTS` for the tracer, through a descriptor of its own.
    pub fn stop_faults(&self) -> Result<StopFaults, InjectError> {
        let error = |why: String| InjectError::Ptrace(format!("{MAP_STOP_FAULTS}: {why}"));
        let fd = self
            .stop_faults
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| error(e.to_string()))?;
        let map = MapData::from_fd(fd).map_err(|e| error(e.to_string()))?;
        StopFaults::try_from(Map::LruHashMap(map)).map_err(|e| error(e.to_string()))
    }

    /// Injections made so far by the rule with this index, over all CPUs.
    pub fn injections(&self, index: u32) -> u64 {
        self.injections
            .get(&index, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

fn rule_key(cgroup_id: u64, syscall: u32) -> RuleKey {
    RuleKey {
        cgroup_id,
        syscall,
        _pad: 0,
    }
}

fn kernel_rule(rule: &InstalledRule, expires_ns: u64) -> (RuleKey, InjectRule) {
    let spec = &rule.spec;
    let mut path_prefix = [0u8; PATH_PREFIX_MAX];
    let prefix = spec.path_prefix.as_deref().unwrap_or("").as_bytes();
    path_prefix[..prefix.len()].copy_from_slice(prefix);
    let key = rule_key(rule.cgroup_id, spec.syscall_nr);
    let value = InjectRule {
        index: rule.index,
        engine: rule.engine.kernel_id(),
        errno_or_signal: match spec.fault {
            Fault::Errno(errno) => errno,
            Fault::Signal(signal) => signal as u32,
            // A delay alone (the stop engine's; the ptrace engine's rules never reach the kernel).
            Fault::Delay => 0,
        },
        path_arg: spec.path_arg.unwrap_or(NO_PATH_ARG),
        probability_threshold: probability_threshold(spec.probability),
        nth: spec.nth.unwrap_or(0),
        max_count: spec.count.unwrap_or(0),
        expires_ns,
        matched: 0,
        taken: 0,
        path_prefix_len: prefix.len() as u32,
        _pad: 0,
        delay_ns: spec.delay.map_or(0, |delay| delay.as_nanos() as u64),
        path_prefix,
    };
    (key, value)
}

/// The kernel injects when a random u32 is below this: p * 2^32, and 2^32 (always) for p = 1.
fn probability_threshold(probability: f64) -> u64 {
    ((probability * 4_294_967_296.0).round() as u64).clamp(1, 1 << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_thresholds() {
        assert_eq!(probability_threshold(1.0), 1 << 32);
        assert_eq!(probability_threshold(0.5), 1 << 31);
        assert_eq!(probability_threshold(1e-12), 1);
    }
}
