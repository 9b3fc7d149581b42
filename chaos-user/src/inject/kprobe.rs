//! Engine `kprobe` (kernel side: `chaos-ebpf/src/inject_kprobe.rs`, program `inject_kprobe`):
//! a kprobe on the syscall's entry function overrides its return value, so the call is not
//! executed. Covers any syscall on the error-injection list (all of them on x86_64 and arm64);
//! needs `CONFIG_BPF_KPROBE_OVERRIDE`, which few distribution kernels have.
use aya::programs::KProbe;
use chaos_common::PROG_INJECT_KPROBE;

use super::engine::{EngineError, KernelPrograms};
use crate::{ebpf, names::Arch};

pub const COVERAGE: &str = "any syscall whose entry function is on the error-injection list (all of them on x86_64 and arm64)";

pub fn programs(_syscall: &str) -> Option<Vec<&'static str>> {
    Some(vec![PROG_INJECT_KPROBE])
}

/// Loads the program (the verifier refuses `bpf_override_return` without the config) and
/// attaches it to one entry function, then detaches.
pub fn probe(kernel: &mut KernelPrograms) -> Result<(), EngineError> {
    kernel.load(PROG_INJECT_KPROBE).map_err(|e| {
        e.needs(
            "bpf_override_return is refused",
            "CONFIG_BPF_KPROBE_OVERRIDE",
        )
    })?;
    let function = syscall_entry_function("getppid");
    let probe: &mut KProbe = ebpf::program(kernel.ebpf, PROG_INJECT_KPROBE)?;
    let link = probe
        .attach(&function, 0)
        .map_err(|source| EngineError::Attach {
            program: PROG_INJECT_KPROBE,
            to: function.clone(),
            source,
        })
        .map_err(|e| e.needs("kprobes are refused", "CONFIG_KPROBES"))?;
    probe.detach(link).map_err(|source| EngineError::Attach {
        program: PROG_INJECT_KPROBE,
        to: function,
        source,
    })
}

/// Attaches the program to `syscall`'s entry function (once per syscall).
pub fn attach(kernel: &mut KernelPrograms, syscall: &str) -> Result<(), EngineError> {
    kernel.load(PROG_INJECT_KPROBE)?;
    let function = syscall_entry_function(syscall);
    kernel.once(format!("kprobe:{function}"), |ebpf| {
        let probe: &mut KProbe = ebpf::program(ebpf, PROG_INJECT_KPROBE)?;
        probe
            .attach(&function, 0)
            .map(drop)
            .map_err(|source| EngineError::Attach {
                program: PROG_INJECT_KPROBE,
                to: format!("{function} (is it on /sys/kernel/debug/error_injection/list?)"),
                source,
            })
    })
}

/// The prefix of the syscalls' entry functions (their pt_regs wrappers) on this architecture.
pub const SYSCALL_PREFIX: &str = prefix(Arch::HOST);

const fn prefix(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "__x64_sys_",
        Arch::Aarch64 => "__arm64_sys_",
    }
}

/// The entry function a kprobe rule attaches to.
pub fn syscall_entry_function(syscall: &str) -> String {
    entry_function(Arch::HOST, syscall)
}

/// `__x64_sys_openat`; for the calls whose kernel function has another name than the call (the
/// architecture's syscall table: arch/x86/entry/syscalls/syscall_64.tbl, arm64's
/// include/uapi/asm-generic/unistd.h), that function.
fn entry_function(arch: Arch, syscall: &str) -> String {
    let function = match (arch, syscall) {
        (Arch::X86_64, "stat") => "newstat",
        (Arch::X86_64, "lstat") => "newlstat",
        (Arch::Aarch64, "fadvise64") => "fadvise64_64",
        (_, "fstat") => "newfstat",
        (_, "uname") => "newuname",
        (_, "sendfile") => "sendfile64",
        (_, "umount2") => "umount",
        (_, other) => other,
    };
    format!("{}{function}", prefix(arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_functions_of_both_architectures() {
        assert_eq!(entry_function(Arch::X86_64, "openat"), "__x64_sys_openat");
        assert_eq!(
            entry_function(Arch::Aarch64, "openat"),
            "__arm64_sys_openat"
        );
        assert_eq!(entry_function(Arch::X86_64, "fstat"), "__x64_sys_newfstat");
        assert_eq!(
            entry_function(Arch::Aarch64, "fstat"),
            "__arm64_sys_newfstat"
        );
        assert_eq!(entry_function(Arch::X86_64, "stat"), "__x64_sys_newstat");
        assert_eq!(
            entry_function(Arch::Aarch64, "newfstatat"),
            "__arm64_sys_newfstatat"
        );
        assert_eq!(
            entry_function(Arch::Aarch64, "fadvise64"),
            "__arm64_sys_fadvise64_64"
        );
        assert_eq!(
            entry_function(Arch::X86_64, "fadvise64"),
            "__x64_sys_fadvise64"
        );
        assert!(syscall_entry_function("getppid").starts_with(SYSCALL_PREFIX));
    }
}
