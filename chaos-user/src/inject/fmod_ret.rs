//! Engine `fmod-ret` (kernel side: `chaos-ebpf/src/inject_fmod_ret.rs`, program
//! `inject_fmod_ret`): a `BPF_MODIFY_RETURN` program returns the errno in place of a function the
//! call goes through, which then does not run. The kernel allows it on the functions of its
//! error-injection list (with CONFIG_FUNCTION_ERROR_INJECTION, every `__x64_sys_*`: any syscall)
//! and on every `security_*` function (the LSM table's syscalls, without `bpf` in the active LSM
//! list). Needs BTF and BPF trampolines.
//!
//! How it is loaded: aya 0.14 cannot load `BPF_MODIFY_RETURN` programs (nor parse their
//! sections), so the kernel program sits in an `fexit` section that aya parses and never loads;
//! this file takes its instructions from the same embedded object with aya-obj, relocated
//! against the maps aya created (their descriptors are duplicated before the peers take them),
//! and loads and attaches them with bpf(2) itself: `BPF_PROG_LOAD` once per function, with the
//! function's BTF id, then `BPF_RAW_TRACEPOINT_OPEN`. Three calls, no new dependency; libbpf-rs
//! would bring a C library and a second loader for one program, and a patched aya a fork to keep.
//! The descriptors are owned here: dropping the injector detaches everything.
use std::{
    collections::{HashMap, HashSet},
    ffi::c_long,
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::OnceLock,
};

use aya::{
    Btf, Ebpf,
    maps::{Map, MapData},
};
use aya_obj::{
    btf::BtfKind,
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type},
};
use chaos_common::{MAP_INFLIGHT, MAP_INJECT_RULES, MAP_INJECTIONS, PROG_INJECT_FMOD_RET};

use super::{
    engine::{EngineError, KernelPrograms},
    kprobe::{self, syscall_entry_function},
    lsm,
};
use crate::ebpf::{self, EBPF_OBJECT};

/// The maps `inject_fmod_ret` shares with the other programs.
const SHARED_MAPS: [&str; 3] = [MAP_INFLIGHT, MAP_INJECT_RULES, MAP_INJECTIONS];

/// Whether this kernel lets fmod_ret modify the syscalls' entry functions (the probe finds out):
/// a fact of the kernel, the same for every session of the process.
static ENTRY_FUNCTIONS: OnceLock<bool> = OnceLock::new();

/// The engine's state: the shared maps, the relocated program, what is attached where.
#[derive(Default)]
pub struct FmodRet {
    maps: Vec<(&'static str, OwnedFd)>,
    instructions: Option<Vec<bpf_insn>>,
    btf: Option<Btf>,
    /// Function -> its program and link (closing both detaches).
    attached: HashMap<String, (OwnedFd, OwnedFd)>,
}

impl FmodRet {
    /// Duplicates the descriptors of the shared maps, before the peers take them from `ebpf`.
    pub fn new(ebpf: &Ebpf) -> Self {
        let maps = SHARED_MAPS
            .into_iter()
            .filter_map(|name| {
                let fd = map_data(ebpf.map(name)?)?.fd().as_fd().try_clone_to_owned();
                Some((name, fd.ok()?))
            })
            .collect();
        Self {
            maps,
            ..Self::default()
        }
    }
}

fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::HashMap(data) | Map::LruHashMap(data) | Map::PerCpuArray(data) => Some(data),
        _ => None,
    }
}

pub fn coverage() -> String {
    match ENTRY_FUNCTIONS.get() {
        Some(true) => format!(
            "any syscall (this kernel's error-injection list has the {}* entry functions)",
            kprobe::SYSCALL_PREFIX
        ),
        Some(false) => format!(
            "through the security_* functions of the LSM hooks (this kernel has no \
             error-injection list): {}",
            lsm::coverage()
        ),
        None => format!(
            "any syscall where the kernel has the error-injection list, else through the \
             security_* functions of the LSM hooks: {}",
            lsm::coverage()
        ),
    }
}

pub fn programs(syscall: &str) -> Option<Vec<&'static str>> {
    match ENTRY_FUNCTIONS.get() == Some(&true) || lsm::programs(syscall).is_some() {
        true => Some(vec![PROG_INJECT_FMOD_RET]),
        false => None,
    }
}

/// The functions whose return a rule on `syscall` modifies.
fn functions(syscall: &str) -> Option<Vec<String>> {
    if ENTRY_FUNCTIONS.get() == Some(&true) {
        return Some(vec![syscall_entry_function(syscall)]);
    }
    let hooks = lsm::programs(syscall)?;
    Some(hooks.into_iter().filter_map(security_function).collect())
}

/// The kernel function behind an LSM program's hook: `security_<hook>`, but for one.
fn security_function(program: &str) -> Option<String> {
    match lsm::hook_of(program)? {
        "bprm_check_security" => Some("security_bprm_check".to_owned()),
        hook => Some(format!("security_{hook}")),
    }
}

/// Loads and attaches the program for real, on a syscall's entry function if the kernel allows
/// it there, else on `security_file_open`, then detaches.
pub fn probe(kernel: &mut KernelPrograms) -> Result<(), EngineError> {
    let state = &mut *kernel.fmod_ret;
    let entry = syscall_entry_function("getppid");
    // Attachments of its own, dropped (detached) at once: a rule's stay as they are.
    let result = match state.try_attach(&entry) {
        Ok(_attached) => Ok(true),
        Err(entry_error) => {
            log::debug!("fmod_ret on {entry}: {}", ebpf::chain(&entry_error));
            state
                .try_attach("security_file_open")
                .map(|_attached| false)
        }
    };
    let entry_functions = result.map_err(|e| {
        e.needs(
            "fmod_ret programs are refused",
            "BTF and BPF trampolines (fentry/fmod_ret programs)",
        )
    })?;
    let _ = ENTRY_FUNCTIONS.set(entry_functions);
    Ok(())
}

/// Attaches the program to every function a rule on `syscall` goes through (once each).
pub fn attach(kernel: &mut KernelPrograms, syscall: &str) -> Result<(), EngineError> {
    if ENTRY_FUNCTIONS.get().is_none() {
        probe(kernel)?;
    }
    let functions =
        functions(syscall).ok_or_else(|| EngineError::NotCovered(syscall.to_owned()))?;
    functions
        .iter()
        .try_for_each(|function| kernel.fmod_ret.attach_once(function))
}

impl FmodRet {
    fn attach_once(&mut self, function: &str) -> Result<(), EngineError> {
        if !self.attached.contains_key(function) {
            let attached = self.try_attach(function)?;
            self.attached.insert(function.to_owned(), attached);
        }
        Ok(())
    }

    /// Loads the program for `function` and attaches it: the program and its link.
    fn try_attach(&mut self, function: &str) -> Result<(OwnedFd, OwnedFd), EngineError> {
        if self.btf.is_none() {
            self.btf = Some(Btf::from_sys_fs().map_err(EngineError::Btf)?);
        }
        let btf_id = self.btf_id(function)?;
        let program = load(self.instructions()?, btf_id)?;
        let link = raw_tracepoint_open(&program).map_err(|source| EngineError::Bpf {
            what: format!("attaching {PROG_INJECT_FMOD_RET} to {function}"),
            source,
        })?;
        Ok((program, link))
    }

    /// The BTF id of `function`. A syscall without arguments has its `__x64_sys_*` (arm64:
    /// `__arm64_sys_*`) as an alias
    /// of `__do_sys_*` (same address, so on the error-injection list too), and BTF knows only
    /// the latter.
    fn btf_id(&self, function: &str) -> Result<u32, EngineError> {
        let btf = self
            .btf
            .as_ref()
            .ok_or(EngineError::NoBtf(function.to_owned()))?;
        let alias = function.replacen(kprobe::SYSCALL_PREFIX, "__do_sys_", 1);
        [function, alias.as_str()]
            .into_iter()
            .find_map(|name| btf.id_by_type_name_kind(name, BtfKind::Func).ok())
            .ok_or_else(|| EngineError::NoBtf(function.to_owned()))
    }

    /// The program's instructions, relocated against the shared maps (once).
    fn instructions(&mut self) -> Result<&[bpf_insn], EngineError> {
        if self.instructions.is_none() {
            self.instructions = Some(relocated(&self.maps)?);
        }
        Ok(self.instructions.as_deref().unwrap_or_default())
    }
}

/// Parses the embedded object again and relocates `inject_fmod_ret` as aya relocated the
/// programs it loads. Maps it does not share get fd -1: were it to use one, the kernel would
/// refuse it (EBADF) rather than run it against the wrong map.
fn relocated(maps: &[(&'static str, OwnedFd)]) -> Result<Vec<bpf_insn>, EngineError> {
    let object_error = |e: &dyn std::fmt::Display| EngineError::Object(e.to_string());
    let mut object = aya_obj::Object::parse(EBPF_OBJECT).map_err(|e| object_error(&e))?;
    let object_maps: Vec<(String, aya_obj::Map)> = object
        .maps
        .iter()
        .map(|(name, map)| (name.clone(), map.clone()))
        .collect();
    let fd_of = |name: &str| {
        maps.iter()
            .find(|(shared, _)| *shared == name)
            .map_or(-1, |(_, fd)| fd.as_raw_fd())
    };
    let text_sections: HashSet<usize> = object.functions.keys().map(|(index, _)| *index).collect();
    object
        .relocate_maps(
            object_maps
                .iter()
                .map(|(name, map)| (name.as_str(), fd_of(name), map)),
            &text_sections,
        )
        .map_err(|e| object_error(&e))?;
    object
        .relocate_calls(&text_sections)
        .map_err(|e| object_error(&e))?;
    let program = object
        .programs
        .get(PROG_INJECT_FMOD_RET)
        .ok_or(ebpf::LoadError::MissingProgram(PROG_INJECT_FMOD_RET))?;
    let function = object
        .functions
        .get(&program.function_key())
        .ok_or(ebpf::LoadError::MissingProgram(PROG_INJECT_FMOD_RET))?;
    Ok(function.instructions.clone())
}

/// `BPF_PROG_LOAD` of a `BPF_MODIFY_RETURN` tracing program on the function of `btf_id`. On a
/// refusal, loads again with the verifier's log for the reason.
fn load(instructions: &[bpf_insn], btf_id: u32) -> Result<OwnedFd, EngineError> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attempt = |with_log: bool| {
        // SAFETY: bpf_attr is plain data; all-zero is its "unset" value.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the fields of the BPF_PROG_LOAD member of the union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
        load.expected_attach_type = bpf_attach_type::BPF_MODIFY_RETURN as u32;
        load.attach_btf_id = btf_id;
        load.insns = instructions.as_ptr() as u64;
        load.insn_cnt = instructions.len() as u32;
        load.license = license.as_ptr() as u64;
        for (to, from) in load.prog_name.iter_mut().zip(PROG_INJECT_FMOD_RET.bytes()) {
            *to = from as std::ffi::c_char;
        }
        if with_log {
            load.log_level = 1;
            load.log_buf = log.as_mut_ptr() as u64;
            load.log_size = log.len() as u32;
        }
        sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    let error = match attempt(false) {
        Ok(fd) => return Ok(fd),
        Err(error) => error,
    };
    let _ = attempt(true);
    let verifier = String::from_utf8_lossy(&log);
    let verifier = verifier.trim_end_matches('\0');
    log::debug!("loading {PROG_INJECT_FMOD_RET}: {error}: {verifier}");
    let text = format!("BPF_PROG_LOAD: {error}. Verifier output: {verifier}");
    Err(ebpf::LoadError::Refused {
        name: PROG_INJECT_FMOD_RET,
        summary: ebpf::short_error(text),
    }
    .into())
}

/// Attaches a tracing program where it was loaded for; the link lives as long as the descriptor.
fn raw_tracepoint_open(program: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: as in `load`.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // A tracing program takes no tracepoint name: it attaches to its BTF target.
    attr.raw_tracepoint.prog_fd = program.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

/// bpf(2) for a command that returns a new descriptor.
fn sys_bpf(command: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: the kernel reads (and may write) `attr`, of the size we pass, and the buffers its
    // fields point at, which outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command as c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_hooks_map_to_their_security_functions() {
        let open = functions("openat").unwrap();
        assert!(
            open == ["security_file_open"] || open == [syscall_entry_function("openat")],
            "{open:?}"
        );
        assert_eq!(
            security_function(chaos_common::PROG_INJECT_LSM_BPRM_CHECK_SECURITY).as_deref(),
            Some("security_bprm_check")
        );
        assert_eq!(
            security_function(chaos_common::PROG_INJECT_LSM_SOCKET_CONNECT).as_deref(),
            Some("security_socket_connect")
        );
    }

    /// The program and the maps it shares are in the object, and relocate.
    #[test]
    fn the_program_relocates() {
        assert!(!relocated(&[]).unwrap().is_empty());
    }
}
