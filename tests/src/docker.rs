//! Containers for the tests, removed when dropped.
use std::process::{Command, Output};

use crate::workload_image;

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
    /// Starts `chaos-workload idle WORKLOAD_ARGS`; each [`Container::trigger_round`] makes it run
    /// one round of calls.
    pub fn start(name: &str, workload_args: &[&str]) -> Self {
        let name = format!("syschaos-test-{name}-{}", std::process::id());
        let _ = docker(&["rm", "-f", &name]);
        let image = workload_image();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            &image,
            "idle",
        ];
        args.extend_from_slice(workload_args);
        docker_ok(&args);
        Self { name }
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

    /// Signals the workload to run one round, and waits until it reports round `round`.
    pub fn trigger_round(&self, round: u64) {
        docker_ok(&["kill", "-s", "USR1", &self.name]);
        let marker = format!("round={round} ");
        crate::wait_for(
            &format!("{} to finish round {round}", self.name),
            std::time::Duration::from_secs(20),
            || self.logs().contains(&marker).then_some(()),
        );
    }

    pub fn logs(&self) -> String {
        let output = docker(&["logs", &self.name]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn restart(&self) {
        docker_ok(&["restart", "-t", "2", &self.name]);
    }

    pub fn pid(&self) -> u32 {
        docker_ok(&["inspect", "-f", "{{.State.Pid}}", &self.name])
            .parse()
            .expect("a pid")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}
