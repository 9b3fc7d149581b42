//! Syscall and errno names, from maintained tables (the `syscalls` and `nix` crates). Syscall
//! names are the running architecture's ([`Arch::HOST`]): arm64 has no `open`, `stat`, `fork`...
//! The architecture is a parameter so that tests on one can check the other, and so that a name
//! of the other table gets an error that says so.
use std::fmt;

use nix::errno::Errno;
use syscalls::{aarch64, x86_64};

/// The architectures chaos-user runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// arm64's number 79, which the kernel calls `newfstatat` (`__arm64_sys_newfstatat`, the
/// `sys_enter_newfstatat` tracepoint, libc's `SYS_newfstatat`); the `syscalls` crate (0.8.1)
/// calls it `fstatat`.
const AARCH64_NEWFSTATAT: u32 = 79;
/// The `*_time64` calls 403..=423, which the `syscalls` crate (0.8.1) lists for arm64 but only
/// 32-bit architectures have (arm64's table has `sys_ni_syscall` there).
const AARCH64_TIME64: std::ops::RangeInclusive<u32> = 403..=423;

impl Arch {
    pub const HOST: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    fn other(self) -> Arch {
        match self {
            Arch::X86_64 => Arch::Aarch64,
            Arch::Aarch64 => Arch::X86_64,
        }
    }

    /// The kernel's name of syscall `nr` on this architecture.
    pub fn syscall_name(self, nr: u32) -> Option<&'static str> {
        match self {
            Arch::X86_64 => x86_64::Sysno::new(nr as usize).map(|sysno| sysno.name()),
            Arch::Aarch64 if nr == AARCH64_NEWFSTATAT => Some("newfstatat"),
            Arch::Aarch64 if AARCH64_TIME64.contains(&nr) => None,
            Arch::Aarch64 => aarch64::Sysno::new(nr as usize).map(|sysno| sysno.name()),
        }
    }

    /// The number of syscall `name` on this architecture.
    pub fn syscall_number(self, name: &str) -> Option<u32> {
        let nr = match self {
            Arch::X86_64 => name.parse::<x86_64::Sysno>().ok()?.id(),
            Arch::Aarch64 if name == "newfstatat" => return Some(AARCH64_NEWFSTATAT),
            Arch::Aarch64 => name.parse::<aarch64::Sysno>().ok()?.id(),
        } as u32;
        // Through the name, so the corrections above hold both ways.
        (self.syscall_name(nr) == Some(name)).then_some(nr)
    }

    /// Every syscall name of this architecture.
    #[cfg(test)]
    pub fn syscalls(self) -> impl Iterator<Item = &'static str> {
        (0..1024).filter_map(move |nr| self.syscall_name(nr))
    }

    /// `name` if it is a syscall here, else the error that says why not.
    pub fn check_syscall(self, name: &str) -> Result<u32, UnknownSyscall> {
        self.syscall_number(name).ok_or_else(|| UnknownSyscall {
            name: name.to_owned(),
            arch: self,
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A syscall name that is not one of the architecture's: misspelt, or the other table's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnknownSyscall {
    pub name: String,
    pub arch: Arch,
}

impl fmt::Display for UnknownSyscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, arch) = (&self.name, self.arch);
        if arch.other().syscall_number(name).is_none() {
            return write!(
                f,
                "unknown syscall `{name}` (names as in `man 2 syscalls`, e.g. openat)"
            );
        }
        write!(f, "`{name}` is not a syscall on {arch}")?;
        match replacement(name).filter(|new| arch.syscall_number(new).is_some()) {
            Some(new) => write!(f, " (use {new})"),
            None => write!(f, " (only on {})", arch.other()),
        }
    }
}

/// x86_64's legacy calls -> the call that does their work on arm64 (whose table starts from the
/// generic one, without the calls that an `*at`, `p*` or flags variant replaces); also what the
/// C libraries call there instead.
const REPLACEMENTS: &[(&[&str], &str)] = &[
    (&["open", "creat"], "openat"),
    (&["stat", "lstat"], "newfstatat"),
    (&["access"], "faccessat"),
    (&["fork", "vfork"], "clone"),
    (&["poll", "pause"], "ppoll"),
    (&["select"], "pselect6"),
    (&["dup2"], "dup3"),
    (&["pipe"], "pipe2"),
    (&["unlink", "rmdir"], "unlinkat"),
    (&["mkdir"], "mkdirat"),
    (&["rename"], "renameat"),
    (&["readlink"], "readlinkat"),
    (&["chmod"], "fchmodat"),
    (&["chown", "lchown"], "fchownat"),
    (&["link"], "linkat"),
    (&["symlink"], "symlinkat"),
    (&["mknod"], "mknodat"),
    (&["epoll_wait"], "epoll_pwait"),
    (&["epoll_create"], "epoll_create1"),
    (&["inotify_init"], "inotify_init1"),
    (&["eventfd"], "eventfd2"),
    (&["signalfd"], "signalfd4"),
    (&["getdents"], "getdents64"),
    (&["utime", "utimes", "futimesat"], "utimensat"),
    (&["time"], "clock_gettime"),
    (&["alarm"], "setitimer"),
    (&["getpgrp"], "getpgid"),
];

/// The call that replaces x86_64's legacy `name` on arm64 (see [`REPLACEMENTS`]).
pub fn replacement(name: &str) -> Option<&'static str> {
    REPLACEMENTS
        .iter()
        .find(|(old, _)| old.contains(&name))
        .map(|(_, new)| *new)
}

/// `openat` for 257 on x86_64 (56 on aarch64); `syscall_N` for numbers the table does not know.
pub fn syscall_name(nr: u32) -> String {
    match Arch::HOST.syscall_name(nr) {
        Some(name) => name.to_owned(),
        None => format!("syscall_{nr}"),
    }
}

/// The number of syscall `name` on this architecture, or the error naming the problem.
pub fn syscall_number(name: &str) -> Result<u32, UnknownSyscall> {
    Arch::HOST.check_syscall(name)
}

/// `ENOENT` for 2; `errno_N` for numbers the table does not know. x86_64 and arm64 share the
/// kernel's generic errno numbers (asm-generic/errno*.h), so one table serves both.
pub fn errno_name(errno: u32) -> String {
    if let Some(name) = kernel_internal_errno(errno) {
        return name.to_owned();
    }
    match Errno::from_raw(errno as i32) {
        Errno::UnknownErrno => format!("errno_{errno}"),
        known => format!("{known:?}"),
    }
}

/// Codes from the kernel's include/linux/errno.h that `sys_exit` shows before the kernel restarts
/// the call or turns them into EINTR; the process never sees them, so no libc table has them.
fn kernel_internal_errno(errno: u32) -> Option<&'static str> {
    Some(match errno {
        512 => "ERESTARTSYS",
        513 => "ERESTARTNOINTR",
        514 => "ERESTARTNOHAND",
        515 => "ENOIOCTLCMD",
        516 => "ERESTART_RESTARTBLOCK",
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
