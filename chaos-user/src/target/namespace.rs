//! The cgroup hierarchy as another process's cgroup namespace sees it.
//!
//! A sidecar started with `--pid=container:X` sees X's init as its pid 1, but X's cgroup may be
//! invisible from the sidecar: under a private cgroup namespace `/proc/1/cgroup` reads `/..`
//! paths relative to the sidecar's own cgroup, and the sidecar's `/sys/fs/cgroup` holds only its
//! own subtree (or, on cgroup v1 Docker hosts, no cgroup2 at all). So chaos-user enters pid 1's
//! cgroup namespace on a thread of its own, mounts cgroup2 there (its root is then that
//! namespace's root) and reads `/proc/1/cgroup` from the same namespace: path and mount agree
//! whatever namespace either container has. The mount is detached at once and only an open
//! directory keeps it: paths go through `/proc/self/fd/N`, and nothing is left in any mount table.
use std::{
    fs::{self, File},
    os::{fd::IntoRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns},
};

use super::{CgroupRoot, TargetError, parse_proc_cgroup};

/// Where the views are mounted for the moment it takes to open them.
const MOUNT_DIR: &str = "/run/syschaos/cgroup-view";

/// The v1 controllers resources are read from on hybrid hosts (see `resources.rs`).
const V1_CONTROLLERS: [&str; 3] = ["cpuacct", "memory", "blkio"];

/// Mounts the cgroup hierarchies as process `pid`'s cgroup namespace sees them.
pub fn view_of(pid: u32) -> Result<CgroupRoot, TargetError> {
    in_namespace_of(pid, "cgroup", CloneFlags::CLONE_NEWCGROUP, || {
        let memberships = parse_proc_cgroup(&read(&format!("/proc/{pid}/cgroup"))?);
        let v2 = mount_detached("cgroup2", None)?;
        // v1 hierarchies only matter for CPU/memory/IO on hybrid hosts: best effort.
        let v1 = memberships
            .into_iter()
            .map(|(controllers, _)| controllers)
            .filter(|controllers| controllers.split(',').any(|c| V1_CONTROLLERS.contains(&c)))
            .filter_map(
                |controllers| match mount_detached("cgroup", Some(&controllers)) {
                    Ok(dir) => Some((controllers, dir)),
                    Err(e) => {
                        log::warn!("no {controllers} figures for the target: {e}");
                        None
                    }
                },
            )
            .collect();
        Ok(CgroupRoot {
            v2,
            v1,
            namespace_of: Some(pid),
        })
    })
}

/// `/proc/{pid}/cgroup` read from the cgroup namespace of `viewer`, so its paths are relative to
/// the root of a view made by [`view_of`]`(viewer)`.
pub fn proc_cgroup_seen_by(viewer: u32, pid: u32) -> Result<String, TargetError> {
    in_namespace_of(viewer, "cgroup", CloneFlags::CLONE_NEWCGROUP, || {
        read(&format!("/proc/{pid}/cgroup"))
    })
}

/// The host name of process `pid` (its UTS namespace's): what Docker and Kubernetes set to the
/// container id or pod name, so the sidecar's target has a name without asking any daemon.
pub fn hostname_of(pid: u32) -> Result<String, TargetError> {
    in_namespace_of(pid, "uts", CloneFlags::CLONE_NEWUTS, || {
        nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .map_err(|e| TargetError::Namespace {
                what: "read the target's host name".into(),
                source: e.into(),
            })
    })
}

/// Runs `work` on a thread that joined the `kind` namespace of `pid`; the process's other
/// threads stay where they are.
fn in_namespace_of<T: Send>(
    pid: u32,
    kind: &str,
    flag: CloneFlags,
    work: impl FnOnce() -> Result<T, TargetError> + Send,
) -> Result<T, TargetError> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
    let namespace = File::open(&path).map_err(|source| TargetError::Namespace {
        what: format!("open {}", path.display()),
        source,
    })?;
    let ours = fs::metadata(format!("/proc/thread-self/ns/{kind}")).map(|m| m.ino());
    let same = namespace.metadata().map(|m| m.ino()).ok() == ours.ok();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                if !same {
                    setns(&namespace, flag).map_err(|e| TargetError::Namespace {
                        what: format!("enter the {kind} namespace of pid {pid}"),
                        source: e.into(),
                    })?;
                }
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Mounts `fstype` read-only, opens its root, detaches the mount; returns `/proc/self/fd/N`,
/// which stays valid for the life of the process.
fn mount_detached(fstype: &str, options: Option<&str>) -> Result<PathBuf, TargetError> {
    let failed = |what: String| {
        move |e: nix::Error| TargetError::Namespace {
            what,
            source: e.into(),
        }
    };
    let dir = Path::new(MOUNT_DIR).join(options.unwrap_or(fstype));
    fs::create_dir_all(&dir).map_err(|source| TargetError::Io {
        path: dir.clone(),
        source,
    })?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some(fstype), &dir, Some(fstype), flags, options)
        .map_err(failed(format!("mount {fstype} at {}", dir.display())))?;
    let root = File::open(&dir);
    umount2(&dir, MntFlags::MNT_DETACH)
        .map_err(failed(format!("detach the mount at {}", dir.display())))?;
    let _ = fs::remove_dir(&dir);
    let root = root.map_err(|source| TargetError::Io { path: dir, source })?;
    // Deliberately kept open until the process exits: the detached mount lives as long as it.
    Ok(PathBuf::from(format!(
        "/proc/self/fd/{}",
        root.into_raw_fd()
    )))
}

fn read(path: &str) -> Result<String, TargetError> {
    fs::read_to_string(path).map_err(|source| TargetError::Io {
        path: path.into(),
        source,
    })
}
