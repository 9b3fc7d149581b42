//! One injecting chaos-user per target: an exclusive `flock` on a file per cgroup id. The kernel
//! drops the lock when the process dies, however it dies, so a crash never leaves a target locked.
use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::PathBuf,
};

use super::InjectError;

const LOCK_DIR: &str = "/run/syschaos";

pub struct InjectionLock {
    _file: File,
}

impl InjectionLock {
    pub fn acquire(target: &str, cgroup_id: u64) -> Result<Self, InjectError> {
        let path = PathBuf::from(LOCK_DIR).join(format!("inject-{cgroup_id}.lock"));
        let lock_error = |source| InjectError::Lock {
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(LOCK_DIR).map_err(lock_error)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_error)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(InjectError::AlreadyPerturbed {
                target: target.to_owned(),
                holder: holder.trim().to_owned(),
            });
        }
        file.set_len(0).map_err(lock_error)?;
        file.rewind().map_err(lock_error)?;
        write!(file, "{}", std::process::id()).map_err(lock_error)?;
        Ok(Self { _file: file })
    }
}
