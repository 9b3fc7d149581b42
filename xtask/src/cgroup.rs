//! Throwaway cgroups for the demo and benchmarks.
use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStringExt as _, fs::MetadataExt as _, process::CommandExt as _},
    path::PathBuf,
    process::Command,
};

use anyhow::Context as _;

/// The cgroup v2 mount point: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on v2 ones.
pub fn v2_root() -> anyhow::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            right
                .starts_with("cgroup2 ")
                .then(|| PathBuf::from(mount_point))
        })
        .context("no cgroup v2 hierarchy mounted")
}

/// A cgroup v2 directory, removed when dropped (once its processes are gone).
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn create(name: &str) -> anyhow::Result<Self> {
        let path = v2_root()?.join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("create cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    /// The id the kernel reports for tasks in it (its inode number).
    pub fn id(&self) -> anyhow::Result<u64> {
        Ok(fs::metadata(&self.path)?.ino())
    }

    /// Makes `command` start inside this cgroup: the child moves itself in before exec.
    pub fn place(&self, command: &mut Command) -> anyhow::Result<()> {
        let procs = CString::new(self.path.join("cgroup.procs").into_os_string().into_vec())?;
        // SAFETY: between fork and exec only async-signal-safe calls (open, write, close) run;
        // the path was allocated before the fork.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                // "0" moves the writing process itself.
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // rmdir fails while tasks remain; give killed ones a moment to be reaped.
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}
