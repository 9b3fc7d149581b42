//! Which argument of a syscall is the path a `--path-prefix` filter looks at. No maintained crate
//! carries syscall argument types, so this is the short list of calls that take a path.
pub fn path_argument(syscall: &str) -> Option<u32> {
    Some(match syscall {
        "open" | "creat" | "stat" | "lstat" | "access" | "unlink" | "mkdir" | "rmdir"
        | "rename" | "execve" | "chdir" | "truncate" | "readlink" | "chmod" | "chown"
        | "lchown" | "link" | "mknod" | "statfs" | "getxattr" | "lgetxattr" | "setxattr"
        | "lsetxattr" | "listxattr" | "removexattr" | "utime" | "utimes" | "chroot" => 0,
        "openat" | "openat2" | "newfstatat" | "statx" | "faccessat" | "faccessat2" | "unlinkat"
        | "mkdirat" | "renameat" | "renameat2" | "execveat" | "readlinkat" | "fchmodat"
        | "fchmodat2" | "fchownat" | "linkat" | "mknodat" | "utimensat" | "symlink" => 1,
        "symlinkat" => 2,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{self, Arch};

    #[test]
    fn path_arguments() {
        assert_eq!(path_argument("openat"), Some(1));
        assert_eq!(path_argument("open"), Some(0));
        assert_eq!(path_argument("getppid"), None);
    }

    /// On arm64, where x86_64's legacy calls are missing, their replacements filter on paths too.
    #[test]
    fn arm64_replacements_take_paths() {
        for name in Arch::X86_64
            .syscalls()
            .filter(|n| path_argument(n).is_some())
        {
            if let Some(new) = names::replacement(name) {
                assert!(
                    path_argument(new).is_some(),
                    "{name} takes a path, {new} not"
                );
            }
        }
    }
}
