//! The Perturbator on this host's kernel against real Docker containers: the cgroup-sock and
//! signal engines (kprobe, fmod-ret and LSM are tested in the VM kernels, `cargo xtask
//! vm-test`). Every errno rule names its engine: `auto` prefers kprobe, fmod-ret and LSM where
//! the host offers them.
use std::time::Duration;

use tests::{
    CallOutcome, assert_no_programs_since,
    attach::{Attach, assert_refused, run_chaos_user},
    docker::{Container, docker},
    doctor::Doctor,
    newest_program_id, wait_for,
};

const ECONNREFUSED: i32 = libc::ECONNREFUSED;
const EHOSTUNREACH: i32 = libc::EHOSTUNREACH;

/// What the monitor counted as connect failing with ECONNREFUSED.
fn refused_connects(attach: &Attach, target: &str) -> Option<f64> {
    let labels = [
        ("target", target),
        ("syscall", "connect"),
        ("errno", "ECONNREFUSED"),
    ];
    attach
        .metrics()
        .value("syschaos_syscall_errors_total", &labels)
}

#[test]
fn connect_fails_with_the_asked_errno_in_the_target_only() {
    let web = Container::start("inj-web", &["--connect", "20"]);
    let neighbour = Container::start("inj-neighbour", &["--connect", "20"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--syscall",
        "connect",
        "--errno",
        "ECONNREFUSED",
        "--engine",
        "cgroup-sock",
    ]);
    assert!(
        attach.stderr().contains("via cgroup-sock"),
        "{}",
        attach.stderr()
    );

    let report = web.trigger_round(1);
    assert_eq!(
        report.outcome("connect"),
        CallOutcome::failing(ECONNREFUSED, (1..=20).collect(), 20)
    );
    assert_eq!(
        neighbour.trigger_round(1).outcome("connect"),
        CallOutcome::clean(20)
    );
    assert_eq!(
        attach.injections(&web.name, "connect", "ECONNREFUSED", "cgroup-sock"),
        Some(20.0)
    );
    // The monitor sees the failures the workload saw.
    assert_eq!(refused_connects(&attach, &web.name), Some(20.0));
}

#[test]
fn half_probability_stays_within_statistical_bounds() {
    let web = Container::start("inj-half", &["--connect", "400"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "connect=EHOSTUNREACH,probability=0.5,engine=cgroup-sock",
    ]);
    let outcome = web.trigger_round(1).outcome("connect");
    // Binomial(400, 0.5): mean 200, standard deviation 10; 6 sigma either side.
    assert!(
        (140..=260).contains(&outcome.failed),
        "{} of 400 failed",
        outcome.failed
    );
    assert_eq!(
        outcome.errnos.keys().copied().collect::<Vec<_>>(),
        [EHOSTUNREACH]
    );
    let injected = attach.injections(&web.name, "connect", "EHOSTUNREACH", "cgroup-sock");
    assert_eq!(injected, Some(outcome.failed as f64));
}

#[test]
fn count_and_nth_are_exact() {
    let web = Container::start("inj-count", &["--connect", "10"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--syscall",
        "connect",
        "--errno",
        "ECONNREFUSED",
        "--count",
        "3",
        "--engine",
        "cgroup-sock",
    ]);
    assert_eq!(
        web.trigger_round(1).outcome("connect"),
        CallOutcome::failing(ECONNREFUSED, vec![1, 2, 3], 10)
    );
    // The budget is spent: later calls go through.
    assert_eq!(
        web.trigger_round(2).outcome("connect"),
        CallOutcome::clean(10)
    );
    drop(attach);

    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "connect=ECONNREFUSED,nth=4,engine=cgroup-sock",
    ]);
    assert_eq!(
        web.trigger_round(3).outcome("connect"),
        CallOutcome::failing(ECONNREFUSED, vec![4], 10)
    );
    assert_eq!(
        web.trigger_round(4).outcome("connect"),
        CallOutcome::clean(10)
    );
    drop(attach);
}

#[test]
fn a_signal_rule_kills_the_process_at_its_nth_call() {
    let web = Container::start("inj-kill", &["--getppid", "10"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--syscall",
        "getppid",
        "--signal",
        "SIGKILL",
        "--nth",
        "5",
    ]);
    docker(&["kill", "-s", "USR1", &web.name]);
    let exit_code = wait_for("the workload to be killed", Duration::from_secs(20), || {
        let output = docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            &web.name,
        ]);
        let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        state.strip_prefix("exited ").map(str::to_owned)
    });
    assert_eq!(exit_code, "137"); // 128 + SIGKILL
    let scrape = attach.metrics();
    // The 5th call completes in the kernel; the signal is delivered as it returns.
    assert_eq!(
        scrape.value(
            "syschaos_syscalls_total",
            &[("target", &web.name), ("syscall", "getppid")]
        ),
        Some(5.0)
    );
    assert_eq!(
        attach.injections(&web.name, "getppid", "SIGKILL", "signal"),
        Some(1.0)
    );
    assert!(
        web.reports(1).is_empty(),
        "the round must not have finished"
    );
}

#[test]
fn rules_expire_in_the_kernel() {
    let web = Container::start("inj-expire", &["--connect", "5"]);
    // No --duration: chaos-user runs until told to stop; only the rule has a time limit.
    let mut attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "connect=ECONNREFUSED,duration=2s,engine=cgroup-sock",
    ]);
    assert_eq!(
        web.trigger_round(1).outcome("connect"),
        CallOutcome::failing(ECONNREFUSED, (1..=5).collect(), 5)
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        web.trigger_round(2).outcome("connect"),
        CallOutcome::clean(5)
    );
    // The kernel stopped applying the rule by itself: chaos-user still runs, and counts it.
    assert_eq!(
        attach.exited(),
        None,
        "chaos-user exited: {}",
        attach.stderr()
    );
    assert_eq!(
        attach.injections(&web.name, "connect", "ECONNREFUSED", "cgroup-sock"),
        Some(5.0)
    );
}

#[test]
fn kill_9_of_chaos_user_stops_every_injection() {
    let web = Container::start("inj-kill9", &["--connect", "5"]);
    let floor = newest_program_id();
    let mut attach = Attach::inject(&[
        "--container",
        &web.name,
        "--syscall",
        "connect",
        "--errno",
        "ECONNREFUSED",
        "--engine",
        "cgroup-sock",
    ]);
    assert_eq!(web.trigger_round(1).outcome("connect").failed, 5);
    attach.signal(libc::SIGKILL);
    attach.wait_exit(Duration::from_secs(10));
    assert_no_programs_since(floor);
    assert_eq!(
        web.trigger_round(2).outcome("connect"),
        CallOutcome::clean(5)
    );
}

#[test]
fn a_second_injector_on_the_same_target_is_refused_and_a_monitor_coexists() {
    let web = Container::start("inj-second", &["--connect", "4"]);
    let first = Attach::inject(&[
        "--container",
        &web.name,
        "--syscall",
        "connect",
        "--errno",
        "ECONNREFUSED",
        "--engine",
        "cgroup-sock",
    ]);
    let (status, stderr) = run_chaos_user(
        &[
            "inject",
            "--container",
            &web.name,
            "--syscall",
            "connect",
            "--errno",
            "EPERM",
            "--no-metrics",
            "--quiet",
        ],
        |_| {},
    );
    assert!(!status.success());
    let expected = format!(
        "{} is already being perturbed by chaos-user (pid {})",
        web.name,
        first.pid()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    let monitor = Attach::start(&["--container", &web.name]);
    assert_eq!(web.trigger_round(1).outcome("connect").failed, 4);
    assert_eq!(refused_connects(&monitor, &web.name), Some(4.0));
}

#[test]
fn attach_can_inject_too() {
    let web = Container::start("inj-attach", &["--connect", "6"]);
    let attach = Attach::start(&[
        "--container",
        &web.name,
        "--inject",
        "connect=ECONNREFUSED,count=2,engine=cgroup-sock",
    ]);
    assert_eq!(
        web.trigger_round(1).outcome("connect"),
        CallOutcome::failing(ECONNREFUSED, vec![1, 2], 6)
    );
    assert_eq!(
        attach.injections(&web.name, "connect", "ECONNREFUSED", "cgroup-sock"),
        Some(2.0)
    );
}

/// `chaos-user inject ARGS` must fail with one error line containing `expected`, leaving nothing.
fn refused(args: &[&str], expected: &str) {
    let mut full = vec!["inject", "--quiet", "--no-metrics", "--duration", "5s"];
    full.extend_from_slice(args);
    assert_refused(&full, expected, |_| {});
}

#[test]
fn bad_rules_are_refused_before_anything_is_attached() {
    let web = Container::start("inj-bad", &[]);
    let target = ["--container", web.name.as_str()];
    let with = |rule: &[&'static str]| [&target[..], rule].concat();
    refused(
        &with(&["--syscall", "opnat", "--errno", "EACCES"]),
        "unknown syscall `opnat`",
    );
    refused(
        &with(&["--syscall", "openat", "--errno", "EACESS"]),
        "unknown errno `EACESS`",
    );
    refused(
        &with(&["--syscall", "openat", "--signal", "SIGNOPE"]),
        "unknown signal `SIGNOPE`",
    );
    refused(
        &with(&[
            "--syscall",
            "connect",
            "--errno",
            "EPERM",
            "--probability",
            "0",
        ]),
        "probability 0 is outside (0, 1]",
    );
    refused(
        &with(&[
            "--syscall",
            "connect",
            "--errno",
            "EPERM",
            "--probability",
            "1.5",
        ]),
        "probability 1.5 is outside (0, 1]",
    );
    refused(
        &with(&[
            "--syscall",
            "getppid",
            "--errno",
            "EPERM",
            "--path-prefix",
            "/data",
        ]),
        "getppid takes no path",
    );
    refused(
        &with(&[
            "--syscall",
            "openat",
            "--errno",
            "EACCES",
            "--engine",
            "cgroup-sock",
        ]),
        "no engine can inject openat errors on this kernel: cgroup-sock: covers only connect, bind, sendto, sendmsg, socket",
    );
    forced_kprobe_on_fsync(&target);
    forced_fmod_ret_on_connect(&target);
    refused(
        &with(&[
            "--syscall",
            "getppid",
            "--delay",
            "10ms",
            "--engine",
            "kprobe",
        ]),
        "engine kprobe cannot delay calls",
    );
    refused(
        &with(&["--rule", "connect=EPERM", "--rule", "connect=EACCES"]),
        "two rules on connect",
    );
    refused(
        &[
            "--container",
            "syschaos-no-such-container",
            "--syscall",
            "connect",
            "--errno",
            "EPERM",
        ],
        "no container named",
    );
}

/// kprobe is the only in-kernel engine that covers fsync (LSM has no hook for it). Forced where
/// it does not work (no `bpf_override_return`), it is refused with doctor's reason; where it
/// works, it injects.
fn forced_kprobe_on_fsync(target: &[&str]) {
    let rule = ["--syscall", "fsync", "--errno", "EIO", "--engine", "kprobe"];
    match Doctor::run().engine_works("kprobe") {
        Err(why) => refused(
            &[target, &rule[..]].concat(),
            &format!("no engine can inject fsync errors on this kernel: kprobe: {why}"),
        ),
        Ok(()) => {
            let files = Container::start("inj-kprobe-fsync", &["--fsync", "3"]);
            let attach =
                Attach::inject(&[&["--container", files.name.as_str()], &rule[..]].concat());
            assert!(
                attach.stderr().contains("via kprobe"),
                "{}",
                attach.stderr()
            );
            assert_eq!(
                files.trigger_round(1).outcome("fsync"),
                CallOutcome::failing(libc::EIO, vec![1, 2, 3], 3)
            );
            assert_eq!(
                attach.injections(&files.name, "fsync", "EIO", "kprobe"),
                Some(3.0)
            );
        }
    }
}

/// fmod-ret, forced: where the kernel refuses its programs (this host: EPERM), it is refused with
/// doctor's reason; where it works, it injects.
fn forced_fmod_ret_on_connect(target: &[&str]) {
    let rule = [
        "--syscall",
        "connect",
        "--errno",
        "ECONNREFUSED",
        "--count",
        "3",
        "--engine",
        "fmod-ret",
    ];
    match Doctor::run().engine_works("fmod-ret") {
        Err(why) => refused(
            &[target, &rule[..]].concat(),
            &format!("no engine can inject connect errors on this kernel: fmod-ret: {why}"),
        ),
        Ok(()) => {
            let web = Container::start("inj-fmod-ret", &["--connect", "5"]);
            let attach = Attach::inject(&[&["--container", web.name.as_str()], &rule[..]].concat());
            assert!(
                attach.stderr().contains("via fmod-ret"),
                "{}",
                attach.stderr()
            );
            assert_eq!(
                web.trigger_round(1).outcome("connect"),
                CallOutcome::failing(ECONNREFUSED, vec![1, 2, 3], 5)
            );
            assert_eq!(
                attach.injections(&web.name, "connect", "ECONNREFUSED", "fmod-ret"),
                Some(3.0)
            );
            assert_eq!(refused_connects(&attach, &web.name), Some(3.0));
        }
    }
}
