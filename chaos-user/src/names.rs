//! Syscall and errno names, from maintained tables (the `syscalls` and `nix` crates).
use nix::errno::Errno;
use syscalls::Sysno;

/// `openat` for 257 on x86_64; `syscall_N` for numbers the table does not know.
pub fn syscall_name(nr: u32) -> String {
    match Sysno::new(nr as usize) {
        Some(sysno) => sysno.name().to_owned(),
        None => format!("syscall_{nr}"),
    }
}

pub fn syscall_number(name: &str) -> Option<u32> {
    name.parse::<Sysno>().ok().map(|sysno| sysno.id() as u32)
}

/// `ENOENT` for 2; `errno_N` for numbers the table does not know.
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
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(syscall_name(Sysno::openat.id() as u32), "openat");
        assert_eq!(syscall_name(100_000), "syscall_100000");
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(512), "ERESTARTSYS");
        assert_eq!(errno_name(4000), "errno_4000");
    }
}
