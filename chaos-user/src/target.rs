//! What to watch: a container, a cgroup or a process, resolved to a cgroup v2 directory whose
//! inode number is the id `bpf_get_current_cgroup_id()` returns for its tasks. Also a sidecar's
//! target (`namespace`), Kubernetes pods and cgroup globs (`kubepods`).
mod kubepods;
mod namespace;

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
    #[error(
        "container `{name}` runs as pid {pid} in the host's pid namespace, which is not visible here: inside a container, run chaos-user with --pid=host"
    )]
    PidNotVisible { name: String, pid: u32 },
    #[error("container `{0}` stopped before it could be followed")]
    Exited(String),
    #[error(
        "the cgroup of process {pid} ({path}) lies outside this cgroup namespace: inside a container, run chaos-user with --cgroupns=host (or as a sidecar with --shared-pid-namespace)"
    )]
    OutsideNamespace { pid: u32, path: PathBuf },
    #[error(
        "cgroup {path} of process {pid} is not under the cgroup v2 root {root}: inside a container, bind-mount the host's /sys (-v /sys:/sys) or give the host's cgroup2 mount with --cgroup-root"
    )]
    NotUnderRoot {
        pid: u32,
        path: PathBuf,
        root: PathBuf,
    },
    #[error(
        "--cgroup-root {0} is not a cgroup v2 hierarchy (no cgroup.controllers there nor in {0}/unified): mount the host's /sys/fs/cgroup there"
    )]
    NotV2Root(PathBuf),
    #[error(
        "cannot {what}: {source} (a sidecar needs --privileged, or CAP_SYS_ADMIN and CAP_SYS_PTRACE with seccomp and AppArmor unconfined)"
    )]
    Namespace {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "{} of pod {uid} under {root} (searched kube* directories for pod<UID> and *pod<UID_with_underscores>.slice): is the pod on this node, and is {root} the host's cgroup v2 root (--cgroup-root)?",
        if *found_pod { "no container cgroup but the sandbox's" } else { "no cgroup" }
    )]
    NoPod {
        uid: String,
        root: PathBuf,
        found_pod: bool,
    },
    #[error("no cgroup v2 directory matches {pattern} under {root}")]
    NoGlobMatch { pattern: String, root: PathBuf },
    #[error("bad --cgroup-glob {pattern}: {why}")]
    BadGlob { pattern: String, why: String },
    #[error("{0} is not a cgroup v2 directory (no cgroup.procs there; the cgroup v2 root is {1})")]
    NotACgroup(PathBuf, PathBuf),
    #[error(
        "no cgroup v2 hierarchy is mounted (looked for a cgroup2 mount in /proc/self/mountinfo): mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`; inside a container, bind-mount the host's (-v /sys:/sys, or -v /sys/fs/cgroup:/host/cgroup with --cgroup-root /host/cgroup)"
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
    /// Pid 1 of our pid namespace: the container a sidecar shares it with (`--pid=container:X`).
    SharedPidNamespace,
    /// Every container of a Kubernetes pod on this node.
    PodUid(String),
    /// Every cgroup matching a glob relative to the cgroup v2 root.
    CgroupGlob(String),
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

/// The target of a spec that names one cgroup: a container, a cgroup, a pid, the shared pid
/// namespace's init (for a pod or a glob: the first of [`resolve_many`]).
pub async fn resolve(spec: &TargetSpec, cgroup_root: &CgroupRoot) -> Result<Target, TargetError> {
    let mut targets = resolve_many(spec, cgroup_root).await?;
    // Never empty: a pod or glob that matches nothing is an error.
    Ok(targets.swap_remove(0))
}

/// The targets a spec stands for: one, or for a pod or a glob, every cgroup it matches.
pub async fn resolve_many(
    spec: &TargetSpec,
    cgroup_root: &CgroupRoot,
) -> Result<Vec<Target>, TargetError> {
    let one = match spec {
        TargetSpec::Container(name) => {
            let container = docker::inspect_running(name).await?;
            let mut target = match resolve_pid(container.pid, cgroup_root) {
                Err(TargetError::NoSuchPid(pid)) => {
                    // Gone already (a container restarting fast), or a pid namespace we
                    // cannot see: Docker tells which.
                    let again = docker::inspect_running(name).await;
                    return Err(match again {
                        Ok(now) if now.pid == pid => TargetError::PidNotVisible {
                            name: container.name,
                            pid,
                        },
                        _ => TargetError::Exited(container.name),
                    });
                }
                result => result?,
            };
            target.label = container.name;
            target
        }
        TargetSpec::Pid(pid) => resolve_pid(*pid, cgroup_root)?,
        TargetSpec::Cgroup(path) => cgroup_target(path.display().to_string(), path, cgroup_root)?,
        TargetSpec::SharedPidNamespace => {
            let mut target = resolve_pid(1, cgroup_root)?;
            target.label = namespace::hostname_of(1)?;
            target
        }
        TargetSpec::PodUid(uid) => {
            let found = kubepods::pod_containers(&cgroup_root.v2, uid, kubepods::proc_comm)?;
            return cgroup_targets(found, spec, cgroup_root);
        }
        TargetSpec::CgroupGlob(pattern) => {
            let found = kubepods::glob_cgroups(&cgroup_root.v2, pattern)?;
            return cgroup_targets(found, spec, cgroup_root);
        }
    };
    Ok(vec![Target {
        spec: spec.clone(),
        ..one
    }])
}

fn cgroup_targets(
    found: Vec<(String, PathBuf)>,
    spec: &TargetSpec,
    cgroup_root: &CgroupRoot,
) -> Result<Vec<Target>, TargetError> {
    found
        .into_iter()
        .map(|(label, dir)| {
            let target = cgroup_target(label, &dir, cgroup_root)?;
            Ok(Target {
                spec: spec.clone(),
                ..target
            })
        })
        .collect()
}

fn cgroup_target(
    label: String,
    path: &Path,
    cgroup_root: &CgroupRoot,
) -> Result<Target, TargetError> {
    let v2 = cgroup_root.absolute(path);
    if !v2.join("cgroup.procs").is_file() || !v2.starts_with(&cgroup_root.v2) {
        return Err(TargetError::NotACgroup(v2, cgroup_root.v2.clone()));
    }
    let relative = v2.strip_prefix(&cgroup_root.v2).unwrap_or(Path::new(""));
    let v1 = cgroup_root.v1_dirs_for(relative);
    Ok(Target {
        label,
        spec: TargetSpec::Cgroup(path.to_owned()),
        cgroup_id: inode(&v2)?,
        cgroup: CgroupDirs { v2, v1 },
    })
}

fn resolve_pid(pid: u32, cgroup_root: &CgroupRoot) -> Result<Target, TargetError> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(TargetError::NoSuchPid(pid));
    }
    // Paths in /proc/PID/cgroup are relative to the reader's cgroup namespace: read it from the
    // namespace the root was mounted in.
    let text = match cgroup_root.namespace_of {
        Some(viewer) => namespace::proc_cgroup_seen_by(viewer, pid)?,
        None => {
            let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
            match fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(TargetError::NoSuchPid(pid));
                }
                Err(source) => return Err(TargetError::Io { path, source }),
            }
        }
    };
    let memberships = parse_proc_cgroup(&text);
    let v2_relative = memberships
        .iter()
        .find(|(controllers, _)| controllers.is_empty())
        .map(|(_, path)| path.clone())
        .ok_or(TargetError::NoV2Membership { pid })?;
    if v2_relative
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(TargetError::OutsideNamespace {
            pid,
            path: v2_relative,
        });
    }
    let v2 = cgroup_root.absolute(&v2_relative);
    if !v2.is_dir() {
        return Err(TargetError::NotUnderRoot {
            pid,
            path: v2_relative,
            root: cgroup_root.v2.clone(),
        });
    }
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
    /// Set when the hierarchies were mounted from this process's cgroup namespace (a sidecar's
    /// view of its target), whose `/proc/PID/cgroup` paths they match.
    pub namespace_of: Option<u32>,
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
        Ok(Self {
            v2,
            v1,
            namespace_of: None,
        })
    }

    /// The host's cgroup hierarchy mounted at `path` (`--cgroup-root`, e.g. a hostPath volume):
    /// a cgroup2 mount, or a hybrid host's `/sys/fs/cgroup` with v2 in `unified/` and the v1
    /// hierarchies beside it.
    pub fn at(path: &Path) -> Result<Self, TargetError> {
        if path.join("cgroup.controllers").is_file() {
            return Ok(Self {
                v2: path.to_owned(),
                v1: Vec::new(),
                namespace_of: None,
            });
        }
        let unified = path.join("unified");
        if !unified.join("cgroup.controllers").is_file() {
            return Err(TargetError::NotV2Root(path.to_owned()));
        }
        let mut v1: Vec<(String, PathBuf)> = fs::read_dir(path)
            .map_err(|source| TargetError::Io {
                path: path.to_owned(),
                source,
            })?
            .filter_map(Result::ok)
            // Real directories only: `cpu` and `cpuacct` are often links to `cpu,cpuacct`.
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|entry| entry.path().join("cgroup.procs").is_file() && entry.path() != unified)
            .map(|entry| {
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                )
            })
            .collect();
        v1.sort();
        Ok(Self {
            v2: unified,
            v1,
            namespace_of: None,
        })
    }

    /// The hierarchy as process `pid`'s cgroup namespace sees it, mounted by chaos-user (see
    /// `namespace.rs`): how a sidecar sees the container whose pid namespace it shares.
    pub fn seen_from(pid: u32) -> Result<Self, TargetError> {
        namespace::view_of(pid)
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
    fn cgroup_root_flag_takes_a_cgroup2_mount_or_a_hybrid_hosts_tree() {
        let base = std::env::temp_dir().join(format!("syschaos-root-{}", std::process::id()));
        let touch = |path: &str| {
            let path = base.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        };
        touch("v2/cgroup.controllers");
        touch("hybrid/unified/cgroup.controllers");
        touch("hybrid/unified/cgroup.procs");
        touch("hybrid/memory/cgroup.procs");
        touch("hybrid/cpu,cpuacct/cgroup.procs");
        fs::create_dir_all(base.join("v1-only/memory")).unwrap();

        let pure = CgroupRoot::at(&base.join("v2")).unwrap();
        assert_eq!(pure.v2, base.join("v2"));
        assert!(pure.v1.is_empty());
        let hybrid = CgroupRoot::at(&base.join("hybrid")).unwrap();
        assert_eq!(hybrid.v2, base.join("hybrid/unified"));
        let names: Vec<&str> = hybrid.v1.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cpu,cpuacct", "memory"]);
        assert!(matches!(
            CgroupRoot::at(&base.join("v1-only")),
            Err(TargetError::NotV2Root(_))
        ));
        fs::remove_dir_all(&base).unwrap();
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
