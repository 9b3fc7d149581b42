//! The stop engine (`engine=stop`) against real Docker containers on this host: the kernel decides
//! and sends SIGSTOP, chaos-user's tracer (threads under PTRACE_CONT, no syscall stops) carries
//! the fault out at that stop. Exact errnos and what the monitor counts; delays after a call that
//! did not block and before a blocking call re-issued without EINTR; someone else's SIGSTOP;
//! never left stopped (SIGINT, SIGTERM, --duration, kill -9 while holding); a restart while
//! holding; refusals; doctor.
#[allow(dead_code)]
#[path = "inject_ptrace/helpers.rs"]
mod helpers;

use std::time::Duration;

use helpers::{MS, assert_running_untraced, states, threads_of, timing};
use tests::{
    CallOutcome, WorkloadReport, assert_no_programs_since,
    attach::{Attach, assert_refused},
    docker::{Container, docker},
    doctor::Doctor,
    newest_program_id, scenario, wait_for,
};

fn assert_stop_rules(attach: &Attach, rules: usize) {
    let stderr = attach.stderr();
    assert_eq!(stderr.matches("via stop").count(), rules, "{stderr}");
}

/// A latency field (`min_ns`, `max_ns`...) of a timed kind in a report.
fn latency(report: &WorkloadReport, kind: &str, field: &str) -> u64 {
    report
        .field(kind, field)
        .unwrap_or_else(|| panic!("no {kind}.{field} in round {}", report.round))
}

#[test]
fn errnos_exactly_and_the_monitor_counts_each_one() {
    let (web, attach) = scenario::five_errnos("stop", "stop");
    // Nothing stops in chaos-user but the perturbed calls: the threads are traced, running.
    assert!(threads_of(&web).iter().all(|&(_, _, tracer)| tracer != 0));
    drop(attach);
    assert_running_untraced(&web);
    assert_eq!(
        web.trigger_round(2).outcome("getppid"),
        CallOutcome::clean(10)
    );
}

#[test]
fn a_delay_holds_the_call_after_it_ran_and_a_blocking_call_before_it_is_reissued() {
    let web = Container::start(
        "stop-delay",
        &[
            "--time-getppid",
            "10",
            "--pipe-read",
            "5",
            "--slow-us",
            "50000",
        ],
    );
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "getppid,delay=50ms,engine=stop",
        "--rule",
        "read,delay=200ms,engine=stop",
    ]);
    assert_stop_rules(&attach, 2);
    let report = web.trigger_round(1);
    // getppid does not block: each call ran, then was held 50 ms.
    assert_eq!(report.outcome("time-getppid"), CallOutcome::clean(10));
    let (min, _, max, slow) = timing(&web, 1);
    assert!(min >= 50 * MS && max <= 150 * MS, "getppid {min}..{max} ns");
    assert_eq!(slow, 10);
    // A read of an empty pipe blocks: the SIGSTOP interrupts it at once, it is held 200 ms and
    // re-issued; the application never sees EINTR and gets its byte.
    assert_eq!(report.outcome("pipe-read"), CallOutcome::clean(5));
    let (read_min, read_max) = (
        latency(&report, "pipe-read", "min_ns"),
        latency(&report, "pipe-read", "max_ns"),
    );
    assert!(
        read_min >= 200 * MS && read_max <= 350 * MS,
        "pipe reads {read_min}..{read_max} ns"
    );
    // The writer thread of the same process ran on while the reader was held.
    let written = latency(&report, "pipe-write", "max_ns");
    assert!(written < 100 * MS, "the writer wrote after {written} ns");
    assert_eq!(
        attach.injections(&web.name, "read", "delay", "stop"),
        Some(5.0)
    );
    // The interrupted exit is none the application saw: no error, and one call per read.
    assert_eq!(attach.syscall_errors(&web.name, "read", "EINTR"), None);
    assert_eq!(
        attach.syscall_errors(&web.name, "read", "ERESTARTSYS"),
        None
    );
    drop(attach);
    assert_running_untraced(&web);
}

#[test]
fn an_errno_on_a_blocking_call_is_returned_instead_of_it() {
    let web = Container::start("stop-block-errno", &["--pipe-read", "3"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "read=EAGAIN,delay=30ms,engine=stop",
    ]);
    let report = web.trigger_round(1);
    assert_eq!(
        report.outcome("pipe-read"),
        CallOutcome::failing(libc::EAGAIN, vec![1, 2, 3], 3)
    );
    // Held 30 ms, then failed: it did not wait for the byte (written 20 ms in) and read it.
    let min = latency(&report, "pipe-read", "min_ns");
    assert!(min >= 30 * MS, "{min} ns");
    assert_eq!(
        attach.syscall_errors(&web.name, "read", "EAGAIN"),
        Some(3.0)
    );
    assert_eq!(
        attach.injections(&web.name, "read", "EAGAIN", "stop"),
        Some(3.0)
    );
}

#[test]
fn someone_elses_sigstop_still_stops_the_target() {
    let web = Container::start("stop-jobctl", &["--getppid", "4"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "getppid=EPERM,engine=stop",
    ]);
    docker(&["kill", "-s", "STOP", &web.name]);
    wait_for("the group-stop", Duration::from_secs(10), || {
        states(&web).iter().all(|&s| s == 't').then_some(())
    });
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
    drop(attach);
    assert_running_untraced(&web);
}

/// Starts a round of the workload; returns once one of its calls is held.
fn hold_a_call(web: &Container) {
    docker(&["kill", "-s", "USR1", &web.name]);
    wait_for("a held call", Duration::from_secs(10), || {
        states(web).contains(&'t').then_some(())
    });
}

/// The round finishes, with every call clean, once chaos-user is gone.
fn assert_round_finishes(web: &Container, round: u64) {
    let report = wait_for("the round to finish", Duration::from_secs(15), || {
        web.reports(round).into_iter().next()
    });
    assert_eq!(report.outcome("time-getppid"), CallOutcome::clean(20));
    assert_running_untraced(web);
}

#[test]
fn never_left_stopped_on_sigint_sigterm_duration_end_or_kill_9_while_holding() {
    let web = Container::start(
        "stop-exit",
        &["--time-getppid", "20", "--slow-us", "250000"],
    );
    let rule = "getppid,delay=300ms,engine=stop";
    for (round, signal) in [(1, libc::SIGINT), (2, libc::SIGTERM), (3, libc::SIGKILL)] {
        let mut attach = Attach::inject(&["--container", &web.name, "--rule", rule]);
        hold_a_call(&web);
        attach.signal(signal);
        attach.wait_exit(Duration::from_secs(10));
        // Within a second of chaos-user's end, the target runs again.
        wait_for("the target to run on", Duration::from_secs(1), || {
            (!states(&web).contains(&'t') && !states(&web).contains(&'T')).then_some(())
        });
        assert_round_finishes(&web, round);
        let (_, _, _, slow) = timing(&web, round);
        assert!(
            slow < 20,
            "round {round}: {slow} calls held after chaos-user ended"
        );
    }
    // The end of --duration while holding.
    let mut attach =
        Attach::inject(&["--container", &web.name, "--rule", rule, "--duration", "2s"]);
    hold_a_call(&web);
    attach.wait_exit(Duration::from_secs(10));
    assert_round_finishes(&web, 4);
}

#[test]
fn a_container_restarted_while_a_thread_is_held_is_followed() {
    let web = Container::start("stop-restart", &["--getppid", "4"]);
    let attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "getppid=EPERM,delay=2s,engine=stop",
    ]);
    docker(&["kill", "-s", "USR1", &web.name]);
    wait_for("a held call", Duration::from_secs(10), || {
        states(&web).contains(&'t').then_some(())
    });
    // Its threads exit while one is held; the tracer follows the new container.
    docker(&["restart", "-t", "0", &web.name]);
    wait_for(
        "the tracer to seize the restarted workload",
        Duration::from_secs(10),
        || {
            threads_of(&web)
                .iter()
                .all(|&(_, state, tracer)| tracer != 0 && state != 't')
                .then_some(())
        },
    );
    let attach_rule = "getppid=EPERM,engine=stop";
    drop(attach);
    assert_running_untraced(&web);
    let attach = Attach::inject(&["--container", &web.name, "--rule", attach_rule]);
    assert_eq!(
        web.trigger_round(1).outcome("getppid"),
        CallOutcome::failing(libc::EPERM, vec![1, 2, 3, 4], 4)
    );
    drop(attach);
    assert_running_untraced(&web);
}

#[test]
fn rules_the_stop_engine_cannot_honour_are_refused_with_nothing_attached() {
    let web = Container::start("stop-refused", &["--getppid", "1"]);
    let floor = newest_program_id();
    for (rule, expected) in [
        ("exit_group=EPERM,engine=stop", "stop: covers only"),
        ("execve=EPERM,engine=stop", "stop: covers only"),
        (
            "getppid=SIGKILL,engine=stop",
            "signal rules run on the signal engine",
        ),
    ] {
        assert_refused(
            &[
                "inject",
                "--container",
                &web.name,
                "--rule",
                rule,
                "--no-metrics",
            ],
            expected,
            |_| {},
        );
    }
    assert_refused(
        &[
            "inject",
            "--container",
            &web.name,
            "--rule",
            "getppid=EPERM,engine=stop",
            "--rule",
            "getppid,delay=1ms,engine=stop",
            "--no-metrics",
        ],
        "two rules on getppid",
        |_| {},
    );
    assert_no_programs_since(floor);
    assert_running_untraced(&web);
}

#[test]
fn doctor_tries_the_stop_engine_for_real() {
    let doctor = Doctor::run();
    assert_eq!(doctor.engine_works("stop"), Ok(()));
    let coverage = doctor.engine("stop")["covers"].as_str().unwrap_or_default();
    assert!(coverage.contains("only the perturbed call"), "{coverage}");
}

#[test]
fn an_interrupted_clone_is_reissued_and_kill_9_during_its_vfork_wait_leaves_the_target_running() {
    // clone refuses to start with a signal pending (-ERESTARTNOINTR): the engine's SIGSTOP
    // interrupts it, the tracer re-issues it after the delay, and the parent then waits 2 s for
    // its CLONE_VFORK child, killable only; chaos-user dies meanwhile.
    let web = Container::start("stop-pending", &["--vfork", "1"]);
    let mut attach = Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "clone,delay=1ms,engine=stop",
    ]);
    docker(&["kill", "-s", "USR1", &web.name]);
    wait_for("the clone's fault decided", Duration::from_secs(5), || {
        attach
            .injections(&web.name, "clone", "delay", "stop")
            .filter(|&n| n >= 1.0)
    });
    attach.signal(libc::SIGKILL);
    attach.wait_exit(Duration::from_secs(10));
    let report = wait_for("the round to finish", Duration::from_secs(10), || {
        web.reports(1).into_iter().next()
    });
    assert_eq!(report.outcome("vfork"), CallOutcome::clean(1));
    assert_running_untraced(&web);
}
