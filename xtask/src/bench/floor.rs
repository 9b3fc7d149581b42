//! The floor of `bench monitor`: two raw tracepoint programs that return at once, on
//! `sys_enter` and `sys_exit`. What they cost each call is what any monitor built on these
//! tracepoints pays before doing anything (the kernel's dispatch to a BPF program, twice); the
//! report gives every configuration as a multiple of it.
//!
//! Loaded with the bpf(2) system call directly: two instructions need no compiler, no object
//! file and no loader crate.
use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

use anyhow::Context as _;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
/// `r0 = 0; exit`, encoded as the kernel reads `struct bpf_insn` on little-endian x86_64.
const RETURN_ZERO: [u64; 2] = [0xb7, 0x95];

/// `union bpf_attr` for BPF_PROG_LOAD, up to the fields we set (the kernel zero-extends).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN.
#[repr(C)]
#[derive(Default)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// The two empty programs, attached while this lives.
pub struct Floor {
    _links: Vec<OwnedFd>,
}

impl Floor {
    pub fn attach() -> anyhow::Result<Self> {
        Self::attach_to(&["sys_enter", "sys_exit"])
    }

    /// An empty program on each of `tracepoints`.
    pub fn attach_to(tracepoints: &[&str]) -> anyhow::Result<Self> {
        let mut links = Vec::new();
        for &tracepoint in tracepoints {
            let program = load_empty().context("loading an empty raw_tp program")?;
            links.push(
                open_raw_tracepoint(&program, tracepoint)
                    .with_context(|| format!("attaching an empty program to {tracepoint}"))?,
            );
        }
        Ok(Self { _links: links })
    }
}

fn load_empty() -> io::Result<OwnedFd> {
    let license = c"GPL";
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: RETURN_ZERO.len() as u32,
        insns: RETURN_ZERO.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoad::default()
    };
    bpf(BPF_PROG_LOAD, &attr)
}

/// Attaches `program` to the raw tracepoint `name`; detached when the returned fd is closed.
fn open_raw_tracepoint(program: &OwnedFd, name: &str) -> anyhow::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let name = CString::new(name)?;
    let attr = RawTracepointOpen {
        name: name.as_ptr() as u64,
        prog_fd: program.as_raw_fd() as u32,
        _pad: 0,
    };
    Ok(bpf(BPF_RAW_TRACEPOINT_OPEN, &attr)?)
}

fn bpf<T>(command: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a repr(C) prefix of `union bpf_attr` that outlives the call, and every
    // pointer in it is valid for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *const T,
            size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
