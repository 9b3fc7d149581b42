//! Engine `kprobe` (kernel side: `chaos-ebpf/src/inject_kprobe.rs`, program `inject_kprobe`):
//! a kprobe on the syscall's entry function overrides its return value, so the call is not
//! executed. Covers any syscall on the error-injection list (all of them on x86_64 and arm64);
//! needs `CONFIG_BPF_KPROBE_OVERRIDE`, which few distribution kernels have.
use aya::programs::KProbe;
use chaos_common::PROG_INJECT_KPROBE;

use super::engine::{EngineError, KernelPrograms};
use crate::ebpf;

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
pub const SYSCALL_PREFIX: &str = if cfg!(target_arch = "aarch64") {
    "__arm64_sys_"
} else {
    "__x64_sys_"
};

/// The entry function a kprobe rule attaches to.
pub fn syscall_entry_function(syscall: &str) -> String {
    format!("{SYSCALL_PREFIX}{syscall}")
}
