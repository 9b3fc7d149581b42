//! Turning a traced call's raw arguments into what people read: paths, fds, sizes, open flags
//! by name, socket addresses, signal names. Calls not in the table show raw arguments.
use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

use chaos_common::{NO_ARG, TraceSpec};
use nix::{fcntl::OFlag, sys::signal::Signal};

/// How to show one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    Fd,
    /// A directory fd of the *at calls: AT_FDCWD by name.
    DirFd,
    /// A path string, copied by the kernel program.
    Path,
    OpenFlags,
    Mode,
    Size,
    Int,
    Hex,
    Signal,
    /// A socket address, copied by the kernel program.
    SockAddr,
}

use Arg::*;

/// The calls the trace decodes; the rest show raw arguments. No maintained crate carries syscall
/// signatures, so this is the list people need most (file, socket, process and signal calls),
/// of both architectures: arm64 has only the `*at`, `p*` and flags variants of x86_64's legacy
/// calls (`names::replacement`), so each of those is here too.
const SIGNATURES: &[(&str, &[Arg])] = &[
    ("open", &[Path, OpenFlags, Mode]),
    ("openat", &[DirFd, Path, OpenFlags, Mode]),
    ("openat2", &[DirFd, Path, Hex, Size]),
    ("creat", &[Path, Mode]),
    ("close", &[Fd]),
    ("read", &[Fd, Hex, Size]),
    ("write", &[Fd, Hex, Size]),
    ("pread64", &[Fd, Hex, Size, Int]),
    ("pwrite64", &[Fd, Hex, Size, Int]),
    ("readv", &[Fd, Hex, Int]),
    ("writev", &[Fd, Hex, Int]),
    ("lseek", &[Fd, Int, Int]),
    ("fsync", &[Fd]),
    ("fdatasync", &[Fd]),
    ("ftruncate", &[Fd, Size]),
    ("truncate", &[Path, Size]),
    ("stat", &[Path, Hex]),
    ("lstat", &[Path, Hex]),
    ("fstat", &[Fd, Hex]),
    ("newfstatat", &[DirFd, Path, Hex, Hex]),
    ("statx", &[DirFd, Path, Hex, Hex, Hex]),
    ("access", &[Path, Int]),
    ("faccessat", &[DirFd, Path, Int]),
    ("faccessat2", &[DirFd, Path, Int, Hex]),
    ("unlink", &[Path]),
    ("unlinkat", &[DirFd, Path, Hex]),
    ("mkdir", &[Path, Mode]),
    ("mkdirat", &[DirFd, Path, Mode]),
    ("rmdir", &[Path]),
    ("rename", &[Path, Hex]),
    ("renameat", &[DirFd, Path, DirFd, Hex]),
    ("renameat2", &[DirFd, Path, DirFd, Hex, Hex]),
    ("chdir", &[Path]),
    ("readlink", &[Path, Hex, Size]),
    ("readlinkat", &[DirFd, Path, Hex, Size]),
    ("chmod", &[Path, Mode]),
    ("fchmodat", &[DirFd, Path, Mode]),
    ("fchownat", &[DirFd, Path, Int, Int, Hex]),
    ("linkat", &[DirFd, Path, DirFd, Hex, Hex]),
    ("symlinkat", &[Hex, DirFd, Path]),
    ("mknodat", &[DirFd, Path, Mode, Hex]),
    ("utimensat", &[DirFd, Path, Hex, Hex]),
    ("getdents64", &[Fd, Hex, Size]),
    ("execve", &[Path, Hex, Hex]),
    ("execveat", &[DirFd, Path, Hex, Hex, Hex]),
    ("dup", &[Fd]),
    ("dup2", &[Fd, Fd]),
    ("dup3", &[Fd, Fd, Hex]),
    ("pipe", &[Hex]),
    ("pipe2", &[Hex, Hex]),
    ("poll", &[Hex, Int, Int]),
    ("ppoll", &[Hex, Int, Hex, Hex, Size]),
    ("select", &[Int, Hex, Hex, Hex, Hex]),
    ("pselect6", &[Int, Hex, Hex, Hex, Hex, Hex]),
    ("epoll_wait", &[Fd, Hex, Int, Int]),
    ("epoll_pwait", &[Fd, Hex, Int, Int, Hex, Size]),
    ("fcntl", &[Fd, Int, Hex]),
    ("ioctl", &[Fd, Hex, Hex]),
    ("socket", &[Int, Int, Int]),
    ("connect", &[Fd, SockAddr, Size]),
    ("bind", &[Fd, SockAddr, Size]),
    ("listen", &[Fd, Int]),
    ("accept", &[Fd, SockAddr, Hex]),
    ("accept4", &[Fd, SockAddr, Hex, Hex]),
    ("sendto", &[Fd, Hex, Size, Hex, SockAddr, Size]),
    ("recvfrom", &[Fd, Hex, Size, Hex, SockAddr, Hex]),
    ("sendmsg", &[Fd, Hex, Hex]),
    ("recvmsg", &[Fd, Hex, Hex]),
    ("shutdown", &[Fd, Int]),
    ("mmap", &[Hex, Size, Hex, Hex, Fd, Int]),
    ("munmap", &[Hex, Size]),
    ("fork", &[]),
    ("vfork", &[]),
    // The order of clone's arguments differs between the architectures (tls and child_tid).
    ("clone", &[Hex, Hex, Hex, Hex, Hex]),
    ("clone3", &[Hex, Size]),
    ("kill", &[Int, Signal]),
    ("tkill", &[Int, Signal]),
    ("tgkill", &[Int, Int, Signal]),
    ("rt_sigaction", &[Signal, Hex, Hex, Size]),
    ("exit", &[Int]),
    ("exit_group", &[Int]),
    ("getpid", &[]),
    ("getppid", &[]),
    ("gettid", &[]),
];

pub fn signature(syscall: &str) -> Option<&'static [Arg]> {
    SIGNATURES
        .iter()
        .find(|(name, _)| *name == syscall)
        .map(|(_, args)| *args)
}

/// What the kernel program must copy for this call.
pub fn trace_spec(syscall: &str) -> TraceSpec {
    let args = signature(syscall).unwrap_or_default();
    let position = |kind: Arg| {
        args.iter()
            .position(|arg| *arg == kind)
            .map_or(NO_ARG, |i| i as u8)
    };
    TraceSpec {
        traced: 1,
        path_arg: position(Path),
        addr_arg: position(SockAddr),
        _pad: 0,
    }
}

/// The decoded argument list, e.g. `AT_FDCWD, "/etc/hosts", O_RDONLY|O_CLOEXEC`.
pub fn arguments(syscall: &str, raw: &[u64; 6], path: &str, addr: &[u8]) -> Vec<String> {
    let Some(mut args) = signature(syscall) else {
        return raw.iter().map(|value| format!("{value:#x}")).collect();
    };
    // Like strace: the mode of open/openat only means something when a file may be created.
    if let Some(flags) = args.iter().position(|arg| *arg == OpenFlags) {
        let creates = raw[flags] as i32 & (libc::O_CREAT | libc::O_TMPFILE) != 0;
        if !creates && args.last() == Some(&Mode) {
            args = &args[..args.len() - 1];
        }
    }
    args.iter()
        .zip(raw)
        .map(|(kind, &value)| match kind {
            Fd => (value as i32).to_string(),
            DirFd if value as i32 == libc::AT_FDCWD => "AT_FDCWD".to_owned(),
            DirFd => (value as i32).to_string(),
            Path => format!("{path:?}"),
            OpenFlags => open_flags(value as i32),
            Mode => format!("{:#o}", value as u32),
            Size => value.to_string(),
            Int => (value as i64).to_string(),
            Hex => format!("{value:#x}"),
            Signal => signal_name(value as i32),
            SockAddr if value == 0 => "NULL".to_owned(),
            SockAddr => socket_address(addr),
        })
        .collect()
}

/// `O_WRONLY|O_CREAT|O_CLOEXEC`: the access mode, then the other flags nix knows.
pub fn open_flags(flags: i32) -> String {
    let mode = match flags & libc::O_ACCMODE {
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_RDONLY",
    };
    let mut text = mode.to_owned();
    let rest = OFlag::from_bits_truncate(flags & !libc::O_ACCMODE);
    for (name, _) in rest.iter_names() {
        // O_SYNC contains O_DSYNC's bit; O_LARGEFILE is 0 on x86_64's uapi but not in nix: skip 0s.
        let _ = write!(text, "|{name}");
    }
    text
}

pub fn signal_name(number: i32) -> String {
    Signal::try_from(number)
        .map(|signal| signal.as_str().to_owned())
        .unwrap_or_else(|_| number.to_string())
}

/// `127.0.0.1:8080`, `[::1]:443`, `unix:/run/x.sock`, `unix:@abstract`.
pub fn socket_address(addr: &[u8]) -> String {
    if addr.len() < 2 {
        return "?".to_owned();
    }
    let family = u16::from_ne_bytes([addr[0], addr[1]]) as i32;
    let port = |bytes: &[u8]| u16::from_be_bytes([bytes[2], bytes[3]]);
    match family {
        libc::AF_INET if addr.len() >= 8 => {
            format!(
                "{}:{}",
                Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]),
                port(addr)
            )
        }
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addr[8..24]);
            format!("[{}]:{}", Ipv6Addr::from(octets), port(addr))
        }
        libc::AF_UNIX => {
            let path = &addr[2..];
            let (prefix, path) = match path.first() {
                Some(0) => ("@", &path[1..]),
                _ => ("", path),
            };
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            format!("unix:{prefix}{}", String::from_utf8_lossy(&path[..end]))
        }
        0 => "?".to_owned(),
        other => format!("family {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{self, Arch};

    #[test]
    fn decodes_openat() {
        let raw = [
            libc::AT_FDCWD as u64,
            0x1000,
            (libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC) as u64,
            0o644,
            0,
            0,
        ];
        let args = arguments("openat", &raw, "/data/x", &[]);
        assert_eq!(
            args,
            [
                "AT_FDCWD",
                "\"/data/x\"",
                "O_WRONLY|O_CLOEXEC|O_CREAT",
                "0o644"
            ]
        );
        let read_only = [
            libc::AT_FDCWD as u64,
            0x1000,
            libc::O_RDONLY as u64,
            0,
            0,
            0,
        ];
        assert_eq!(
            arguments("openat", &read_only, "/x", &[]),
            ["AT_FDCWD", "\"/x\"", "O_RDONLY"]
        );
        let spec = trace_spec("openat");
        assert_eq!((spec.path_arg, spec.addr_arg), (1, NO_ARG));
        assert_eq!(trace_spec("connect").addr_arg, 1);
    }

    /// Every decoder is a call of one of the tables, and arm64's replacement of each x86_64-only
    /// call decodes too, its path where the old call had one.
    #[test]
    fn decodes_the_calls_of_both_architectures() {
        for (name, _) in SIGNATURES {
            let nr = Arch::X86_64
                .syscall_number(name)
                .or(Arch::Aarch64.syscall_number(name));
            assert!(nr.is_some(), "{name} is no syscall");
            let Some(new) = names::replacement(name) else {
                continue;
            };
            assert!(signature(new).is_some(), "{name} decodes, {new} does not");
            if trace_spec(name).path_arg != NO_ARG {
                assert_ne!(trace_spec(new).path_arg, NO_ARG, "{new} has no path");
            }
        }
        for name in [
            "openat",
            "newfstatat",
            "ppoll",
            "pselect6",
            "clone3",
            "pipe2",
            "dup3",
        ] {
            assert!(Arch::Aarch64.syscall_number(name).is_some());
            assert!(signature(name).is_some(), "{name}");
        }
        let raw = [libc::AT_FDCWD as u64, 0x1000, 0x2000, 0, 0, 0];
        assert_eq!(
            arguments("newfstatat", &raw, "/x", &[]),
            ["AT_FDCWD", "\"/x\"", "0x2000", "0x0"]
        );
    }

    #[test]
    fn decodes_addresses_and_signals() {
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(socket_address(&v4), "127.0.0.1:8080");
        let mut unix = [0u8; 16];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        unix[2..7].copy_from_slice(b"/x.so");
        assert_eq!(socket_address(&unix), "unix:/x.so");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(arguments("getppid", &[0; 6], "", &[]), Vec::<String>::new());
        assert_eq!(
            arguments("no_such_decoder", &[1, 2, 3, 4, 5, 6], "", &[]).len(),
            6
        );
    }
}
