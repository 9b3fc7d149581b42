//! The ways syschaos can make a syscall fail, and which of them this kernel offers. Each engine
//! is a peer named alike across the layers: kernel programs in
//! `chaos-ebpf/src/inject_<engine>.rs` named `inject_<engine>_*`, its loader here in
//! `inject/<engine>.rs` (what it covers, how it is probed for real, how it attaches), and its
//! tests named after it. This file only dispatches to them.
use std::{collections::HashSet, fmt, path::PathBuf, str::FromStr};

use aya::{Ebpf, programs::Program};
use serde::Serialize;
use thiserror::Error;

use super::{
    InjectError, cgroup_sock,
    fmod_ret::{self, FmodRet},
    kprobe, lsm, ptrace, signal, stop,
};
use crate::ebpf::{self, LoadError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// kprobe on `__x64_sys_*` (arm64: `__arm64_sys_*`) + `bpf_override_return`: any syscall,
    /// the call is not executed.
    Kprobe,
    /// `BPF_MODIFY_RETURN` on `__x64_sys_*` (`__arm64_sys_*`) or the `security_*` functions:
    /// the call is not run.
    FmodRet,
    /// BPF LSM hooks returning the errno.
    Lsm,
    /// cgroup socket programs with `bpf_set_retval`.
    CgroupSock,
    /// `bpf_send_signal_thread` at syscall entry.
    Signal,
    /// A tracer thread in chaos-user (`crate::ptrace`): any syscall, errno and/or delay.
    Ptrace,
    /// Decided at entry in the kernel, which stops the thread with SIGSTOP; chaos-user's tracer
    /// applies the errno and/or delay at that stop only.
    Stop,
}

pub const ALL_ENGINES: [Engine; 7] = [
    Engine::Kprobe,
    Engine::FmodRet,
    Engine::Lsm,
    Engine::CgroupSock,
    Engine::Signal,
    Engine::Ptrace,
    Engine::Stop,
];

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Kprobe => "kprobe",
            Engine::FmodRet => "fmod-ret",
            Engine::Lsm => "lsm",
            Engine::CgroupSock => "cgroup-sock",
            Engine::Signal => "signal",
            Engine::Ptrace => "ptrace",
            Engine::Stop => "stop",
        }
    }

    /// The `ENGINE_*` constant the kernel side knows it by.
    pub fn kernel_id(self) -> u32 {
        match self {
            Engine::Kprobe => chaos_common::ENGINE_KPROBE,
            Engine::FmodRet => chaos_common::ENGINE_FMOD_RET,
            Engine::Lsm => chaos_common::ENGINE_LSM,
            Engine::CgroupSock => chaos_common::ENGINE_CGROUP_SOCK,
            Engine::Signal => chaos_common::ENGINE_SIGNAL,
            Engine::Stop => chaos_common::ENGINE_STOP,
            // Never in the kernel's rule map: no kernel hook takes this value.
            Engine::Ptrace => u32::MAX,
        }
    }

    /// What the engine covers, in words (for `doctor`).
    pub fn coverage(self) -> String {
        match self {
            Engine::Kprobe => kprobe::COVERAGE.into(),
            Engine::FmodRet => fmod_ret::coverage(),
            Engine::Lsm => lsm::coverage(),
            Engine::CgroupSock => cgroup_sock::coverage(),
            Engine::Signal => signal::COVERAGE.into(),
            Engine::Ptrace => ptrace::COVERAGE.into(),
            Engine::Stop => stop::COVERAGE.into(),
        }
    }

    /// The engine's eBPF programs a rule on `syscall` needs, or None if the engine cannot cover it.
    pub fn programs(self, syscall: &str) -> Option<Vec<&'static str>> {
        match self {
            Engine::Kprobe => kprobe::programs(syscall),
            Engine::FmodRet => fmod_ret::programs(syscall),
            Engine::Lsm => lsm::programs(syscall),
            Engine::CgroupSock => cgroup_sock::programs(syscall),
            Engine::Signal => signal::programs(syscall),
            Engine::Ptrace => ptrace::programs(syscall),
            Engine::Stop => stop::programs(syscall),
        }
    }

    /// Whether the engine works here, tried for real (a program of its kind loaded, and
    /// attached where attaching is what can fail).
    fn probe(self, kernel: &mut KernelPrograms) -> Result<(), EngineError> {
        match self {
            Engine::Kprobe => kprobe::probe(kernel),
            Engine::FmodRet => fmod_ret::probe(kernel),
            Engine::Lsm => lsm::probe(kernel),
            Engine::CgroupSock => cgroup_sock::probe(kernel),
            Engine::Signal => signal::probe(kernel),
            Engine::Ptrace => ptrace::probe(),
            Engine::Stop => stop::probe(),
        }
    }

    /// Attaches what a rule on `syscall` for the target in `cgroup_dir` needs (once each).
    pub fn attach(
        self,
        kernel: &mut KernelPrograms,
        syscall: &str,
        cgroup_id: u64,
        cgroup_dir: &std::path::Path,
    ) -> Result<(), EngineError> {
        let programs = self
            .programs(syscall)
            .ok_or_else(|| EngineError::NotCovered(syscall.to_owned()))?;
        match self {
            Engine::Kprobe => kprobe::attach(kernel, syscall),
            Engine::FmodRet => fmod_ret::attach(kernel, syscall),
            Engine::Lsm => programs
                .into_iter()
                .try_for_each(|program| lsm::attach(kernel, program)),
            Engine::CgroupSock => programs.into_iter().try_for_each(|program| {
                cgroup_sock::attach(kernel, program, cgroup_id, cgroup_dir)
            }),
            // Carried out by the entry program, or by chaos-user's tracer.
            Engine::Signal | Engine::Ptrace | Engine::Stop => Ok(()),
        }
    }
}

/// Why an engine cannot work here, or cannot attach.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A probe's failure with what the kernel lacks.
    #[error("{what}: the kernel needs {needs}")]
    Needs {
        what: &'static str,
        needs: &'static str,
        #[source]
        source: Box<EngineError>,
    },
    #[error("the engine does not cover {0}")]
    NotCovered(String),
    #[error("no kernel BTF")]
    Btf(#[source] aya::BtfError),
    #[error("cannot attach {program} to {to}")]
    Attach {
        program: &'static str,
        to: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot open cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: is securityfs mounted?")]
    Securityfs {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`bpf` is not in the active LSM list ({0}): boot with lsm=...,bpf")]
    LsmInactive(String),
    /// A condition of the host, not of one call (Yama, capabilities, architecture).
    #[error("{0}")]
    Host(String),
    #[error("{what}")]
    Bpf {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel's BTF has no function {0}")]
    NoBtf(String),
    #[error("the eBPF object: {0}")]
    Object(String),
    #[error("rule map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

impl EngineError {
    /// This error as the reason a probe failed: `what` went wrong, the kernel `needs` more.
    pub fn needs(self, what: &'static str, needs: &'static str) -> Self {
        Self::Needs {
            what,
            needs,
            source: Box::new(self),
        }
    }
}

/// The object's injection programs as the engines load and attach them: each program is loaded
/// once, and each attachment (named by its engine) made once.
pub struct KernelPrograms<'a> {
    pub ebpf: &'a mut Ebpf,
    done: &'a mut HashSet<String>,
    /// The fmod-ret engine loads its programs itself (see its file).
    pub fmod_ret: &'a mut FmodRet,
}

impl<'a> KernelPrograms<'a> {
    pub fn new(
        ebpf: &'a mut Ebpf,
        done: &'a mut HashSet<String>,
        fmod_ret: &'a mut FmodRet,
    ) -> Self {
        Self {
            ebpf,
            done,
            fmod_ret,
        }
    }

    /// Loads a program of the object once; later calls are no-ops.
    pub fn load(&mut self, name: &'static str) -> Result<(), EngineError> {
        self.once(format!("load:{name}"), |ebpf| {
            match ebpf.program_mut(name) {
                None => Err(LoadError::MissingProgram(name).into()),
                Some(Program::Lsm(_)) => lsm::load(ebpf, name),
                Some(Program::KProbe(p)) => Ok(ebpf::loaded(name, p.load())?),
                Some(Program::RawTracePoint(p)) => Ok(ebpf::loaded(name, p.load())?),
                Some(Program::CgroupSockAddr(p)) => Ok(ebpf::loaded(name, p.load())?),
                Some(Program::CgroupSock(p)) => Ok(ebpf::loaded(name, p.load())?),
                Some(_) => Err(LoadError::MissingProgram(name).into()),
            }
        })
    }

    /// Whether an action of this `key` succeeded before.
    pub fn is_done(&self, key: &str) -> bool {
        self.done.contains(key)
    }

    /// Runs `action` unless an action of this `key` succeeded before.
    pub fn once(
        &mut self,
        key: String,
        action: impl FnOnce(&mut Ebpf) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        if self.is_done(&key) {
            return Ok(());
        }
        action(self.ebpf)?;
        self.done.insert(key);
        Ok(())
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    #[default]
    Auto,
    Forced(Engine),
}

impl FromStr for EngineChoice {
    type Err = InjectError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "auto" {
            return Ok(Self::Auto);
        }
        ALL_ENGINES
            .into_iter()
            .find(|engine| engine.name() == text)
            .map(Self::Forced)
            .ok_or_else(|| InjectError::UnknownEngine(text.to_owned()))
    }
}

/// Whether each engine works on this kernel, and why not (the reasons as text: this is a report,
/// for `doctor --json` and refusals).
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    pub kprobe: Result<(), String>,
    pub fmod_ret: Result<(), String>,
    pub lsm: Result<(), String>,
    pub cgroup_sock: Result<(), String>,
    pub signal: Result<(), String>,
    pub ptrace: Result<(), String>,
    pub stop: Result<(), String>,
}

impl Capabilities {
    /// Probes every engine for real; the in-kernel ones only where the injecting entry program
    /// loaded (`in_kernel`), as they take their decisions from it.
    pub fn probe(kernel: &mut KernelPrograms, in_kernel: &Result<(), String>) -> Self {
        let mut probe = |engine: Engine| match in_kernel {
            Err(why) if engine != Engine::Ptrace => Err(why.clone()),
            _ => engine.probe(kernel).map_err(|error| ebpf::chain(&error)),
        };
        Self {
            kprobe: probe(Engine::Kprobe),
            fmod_ret: probe(Engine::FmodRet),
            lsm: probe(Engine::Lsm),
            cgroup_sock: probe(Engine::CgroupSock),
            signal: probe(Engine::Signal),
            ptrace: probe(Engine::Ptrace),
            stop: probe(Engine::Stop),
        }
    }

    pub fn of(&self, engine: Engine) -> &Result<(), String> {
        match engine {
            Engine::Kprobe => &self.kprobe,
            Engine::FmodRet => &self.fmod_ret,
            Engine::Lsm => &self.lsm,
            Engine::CgroupSock => &self.cgroup_sock,
            Engine::Signal => &self.signal,
            Engine::Ptrace => &self.ptrace,
            Engine::Stop => &self.stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Arch;

    /// The programs each engine asks for are programs of the object (whose names
    /// `ebpf::tests` checks against `chaos_common::PROGRAMS`), and LSM programs name their hook.
    #[test]
    fn engines_ask_for_programs_of_the_object() {
        for engine in ALL_ENGINES {
            let names = Arch::X86_64.syscalls().chain(Arch::Aarch64.syscalls());
            for syscall in names {
                for name in engine.programs(syscall).unwrap_or_default() {
                    assert!(
                        chaos_common::PROGRAMS.contains(&name),
                        "{engine} asks for {name}"
                    );
                    if engine == Engine::Lsm {
                        assert!(lsm::hook_of(name).is_some_and(|hook| !hook.is_empty()));
                    }
                }
            }
        }
    }
}
