use super::*;

#[test]
fn names_round_trip() {
    assert_eq!(syscall_name(syscall_number("openat").unwrap()), "openat");
    assert_eq!(syscall_name(100_000), "syscall_100000");
    assert_eq!(errno_name(2), "ENOENT");
    assert_eq!(errno_name(13), "EACCES");
    assert_eq!(errno_name(512), "ERESTARTSYS");
    assert_eq!(errno_name(4000), "errno_4000");
}

/// Each architecture's own numbers, whichever one the test runs on.
#[test]
fn each_architecture_has_its_table() {
    let both = |name: &str| {
        (
            Arch::X86_64.syscall_number(name),
            Arch::Aarch64.syscall_number(name),
        )
    };
    assert_eq!(both("openat"), (Some(257), Some(56)));
    assert_eq!(both("getppid"), (Some(110), Some(173)));
    assert_eq!(both("newfstatat"), (Some(262), Some(79)));
    assert_eq!(both("clone3"), (Some(435), Some(435)));
    assert_eq!(both("open"), (Some(2), None));
    assert_eq!(both("fork"), (Some(57), None));
    assert_eq!(Arch::Aarch64.syscall_name(56), Some("openat"));
    assert_eq!(Arch::Aarch64.syscall_name(79), Some("newfstatat"));
    assert_eq!(Arch::X86_64.syscall_name(56), Some("clone"));
    // What the syscalls crate gets wrong for arm64: `fstatat`, and 32-bit-only calls.
    assert_eq!(both("fstatat"), (None, None));
    assert_eq!(both("clock_gettime64"), (None, None));
    assert_eq!(Arch::Aarch64.syscall_name(403), None);
    assert!(
        Arch::Aarch64
            .syscalls()
            .all(|name| !name.ends_with("_time64"))
    );
    // Every name of a table goes back to its number (iter() of the crate skips the last one).
    for arch in [Arch::X86_64, Arch::Aarch64] {
        for name in arch.syscalls() {
            let nr = arch.syscall_number(name).unwrap();
            assert_eq!(arch.syscall_name(nr), Some(name));
        }
    }
    assert!(Arch::Aarch64.syscalls().any(|name| name == "file_setattr"));
}

#[test]
fn a_name_of_the_other_table_is_refused_with_the_replacement() {
    let error = |arch: Arch, name: &str| arch.check_syscall(name).unwrap_err().to_string();
    assert_eq!(
        error(Arch::Aarch64, "open"),
        "`open` is not a syscall on aarch64 (use openat)"
    );
    assert_eq!(
        error(Arch::Aarch64, "stat"),
        "`stat` is not a syscall on aarch64 (use newfstatat)"
    );
    assert_eq!(
        error(Arch::Aarch64, "arch_prctl"),
        "`arch_prctl` is not a syscall on aarch64 (only on x86_64)"
    );
    assert_eq!(
        error(Arch::X86_64, "opnat"),
        "unknown syscall `opnat` (names as in `man 2 syscalls`, e.g. openat)"
    );
    assert!(error(Arch::Aarch64, "fstatat").starts_with("unknown syscall `fstatat`"));
    assert_eq!(Arch::X86_64.check_syscall("open"), Ok(2));
}

/// The replacements are calls of both tables, for x86_64-only names; the common x86_64-only
/// calls have one.
#[test]
fn replacements_are_arm64_calls() {
    for (old, new) in REPLACEMENTS {
        for name in *old {
            assert!(Arch::X86_64.syscall_number(name).is_some(), "{name}");
            assert!(Arch::Aarch64.syscall_number(name).is_none(), "{name}");
        }
        assert!(Arch::Aarch64.syscall_number(new).is_some(), "{new}");
        assert!(Arch::X86_64.syscall_number(new).is_some(), "{new}");
    }
    for name in [
        "open", "stat", "fork", "poll", "select", "dup2", "pipe", "access",
    ] {
        assert!(replacement(name).is_some(), "{name}");
    }
}
