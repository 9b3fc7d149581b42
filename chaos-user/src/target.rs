//! What to watch: a container, a cgroup or a process, resolved to a cgroup v2 directory whose
//! inode number is the id `bpf_get_current_cgroup_id()` returns for its tasks.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::docker::{self, DockerError};

#[derive(Debug, Error)]
pub enum TargetError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("no process with pid {0}: check the pid with `ps -p {0}`")]
    NoSuchPid(u32),
    #[error("{0} is not a cgroup v2 directory (no cgroup.procs there; the cgroup v2 root is {1})")]
    NotACgroup(PathBuf, PathBuf),
    #[error(
        "no cgroup v2 hierarchy is mounted (looked for a cgroup2 mount in /proc/self/mountinfo): mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoCgroupV2,
    #[error("process {pid} has no cgroup v2 membership in /proc/{pid}/cgroup")]
    NoV2Membership { pid: u32 },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the user asked to watch, before resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Container(String),
    Cgroup(PathBuf),
    Pid(u32),
}

/// A resolved target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `target` label of every metric: container name, or the path / pid the user gave.
    pub label: String,
    pub spec: TargetSpec,
    pub cgroup: CgroupDirs,
    pub cgroup_id: u64,
}

/// A cgroup's v2 directory, and its v1 directories where the controllers live on a hybrid host.
#[derive(Debug, Clone, Default)]
pub struct CgroupDirs {
    pub v2: PathBuf,
    /// (controller, directory) for each cgroup v1 hierarchy the target is in.
    pub v1: Vec<(String, PathBuf)>,
}

impl CgroupDirs {
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(name, _)| name.split(',').any(|c| c == controller))
            .map(|(_, dir)| dir.as_path())
    }
}

pub async fn resolve(spec: &TargetSpec, cgroup_root: &CgroupRoot) -> Result<Target, TargetError> {
    match spec {
        TargetSpec::Container(name) => {
            let container = docker::inspect_running(name).await?;
            let mut target = resolve_pid(container.pid, cgroup_root)?;
            target.label = container.name;
            target.spec = spec.clone();
            Ok(target)
        }
        TargetSpec::Pid(pid) => resolve_pid(*pid, cgroup_root),
        TargetSpec::Cgroup(path) => {
            let v2 = cgroup_root.absolute(path);
            if !v2.join("cgroup.procs").is_file() || !v2.starts_with(&cgroup_root.v2) {
                return Err(TargetError::NotACgroup(v2, cgroup_root.v2.clone()));
            }
            let relative = v2.strip_prefix(&cgroup_root.v2).unwrap_or(Path::new(""));
            let v1 = cgroup_root.v1_dirs_for(relative);
            Ok(Target {
                label: path.display().to_string(),
                spec: spec.clone(),
                cgroup_id: inode(&v2)?,
                cgroup: CgroupDirs { v2, v1 },
            })
        }
    }
}

fn resolve_pid(pid: u32, cgroup_root: &CgroupRoot) -> Result<Target, TargetError> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TargetError::NoSuchPid(pid));
        }
        Err(source) => return Err(TargetError::Io { path, source }),
    };
    let memberships = parse_proc_cgroup(&text);
    let v2_relative = memberships
        .iter()
        .find(|(controllers, _)| controllers.is_empty())
        .map(|(_, path)| path.clone())
        .ok_or(TargetError::NoV2Membership { pid })?;
    let v2 = cgroup_root.absolute(&v2_relative);
    let v1 = memberships
        .into_iter()
        .filter(|(controllers, _)| !controllers.is_empty())
        .filter_map(|(controllers, relative)| {
            let mount = cgroup_root
                .v1
                .iter()
                .find(|(name, _)| *name == controllers)?;
            Some((controllers, join_relative(&mount.1, &relative)))
        })
        .collect();
    Ok(Target {
        label: pid.to_string(),
        spec: TargetSpec::Pid(pid),
        cgroup_id: inode(&v2)?,
        cgroup: CgroupDirs { v2, v1 },
    })
}

/// `/proc/PID/cgroup` lines as (controllers, path); the v2 line has no controllers
/// (`0::/docker/abc`), v1 lines name theirs (`4:cpu,cpuacct:/docker/abc`).
pub fn parse_proc_cgroup(text: &str) -> Vec<(String, PathBuf)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _id = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            let controllers = controllers.trim_start_matches("name=").to_owned();
            Some((controllers, PathBuf::from(path)))
        })
        .collect()
}

fn inode(path: &Path) -> Result<u64, TargetError> {
    fs::metadata(path)
        .map(|meta| meta.ino())
        .map_err(|source| TargetError::Io {
            path: path.to_owned(),
            source,
        })
}

fn join_relative(base: &Path, relative: &Path) -> PathBuf {
    base.join(relative.strip_prefix("/").unwrap_or(relative))
}

/// Where the cgroup hierarchies are mounted: v2 at `/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones; v1 controllers beside it on hybrid hosts.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    pub v2: PathBuf,
    /// (controllers as named in /proc/PID/cgroup, mount point)
    pub v1: Vec<(String, PathBuf)>,
}

impl CgroupRoot {
    pub fn discover() -> Result<Self, TargetError> {
        let path = PathBuf::from("/proc/self/mountinfo");
        let text = fs::read_to_string(&path).map_err(|source| TargetError::Io { path, source })?;
        Self::from_mountinfo(&text)
    }

    pub fn from_mountinfo(text: &str) -> Result<Self, TargetError> {
        let mut v2 = None;
        let mut v1 = Vec::new();
        for line in text.lines() {
            // Fields: id parent major:minor root mount-point options [optional...] - fstype source super-options
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).map(unescape_mount_path);
            let mut right = right.split(' ');
            let fstype = right.next();
            let super_options = right.nth(1).unwrap_or("");
            match (fstype, mount_point) {
                (Some("cgroup2"), Some(mount)) if v2.is_none() => v2 = Some(mount),
                (Some("cgroup"), Some(mount)) => {
                    let controllers: Vec<&str> = super_options
                        .split(',')
                        .filter_map(|option| match option {
                            "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime"
                            | "clone_children" | "noprefix" | "xattr" => None,
                            option if option.starts_with("release_agent=") => None,
                            option => Some(option.trim_start_matches("name=")),
                        })
                        .collect();
                    v1.push((controllers.join(","), mount));
                }
                _ => {}
            }
        }
        let v2 = v2.ok_or(TargetError::NoCgroupV2)?;
        Ok(Self { v2, v1 })
    }

    /// A cgroup path as the user or `/proc/PID/cgroup` gives it, made absolute under the v2 root.
    pub fn absolute(&self, path: &Path) -> PathBuf {
        if path.starts_with(&self.v2) {
            path.to_owned()
        } else {
            join_relative(&self.v2, path)
        }
    }

    /// The v1 directories with the same relative path as a v2 cgroup (as Docker and systemd
    /// lay them out), where they exist.
    fn v1_dirs_for(&self, relative: &Path) -> Vec<(String, PathBuf)> {
        self.v1
            .iter()
            .map(|(controllers, mount)| (controllers.clone(), join_relative(mount, relative)))
            .filter(|(_, dir)| dir.is_dir())
            .collect()
    }
}

fn unescape_mount_path(field: &str) -> PathBuf {
    PathBuf::from(field.replace("\\040", " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd";

    #[test]
    fn hybrid_mountinfo() {
        let root = CgroupRoot::from_mountinfo(HYBRID).unwrap();
        assert_eq!(root.v2, PathBuf::from("/sys/fs/cgroup/unified"));
        let names: Vec<&str> = root.v1.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cpu,cpuacct", "memory", "systemd"]);
        assert_eq!(
            root.absolute(Path::new("/docker/abc")),
            PathBuf::from("/sys/fs/cgroup/unified/docker/abc")
        );
    }

    #[test]
    fn pure_v2_mountinfo() {
        let root = CgroupRoot::from_mountinfo(
            "30 1 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot",
        )
        .unwrap();
        assert_eq!(root.v2, PathBuf::from("/sys/fs/cgroup"));
        assert!(root.v1.is_empty());
        assert_eq!(
            root.absolute(Path::new("/sys/fs/cgroup/system.slice")),
            PathBuf::from("/sys/fs/cgroup/system.slice")
        );
    }

    #[test]
    fn no_cgroup2_is_an_error() {
        let only_v1 = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(matches!(
            CgroupRoot::from_mountinfo(&only_v1),
            Err(TargetError::NoCgroupV2)
        ));
    }

    #[test]
    fn proc_cgroup_lines() {
        let parsed = parse_proc_cgroup(
            "12:name=systemd:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
        );
        assert_eq!(
            parsed,
            [
                ("systemd".to_owned(), PathBuf::from("/docker/abc")),
                ("cpu,cpuacct".to_owned(), PathBuf::from("/docker/abc")),
                (String::new(), PathBuf::from("/docker/abc")),
            ]
        );
    }
}
