//! The ways syschaos can make a syscall fail in the kernel, what each covers, and which of them
//! this kernel offers. Each engine has its programs in `chaos-ebpf/src/inject_<engine>.rs`.
use std::{fmt, str::FromStr};

use serde::Serialize;

use super::{
    InjectError,
    rule::{Fault, RuleSpec},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// kprobe on `__x64_sys_*` + `bpf_override_return`: any syscall, the call is not executed.
    Kprobe,
    /// BPF LSM hooks returning the errno.
    Lsm,
    /// cgroup socket programs with `bpf_set_retval`.
    CgroupSock,
    /// `bpf_send_signal_thread` at syscall entry.
    Signal,
    /// A tracer thread in chaos-user (`crate::ptrace`): any syscall, errno and/or delay.
    Ptrace,
}

pub const ALL_ENGINES: [Engine; 5] = [
    Engine::Kprobe,
    Engine::Lsm,
    Engine::CgroupSock,
    Engine::Signal,
    Engine::Ptrace,
];

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Kprobe => "kprobe",
            Engine::Lsm => "lsm",
            Engine::CgroupSock => "cgroup-sock",
            Engine::Signal => "signal",
            Engine::Ptrace => "ptrace",
        }
    }

    /// The `ENGINE_*` constant the kernel side knows it by.
    pub fn kernel_id(self) -> u32 {
        match self {
            Engine::Kprobe => chaos_common::ENGINE_KPROBE,
            Engine::Lsm => chaos_common::ENGINE_LSM,
            Engine::CgroupSock => chaos_common::ENGINE_CGROUP_SOCK,
            Engine::Signal => chaos_common::ENGINE_SIGNAL,
            // Never in the kernel's rule map: no kernel hook takes this value.
            Engine::Ptrace => u32::MAX,
        }
    }

    /// What the engine covers, in words (for `doctor`).
    pub fn coverage(self) -> String {
        match self {
            Engine::Kprobe => "any syscall whose entry function is on the error-injection list (all of them on x86_64)".into(),
            Engine::Lsm => LSM_COVERAGE.iter().map(|(syscalls, _)| syscalls.join(", ")).collect::<Vec<_>>().join(", "),
            Engine::CgroupSock => CGROUP_SOCK_COVERAGE.iter().map(|(syscall, _)| *syscall).collect::<Vec<_>>().join(", "),
            Engine::Signal => "any syscall (signals only: --signal)".into(),
            Engine::Ptrace => "any syscall of 64-bit tracees: errno (the call is skipped) and/or a delay before the call; every call of the target stops in chaos-user, so it costs microseconds per call (auto picks it for delays and for errnos no in-kernel engine covers)".into(),
        }
    }

    /// The engine's eBPF programs a rule on `syscall` needs, or None if the engine cannot cover it.
    pub fn programs(self, syscall: &str) -> Option<Vec<&'static str>> {
        match self {
            Engine::Kprobe => Some(vec![chaos_common::PROG_INJECT_KPROBE]),
            Engine::Signal | Engine::Ptrace => Some(Vec::new()),
            Engine::Lsm => LSM_COVERAGE
                .iter()
                .find(|(syscalls, _)| syscalls.contains(&syscall))
                .map(|(_, programs)| programs.iter().map(|hook| hook.program).collect()),
            Engine::CgroupSock => CGROUP_SOCK_COVERAGE
                .iter()
                .find(|(name, _)| *name == syscall)
                .map(|(_, programs)| programs.to_vec()),
        }
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

/// An LSM program of `chaos-ebpf/src/inject_lsm.rs` and the hook it loads against.
#[derive(Debug, Clone, Copy)]
pub struct LsmHook {
    pub program: &'static str,
    pub hook: &'static str,
}

const fn hook(program: &'static str, hook: &'static str) -> LsmHook {
    LsmHook { program, hook }
}

/// Syscalls -> the LSM hooks they pass through (the first that runs injects).
pub const LSM_COVERAGE: &[(&[&str], &[LsmHook])] = &[
    (
        &["open", "openat", "openat2", "creat"],
        &[hook("lsm_file_open", "file_open")],
    ),
    (
        &[
            "read", "readv", "pread64", "preadv", "preadv2", "write", "writev", "pwrite64",
            "pwritev", "pwritev2",
        ],
        &[hook("lsm_file_permission", "file_permission")],
    ),
    (
        &["connect"],
        &[hook("lsm_socket_connect", "socket_connect")],
    ),
    (&["bind"], &[hook("lsm_socket_bind", "socket_bind")]),
    (
        &["sendto", "sendmsg", "sendmmsg"],
        &[hook("lsm_socket_sendmsg", "socket_sendmsg")],
    ),
    (
        &["recvfrom", "recvmsg", "recvmmsg"],
        &[hook("lsm_socket_recvmsg", "socket_recvmsg")],
    ),
    (
        &["mkdir", "mkdirat"],
        &[hook("lsm_inode_mkdir", "inode_mkdir")],
    ),
    (
        &["unlink", "unlinkat"],
        &[
            hook("lsm_inode_unlink", "inode_unlink"),
            hook("lsm_inode_rmdir", "inode_rmdir"),
        ],
    ),
    (&["rmdir"], &[hook("lsm_inode_rmdir", "inode_rmdir")]),
    (
        &["rename", "renameat", "renameat2"],
        &[hook("lsm_inode_rename", "inode_rename")],
    ),
    (&["mmap"], &[hook("lsm_mmap_file", "mmap_file")]),
    (
        &["clone", "clone3", "fork", "vfork"],
        &[hook("lsm_task_alloc", "task_alloc")],
    ),
    (
        &["execve", "execveat"],
        &[hook("lsm_bprm_check", "bprm_check_security")],
    ),
];

pub fn lsm_hook_of(program: &str) -> Option<&'static str> {
    LSM_COVERAGE
        .iter()
        .flat_map(|(_, hooks)| hooks.iter())
        .find(|hook| hook.program == program)
        .map(|hook| hook.hook)
}

/// Syscalls -> the cgroup socket programs of `chaos-ebpf/src/inject_cgroup_sock.rs`.
/// sendto/sendmsg are seen only with an address (unconnected UDP).
pub const CGROUP_SOCK_COVERAGE: &[(&str, &[&str])] = &[
    ("connect", &["sock_connect4", "sock_connect6"]),
    ("bind", &["sock_bind4", "sock_bind6"]),
    ("sendto", &["sock_sendmsg4", "sock_sendmsg6"]),
    ("sendmsg", &["sock_sendmsg4", "sock_sendmsg6"]),
    ("socket", &["sock_create"]),
];

/// The entry function a kprobe engine rule attaches to.
pub fn syscall_entry_function(syscall: &str) -> String {
    let prefix = if cfg!(target_arch = "aarch64") {
        "__arm64_sys_"
    } else {
        "__x64_sys_"
    };
    format!("{prefix}{syscall}")
}

/// Whether each engine works on this kernel, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    pub kprobe: Result<(), String>,
    pub lsm: Result<(), String>,
    pub cgroup_sock: Result<(), String>,
    pub signal: Result<(), String>,
    pub ptrace: Result<(), String>,
}

impl Capabilities {
    pub fn of(&self, engine: Engine) -> &Result<(), String> {
        match engine {
            Engine::Kprobe => &self.kprobe,
            Engine::Lsm => &self.lsm,
            Engine::CgroupSock => &self.cgroup_sock,
            Engine::Signal => &self.signal,
            Engine::Ptrace => &self.ptrace,
        }
    }

    /// The engine a rule runs on: the forced one if it can, else the best that can.
    pub fn choose(&self, rule: &RuleSpec) -> Result<Engine, InjectError> {
        if let Fault::Signal(_) = rule.fault {
            return match rule.engine {
                EngineChoice::Auto | EngineChoice::Forced(Engine::Signal) => match &self.signal {
                    Ok(()) => Ok(Engine::Signal),
                    Err(why) => Err(InjectError::EngineUnavailable {
                        engine: Engine::Signal,
                        why: why.clone(),
                    }),
                },
                EngineChoice::Forced(engine) => Err(InjectError::SignalNeedsSignalEngine(engine)),
            };
        }
        let candidates = match rule.engine {
            EngineChoice::Forced(Engine::Signal) => {
                return Err(InjectError::SignalEngineNeedsSignal);
            }
            // Only a tracer can hold a thread before its call (BPF programs cannot sleep).
            EngineChoice::Forced(engine) if rule.delay.is_some() && engine != Engine::Ptrace => {
                return Err(InjectError::DelayNeedsPtrace(engine));
            }
            EngineChoice::Auto if rule.delay.is_some() => vec![Engine::Ptrace],
            EngineChoice::Forced(engine) => vec![engine],
            EngineChoice::Auto => vec![
                Engine::Kprobe,
                Engine::Lsm,
                Engine::CgroupSock,
                Engine::Ptrace,
            ],
        };
        let mut reasons = Vec::new();
        for &engine in &candidates {
            match (self.of(engine), engine.programs(&rule.syscall)) {
                (Ok(()), Some(_)) => return Ok(engine),
                (Err(why), _) => reasons.push(format!("{engine}: {why}")),
                (Ok(()), None) => {
                    reasons.push(format!("{engine}: covers only {}", engine.coverage()))
                }
            }
        }
        Err(InjectError::NoEngine {
            syscall: rule.syscall.clone(),
            reasons: reasons.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(kprobe: bool, lsm: bool) -> Capabilities {
        caps_with_ptrace(kprobe, lsm, true)
    }

    fn caps_with_ptrace(kprobe: bool, lsm: bool, ptrace: bool) -> Capabilities {
        let works = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err("not on this kernel".to_owned())
            }
        };
        Capabilities {
            kprobe: works(kprobe),
            lsm: works(lsm),
            cgroup_sock: Ok(()),
            signal: Ok(()),
            ptrace: works(ptrace),
        }
    }

    #[test]
    fn auto_picks_the_best_engine_that_covers_the_call() {
        let openat = RuleSpec::parse("openat=EACCES").unwrap();
        let connect = RuleSpec::parse("connect=ECONNREFUSED").unwrap();
        let fsync = RuleSpec::parse("fsync=EIO").unwrap();
        assert_eq!(caps(true, true).choose(&openat).unwrap(), Engine::Kprobe);
        assert_eq!(caps(false, true).choose(&openat).unwrap(), Engine::Lsm);
        assert_eq!(
            caps(false, false).choose(&connect).unwrap(),
            Engine::CgroupSock
        );
        // No in-kernel engine covers fsync there: the tracer does.
        assert_eq!(caps(false, true).choose(&fsync).unwrap(), Engine::Ptrace);
        assert_eq!(caps(true, true).choose(&fsync).unwrap(), Engine::Kprobe);
        let error = caps_with_ptrace(false, true, false)
            .choose(&fsync)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no engine can inject fsync errors"),
            "{error}"
        );
        assert!(error.contains("kprobe: not on this kernel"), "{error}");
        assert!(error.contains("lsm: covers only"), "{error}");
        assert!(error.contains("ptrace: not on this kernel"), "{error}");
    }

    #[test]
    fn delays_run_on_ptrace() {
        let delay = RuleSpec::parse("openat,delay=10ms").unwrap();
        let both = RuleSpec::parse("openat=EACCES,delay=10ms").unwrap();
        // Even where kprobe could inject the errno, only ptrace can delay.
        assert_eq!(caps(true, true).choose(&delay).unwrap(), Engine::Ptrace);
        assert_eq!(caps(true, true).choose(&both).unwrap(), Engine::Ptrace);
        let forced = RuleSpec::parse("openat=EACCES,delay=10ms,engine=kprobe").unwrap();
        let error = caps(true, true).choose(&forced).unwrap_err().to_string();
        assert!(error.contains("kprobe cannot delay calls"), "{error}");
        let error = caps_with_ptrace(true, true, false)
            .choose(&delay)
            .unwrap_err()
            .to_string();
        assert!(error.contains("ptrace: not on this kernel"), "{error}");
        let forced = RuleSpec::parse("getppid=EPERM,engine=ptrace").unwrap();
        assert_eq!(caps(true, true).choose(&forced).unwrap(), Engine::Ptrace);
    }

    #[test]
    fn forced_engines_are_honoured_or_refused() {
        let mut connect = RuleSpec::parse("connect=ECONNREFUSED,engine=lsm").unwrap();
        assert!(
            caps(true, false)
                .choose(&connect)
                .unwrap_err()
                .to_string()
                .contains("lsm: not on this kernel")
        );
        connect.engine = EngineChoice::Forced(Engine::CgroupSock);
        assert_eq!(
            caps(true, true).choose(&connect).unwrap(),
            Engine::CgroupSock
        );
        let kill = RuleSpec::parse("fsync=SIGKILL,nth=3").unwrap();
        assert_eq!(caps(false, false).choose(&kill).unwrap(), Engine::Signal);
    }
}
