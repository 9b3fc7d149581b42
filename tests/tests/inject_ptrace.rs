//! The ptrace engine against real Docker containers on this host: errnos, delays before a call,
//! probability, threads and processes created while attached, processes entering by `docker
//! exec`, detaching under load, kill -9 of chaos-user, and a target that another tracer holds.
//! Every rule names the engine: `auto` prefers the pre-call kernel engines for errnos, and the
//! stop engine for delays.
#[path = "inject_ptrace/helpers.rs"]
mod helpers;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use helpers::{
    MS, Strace, assert_ptrace_rules, assert_running_untraced, getppid_eperm_by_ptrace, states,
    threads_of, timing,
};
use tests::{
    CallOutcome,
    attach::{Attach, run_chaos_user},
    docker::{Container, docker},
    doctor::Doctor,
    scenario, wait_for,
};

#[test]
fn errnos_on_five_syscalls_exactly_in_the_target_only() {
    let (web, attach) = scenario::five_errnos("ptrace", "ptr");
    // Budgets spent: only the unlimited openat rule still injects.
    let all = |n: u64| (1..=n).collect::<Vec<_>>();
    let report = web.trigger_round(2);
    assert_eq!(
        report.outcome("open-missing"),
        CallOutcome::failing(libc::EACCES, all(10), 10)
    );
    for kind in ["read", "write", "fsync", "getppid"] {
        assert_eq!(report.outcome(kind), CallOutcome::clean(10), "{kind}");
    }
    drop(attach);
    assert_running_untraced(&web);
    assert_eq!(
        web.trigger_round(3).outcome("open-missing"),
        CallOutcome::failing(libc::ENOENT, all(10), 10)
    );
}

#[test]
fn a_delay_holds_each_call_before_it_runs() {
    let web = Container::start("ptr-delay", &["--time-getppid", "20", "--slow-us", "20000"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--syscall",
        "getppid",
        "--delay",
        "20ms",
        "--engine",
        "ptrace",
    ]);
    assert_ptrace_rules(&attach, 1);
    let report = web.trigger_round(1);
    assert_eq!(report.outcome("time-getppid"), CallOutcome::clean(20));
    let (min, p50, max, slow) = timing(&web, 1);
    eprintln!("delayed getppid: min {min} ns, p50 {p50} ns, max {max} ns");
    assert!(min >= 20 * MS, "min {min} ns");
    assert!(p50 <= 22 * MS, "p50 {p50} ns: overhead above 2 ms");
    assert!(max <= 40 * MS, "max {max} ns");
    assert_eq!(slow, 20);
    assert_eq!(
        attach.injections(&web.name, "getppid", "delay", "ptrace"),
        Some(20.0)
    );

    drop(attach);
    assert_running_untraced(&web);
    web.trigger_round(2);
    let (_, p50, _, slow) = timing(&web, 2);
    assert_eq!(slow, 0);
    assert!(p50 < MS, "p50 {p50} ns after detach");
}

#[test]
fn errno_and_delay_combine() {
    let web = Container::start("ptr-both", &["--time-getppid", "12", "--slow-us", "10000"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "getppid=EPERM,delay=10ms,count=5,engine=ptrace",
    ]);
    let report = web.trigger_round(1);
    assert_eq!(
        report.outcome("time-getppid"),
        CallOutcome::failing(libc::EPERM, vec![1, 2, 3, 4, 5], 12)
    );
    let (_, _, _, slow) = timing(&web, 1);
    assert_eq!(
        slow, 5,
        "each failed call waited 10 ms first, the others did not"
    );
    assert_eq!(
        attach.injections(&web.name, "getppid", "EPERM", "ptrace"),
        Some(5.0)
    );
}

#[test]
fn a_delay_with_half_probability_stays_within_statistical_bounds() {
    let web = Container::start("ptr-half", &["--time-getppid", "1000", "--slow-us", "3000"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "getppid,delay=4ms,probability=0.5,engine=ptrace",
    ]);
    let report = web.trigger_round(1);
    assert_eq!(report.outcome("time-getppid"), CallOutcome::clean(1000));
    let (_, _, _, slow) = timing(&web, 1);
    // Binomial(1000, 0.5): mean 500, standard deviation 15.8; 6 sigma either side.
    assert!((405..=595).contains(&slow), "{slow} of 1000 delayed");
    let injected = attach
        .injections(&web.name, "getppid", "delay", "ptrace")
        .expect("the metric") as u64;
    // Every delayed call is slow; an undelayed one exceeding 3 ms would be a scheduling fluke.
    assert!(
        injected <= slow && slow <= injected + 3,
        "{injected} injected, {slow} slow"
    );
}

#[test]
fn threads_created_while_attached_are_injected() {
    let web = Container::start("ptr-threads", &["--thread-getppid", "50", "--threads", "4"]);
    let attach = getppid_eperm_by_ptrace(&web);
    let outcome = web.trigger_round(1).outcome("thread-getppid");
    assert_eq!(outcome.calls, 200);
    assert_eq!(outcome.errnos, BTreeMap::from([(libc::EPERM, 200)]));
    drop(attach);

    // A count is exact across threads racing for it.
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "getppid=EACCES,count=120,engine=ptrace",
    ]);
    let outcome = web.trigger_round(2).outcome("thread-getppid");
    assert_eq!(outcome.calls, 200);
    assert_eq!(outcome.errnos, BTreeMap::from([(libc::EACCES, 120)]));
    assert_eq!(
        attach.injections(&web.name, "getppid", "EACCES", "ptrace"),
        Some(120.0)
    );
    drop(attach);
    assert_running_untraced(&web);
}

#[test]
fn forked_children_are_injected_too() {
    let web = Container::start(
        "ptr-forks",
        &["--getppid", "5", "--fork-getppid", "20", "--forks", "3"],
    );
    let attach = getppid_eperm_by_ptrace(&web);
    let report = web.trigger_round(1);
    assert_eq!(
        report.outcome("getppid"),
        CallOutcome::failing(libc::EPERM, vec![1, 2, 3, 4, 5], 5)
    );
    let children = report.outcome("fork-getppid");
    assert_eq!(children.calls, 60);
    assert_eq!(children.errnos, BTreeMap::from([(libc::EPERM, 60)]));
    assert_eq!(
        attach.injections(&web.name, "getppid", "EPERM", "ptrace"),
        Some(65.0)
    );
}

#[test]
fn a_process_entering_by_docker_exec_is_injected() {
    let web = Container::start("ptr-exec", &[]);
    let _attach = getppid_eperm_by_ptrace(&web);
    // It waits 1.5 s before its calls: the tracer finds it in cgroup.procs well before.
    let output = docker(&[
        "exec",
        &web.name,
        "/chaos-workload",
        "calls",
        "--wait-ms",
        "1500",
        "--getppid",
        "5",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = tests::WorkloadReport::parse(stdout.trim()).expect("the exec'd workload's report");
    assert_eq!(
        report.outcome("getppid"),
        CallOutcome::failing(libc::EPERM, vec![1, 2, 3, 4, 5], 5)
    );
}

#[test]
fn detaching_under_load_leaves_the_workload_running_at_full_speed() {
    let web = Container::start(
        "ptr-load",
        &[
            "--time-getppid",
            "20000",
            "--thread-getppid",
            "150000",
            "--threads",
            "3",
        ],
    );
    web.trigger_round(1);
    let (_, baseline, _, _) = timing(&web, 1);

    // A rule on a call the workload never makes: every call is traced, none injected.
    let mut attach = Attach::inject(&[
        "--container",
        &web.name,
        "--syscall",
        "fsync",
        "--errno",
        "EIO",
        "--engine",
        "ptrace",
    ]);
    docker(&["kill", "-s", "USR1", &web.name]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        web.reports(2).is_empty(),
        "round 2 must still run at detach"
    );
    let started = Instant::now();
    attach.signal(libc::SIGINT);
    attach.wait_exit(Duration::from_secs(15));
    eprintln!("detached under load in {:?}", started.elapsed());
    assert!(
        attach.stderr().contains("syschaos: detached (SIGINT)"),
        "{}",
        attach.stderr()
    );
    assert_running_untraced(&web);

    let report = wait_for("round 2 to finish", Duration::from_secs(120), || {
        web.reports(2).into_iter().next()
    });
    assert_eq!(
        report.outcome("thread-getppid"),
        CallOutcome::clean(450_000)
    );
    assert_eq!(report.outcome("time-getppid"), CallOutcome::clean(20_000));

    web.trigger_round(3);
    let (_, after, _, _) = timing(&web, 3);
    eprintln!("getppid p50: {baseline} ns before, {after} ns after detach");
    assert!(
        after <= 3 * baseline + 2_000,
        "p50 {after} ns after, {baseline} ns before"
    );
}

#[test]
fn kill_9_of_chaos_user_mid_injection_leaves_the_target_running() {
    let web = Container::start("ptr-kill9", &["--time-getppid", "60", "--slow-us", "10000"]);
    let mut attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "getppid,delay=50ms,engine=ptrace",
    ]);
    // A 3 s round of held calls; chaos-user dies 1 s into it, holding one of them.
    docker(&["kill", "-s", "USR1", &web.name]);
    std::thread::sleep(Duration::from_millis(1000));
    attach.signal(libc::SIGKILL);
    attach.wait_exit(Duration::from_secs(10));
    let report = wait_for("round 1 to finish", Duration::from_secs(20), || {
        web.reports(1).into_iter().next()
    });
    assert_eq!(report.outcome("time-getppid"), CallOutcome::clean(60));
    let (_, _, _, slow) = timing(&web, 1);
    assert!(
        (10..=30).contains(&slow),
        "{slow} calls delayed before the kill"
    );
    assert_running_untraced(&web);
    assert_eq!(
        web.trigger_round(2).outcome("time-getppid"),
        CallOutcome::clean(60)
    );
    assert_eq!(timing(&web, 2).3, 0, "nothing delayed after the kill");

    // The same with an errno rule.
    let mut attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "getppid=EPERM,engine=ptrace",
    ]);
    assert_eq!(web.trigger_round(3).outcome("time-getppid").failed, 60);
    attach.signal(libc::SIGKILL);
    attach.wait_exit(Duration::from_secs(10));
    assert_running_untraced(&web);
    assert_eq!(
        web.trigger_round(4).outcome("time-getppid"),
        CallOutcome::clean(60)
    );
}

#[test]
fn a_target_traced_by_another_tracer_is_refused_naming_it() {
    let web = Container::start("ptr-traced", &["--getppid", "3"]);
    let pid = web.pid();
    let strace = Strace(
        Command::new("strace")
            .args(["-o", "/dev/null", "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace (apt-get install strace)"),
    );
    let strace_pid = strace.0.id();
    wait_for("strace to attach", Duration::from_secs(10), || {
        threads_of(&web)
            .iter()
            .any(|&(_, _, tracer)| tracer == strace_pid)
            .then_some(())
    });
    let (status, stderr) = run_chaos_user(
        &[
            "inject",
            "--container",
            &web.name,
            "--syscall",
            "getppid",
            "--errno",
            "EPERM",
            "--engine",
            "ptrace",
            "--quiet",
            "--no-metrics",
            "--duration",
            "5s",
        ],
        |_| {},
    );
    assert!(!status.success(), "{stderr}");
    let expected = format!("is already traced by pid {strace_pid} (strace)");
    assert!(
        stderr.contains(&expected),
        "expected `{expected}` in: {stderr}"
    );
    drop(strace);
    assert_running_untraced(&web);
    assert_eq!(
        web.trigger_round(1).outcome("getppid"),
        CallOutcome::clean(3)
    );
}

#[test]
fn the_tracer_lets_go_once_every_rule_has_expired() {
    let web = Container::start("ptr-expire", &["--getppid", "5"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "getppid=EPERM,duration=1s,engine=ptrace",
    ]);
    assert_eq!(web.trigger_round(1).outcome("getppid").failed, 5);
    wait_for("the tracer to detach", Duration::from_secs(10), || {
        attach
            .stderr()
            .contains("every rule is spent")
            .then_some(())
    });
    assert_running_untraced(&web);
    assert_eq!(
        web.trigger_round(2).outcome("getppid"),
        CallOutcome::clean(5)
    );
    assert!(
        !attach.stderr().contains("syschaos: detached"),
        "chaos-user still runs"
    );
}

#[test]
fn doctor_reports_the_ptrace_engine() {
    let doctor = Doctor::run();
    assert_eq!(doctor.engine_works("ptrace"), Ok(()));
    let ptrace = doctor.engine("ptrace");
    assert!(
        ptrace["covers"].as_str().unwrap().contains("any syscall"),
        "{ptrace}"
    );
}

/// doctor seizes a child of its own, as the engine seizes a target: under `strace -f` the child is
/// traced already, so the probe must say ptrace does not work, and why.
#[test]
fn doctor_tries_ptrace_for_real() {
    let output = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null"])
        .arg(tests::chaos_user_bin())
        .args(["doctor", "--json"])
        .output()
        .expect("run chaos-user doctor under strace (apt-get install strace)");
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("doctor's JSON");
    let ptrace = report["engines"]
        .as_array()
        .and_then(|engines| engines.iter().find(|e| e["engine"] == "ptrace"))
        .expect("doctor lists the ptrace engine");
    assert_eq!(ptrace["works"], false, "{ptrace}");
    let reason = ptrace["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("PTRACE_SEIZE of a child of ours is refused (EPERM"),
        "{reason}"
    );
}

#[test]
fn job_control_stops_work_while_traced_and_survive_the_detach() {
    let web = Container::start("ptr-stop", &["--getppid", "4"]);
    let attach = getppid_eperm_by_ptrace(&web);
    // SIGSTOP: a group-stop, reported to the tracer, which keeps it (PTRACE_LISTEN).
    docker(&["kill", "-s", "STOP", &web.name]);
    wait_for("the group-stop", Duration::from_secs(10), || {
        states(&web).iter().all(|&s| s == 't').then_some(())
    });
    // A round asked for while stopped runs only once continued (the signal is delivered then).
    docker(&["kill", "-s", "USR1", &web.name]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(web.reports(1).is_empty(), "a stopped workload ran a round");
    docker(&["kill", "-s", "CONT", &web.name]);
    let report = wait_for("round 1 after SIGCONT", Duration::from_secs(10), || {
        web.reports(1).into_iter().next()
    });
    assert_eq!(
        report.outcome("getppid"),
        CallOutcome::failing(libc::EPERM, vec![1, 2, 3, 4], 4)
    );

    // Detaching from a stopped workload leaves it stopped (T, job control), not traced (t)...
    docker(&["kill", "-s", "STOP", &web.name]);
    wait_for("the second group-stop", Duration::from_secs(10), || {
        states(&web).iter().all(|&s| s == 't').then_some(())
    });
    drop(attach);
    let threads = threads_of(&web);
    assert!(
        threads
            .iter()
            .all(|&(_, state, tracer)| state == 'T' && tracer == 0),
        "{threads:?}"
    );
    // ...and SIGCONT wakes it as usual, with nothing injected any more.
    docker(&["kill", "-s", "CONT", &web.name]);
    assert_running_untraced(&web);
    assert_eq!(
        web.trigger_round(2).outcome("getppid"),
        CallOutcome::clean(4)
    );
}

#[test]
fn a_restarted_container_is_traced_again() {
    let web = Container::start("ptr-restart", &["--getppid", "4"]);
    let attach = getppid_eperm_by_ptrace(&web);
    assert_eq!(web.trigger_round(1).outcome("getppid").failed, 4);
    web.restart();
    // The tracer seizes the new container's threads once it follows the new cgroup.
    wait_for(
        "the tracer to seize the restarted workload",
        Duration::from_secs(10),
        || {
            threads_of(&web)
                .iter()
                .all(|&(_, _, tracer)| tracer != 0)
                .then_some(())
        },
    );
    assert_eq!(
        web.trigger_round(1).outcome("getppid"),
        CallOutcome::failing(libc::EPERM, vec![1, 2, 3, 4], 4)
    );
    assert_eq!(
        attach.injections(&web.name, "getppid", "EPERM", "ptrace"),
        Some(8.0)
    );
    drop(attach);
    assert_running_untraced(&web);
}
