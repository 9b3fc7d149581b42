//! Engine `lsm` (kernel side: `chaos-ebpf/src/inject_lsm.rs`, programs `inject_lsm_<hook>`):
//! BPF LSM hooks return the errno, so the kernel refuses the operation the way a security module
//! would. Needs `bpf` in the active LSM list and kernel BTF.
use aya::{Btf, programs::Lsm};
use chaos_common::{
    PROG_INJECT_LSM_BPRM_CHECK_SECURITY, PROG_INJECT_LSM_FILE_OPEN,
    PROG_INJECT_LSM_FILE_PERMISSION, PROG_INJECT_LSM_INODE_MKDIR, PROG_INJECT_LSM_INODE_RENAME,
    PROG_INJECT_LSM_INODE_RMDIR, PROG_INJECT_LSM_INODE_UNLINK, PROG_INJECT_LSM_MMAP_FILE,
    PROG_INJECT_LSM_PREFIX, PROG_INJECT_LSM_SOCKET_BIND, PROG_INJECT_LSM_SOCKET_CONNECT,
    PROG_INJECT_LSM_SOCKET_RECVMSG, PROG_INJECT_LSM_SOCKET_SENDMSG, PROG_INJECT_LSM_TASK_ALLOC,
};

use super::engine::{EngineError, KernelPrograms};
use crate::{ebpf, names::Arch};

/// Syscalls -> the LSM hooks they pass through (the first that runs injects). Both
/// architectures' names: arm64 reaches each hook through the `*at` calls only.
pub const COVERAGE: &[(&[&str], &[&str])] = &[
    (
        &["open", "openat", "openat2", "creat"],
        &[PROG_INJECT_LSM_FILE_OPEN],
    ),
    (
        &[
            "read", "readv", "pread64", "preadv", "preadv2", "write", "writev", "pwrite64",
            "pwritev", "pwritev2",
        ],
        &[PROG_INJECT_LSM_FILE_PERMISSION],
    ),
    (&["connect"], &[PROG_INJECT_LSM_SOCKET_CONNECT]),
    (&["bind"], &[PROG_INJECT_LSM_SOCKET_BIND]),
    (
        &["sendto", "sendmsg", "sendmmsg"],
        &[PROG_INJECT_LSM_SOCKET_SENDMSG],
    ),
    (
        &["recvfrom", "recvmsg", "recvmmsg"],
        &[PROG_INJECT_LSM_SOCKET_RECVMSG],
    ),
    (&["mkdir", "mkdirat"], &[PROG_INJECT_LSM_INODE_MKDIR]),
    (
        &["unlink", "unlinkat"],
        &[PROG_INJECT_LSM_INODE_UNLINK, PROG_INJECT_LSM_INODE_RMDIR],
    ),
    (&["rmdir"], &[PROG_INJECT_LSM_INODE_RMDIR]),
    (
        &["rename", "renameat", "renameat2"],
        &[PROG_INJECT_LSM_INODE_RENAME],
    ),
    (&["mmap"], &[PROG_INJECT_LSM_MMAP_FILE]),
    (
        &["clone", "clone3", "fork", "vfork"],
        &[PROG_INJECT_LSM_TASK_ALLOC],
    ),
    (
        &["execve", "execveat"],
        &[PROG_INJECT_LSM_BPRM_CHECK_SECURITY],
    ),
];

const SECURITYFS_LSM: &str = "/sys/kernel/security/lsm";

/// The covered syscalls of this architecture.
pub fn coverage() -> String {
    coverage_on(Arch::HOST)
}

fn coverage_on(arch: Arch) -> String {
    COVERAGE
        .iter()
        .flat_map(|(syscalls, _)| syscalls.iter())
        .filter(|name| arch.syscall_number(name).is_some())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn programs(syscall: &str) -> Option<Vec<&'static str>> {
    COVERAGE
        .iter()
        .find(|(syscalls, _)| syscalls.contains(&syscall))
        .map(|(_, programs)| programs.to_vec())
}

/// The LSM hook a program loads against: its name after `inject_lsm_`.
pub fn hook_of(program: &str) -> Option<&str> {
    program.strip_prefix(PROG_INJECT_LSM_PREFIX)
}

/// `bpf` must be in the active LSM list (securityfs says), and one program must load and attach.
pub fn probe(kernel: &mut KernelPrograms) -> Result<(), EngineError> {
    let active =
        std::fs::read_to_string(SECURITYFS_LSM).map_err(|source| EngineError::Securityfs {
            path: SECURITYFS_LSM,
            source,
        })?;
    if !active.trim().split(',').any(|lsm| lsm == "bpf") {
        return Err(EngineError::LsmInactive(active.trim().to_owned()));
    }
    let program = PROG_INJECT_LSM_FILE_OPEN;
    kernel
        .load(program)
        .map_err(|e| e.needs("BPF LSM programs are refused", "BTF and BPF LSM"))?;
    // Loading is not enough: a kernel without BPF trampolines on kernel functions for its
    // architecture (Debian's arm64 6.1) loads LSM programs but refuses to attach them
    // (ENOTSUPP). Attached without a rule, the program injects nothing, and the probe's link
    // goes at once; a program a rule attached is not attached twice.
    if kernel.is_done(program) {
        return Ok(());
    }
    let lsm: &mut Lsm = ebpf::program(kernel.ebpf, program)?;
    let attach_error = |source| {
        EngineError::Attach {
            program,
            to: hook_of(program).unwrap_or_default().to_owned(),
            source,
        }
        .needs(
            "BPF LSM programs cannot attach",
            "BPF trampolines (on arm64: ftrace direct calls)",
        )
    };
    let link = lsm.attach().map_err(attach_error)?;
    lsm.detach(link).map_err(attach_error)
}

/// Loads `program` against its hook (needs the kernel's BTF).
pub fn load(ebpf: &mut aya::Ebpf, program: &'static str) -> Result<(), EngineError> {
    let hook = hook_of(program).ok_or(ebpf::LoadError::MissingProgram(program))?;
    let btf = Btf::from_sys_fs().map_err(EngineError::Btf)?;
    let lsm: &mut Lsm = ebpf::program(ebpf, program)?;
    Ok(ebpf::loaded(program, lsm.load(hook, &btf))?)
}

/// Attaches `program` (once: LSM programs are global; the rule map picks the target).
pub fn attach(kernel: &mut KernelPrograms, program: &'static str) -> Result<(), EngineError> {
    kernel.load(program)?;
    kernel.once(program.to_owned(), |ebpf| {
        let lsm: &mut Lsm = ebpf::program(ebpf, program)?;
        lsm.attach()
            .map(drop)
            .map_err(|source| EngineError::Attach {
                program,
                to: hook_of(program).unwrap_or_default().to_owned(),
                source,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names;

    /// Each name is a syscall of one table, and arm64's replacement of an x86_64-only call
    /// passes through the same hooks (unlinkat through rmdir's too).
    #[test]
    fn covers_both_architectures() {
        for name in COVERAGE.iter().flat_map(|(syscalls, _)| syscalls.iter()) {
            let known = Arch::X86_64.syscall_number(name).is_some()
                || Arch::Aarch64.syscall_number(name).is_some();
            assert!(known, "{name} is no syscall");
            let (Some(new), Some(old)) = (names::replacement(name), programs(name)) else {
                continue;
            };
            let covered = programs(new).unwrap_or_default();
            assert!(old.iter().all(|p| covered.contains(p)), "{name} -> {new}");
        }
        let arm64 = coverage_on(Arch::Aarch64);
        assert!(arm64.starts_with("openat, openat2, read,"), "{arm64}");
        assert!(
            !arm64
                .split(", ")
                .any(|name| ["open", "fork", "rmdir"].contains(&name))
        );
        assert!(coverage_on(Arch::X86_64).starts_with("open, openat, openat2, creat, read,"));
    }
}
