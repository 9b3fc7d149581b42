//! Containers for the tests, removed when dropped.
use std::process::{Command, Output};

use crate::{WorkloadReport, workload_image};

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker client")
}

fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A workload container (`chaos-workload idle ...`), with no network.
pub struct Container {
    pub name: String,
}

impl Container {
    /// Starts `chaos-workload idle WORKLOAD_ARGS` with no network; each
    /// [`Container::trigger_round`] makes it run one round of calls.
    pub fn start(name: &str, workload_args: &[&str]) -> Self {
        let mut command = vec!["idle"];
        command.extend_from_slice(workload_args);
        Self::run(name, &["--network", "none"], &command)
    }

    /// Starts `chaos-workload COMMAND...` with these `docker run` options, and waits until the
    /// workload says it is ready.
    pub fn run(name: &str, docker_options: &[&str], command: &[&str]) -> Self {
        let name = format!("syschaos-test-{name}-{}", std::process::id());
        let _ = docker(&["rm", "-f", &name]);
        let image = workload_image();
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(docker_options);
        args.push(&image);
        args.extend_from_slice(command);
        docker_ok(&args);
        let container = Self { name };
        container.wait_ready(1);
        container
    }

    /// Waits until the workload has said `ready` `times` times (once per start).
    fn wait_ready(&self, times: usize) {
        crate::wait_for(
            &format!("{} to be ready", self.name),
            std::time::Duration::from_secs(30),
            || (self.logs().matches(r#"{"ready":true}"#).count() >= times).then_some(()),
        );
    }

    /// Created but never started.
    pub fn create_stopped(name: &str) -> Self {
        let name = format!("syschaos-test-{name}-{}", std::process::id());
        let _ = docker(&["rm", "-f", &name]);
        docker_ok(&[
            "create",
            "--name",
            &name,
            "--network",
            "none",
            &workload_image(),
            "idle",
        ]);
        Self { name }
    }

    /// Signals the workload to run one round, and returns its report once it has run.
    /// `round` counts from 1 since the container (re)started.
    pub fn trigger_round(&self, round: u64) -> WorkloadReport {
        let before = self.reports(round).len();
        docker_ok(&["kill", "-s", "USR1", &self.name]);
        crate::wait_for(
            &format!("{} to finish round {round}", self.name),
            std::time::Duration::from_secs(30),
            || self.reports(round).into_iter().nth(before),
        )
    }

    /// The reports of round `round` in the container's log, oldest first.
    pub fn reports(&self, round: u64) -> Vec<WorkloadReport> {
        self.logs()
            .lines()
            .filter_map(WorkloadReport::parse)
            .filter(|report| report.round == round)
            .collect()
    }

    pub fn logs(&self) -> String {
        let output = docker(&["logs", &self.name]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn restart(&self) {
        let starts = self.logs().matches(r#"{"ready":true}"#).count();
        docker_ok(&["restart", "-t", "2", &self.name]);
        self.wait_ready(starts + 1);
    }

    pub fn pid(&self) -> u32 {
        docker_ok(&["inspect", "-f", "{{.State.Pid}}", &self.name])
            .parse()
            .expect("a pid")
    }

    /// Runs `work` on a thread that joined the container's network namespace: connections to
    /// 127.0.0.1 reach the container's own loopback, and the traffic never leaves it.
    pub fn in_network_namespace<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let path = format!("/proc/{}/ns/net", self.pid());
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let namespace = std::fs::File::open(&path).expect("open the namespace");
                    let joined = unsafe {
                        libc::setns(
                            std::os::fd::AsRawFd::as_raw_fd(&namespace),
                            libc::CLONE_NEWNET,
                        )
                    };
                    assert_eq!(
                        joined,
                        0,
                        "setns {path}: {}",
                        std::io::Error::last_os_error()
                    );
                    work()
                })
                .join()
                .expect("the thread in the container's network namespace")
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}
