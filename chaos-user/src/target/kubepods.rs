//! Kubernetes pods on this node, found in the cgroup tree kubelet lays out, and cgroup globs.
//!
//! kubelet puts each pod in a cgroup under `kubepods`, by QoS class, and the runtime puts each
//! container (and the pod's sandbox) in a cgroup below it:
//!
//! - cgroupfs driver: `kubepods/burstable/pod<UID>/<container-id>` (containerd, Docker) or
//!   `.../crio-<id>` (CRI-O); guaranteed pods sit right under `kubepods/pod<UID>`;
//! - systemd driver: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID>.slice/
//!   cri-containerd-<id>.scope`, `crio-<id>.scope` or `docker-<id>.scope`, with the UID's dashes
//!   as underscores.
//!
//! kubelet may nest all of it under a cgroup root of its own (`kubelet.slice/kubelet-kubepods.slice`
//! on kind nodes), so the pod is searched for in every directory whose name has `kube` in it
//! (and in cgroupfs's QoS directories `burstable` and `besteffort`).
use std::{
    fs,
    path::{Path, PathBuf},
};

use super::TargetError;

/// How deep under the cgroup root a pod's cgroup may be.
const MAX_POD_DEPTH: usize = 5;

/// The containers of pod `uid`: (label, cgroup directory) for every leaf cgroup under the pod's
/// cgroup, except the sandbox (its only process is `pause`) and CRI-O's conmon cgroups.
/// `process_name` gives a pid's command name (`/proc/PID/comm`).
pub fn pod_containers(
    root: &Path,
    uid: &str,
    process_name: impl Fn(u32) -> Option<String>,
) -> Result<Vec<(String, PathBuf)>, TargetError> {
    let uid = uid.replace('_', "-");
    let mut pod_dirs = Vec::new();
    find_pod_dirs(root, &uid, MAX_POD_DEPTH, &mut pod_dirs);
    let mut containers = Vec::new();
    for pod_dir in &pod_dirs {
        let mut leaves = Vec::new();
        leaf_cgroups(pod_dir, &mut leaves);
        for leaf in leaves {
            let name = file_name(&leaf);
            if name.starts_with("crio-conmon-") || is_sandbox(&leaf, &process_name) {
                continue;
            }
            let id = container_id(name);
            let short = id.get(..12).unwrap_or(id);
            containers.push((format!("pod{uid}/{short}"), leaf));
        }
    }
    if containers.is_empty() {
        return Err(TargetError::NoPod {
            uid,
            root: root.to_owned(),
            found_pod: !pod_dirs.is_empty(),
        });
    }
    Ok(containers)
}

/// Directories under `root` matching `pattern` (relative to it) that are cgroups:
/// (path relative to the root, directory).
pub fn glob_cgroups(root: &Path, pattern: &str) -> Result<Vec<(String, PathBuf)>, TargetError> {
    let bad = |why: String| TargetError::BadGlob {
        pattern: pattern.to_owned(),
        why,
    };
    let root_text = root
        .to_str()
        .ok_or_else(|| bad("root is not UTF-8".into()))?;
    let full = format!(
        "{}/{}",
        glob::Pattern::escape(root_text.trim_end_matches('/')),
        pattern.trim_start_matches('/')
    );
    let mut found = Vec::new();
    for entry in glob::glob(&full).map_err(|e| bad(e.to_string()))? {
        let dir = entry.map_err(|e| bad(e.to_string()))?;
        if dir.join("cgroup.procs").is_file() {
            let relative = dir.strip_prefix(root).unwrap_or(&dir);
            found.push((relative.display().to_string(), dir));
        }
    }
    if found.is_empty() {
        return Err(TargetError::NoGlobMatch {
            pattern: pattern.to_owned(),
            root: root.to_owned(),
        });
    }
    Ok(found)
}

fn find_pod_dirs(dir: &Path, uid: &str, depth: usize, found: &mut Vec<PathBuf>) {
    let cgroupfs_name = format!("pod{uid}");
    let systemd_suffix = format!("pod{}.slice", uid.replace('-', "_"));
    for child in subdirectories(dir) {
        let name = file_name(&child);
        if name == cgroupfs_name || (name.starts_with("kube") && name.ends_with(&systemd_suffix)) {
            found.push(child);
        } else if depth > 1
            && (name.contains("kube") || ["burstable", "besteffort"].contains(&name))
        {
            find_pod_dirs(&child, uid, depth - 1, found);
        }
    }
}

fn leaf_cgroups(dir: &Path, leaves: &mut Vec<PathBuf>) {
    let children = subdirectories(dir);
    if children.is_empty() {
        leaves.push(dir.to_owned());
    }
    for child in children {
        leaf_cgroups(&child, leaves);
    }
}

/// A pod's sandbox cgroup holds the `pause` process and nothing else.
fn is_sandbox(dir: &Path, process_name: &impl Fn(u32) -> Option<String>) -> bool {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<u32> = procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    !pids.is_empty()
        && pids
            .iter()
            .all(|pid| process_name(*pid).is_some_and(|name| name == "pause"))
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` or a bare `<id>`.
fn container_id(cgroup_name: &str) -> &str {
    let name = cgroup_name.trim_end_matches(".scope");
    ["cri-containerd-", "crio-", "docker-", "containerd-"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name)
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect();
    dirs.sort();
    dirs
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// `/proc/PID/comm`, as [`pod_containers`] wants it.
pub fn proc_comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const UID: &str = "0c7b1f9e-3a2d-4c5b-9e8f-1a2b3c4d5e6f";
    const APP: &str = "3f4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";
    const SIDECAR: &str = "aa11bb22cc33dd44ee55ff66aa77bb88cc99dd00ee11ff22aa33bb44cc55dd66";
    const PAUSE: &str = "9999888877776666555544443333222211110000aaaabbbbccccddddeeeeffff";

    /// A cgroup tree in a temporary directory: each path gets a `cgroup.procs` with its pids.
    struct Tree {
        root: PathBuf,
    }

    impl Tree {
        fn new(name: &str, cgroups: &[(&str, &[u32])]) -> Self {
            let root = std::env::temp_dir()
                .join(format!("syschaos-cgroups-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            for (path, pids) in cgroups {
                let dir = root.join(path);
                fs::create_dir_all(&dir).unwrap();
                let procs: String = pids.iter().map(|pid| format!("{pid}\n")).collect();
                fs::write(dir.join("cgroup.procs"), procs).unwrap();
            }
            Self { root }
        }

        /// `--pod-uid UID` over this tree, with pid 10 being `pause`: labels and paths relative
        /// to the root.
        fn pod(&self, uid: &str) -> Result<Vec<(String, String)>, TargetError> {
            let names = BTreeMap::from([(10, "pause"), (20, "nginx"), (30, "envoy")]);
            let comm = |pid| names.get(&pid).map(|name: &&str| name.to_string());
            Ok(pod_containers(&self.root, uid, comm)?
                .into_iter()
                .map(|(label, dir)| (label, self.relative(&dir)))
                .collect())
        }

        fn relative(&self, dir: &Path) -> String {
            dir.strip_prefix(&self.root).unwrap().display().to_string()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn expected(pod_dir: &str, names: [&str; 2]) -> Vec<(String, String)> {
        let app = format!("pod{UID}/{}", &APP[..12]);
        let sidecar = format!("pod{UID}/{}", &SIDECAR[..12]);
        let mut list = vec![
            (app, format!("{pod_dir}/{}", names[0])),
            (sidecar, format!("{pod_dir}/{}", names[1])),
        ];
        list.sort_by(|a, b| a.1.cmp(&b.1));
        list
    }

    fn sorted(mut list: Vec<(String, String)>) -> Vec<(String, String)> {
        list.sort_by(|a, b| a.1.cmp(&b.1));
        list
    }

    /// The layout of `driver` for a runtime whose container cgroups are `name(id)`.
    fn systemd_tree(test: &str, name: impl Fn(&str) -> String) -> (Tree, String) {
        let pod = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        );
        let other = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice";
        let cgroups = [
            (format!("{pod}/{}", name(PAUSE)), vec![10]),
            (format!("{pod}/{}", name(APP)), vec![20, 21]),
            (format!("{pod}/{}", name(SIDECAR)), vec![30]),
            (format!("{other}/{}", name(APP).replace('3', "4")), vec![40]),
            ("system.slice/containerd.service".to_owned(), vec![1]),
        ];
        let cgroups: Vec<(&str, &[u32])> = cgroups
            .iter()
            .map(|(path, pids)| (path.as_str(), pids.as_slice()))
            .collect();
        (Tree::new(test, &cgroups), pod)
    }

    #[test]
    fn systemd_driver_containerd_crio_and_docker() {
        for (runtime, prefix) in [
            ("containerd", "cri-containerd-"),
            ("crio", "crio-"),
            ("docker", "docker-"),
        ] {
            let scope = |id: &str| format!("{prefix}{id}.scope");
            let (tree, pod) = systemd_tree(&format!("systemd-{runtime}"), scope);
            let names = [scope(APP), scope(SIDECAR)];
            let want = expected(&pod, [&names[0], &names[1]]);
            assert_eq!(sorted(tree.pod(UID).unwrap()), want, "{runtime}");
            // The UID as kubectl prints it or with the systemd underscores: the same pod.
            let underscored = UID.replace('-', "_");
            assert_eq!(sorted(tree.pod(&underscored).unwrap()), want, "{runtime}");
        }
    }

    #[test]
    fn cgroupfs_driver_containerd_and_crio_with_conmon() {
        let pod = format!("kubepods/burstable/pod{UID}");
        let tree = Tree::new(
            "cgroupfs",
            &[
                (&format!("{pod}/{PAUSE}"), &[10]),
                (&format!("{pod}/{APP}"), &[20]),
                (&format!("{pod}/crio-{SIDECAR}"), &[30]),
                (&format!("{pod}/crio-conmon-{SIDECAR}"), &[31]),
                (
                    "kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/abc",
                    &[40],
                ),
            ],
        );
        let sidecar = format!("crio-{SIDECAR}");
        assert_eq!(
            sorted(tree.pod(UID).unwrap()),
            expected(&pod, [APP, &sidecar])
        );
    }

    #[test]
    fn guaranteed_pods_and_a_kubelet_cgroup_root() {
        let pod = format!(
            "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{}.slice",
            UID.replace('-', "_")
        );
        let a = format!("cri-containerd-{APP}.scope");
        let b = format!("cri-containerd-{SIDECAR}.scope");
        let tree = Tree::new(
            "kind",
            &[
                (&format!("{pod}/{a}"), &[20]),
                (&format!("{pod}/{b}"), &[30]),
            ],
        );
        assert_eq!(sorted(tree.pod(UID).unwrap()), expected(&pod, [&a, &b]));

        let pod = format!("kubepods/pod{UID}");
        let tree = Tree::new(
            "guaranteed",
            &[
                (&format!("{pod}/{APP}"), &[20]),
                (&format!("{pod}/{SIDECAR}"), &[30]),
            ],
        );
        assert_eq!(
            sorted(tree.pod(UID).unwrap()),
            expected(&pod, [APP, SIDECAR])
        );
    }

    #[test]
    fn a_pod_not_on_this_node_or_with_only_its_sandbox() {
        let (tree, _) = systemd_tree("missing", |id| format!("cri-containerd-{id}.scope"));
        let missing = tree
            .pod("deadbeef-0000-0000-0000-000000000000")
            .unwrap_err();
        assert!(
            matches!(
                missing,
                TargetError::NoPod {
                    found_pod: false,
                    ..
                }
            ),
            "{missing}"
        );
        let only_pause = Tree::new(
            "only-pause",
            &[(&format!("kubepods/besteffort/pod{UID}/{PAUSE}"), &[10])],
        );
        let error = only_pause.pod(UID).unwrap_err();
        assert!(
            matches!(
                error,
                TargetError::NoPod {
                    found_pod: true,
                    ..
                }
            ),
            "{error}"
        );
    }

    /// The DaemonSet's globs: every container of every pod, whatever its QoS class.
    #[test]
    fn recursive_globs_reach_every_qos_class() {
        let (systemd, _) = systemd_tree("glob-systemd", |id| format!("cri-containerd-{id}.scope"));
        let all = glob_cgroups(&systemd.root, "kubepods.slice/**/*.scope").unwrap();
        assert_eq!(all.len(), 4, "{all:?}");
        let cgroupfs = Tree::new(
            "glob-cgroupfs",
            &[
                (&format!("kubepods/pod{UID}/{APP}"), &[20]),
                (&format!("kubepods/burstable/pod{UID}/{SIDECAR}"), &[30]),
                ("kubepods/besteffort/pod1/crio-conmon-abc", &[40]),
            ],
        );
        let all = glob_cgroups(&cgroupfs.root, "kubepods/**/pod*/*").unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
    }

    #[test]
    fn globs_match_cgroup_directories() {
        let (tree, pod) = systemd_tree("glob", |id| format!("crio-{id}.scope"));
        let matched =
            glob_cgroups(&tree.root, "kubepods.slice/*/*pod0c7b1f9e*.slice/*.scope").unwrap();
        let mut labels: Vec<String> = matched.iter().map(|(label, _)| label.clone()).collect();
        labels.sort();
        let mut want: Vec<String> = [APP, SIDECAR, PAUSE]
            .iter()
            .map(|id| format!("{pod}/crio-{id}.scope"))
            .collect();
        want.sort();
        assert_eq!(labels, want);
        assert!(
            matched
                .iter()
                .all(|(label, dir)| dir == &tree.root.join(label))
        );
        assert!(matches!(
            glob_cgroups(&tree.root, "kubepods.slice/*/nothing*"),
            Err(TargetError::NoGlobMatch { .. })
        ));
        assert!(matches!(
            glob_cgroups(&tree.root, "kubepods.slice/[*"),
            Err(TargetError::BadGlob { .. })
        ));
    }
}
