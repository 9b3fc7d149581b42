//! The load layer, at the bottom of everything that touches the kernel: loads the eBPF object
//! (compiled by build.rs from `chaos-ebpf`) with its globals set, finds programs and maps by the
//! names in `chaos-common`, and summarizes verifier errors. The peers above it (monitor, HTTP,
//! trace, injection engines) take their maps and programs from the [`Ebpf`] it returns; the
//! session owns that object, so dropping the session detaches every program.
use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Map, MapError},
    programs::{Program, ProgramError},
};
use chaos_common::RegsLayout;
use thiserror::Error;

use crate::privileges;

/// The eBPF object, compiled by build.rs from `chaos-ebpf`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos-ebpf"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error("cannot load the eBPF programs: {0}")]
    Object(#[source] EbpfError),
    #[error("the eBPF object has no program {0}: chaos-user was built from mismatched sources")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0}: chaos-user was built from mismatched sources")]
    MissingMap(&'static str),
    #[error("program {name} is not of the expected type")]
    ProgramType {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    /// Loading one program failed; `summary` is the verifier's verdict in one line. The full
    /// log (hundreds of lines) is not a source, so that errors stay one line; it is logged at
    /// debug level (`RUST_LOG=debug`).
    #[error("the kernel refuses program {name}: {summary}")]
    Refused { name: &'static str, summary: String },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// Where this architecture's `struct pt_regs` keeps a call's number and arguments.
const REGS_LAYOUT: RegsLayout = match RegsLayout::native() {
    Some(layout) => layout,
    None => panic!("syschaos runs on x86_64 and aarch64 only"),
};

/// The object's read-only globals: what to compile in or out of the hot paths at load time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Globals {
    pub trace: bool,
    pub trace_failed_only: bool,
    /// Keep one traced call in N (0 and 1: all).
    pub trace_sample: u64,
    /// Time one call in N (0 and 1: every call).
    pub latency_sample: u32,
    /// The session may inject: calls go through `INFLIGHT`, where the engines meet.
    pub injecting: bool,
    /// No entry program (`--no-latency`): `sys_exit` counts each call alone.
    pub count_at_exit: bool,
}

/// Loads the object into the kernel; no program is loaded or attached yet.
pub fn load(globals: &Globals) -> Result<Ebpf, LoadError> {
    privileges::check()?;
    raise_memlock_limit();
    let exit_nr = syscalls::Sysno::exit.id() as u32;
    let exit_group_nr = syscalls::Sysno::exit_group.id() as u32;
    let trace = u8::from(globals.trace);
    let failed_only = u8::from(globals.trace_failed_only);
    let sample = globals.trace_sample.max(1);
    let latency_sample = globals.latency_sample.max(1);
    let injecting = u8::from(globals.injecting);
    let count_at_exit = u8::from(globals.count_at_exit);
    EbpfLoader::new()
        .override_global("REGS_LAYOUT", &REGS_LAYOUT, true)
        .override_global("SYS_EXIT_NR", &exit_nr, true)
        .override_global("SYS_EXIT_GROUP_NR", &exit_group_nr, true)
        .override_global("TRACE_ENABLED", &trace, true)
        .override_global("TRACE_FAILED_ONLY", &failed_only, true)
        .override_global("TRACE_SAMPLE", &sample, true)
        .override_global("LATENCY_SAMPLE", &latency_sample, true)
        .override_global("INJECTING", &injecting, true)
        .override_global("COUNT_AT_EXIT", &count_at_exit, true)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)
}

/// The program `name` of the object, as the program type `T`.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::ProgramType { name, source })
}

/// Takes the map `name` out of the object, converted to the map type `T`.
pub fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// A program's load result with the verifier's log reduced to its verdict.
pub fn loaded(name: &'static str, result: Result<(), ProgramError>) -> Result<(), LoadError> {
    result.map_err(|error| {
        log::debug!("loading {name}: {error}");
        LoadError::Refused {
            name,
            summary: short_error(&error),
        }
    })
}

/// A load error in one line: the verifier's full log is long, its last verdict line says why.
pub fn short_error(error: impl std::fmt::Display) -> String {
    let text = error.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let first = first.split(". Verifier output").next().unwrap_or(first);
    let verdict = text.lines().rev().find(|line| {
        [
            "cannot use helper",
            "unknown func",
            "not supported",
            "invalid",
            "Permission denied",
            "should have been in",
            "reserved fields",
        ]
        .iter()
        .any(|word| line.contains(word))
    });
    // The log's first line may follow the error on its line: "... Verifier output: <line>".
    let verdict = verdict.map(|line| line.rsplit("Verifier output: ").next().unwrap_or(line));
    match verdict {
        Some(verdict) if verdict != first => format!("{first}: {}", verdict.trim()),
        _ => first.to_owned(),
    }
}

/// An error and its causes in one line, for reports that carry text (`doctor --json`).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror messages often quote their source already.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

/// `bpf_ktime_get_ns()` now: CLOCK_MONOTONIC, the clock of rule expiry and trace stamps.
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
    use std::collections::BTreeSet;

    use super::*;

    /// Every program and map the loader names exists in the embedded object, and the object
    /// has no other: a rename on one side fails here, not in a user's run.
    #[test]
    fn names_match_the_embedded_object() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded object parses");
        let programs: BTreeSet<&str> = object.programs.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = chaos_common::PROGRAMS.iter().copied().collect();
        assert_eq!(programs, expected, "programs of the object vs chaos-common");
        // Sections of globals (.rodata, .bss...) are maps too, not named by us.
        let maps: BTreeSet<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with('.'))
            .collect();
        let expected: BTreeSet<&str> = chaos_common::MAPS.iter().copied().collect();
        assert_eq!(maps, expected, "maps of the object vs chaos-common");
    }

    /// x86_64's `struct user_regs_struct` (ptrace) is laid out as the kernel's `struct pt_regs`.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_layout_is_the_kernels() {
        use std::mem::offset_of;

        use libc::user_regs_struct as Regs;
        let args = [
            offset_of!(Regs, rdi),
            offset_of!(Regs, rsi),
            offset_of!(Regs, rdx),
            offset_of!(Regs, r10),
            offset_of!(Regs, r8),
            offset_of!(Regs, r9),
        ];
        assert_eq!(REGS_LAYOUT.args, args.map(|offset| offset as u32));
        assert_eq!(REGS_LAYOUT.syscall_nr as usize, offset_of!(Regs, orig_rax));
    }

    #[test]
    fn short_errors_keep_the_verdict() {
        let text = "load program failed. Verifier output: 0: r0 = 1\nR0 invalid mem access";
        assert_eq!(
            short_error(text),
            "load program failed: R0 invalid mem access"
        );
        let text = "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). \
                    Verifier output: BPF_STX uses reserved fields\nverification time 144 usec";
        assert_eq!(
            short_error(text),
            "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22): \
             BPF_STX uses reserved fields"
        );
    }
}
