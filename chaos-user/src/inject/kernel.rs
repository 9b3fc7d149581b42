//! Rules in the kernel: each engine's programs loaded and attached on first use, and the rule
//! itself in `INJECT_RULES`, keyed by (cgroup id, syscall).
use std::{collections::HashSet, fs::File, path::Path};

use aya::{
    Btf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{CgroupAttachMode, KProbe, Lsm, Program},
};
use chaos_common::{
    InjectRule, MAP_INJECT_RULES, MAP_INJECTIONS, MAP_RULE_SYSCALLS, NO_PATH_ARG, PATH_PREFIX_MAX,
    PROG_INJECT_KPROBE, RuleKey,
};

use super::{
    InjectError,
    engine::{self, Capabilities, Engine},
    rule::{Fault, RuleSpec},
};
use crate::monitor::{Monitor, MonitorError, program, short_error};

pub struct InjectionMaps {
    rules: HashMap<MapData, RuleKey, InjectRule>,
    rule_syscalls: Array<MapData, u8>,
    injections: PerCpuArray<MapData, u64>,
    /// Programs loaded, and attachments made, so far ("kprobe:__x64_sys_openat", ...).
    done: HashSet<String>,
}

impl InjectionMaps {
    pub fn take(
        take: &mut impl FnMut(&'static str) -> Result<Map, MonitorError>,
    ) -> Result<Self, MonitorError> {
        Ok(Self {
            rules: HashMap::try_from(take(MAP_INJECT_RULES)?)?,
            rule_syscalls: Array::try_from(take(MAP_RULE_SYSCALLS)?)?,
            injections: PerCpuArray::try_from(take(MAP_INJECTIONS)?)?,
            done: HashSet::new(),
        })
    }
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

const SECURITYFS_LSM: &str = "/sys/kernel/security/lsm";

impl Monitor {
    /// Which engines this kernel offers: each is tried for real (a program of its kind loaded,
    /// and attached where attaching is what can fail).
    pub fn capabilities(&mut self) -> Capabilities {
        Capabilities {
            kprobe: self.probe_kprobe(),
            lsm: self.probe_lsm(),
            cgroup_sock: self.load_program("sock_connect4").map_err(|e| {
                format!("cgroup socket programs with bpf_set_retval are refused ({e}): the kernel needs 5.18+ and CONFIG_CGROUP_BPF")
            }),
            // The entry program that sends signals loaded with injection on, so the helper exists.
            signal: Ok(()),
            ptrace: crate::ptrace::probe(),
        }
    }

    fn probe_kprobe(&mut self) -> Result<(), String> {
        self.load_program(PROG_INJECT_KPROBE).map_err(|e| {
            format!(
                "bpf_override_return is refused ({e}): the kernel needs CONFIG_BPF_KPROBE_OVERRIDE"
            )
        })?;
        let probe: &mut KProbe = program(&mut self.ebpf, PROG_INJECT_KPROBE)?;
        let function = engine::syscall_entry_function("getppid");
        let link = probe.attach(&function, 0).map_err(|e| {
            format!("cannot attach a kprobe to {function} ({e}): the kernel needs CONFIG_KPROBES")
        })?;
        probe.detach(link).map_err(|e| e.to_string())
    }

    fn probe_lsm(&mut self) -> Result<(), String> {
        let active = std::fs::read_to_string(SECURITYFS_LSM)
            .map_err(|e| format!("cannot read {SECURITYFS_LSM} ({e}): is securityfs mounted?"))?;
        if !active.trim().split(',').any(|lsm| lsm == "bpf") {
            return Err(format!(
                "`bpf` is not in the active LSM list ({}): boot with lsm=...,bpf",
                active.trim()
            ));
        }
        self.load_program("lsm_file_open")
            .map_err(|e| format!("BPF LSM programs are refused ({e})"))
    }

    /// Loads a program of the object once; later calls are no-ops.
    fn load_program(&mut self, name: &'static str) -> Result<(), String> {
        let key = format!("load:{name}");
        if self.maps()?.done.contains(&key) {
            return Ok(());
        }
        let result = match self.ebpf.program_mut(name) {
            None => Err(format!("no program {name} in the eBPF object")),
            Some(Program::KProbe(p)) => p.load().map_err(short_error),
            Some(Program::CgroupSockAddr(p)) => p.load().map_err(short_error),
            Some(Program::CgroupSock(p)) => p.load().map_err(short_error),
            Some(Program::Lsm(p)) => {
                let hook =
                    engine::lsm_hook_of(name).ok_or_else(|| format!("no LSM hook for {name}"))?;
                let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
                p.load(hook, &btf).map_err(short_error)
            }
            Some(_) => Err(format!("{name} is not an injection program")),
        };
        result?;
        self.maps()?.done.insert(key);
        Ok(())
    }

    fn maps(&mut self) -> Result<&mut InjectionMaps, String> {
        self.injection
            .as_mut()
            .ok_or_else(|| "the monitor was loaded without injection".to_owned())
    }

    /// Attaches what the rule's engine needs and puts the rule in the kernel.
    pub fn install_rule(
        &mut self,
        rule: &InstalledRule,
        cgroup_dir: &Path,
        expires_ns: u64,
    ) -> Result<(), InjectError> {
        let attach_error = |why: String| InjectError::Attach {
            engine: rule.engine,
            syscall: rule.spec.syscall.clone(),
            why,
        };
        let programs = rule
            .engine
            .programs(&rule.spec.syscall)
            .ok_or_else(|| attach_error("the engine does not cover this syscall".into()))?;
        for name in programs {
            self.load_program(name).map_err(attach_error)?;
            let key = match rule.engine {
                Engine::CgroupSock => format!("attach:{name}:{}", rule.cgroup_id),
                Engine::Kprobe => format!("attach:{name}:{}", rule.spec.syscall),
                _ => format!("attach:{name}"),
            };
            if self.maps().map_err(attach_error)?.done.contains(&key) {
                continue;
            }
            self.attach_program(rule, name, cgroup_dir)
                .map_err(attach_error)?;
            self.maps().map_err(attach_error)?.done.insert(key);
        }
        let (key, value) = kernel_rule(rule, expires_ns);
        let maps = self.maps().map_err(attach_error)?;
        maps.rules
            .insert(key, value, 0)
            .map_err(|e| attach_error(format!("rule map: {e}")))?;
        maps.rule_syscalls
            .set(key.syscall, 1, 0)
            .map_err(|e| attach_error(format!("rule syscall map: {e}")))
    }

    fn attach_program(
        &mut self,
        rule: &InstalledRule,
        name: &str,
        cgroup_dir: &Path,
    ) -> Result<(), String> {
        match rule.engine {
            Engine::Kprobe => {
                let function = engine::syscall_entry_function(&rule.spec.syscall);
                let probe: &mut KProbe = program(&mut self.ebpf, name)?;
                probe.attach(&function, 0).map(drop).map_err(|e| {
                    format!("kprobe on {function}: {e} (is it on /sys/kernel/debug/error_injection/list?)")
                })
            }
            Engine::Lsm => {
                let lsm: &mut Lsm = program(&mut self.ebpf, name)?;
                lsm.attach().map(drop).map_err(|e| e.to_string())
            }
            Engine::CgroupSock => {
                let cgroup =
                    File::open(cgroup_dir).map_err(|e| format!("{}: {e}", cgroup_dir.display()))?;
                // On 5.7+ (we need 5.12) aya attaches with a bpf_link: it coexists with other
                // programs on the cgroup (link_create takes no multi flag) and goes away with us.
                let mode = CgroupAttachMode::Single;
                match self.ebpf.program_mut(name) {
                    Some(Program::CgroupSockAddr(p)) => p.attach(&cgroup, mode).map(drop),
                    Some(Program::CgroupSock(p)) => p.attach(&cgroup, mode).map(drop),
                    _ => return Err(format!("{name} is not a cgroup socket program")),
                }
                .map_err(|e| e.to_string())
            }
            Engine::Signal | Engine::Ptrace => Ok(()),
        }
    }

    /// Moves a target's rules to its new cgroup (a restarted container), keeping their counters.
    pub fn move_rules(
        &mut self,
        old_cgroup: u64,
        new_cgroup: u64,
        syscalls: &[u32],
    ) -> Result<(), String> {
        let maps = self.maps()?;
        for &syscall in syscalls {
            let old = RuleKey {
                cgroup_id: old_cgroup,
                syscall,
                _pad: 0,
            };
            let Ok(rule) = maps.rules.get(&old, 0) else {
                continue;
            };
            let new = RuleKey {
                cgroup_id: new_cgroup,
                syscall,
                _pad: 0,
            };
            maps.rules.insert(new, rule, 0).map_err(|e| e.to_string())?;
            let _ = maps.rules.remove(&old);
        }
        Ok(())
    }

    /// Takes the rule of (cgroup, syscall) out of the kernel: matching calls run normally again.
    pub fn remove_rule(&mut self, cgroup_id: u64, syscall: u32) -> Result<(), String> {
        let key = RuleKey {
            cgroup_id,
            syscall,
            _pad: 0,
        };
        match self.maps()?.rules.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(format!("rule map: {e}")),
        }
    }

    /// Injections made so far by the rule with this index, over all CPUs.
    pub fn injections(&self, index: u32) -> u64 {
        self.injection
            .as_ref()
            .and_then(|maps| maps.injections.get(&index, 0).ok())
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

fn kernel_rule(rule: &InstalledRule, expires_ns: u64) -> (RuleKey, InjectRule) {
    let spec = &rule.spec;
    let mut path_prefix = [0u8; PATH_PREFIX_MAX];
    let prefix = spec.path_prefix.as_deref().unwrap_or("").as_bytes();
    path_prefix[..prefix.len()].copy_from_slice(prefix);
    let key = RuleKey {
        cgroup_id: rule.cgroup_id,
        syscall: spec.syscall_nr,
        _pad: 0,
    };
    let value = InjectRule {
        index: rule.index,
        engine: rule.engine.kernel_id(),
        errno_or_signal: match spec.fault {
            Fault::Errno(errno) => errno,
            Fault::Signal(signal) => signal as u32,
            // Delays run on the ptrace engine, whose rules never reach the kernel.
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
        path_prefix,
    };
    (key, value)
}

/// The kernel injects when a random u32 is below this: p * 2^32, and 2^32 (always) for p = 1.
fn probability_threshold(probability: f64) -> u64 {
    ((probability * 4_294_967_296.0).round() as u64).clamp(1, 1 << 32)
}

/// `bpf_ktime_get_ns()` now: CLOCK_MONOTONIC.
pub fn kernel_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
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
