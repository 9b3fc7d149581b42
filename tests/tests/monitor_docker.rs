//! The monitor against real Docker containers: exact counts, attributed to the right container.
use std::{os::unix::fs::MetadataExt as _, time::Duration};

use tests::{
    assert_no_programs_since,
    attach::Attach,
    docker::{Container, docker},
    metrics::Scrape,
    newest_program_id, syschaos_programs_since, wait_for, workload_bin,
};

const CALLS: &str = "syschaos_syscalls_total";
const ERRORS: &str = "syschaos_syscall_errors_total";

fn calls(scrape: &Scrape, target: &str, syscall: &str) -> Option<f64> {
    scrape.value(CALLS, &[("target", target), ("syscall", syscall)])
}

fn enoent(scrape: &Scrape, target: &str, syscall: &str) -> Option<f64> {
    scrape.value(
        ERRORS,
        &[
            ("target", target),
            ("syscall", syscall),
            ("errno", "ENOENT"),
        ],
    )
}

/// Bytes each round of `web` writes to its filesystem (one byte a call), then fsyncs.
const WRITTEN: u64 = 256 * 1024;

/// The block device Docker keeps containers' filesystems on, as /dev/NAME (the whole disk when
/// it is a partition: throttle rules are set on disks).
fn docker_disk() -> String {
    let output = docker(&["info", "-f", "{{.DockerRootDir}}"]);
    let root = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let dev = std::fs::metadata(&root)
        .unwrap_or_else(|e| panic!("Docker's root dir `{root}`: {e}"))
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = format!("/sys/dev/block/{major}:{minor}");
    let sys = std::fs::canonicalize(&sys).unwrap_or_else(|e| {
        panic!("Docker's root dir {root} is on no block device ({sys}: {e}): no block IO to count")
    });
    let disk = match sys.join("partition").exists() {
        true => sys.parent().expect("a partition's disk"),
        false => sys.as_path(),
    };
    format!("/dev/{}", disk.file_name().unwrap().to_string_lossy())
}

#[test]
fn two_containers_get_exact_counts_and_host_processes_none() {
    // On cgroup v1 the kernel counts a cgroup's block IO only on a disk with a throttle rule
    // (blk-throttle keeps the v1 counters, and stays off until a rule exists): a limit far above
    // what the test writes gets it counted without slowing anything.
    let limit = format!("{}:1gb", docker_disk());
    let web = Container::run(
        "web",
        &["--network", "none", "--device-write-bps", &limit],
        &[
            "idle",
            "--getppid",
            "1000",
            "--open-missing",
            "50",
            "--write",
            &WRITTEN.to_string(),
            "--fsync",
            "1",
        ],
    );
    let db = Container::start("db", &["--getppid", "300", "--open-missing", "7"]);
    let attach = Attach::start(&["--container", &web.name, "--container", &db.name]);
    let io = |scrape: &Scrape, direction: &str| {
        scrape.value(
            "syschaos_container_io_bytes_total",
            &[("target", &web.name), ("direction", direction)],
        )
    };
    let written_before = io(&attach.metrics(), "write").expect("io write of web");

    web.trigger_round(1);
    db.trigger_round(1);
    // The same calls from a process on the host, in no target's cgroup.
    let host = std::process::Command::new(workload_bin())
        .args(["calls", "--getppid", "4242", "--open-missing", "11"])
        .output()
        .expect("run the workload on the host");
    assert!(host.status.success());

    let scrape = attach.metrics();
    assert_eq!(calls(&scrape, &web.name, "getppid"), Some(1000.0));
    assert_eq!(enoent(&scrape, &web.name, "openat"), Some(50.0));
    assert_eq!(calls(&scrape, &db.name, "getppid"), Some(300.0));
    assert_eq!(enoent(&scrape, &db.name, "openat"), Some(7.0));
    let mut targets = vec![web.name.clone(), db.name.clone()];
    targets.sort();
    assert_eq!(scrape.label_values(CALLS, "target"), targets);

    // A second round adds exactly the same again.
    web.trigger_round(2);
    let scrape = attach.metrics();
    assert_eq!(calls(&scrape, &web.name, "getppid"), Some(2000.0));
    assert_eq!(enoent(&scrape, &web.name, "openat"), Some(100.0));
    assert_eq!(calls(&scrape, &db.name, "getppid"), Some(300.0));

    // Latency histogram: every completed getppid is in it.
    let count = scrape.value(
        "syschaos_syscall_duration_seconds_count",
        &[("target", &web.name), ("syscall", "getppid")],
    );
    assert_eq!(count, Some(2000.0));
    let inf = scrape.value(
        "syschaos_syscall_duration_seconds_bucket",
        &[
            ("target", &web.name),
            ("syscall", "getppid"),
            ("le", "+Inf"),
        ],
    );
    assert_eq!(inf, Some(2000.0));

    // Resource metrics come from the container's cgroup files.
    let cpu = scrape.value(
        "syschaos_container_cpu_seconds_total",
        &[("target", &web.name)],
    );
    assert!(cpu.is_some_and(|seconds| seconds > 0.0), "cpu: {cpu:?}");
    let memory = scrape.value("syschaos_container_memory_bytes", &[("target", &web.name)]);
    assert!(
        memory.is_some_and(|bytes| bytes > 0.0),
        "memory: {memory:?}"
    );
    assert!(io(&scrape, "read").is_some(), "io read missing");
    // Two rounds, each writing WRITTEN bytes and fsyncing them: at least that much reached the
    // disk (whole pages, and the file's metadata).
    let written = io(&scrape, "write").expect("io write of web") - written_before;
    assert!(
        written >= (2 * WRITTEN) as f64,
        "{written} bytes written, expected at least {}",
        2 * WRITTEN
    );
}

/// `--latency-sample 4`: counts stay exact, and both syscalls of an alternating pattern get their
/// share of timed calls (a sampler taking every 4th call of a thread would time only one of them).
#[test]
fn sampled_latency_keeps_counts_exact_and_times_every_syscall() {
    const N: f64 = 20000.0;
    let web = Container::start("sampled", &["--alternate", "20000"]);
    let attach = Attach::start(&["--container", &web.name, "--latency-sample", "4"]);
    web.trigger_round(1);
    let scrape = attach.metrics();
    for syscall in ["getppid", "getuid"] {
        assert_eq!(calls(&scrape, &web.name, syscall), Some(N), "{syscall}");
        let weighted = scrape
            .value(
                "syschaos_syscall_duration_seconds_count",
                &[("target", &web.name), ("syscall", syscall)],
            )
            .unwrap_or(0.0);
        // Binomial(N, 1/4) timed calls weighing 4 each: N plus or minus 6 sigma, with
        // sigma = 4 * sqrt(N * 1/4 * 3/4) = 245.
        assert!(
            (N - 1470.0..=N + 1470.0).contains(&weighted),
            "{syscall}: histogram count {weighted}, expected about {N}"
        );
    }
}

/// `--no-latency`: no entry program. Every call is counted at exit, exactly, and `exit` and
/// `exit_group`, which never reach it, when their thread exits; no latency histogram is kept.
#[test]
fn no_latency_counts_every_call_exactly_at_exit_alone() {
    let web = Container::start(
        "nolatency",
        &[
            "--getppid",
            "1000",
            "--open-missing",
            "7",
            "--thread-getppid",
            "100",
            "--threads",
            "4",
            "--fork-getppid",
            "50",
            "--forks",
            "3",
        ],
    );
    let attach = Attach::start(&["--container", &web.name, "--no-latency"]);
    web.trigger_round(1);
    let scrape = attach.metrics();
    assert_eq!(
        calls(&scrape, &web.name, "getppid"),
        Some(1000.0 + 4.0 * 100.0 + 3.0 * 50.0)
    );
    assert_eq!(enoent(&scrape, &web.name, "openat"), Some(7.0));
    // The round's threads end with `exit`, its forked children with `exit_group`.
    assert_eq!(calls(&scrape, &web.name, "exit"), Some(4.0));
    assert_eq!(calls(&scrape, &web.name, "exit_group"), Some(3.0));
    let timed = scrape.value(
        "syschaos_syscall_duration_seconds_count",
        &[("target", &web.name), ("syscall", "getppid")],
    );
    assert!(matches!(timed, None | Some(0.0)), "timed calls: {timed:?}");
}

#[test]
fn attach_by_pid_and_by_cgroup_path() {
    let by_pid = Container::start("bypid", &["--getppid", "123", "--open-missing", "4"]);
    let by_path = Container::start("bypath", &["--getppid", "77", "--open-missing", "2"]);
    let pid = by_pid.pid().to_string();
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", by_path.pid())).unwrap();
    let v2_path = cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .to_owned();
    let attach = Attach::start(&["--pid", &pid, "--cgroup", &v2_path]);
    by_pid.trigger_round(1);
    by_path.trigger_round(1);
    let scrape = attach.metrics();
    assert_eq!(calls(&scrape, &pid, "getppid"), Some(123.0));
    assert_eq!(enoent(&scrape, &pid, "openat"), Some(4.0));
    assert_eq!(calls(&scrape, &v2_path, "getppid"), Some(77.0));
    assert_eq!(enoent(&scrape, &v2_path, "openat"), Some(2.0));
}

#[test]
fn a_restarted_container_is_followed_and_a_removed_one_dropped() {
    let web = Container::start("restart", &["--getppid", "10", "--open-missing", "1"]);
    let floor = newest_program_id();
    let mut attach = Attach::start(&["--container", &web.name]);
    web.trigger_round(1);
    web.restart();
    wait_for(
        "chaos-user to follow the restart",
        Duration::from_secs(20),
        || attach.stderr().contains("(re)started").then_some(()),
    );
    // The restarted workload counts its rounds from 1 again.
    assert_eq!(web.reports(1).len(), 1);
    web.trigger_round(1);
    assert_eq!(calls(&attach.metrics(), &web.name, "getppid"), Some(20.0));

    let name = web.name.clone();
    drop(web); // docker rm -f
    let status = attach.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let stderr = attach.stderr();
    assert!(
        stderr.contains(&format!("container {name} was removed: dropped")),
        "{stderr}"
    );
    assert!(stderr.contains("detached (no target left)"), "{stderr}");
    assert_no_programs_since(floor);
}

#[test]
fn programs_go_away_when_chaos_user_is_killed() {
    let web = Container::start("kill9", &[]);
    let floor = newest_program_id();
    let mut attach = Attach::start(&["--container", &web.name]);
    // The monitor's two and HTTP counting's two (names as the kernel keeps them, 15 bytes).
    let mut loaded: Vec<String> = syschaos_programs_since(floor)
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    loaded.sort();
    assert_eq!(
        loaded,
        [
            "http_egress",
            "http_ingress",
            "monitor_sys_ent",
            "monitor_sys_exi"
        ]
    );
    attach.signal(libc::SIGKILL);
    attach.wait_exit(Duration::from_secs(10));
    assert_no_programs_since(floor);
}

#[test]
fn sigterm_detaches_cleanly() {
    let web = Container::start("term", &[]);
    let floor = newest_program_id();
    let mut attach = Attach::start(&["--container", &web.name]);
    attach.signal(libc::SIGTERM);
    let status = attach.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(attach.stderr().contains("detached (SIGTERM)"));
    assert_no_programs_since(floor);
}
