//! Engine `cgroup-sock` (kernel side: `chaos-ebpf/src/inject_cgroup_sock.rs`, programs
//! `inject_cgroup_sock_*`): cgroup socket programs on the target's own cgroup refuse the
//! operation and set the errno with `bpf_set_retval` (5.18+). sendto/sendmsg are seen only with
//! an address (unconnected UDP).
use std::{fs::File, path::Path};

use aya::programs::{CgroupAttachMode, Program};
use chaos_common::{
    PROG_INJECT_CGROUP_SOCK_BIND4, PROG_INJECT_CGROUP_SOCK_BIND6, PROG_INJECT_CGROUP_SOCK_CONNECT4,
    PROG_INJECT_CGROUP_SOCK_CONNECT6, PROG_INJECT_CGROUP_SOCK_CREATE,
    PROG_INJECT_CGROUP_SOCK_SENDMSG4, PROG_INJECT_CGROUP_SOCK_SENDMSG6,
};

use super::engine::{EngineError, KernelPrograms};

/// Syscalls -> the programs that see them.
pub const COVERAGE: &[(&str, &[&str])] = &[
    (
        "connect",
        &[
            PROG_INJECT_CGROUP_SOCK_CONNECT4,
            PROG_INJECT_CGROUP_SOCK_CONNECT6,
        ],
    ),
    (
        "bind",
        &[PROG_INJECT_CGROUP_SOCK_BIND4, PROG_INJECT_CGROUP_SOCK_BIND6],
    ),
    (
        "sendto",
        &[
            PROG_INJECT_CGROUP_SOCK_SENDMSG4,
            PROG_INJECT_CGROUP_SOCK_SENDMSG6,
        ],
    ),
    (
        "sendmsg",
        &[
            PROG_INJECT_CGROUP_SOCK_SENDMSG4,
            PROG_INJECT_CGROUP_SOCK_SENDMSG6,
        ],
    ),
    ("socket", &[PROG_INJECT_CGROUP_SOCK_CREATE]),
];

pub fn coverage() -> String {
    COVERAGE
        .iter()
        .map(|(syscall, _)| *syscall)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn programs(syscall: &str) -> Option<Vec<&'static str>> {
    COVERAGE
        .iter()
        .find(|(name, _)| *name == syscall)
        .map(|(_, programs)| programs.to_vec())
}

/// Loading one program is the test: `bpf_set_retval` is refused before 5.18.
pub fn probe(kernel: &mut KernelPrograms) -> Result<(), EngineError> {
    kernel.load(PROG_INJECT_CGROUP_SOCK_CONNECT4).map_err(|e| {
        e.needs(
            "cgroup socket programs with bpf_set_retval are refused",
            "5.18+ and CONFIG_CGROUP_BPF",
        )
    })
}

/// Attaches `program` to the target's cgroup (once per cgroup).
pub fn attach(
    kernel: &mut KernelPrograms,
    program: &'static str,
    cgroup_id: u64,
    cgroup_dir: &Path,
) -> Result<(), EngineError> {
    kernel.load(program)?;
    kernel.once(format!("{program}:{cgroup_id}"), |ebpf| {
        let cgroup = File::open(cgroup_dir).map_err(|source| EngineError::Cgroup {
            path: cgroup_dir.to_owned(),
            source,
        })?;
        // On 5.7+ (we need 5.18) aya attaches with a bpf_link: it coexists with other programs
        // on the cgroup (link_create takes no multi flag) and goes away with us.
        let mode = CgroupAttachMode::Single;
        let attached = match ebpf.program_mut(program) {
            Some(Program::CgroupSockAddr(p)) => p.attach(&cgroup, mode).map(drop),
            Some(Program::CgroupSock(p)) => p.attach(&cgroup, mode).map(drop),
            _ => return Err(crate::ebpf::LoadError::MissingProgram(program).into()),
        };
        attached.map_err(|source| EngineError::Attach {
            program,
            to: cgroup_dir.display().to_string(),
            source,
        })
    })
}
