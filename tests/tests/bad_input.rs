//! Bad input: one clear error line, a non-zero exit, and nothing left attached.
use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    process::Command,
};

use tests::{
    TempDir,
    attach::{assert_binary_refused, assert_refused},
    chaos_user_bin,
    docker::Container,
};

/// `attach ARGS`, bounded in time.
fn attach_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut full = vec!["attach", "--quiet", "--duration", "5s"];
    full.extend_from_slice(args);
    full
}

/// Runs `chaos-user attach ARGS` and checks the one error line it must print.
fn refused(args: &[&str], expected: &str, configure: impl FnOnce(&mut Command)) {
    assert_refused(&attach_args(args), expected, configure);
}

#[test]
fn unknown_container() {
    refused(
        &["--container", "syschaos-no-such-container"],
        "no container named `syschaos-no-such-container`",
        |_| {},
    );
}

#[test]
fn no_syscalls_with_an_injection() {
    let target = Container::start("nosyscalls", &[]);
    refused(
        &[
            "--container",
            &target.name,
            "--no-syscalls",
            "--inject",
            "openat=EACCES",
        ],
        "--no-syscalls leaves out the syscall programs that injecting and tracing work through",
        |_| {},
    );
}

#[test]
fn no_latency_with_an_injection() {
    let target = Container::start("nolatencyinject", &[]);
    refused(
        &[
            "--container",
            &target.name,
            "--no-latency",
            "--inject",
            "openat=EACCES",
        ],
        "--no-latency leaves out the syscall entry program, where rules are decided and calls traced",
        |_| {},
    );
}

#[test]
fn container_not_running() {
    let stopped = Container::create_stopped("stopped");
    refused(
        &["--container", &stopped.name],
        "is not running (it is created)",
        |_| {},
    );
}

#[test]
fn one_bad_target_among_good_ones_attaches_nothing() {
    let good = Container::start("good", &[]);
    refused(
        &[
            "--container",
            &good.name,
            "--container",
            "syschaos-no-such-container",
        ],
        "no container named",
        |_| {},
    );
}

#[test]
fn pid_that_does_not_exist() {
    refused(
        &["--pid", "999999999"],
        "no process with pid 999999999",
        |_| {},
    );
}

#[test]
fn path_that_is_not_a_cgroup() {
    refused(
        &["--cgroup", "/tmp"],
        "is not a cgroup v2 directory",
        |_| {},
    );
}

#[test]
fn no_docker_daemon() {
    refused(
        &["--container", "anything"],
        "cannot reach the Docker daemon",
        |command| {
            command.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
        },
    );
}

#[test]
fn missing_privileges() {
    // nobody must be able to run the binary wherever the clone is (a private home, a mktemp -d
    // folder): it runs a copy in a directory of its own, readable and executable by everyone.
    let dir = TempDir::new("nobody");
    let binary = dir.0.join("chaos-user");
    std::fs::copy(chaos_user_bin(), &binary).unwrap();
    for path in [&dir.0, &binary] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for ancestor in dir.0.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "nobody cannot reach {} ({} is mode {mode:o}): \
             set TMPDIR to a directory everyone can enter",
            binary.display(),
            ancestor.display()
        );
    }
    assert_binary_refused(
        &binary,
        &attach_args(&["--pid", "1"]),
        "needs root, or the capabilities CAP_BPF",
        |command| {
            // nobody: no capabilities at all.
            command.uid(65534).gid(65534);
        },
    );
}

#[test]
fn metrics_port_in_use() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    refused(
        &["--pid", "1", "--metrics-addr", &addr],
        &format!("cannot serve metrics on {addr}"),
        |_| {},
    );
}

#[test]
fn the_same_cgroup_twice() {
    let web = Container::start("twice", &[]);
    let pid = web.pid().to_string();
    refused(
        &["--container", &web.name, "--pid", &pid],
        "are the same cgroup",
        |_| {},
    );
}

#[test]
fn no_target_at_all() {
    refused(&[], "nothing to attach to", |_| {});
}
