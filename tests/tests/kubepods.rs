//! `--pod-uid` and `--cgroup-glob` on the real cgroup v2 hierarchy: a pod laid out as kubelet
//! (systemd driver) and containerd lay it out, with a workload process as its container and a
//! process named `pause` as its sandbox. No cluster: the cgroups are made here.
use std::{
    fs,
    io::{BufRead as _, BufReader, Lines},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
};

use tests::{attach::Attach, cgroup_v2_root, workload_bin};

const UID: &str = "5f2b8c1d-7e4a-4b3c-9d2e-0a1b2c3d4e5f";
const APP_ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const PAUSE_ID: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// A process of the fake pod; killed when dropped.
struct Process {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Process {
    /// `BINARY idle ARGS` moved into cgroup `dir`, once it is ready.
    fn start(binary: &Path, args: &[&str], dir: &Path) -> Self {
        let mut child = Command::new(binary)
            .arg("idle")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the workload");
        let stdout = child.stdout.take().unwrap();
        let mut process = Self {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        process.next_line(); // {"ready":true}
        fs::write(dir.join("cgroup.procs"), process.child.id().to_string()).unwrap();
        process
    }

    fn next_line(&mut self) -> String {
        self.lines.next().expect("a line").expect("read stdout")
    }

    /// One round of calls (SIGUSR1), waited for.
    fn round(&mut self) {
        // SAFETY: signals our own child, not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGUSR1) };
        let report = self.next_line();
        assert!(report.contains("\"round\""), "{report}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pod's cgroups under the v2 root; removed (processes first) when dropped.
struct FakePod {
    top: PathBuf,
    dirs: Vec<PathBuf>,
    processes: Vec<Process>,
    _pause_binary: TempBinary,
}

struct TempBinary(PathBuf);

impl Drop for TempBinary {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl FakePod {
    fn start() -> Self {
        let top_name = format!("syschaos-test-{}-kubepods.slice", std::process::id());
        let top = cgroup_v2_root().join(&top_name);
        let qos = top.join("kubepods-burstable.slice");
        let pod = qos.join(format!(
            "kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        ));
        let app = pod.join(format!("cri-containerd-{APP_ID}.scope"));
        let sandbox = pod.join(format!("cri-containerd-{PAUSE_ID}.scope"));
        for dir in [&app, &sandbox] {
            fs::create_dir_all(dir).unwrap();
        }
        // The sandbox's process is called `pause`, as the real one.
        let bin_dir = std::env::temp_dir().join(format!("syschaos-pause-{}", std::process::id()));
        fs::create_dir_all(&bin_dir).unwrap();
        let pause_binary = bin_dir.join("pause");
        fs::copy(workload_bin(), &pause_binary).unwrap();
        let pause = Process::start(&pause_binary, &[], &sandbox);
        let app_process = Process::start(
            &workload_bin(),
            &["--getppid", "500", "--open-missing", "5"],
            &app,
        );
        Self {
            top,
            dirs: vec![app, sandbox, pod, qos],
            processes: vec![app_process, pause],
            _pause_binary: TempBinary(bin_dir),
        }
    }

    fn app(&mut self) -> &mut Process {
        &mut self.processes[0]
    }
}

impl Drop for FakePod {
    fn drop(&mut self) {
        self.processes.clear();
        for dir in self.dirs.iter().chain([&self.top]) {
            // A cgroup can be removed once its processes are gone; the kernel needs a moment.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

fn getppid(attach: &Attach, target: &str) -> Option<f64> {
    attach.metrics().value(
        "syschaos_syscalls_total",
        &[("target", target), ("syscall", "getppid")],
    )
}

#[test]
fn pod_uid_finds_the_pods_containers_but_not_its_sandbox() {
    let mut pod = FakePod::start();
    let attach = Attach::start(&["--pod-uid", UID]);
    let label = format!("pod{UID}/{}", &APP_ID[..12]);
    assert!(
        attach
            .stderr()
            .contains(&format!("syschaos: attached to {label} (")),
        "{}",
        attach.stderr()
    );
    pod.app().round();
    pod.app().round();
    assert_eq!(getppid(&attach, &label), Some(1000.0));
    assert_eq!(
        attach
            .metrics()
            .label_values("syschaos_syscalls_total", "target"),
        [label]
    );
}

#[test]
fn cgroup_glob_matches_every_scope_and_names_it_by_its_path() {
    let mut pod = FakePod::start();
    let top = pod.top.file_name().unwrap().to_str().unwrap().to_owned();
    let attach = Attach::start(&["--cgroup-glob", &format!("{top}/**/*.scope")]);
    pod.app().round();
    let app = pod.dirs[0].strip_prefix(cgroup_v2_root()).unwrap();
    let sandbox = pod.dirs[1].strip_prefix(cgroup_v2_root()).unwrap();
    let app = app.display().to_string();
    assert_eq!(getppid(&attach, &app), Some(500.0));
    // Both scopes are targets (a glob takes what it matches, the sandbox too).
    let stderr = attach.stderr();
    assert!(stderr.contains(&sandbox.display().to_string()), "{stderr}");
}

#[test]
fn a_glob_or_pod_that_matches_nothing_is_refused() {
    let (status, stderr) = tests::attach::run_chaos_user(
        &[
            "attach",
            "--cgroup-glob",
            "no-such-dir-syschaos/**/*.scope",
            "--no-metrics",
        ],
        |_| {},
    );
    assert!(!status.success());
    assert!(
        stderr.contains("no cgroup v2 directory matches no-such-dir-syschaos/**/*.scope"),
        "{stderr}"
    );
    let (status, stderr) = tests::attach::run_chaos_user(
        &[
            "attach",
            "--pod-uid",
            "00000000-0000-0000-0000-000000000000",
            "--no-metrics",
        ],
        |_| {},
    );
    assert!(!status.success());
    assert!(
        stderr.contains("no cgroup of pod 00000000-0000-0000-0000-000000000000"),
        "{stderr}"
    );
}
