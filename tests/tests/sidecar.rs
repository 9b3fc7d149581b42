//! The `syschaos` image (`cargo xtask image`) run the two documented ways against a workload
//! container, metrics read over HTTP and counts checked exactly: host-wide (host pid and cgroup
//! namespaces, the host's /sys, the Docker socket) and as a sidecar that shares the target's pid
//! namespace and has no socket and no host mount at all.
use std::time::Duration;

use tests::{
    assert_no_programs_since,
    docker::{Container, docker},
    free_port,
    metrics::{Scrape, scrape},
    newest_program_id, syschaos_image, wait_for,
};

/// A running `syschaos` container, removed when dropped.
struct Agent {
    name: String,
    port: u16,
}

impl Agent {
    /// `docker run -d [privileged] OPTIONS --network host syschaos attach ARGS --quiet
    /// --metrics-addr 127.0.0.1:PORT`, once it says it is attached.
    fn start(name: &str, options: &[&str], attach_args: &[&str]) -> Self {
        let agent = Self {
            name: format!("syschaos-test-agent-{name}-{}", std::process::id()),
            port: free_port(),
        };
        let metrics_addr = format!("127.0.0.1:{}", agent.port);
        let image = syschaos_image();
        let mut args = vec!["run", "-d", "--name", &agent.name];
        args.extend(privileged());
        args.extend_from_slice(options);
        args.extend(["--network", "host", &image, "attach"]);
        args.extend_from_slice(attach_args);
        args.extend(["--quiet", "--metrics-addr", &metrics_addr]);
        let output = docker(&args);
        assert!(output.status.success(), "docker {args:?}: {output:?}");
        wait_for(
            &format!("{} to attach", agent.name),
            Duration::from_secs(30),
            || {
                let logs = agent.logs();
                let state = docker(&["inspect", "-f", "{{.State.Running}}", &agent.name]);
                assert!(
                    String::from_utf8_lossy(&state.stdout).trim() == "true",
                    "{} exited: {logs}",
                    agent.name
                );
                logs.contains("syschaos: attached").then_some(())
            },
        );
        agent
    }

    fn metrics(&self) -> Scrape {
        scrape(self.port)
    }

    fn logs(&self) -> String {
        let output = docker(&["logs", &self.name]);
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// `docker stop`: SIGTERM, and chaos-user detaches.
    fn stop(&self) -> String {
        let output = docker(&["stop", "-t", "10", &self.name]);
        assert!(output.status.success(), "{output:?}");
        self.logs()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

/// `--privileged`, as the README says. A CI machine that is itself a sandbox may lack some
/// capability in its own bounding set (CAP_SYS_RESOURCE, say); runc then refuses `--privileged`
/// ("unable to apply caps"), and the test grants what chaos-user needs instead: CAP_SYS_ADMIN
/// (BPF, mounts, namespaces) and CAP_SYS_PTRACE (other processes' /proc entries), with seccomp and
/// AppArmor off as under `--privileged`.
fn privileged() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40);
    if bounding == (1u64 << (last + 1)) - 1 {
        return vec!["--privileged"];
    }
    vec![
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "SYS_PTRACE",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
    ]
}

/// The README's host-wide command, less `--privileged` and `--network host` (added by `start`).
const HOST_WIDE: [&str; 6] = [
    "--pid=host",
    "--cgroupns=host",
    "-v",
    "/sys:/sys",
    "-v",
    "/var/run/docker.sock:/var/run/docker.sock",
];

fn calls(scrape: &Scrape, target: &str, syscall: &str) -> Option<f64> {
    scrape.value(
        "syschaos_syscalls_total",
        &[("target", target), ("syscall", syscall)],
    )
}

fn enoent(scrape: &Scrape, target: &str) -> Option<f64> {
    scrape.value(
        "syschaos_syscall_errors_total",
        &[
            ("target", target),
            ("syscall", "openat"),
            ("errno", "ENOENT"),
        ],
    )
}

#[test]
fn host_wide_container_counts_a_container_by_name() {
    let web = Container::start("hostwide", &["--getppid", "1000", "--open-missing", "50"]);
    let neighbour = Container::start("hostwide-other", &["--getppid", "7"]);
    let floor = newest_program_id();
    let agent = Agent::start("hostwide", &HOST_WIDE, &["--container", &web.name]);

    web.trigger_round(1);
    neighbour.trigger_round(1);
    let scrape = agent.metrics();
    assert_eq!(calls(&scrape, &web.name, "getppid"), Some(1000.0));
    assert_eq!(enoent(&scrape, &web.name), Some(50.0));
    assert_eq!(
        scrape.label_values("syschaos_syscalls_total", "target"),
        [web.name.as_str()]
    );
    web.trigger_round(2);
    assert_eq!(calls(&agent.metrics(), &web.name, "getppid"), Some(2000.0));

    let logs = agent.stop();
    assert!(logs.contains("syschaos: detached (SIGTERM)"), "{logs}");
    assert_no_programs_since(floor);
}

/// A sidecar attached to `web` with `--pid=container:web` and `sidecar_options`, no socket and
/// no host mount: exact counts under the target's host name (Docker sets it to the container id).
fn sidecar_counts_its_target(web: &Container, sidecar_options: &[&str]) {
    let neighbour = Container::start("sidecar-other", &["--getppid", "7"]);
    let floor = newest_program_id();
    let pid_namespace = format!("--pid=container:{}", web.name);
    let mut options = vec![pid_namespace.as_str()];
    options.extend_from_slice(sidecar_options);
    let agent = Agent::start("sidecar", &options, &["--shared-pid-namespace"]);

    let hostname = docker(&["inspect", "-f", "{{.Config.Hostname}}", &web.name]);
    let hostname = String::from_utf8_lossy(&hostname.stdout).trim().to_owned();
    web.trigger_round(1);
    neighbour.trigger_round(1);
    let scrape = agent.metrics();
    assert_eq!(calls(&scrape, &hostname, "getppid"), Some(1000.0));
    assert_eq!(enoent(&scrape, &hostname), Some(50.0));
    assert_eq!(
        scrape.label_values("syschaos_syscalls_total", "target"),
        [hostname.as_str()]
    );
    let memory = scrape.value("syschaos_container_memory_bytes", &[("target", &hostname)]);
    assert!(
        memory.is_some_and(|bytes| bytes > 0.0),
        "memory: {memory:?}"
    );
    // The sidecar's own calls are in its own cgroup, not counted.
    web.trigger_round(2);
    let scrape = agent.metrics();
    assert_eq!(calls(&scrape, &hostname, "getppid"), Some(2000.0));
    assert_eq!(enoent(&scrape, &hostname), Some(100.0));

    let logs = agent.stop();
    assert!(logs.contains("syschaos: detached (SIGTERM)"), "{logs}");
    assert_no_programs_since(floor);
}

const WORKLOAD: [&str; 5] = ["idle", "--getppid", "1000", "--open-missing", "50"];

#[test]
fn sidecar_shares_the_targets_pid_namespace_and_needs_no_host_mount() {
    let web = Container::run("sidecar", &["--network", "none"], &WORKLOAD);
    sidecar_counts_its_target(&web, &[]);
}

/// Both in cgroup namespaces of their own (Docker's default on cgroup v2 hosts): the sidecar's
/// `/proc/1/cgroup` and `/sys/fs/cgroup` show nothing of the target's cgroup, so it enters the
/// target's cgroup namespace to look.
#[test]
fn sidecar_sees_a_target_in_a_private_cgroup_namespace() {
    let private = ["--network", "none", "--cgroupns=private"];
    let web = Container::run("sidecar-cgroupns", &private, &WORKLOAD);
    sidecar_counts_its_target(&web, &["--cgroupns=private"]);
}

/// What is missing is named, with the `docker run` option that brings it.
#[test]
fn a_container_missing_a_privilege_or_namespace_says_which() {
    let web = Container::start("sidecar-bad", &[]);
    let image = syschaos_image();
    let failure = |args: &[&str]| {
        let output = docker(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    // A sidecar without privileges cannot see its target's cgroup.
    let pid_namespace = format!("--pid=container:{}", web.name);
    let stderr = failure(&[
        "run",
        "--rm",
        &pid_namespace,
        "--network",
        "none",
        &image,
        "attach",
        "--shared-pid-namespace",
        "--no-metrics",
    ]);
    assert!(stderr.contains("needs --privileged"), "{stderr}");

    // Host-wide without the host's pid namespace: the container's pid is not visible.
    let mut args = vec!["run", "--rm"];
    args.extend(privileged());
    args.extend([
        "--cgroupns=host",
        "-v",
        "/sys:/sys",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "--network",
        "none",
        &image,
        "attach",
        "--container",
        &web.name,
        "--no-metrics",
    ]);
    let stderr = failure(&args);
    assert!(
        stderr.contains("run chaos-user with --pid=host"),
        "{stderr}"
    );
}
