//! README features no other end-to-end test reaches: `inject --rules FILE`, `--cgroup-root`,
//! `trace`'s text output and `--sample`, `doctor`'s text output, and the live view in a terminal
//! (tmux). Exact counts, errnos and text, against real containers and the real binary.
#[path = "cli_features/helpers.rs"]
mod helpers;

use std::{collections::BTreeMap, time::Duration};

use helpers::{
    MountPoint, Running, TextCall, Tmux, chaos_user_with_cgroup_mount, container_cgroup, doctor,
    live_row, parse_text_call, seconds_ago,
};
use serde_json::Value;
use tests::{
    CallOutcome, TempDir, assert_no_programs_since,
    attach::{Attach, assert_refused},
    cgroup_v2_root, chaos_user_bin,
    docker::{Container, docker},
    free_port,
    metrics::Scrape,
    newest_program_id, wait_for,
};

const CALLS: &str = "syschaos_syscalls_total";
const ERRORS: &str = "syschaos_syscall_errors_total";

fn calls(scrape: &Scrape, target: &str, syscall: &str) -> Option<f64> {
    scrape.value(CALLS, &[("target", target), ("syscall", syscall)])
}

fn enoent(scrape: &Scrape, target: &str, syscall: &str) -> Option<f64> {
    let labels = [
        ("target", target),
        ("syscall", syscall),
        ("errno", "ENOENT"),
    ];
    scrape.value(ERRORS, &labels)
}

/// A rule file as people write them: comments, blank lines, indentation, spaces after commas.
const RULE_FILE: &str = "\
# syschaos rules: what web meets today
connect=ECONNREFUSED,count=3,engine=cgroup-sock   # the first three connects

    # the ptrace engine for calls no in-kernel engine covers on every host
getppid=EPERM,nth=4,engine=ptrace
\topenat=EACCES, count=2, path-prefix=/syschaos-missing, engine=ptrace
";

#[test]
fn a_rule_file_injects_each_of_its_rules_exactly() {
    let web = Container::start(
        "rules",
        &["--getppid", "10", "--open-missing", "5", "--connect", "10"],
    );
    let dir = TempDir::new("cli-rules");
    let file = dir.0.join("web.rules");
    std::fs::write(&file, RULE_FILE).unwrap();
    let floor = newest_program_id();
    let mut attach = Attach::inject(&["--container", &web.name, "--rules", file.to_str().unwrap()]);
    let stderr = attach.stderr();
    let injecting = stderr
        .lines()
        .find_map(|line| line.strip_prefix("syschaos: injecting "))
        .unwrap_or_else(|| panic!("no `injecting` line: {stderr}"));
    let mut rules: Vec<&str> = injecting.split("; ").collect();
    rules.sort();
    let name = &web.name;
    assert_eq!(
        rules,
        [
            format!("connect ECONNREFUSED into {name} via cgroup-sock count=3"),
            format!("getppid EPERM into {name} via ptrace nth=4"),
            format!("openat EACCES into {name} via ptrace count=2 path-prefix=/syschaos-missing"),
        ]
    );

    let report = web.trigger_round(1);
    assert_eq!(
        report.outcome("connect"),
        CallOutcome::failing(libc::ECONNREFUSED, vec![1, 2, 3], 10)
    );
    assert_eq!(
        report.outcome("getppid"),
        CallOutcome::failing(libc::EPERM, vec![4], 10)
    );
    // Two EACCES from the rule, then the file is missing as always.
    assert_eq!(
        report.outcome("open-missing"),
        CallOutcome {
            calls: 5,
            failed: 5,
            errnos: BTreeMap::from([(libc::EACCES, 2), (libc::ENOENT, 3)]),
            failed_at: (1..=5).collect(),
        }
    );
    // Every budget is spent: the next round runs untouched.
    let report = web.trigger_round(2);
    assert_eq!(report.outcome("connect"), CallOutcome::clean(10));
    assert_eq!(report.outcome("getppid"), CallOutcome::clean(10));
    assert_eq!(
        report.outcome("open-missing"),
        CallOutcome::failing(libc::ENOENT, (1..=5).collect(), 5)
    );
    let injections = [
        ("connect", "ECONNREFUSED", "cgroup-sock", 3),
        ("getppid", "EPERM", "ptrace", 1),
        ("openat", "EACCES", "ptrace", 2),
    ];
    for (syscall, errno, engine, count) in injections {
        assert_eq!(
            attach.injections(name, syscall, errno, engine),
            Some(f64::from(count)),
            "{syscall} {errno} via {engine}"
        );
    }

    attach.signal(libc::SIGINT);
    let status = attach.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let stderr = attach.stderr();
    for (syscall, errno, engine, count) in injections {
        let summary = format!("syschaos: {name}: {syscall} {errno} via {engine}: {count} injected");
        assert!(
            stderr.lines().any(|line| line == summary),
            "no `{summary}` in: {stderr}"
        );
    }
    assert_no_programs_since(floor);
}

#[test]
fn a_bad_line_in_a_rule_file_is_refused_by_file_and_line_number() {
    let dir = TempDir::new("cli-bad-rules");
    let file = dir.0.join("bad.rules");
    // Line 4, counting the comment and the blank line; its own comment is not part of the rule.
    std::fs::write(
        &file,
        "# rules\n\nconnect=ECONNREFUSED,count=1\nconnect=ECONNREFUSED,colour=red   # typo\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let expected = format!(
        "chaos-user: error: bad rule `{path}:4`: bad rule `connect=ECONNREFUSED,colour=red`: \
         unknown key `colour` (known: probability, nth, count, path-prefix, duration, delay, when, engine)"
    );
    let args = [
        "inject",
        "--container",
        "syschaos-test-none",
        "--rules",
        path,
    ];
    assert_refused(&args, &expected, |_| {});

    let missing = dir.0.join("missing.rules");
    let missing = missing.to_str().unwrap();
    let expected =
        format!("chaos-user: error: bad rule `{missing}`: No such file or directory (os error 2)");
    let args = [
        "inject",
        "--container",
        "syschaos-test-none",
        "--rules",
        missing,
    ];
    assert_refused(&args, &expected, |_| {});
}

/// Counts of one round (200 getppid, 6 missing files) of `target`, exactly, and nothing else.
fn assert_one_round(scrape: &Scrape, target: &str) {
    assert_eq!(calls(scrape, target, "getppid"), Some(200.0), "{target}");
    assert_eq!(enoent(scrape, target, "openat"), Some(6.0), "{target}");
    assert_eq!(scrape.label_values(CALLS, "target"), [target]);
}

#[test]
fn cgroup_root_is_where_cgroup_paths_are_resolved() {
    let web = Container::start("cgroot", &["--getppid", "200", "--open-missing", "6"]);
    let (relative, _) = container_cgroup(&web);
    let v2_root = cgroup_v2_root();

    // The cgroup2 mount, and a path relative to it.
    let attach = Attach::start(&[
        "--cgroup-root",
        v2_root.to_str().unwrap(),
        "--cgroup",
        &relative,
    ]);
    web.trigger_round(1);
    assert_one_round(&attach.metrics(), &relative);
    drop(attach);

    // /sys/fs/cgroup: a hybrid host's (v2 in unified/, the v1 controllers beside it, where the
    // container's memory and CPU are counted), or a pure v2 host's mount itself.
    let attach = Attach::start(&["--cgroup-root", "/sys/fs/cgroup", "--cgroup", &relative]);
    web.trigger_round(2);
    let scrape = attach.metrics();
    assert_one_round(&scrape, &relative);
    for metric in [
        "syschaos_container_memory_bytes",
        "syschaos_container_cpu_seconds_total",
    ] {
        let value = scrape.value(metric, &[("target", &relative)]);
        assert!(value.is_some_and(|v| v > 0.0), "{metric}: {value:?}");
    }
    drop(attach);

    // The hierarchy mounted somewhere else too (as a volume at /host/cgroup would be), in a mount
    // namespace of chaos-user's own. An absolute --cgroup under that mount is only a cgroup v2
    // directory under --cgroup-root: under the root mountinfo names first, it does not exist.
    let mount_point = MountPoint::new("cli-host-cgroup");
    let mount_point = &mount_point.0;
    let target = mount_point.join(&relative);
    let target = target.to_str().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "attach",
        "--cgroup-root",
        mount_point.to_str().unwrap(),
        "--cgroup",
        target,
        "--quiet",
        "--metrics-addr",
        &addr,
    ];
    let running = Running::start(
        chaos_user_with_cgroup_mount(&v2_root, mount_point, &args),
        port,
    );
    web.trigger_round(3);
    assert_one_round(&running.metrics(), target);
}

const MISSING: &str = "/syschaos-cli-trace";

#[test]
fn trace_text_shows_each_call_with_its_arguments_result_and_injection() {
    let web = Container::start(
        "trace-text",
        &[
            "--getppid",
            "3",
            "--open-missing",
            "2",
            "--path",
            MISSING,
            "--connect",
            "2",
        ],
    );
    let mut trace = Attach::trace(&[
        "--container",
        &web.name,
        "--syscall",
        "getppid,openat,connect",
        "--inject",
        "connect=ECONNREFUSED,count=1,engine=cgroup-sock",
    ]);
    let report = web.trigger_round(1);
    assert_eq!(
        report.outcome("connect"),
        CallOutcome::failing(libc::ECONNREFUSED, vec![1], 2)
    );
    wait_for("7 traced calls", Duration::from_secs(10), || {
        (trace.stdout().len() >= 7).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    trace.signal(libc::SIGINT);
    let status = trace.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");

    let lines = trace.stdout();
    let traced: Vec<TextCall> = lines.iter().map(|line| parse_text_call(line)).collect();
    let pid = web.pid();
    for call in &traced {
        assert_eq!(
            (call.target.as_str(), call.pid, call.tid, call.comm.as_str()),
            (web.name.as_str(), pid, pid, "chaos-workload"),
            "{call:?}"
        );
        // The wall clock (UTC) of the call: this test's few seconds ago.
        assert!(seconds_ago(call.second_of_day) <= 60, "{call:?}");
        assert!(call.latency_us >= 0.0, "{call:?}");
    }
    let shown: Vec<(&str, &str, &str, bool)> = traced
        .iter()
        .map(|call| {
            let args = match call.syscall.as_str() {
                // connect(FD, 127.0.0.1:PORT, 16): the fd and the listener's port vary.
                "connect" => {
                    let parts: Vec<&str> = call.args.split(", ").collect();
                    assert_eq!(parts.len(), 3, "{call:?}");
                    assert!(parts[0].parse::<u32>().is_ok(), "{call:?}");
                    assert!(parts[1].starts_with("127.0.0.1:"), "{call:?}");
                    assert_eq!(parts[2], "16", "{call:?}");
                    "FD, 127.0.0.1:PORT, 16"
                }
                _ => call.args.as_str(),
            };
            (
                call.syscall.as_str(),
                args,
                call.result.as_str(),
                call.injected,
            )
        })
        .collect();
    let open = r#"AT_FDCWD, "/syschaos-cli-trace", O_RDONLY"#;
    let connect = "FD, 127.0.0.1:PORT, 16";
    // In the order made; getppid in a container's pid 1 returns 0 (its parent is outside).
    assert_eq!(
        shown,
        [
            ("getppid", "", "0", false),
            ("getppid", "", "0", false),
            ("getppid", "", "0", false),
            ("openat", open, "-1 ENOENT", false),
            ("openat", open, "-1 ENOENT", false),
            ("connect", connect, "-1 ECONNREFUSED", true),
            ("connect", connect, "0", false),
        ],
        "{lines:#?}"
    );
    let stderr = trace.stderr();
    for summary in [
        format!(
            "syschaos: {}: connect ECONNREFUSED via cgroup-sock: 1 injected",
            web.name
        ),
        "syschaos: trace: 7 calls shown, 0 dropped".to_owned(),
        "syschaos: detached (SIGINT)".to_owned(),
    ] {
        assert!(stderr.lines().any(|line| line == summary), "{stderr}");
    }
}

/// Waits until `trace` has shown `shown` lines, then a little longer: exactly that many.
fn assert_shows_exactly(trace: &Attach, shown: usize) {
    wait_for(
        &format!("{shown} traced calls"),
        Duration::from_secs(10),
        || (trace.stdout().len() >= shown).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(trace.stdout().len(), shown);
}

/// `--sample N` keeps every N-th traced call of each CPU (chaos-ebpf/src/trace.rs: a per-CPU
/// counter of the calls that pass the filters). Pinned to CPU 0, the workload's calls are all
/// counted by one counter, so the calls shown are exact, and the counter runs on across rounds.
#[test]
fn trace_sample_two_shows_every_second_call_of_a_cpu() {
    let web = Container::run(
        "trace-sample",
        &["--network", "none", "--cpuset-cpus", "0"],
        &["idle", "--getppid", "1001"],
    );
    let mut trace = Attach::trace(&[
        "--container",
        &web.name,
        "--syscall",
        "getppid",
        "--sample",
        "2",
    ]);
    // Calls 1..=1001 of the counter: the 500 even ones are shown.
    web.trigger_round(1);
    assert_shows_exactly(&trace, 500);
    // Calls 1002..=2002: 501 even ones more.
    web.trigger_round(2);
    assert_shows_exactly(&trace, 1001);
    // Sampling thins the trace only: the counters stay exact.
    assert_eq!(calls(&trace.metrics(), &web.name, "getppid"), Some(2002.0));

    trace.signal(libc::SIGINT);
    let status = trace.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let pid = web.pid();
    for line in trace.stdout() {
        let call = parse_text_call(&line);
        assert_eq!(
            (
                call.syscall.as_str(),
                call.args.as_str(),
                call.result.as_str()
            ),
            ("getppid", "", "0"),
            "{line}"
        );
        assert_eq!((call.pid, call.injected), (pid, false), "{line}");
    }
    let stderr = trace.stderr();
    assert!(
        stderr
            .lines()
            .any(|line| line == "syschaos: trace: 1001 calls shown, 0 dropped"),
        "{stderr}"
    );
}

/// `{"Ok": ...}` or `{"Err": "why"}` (a serialized Result) as doctor's text shows it.
fn status_text(result: &Value) -> String {
    match (result.get("Ok"), result["Err"].as_str()) {
        (Some(_), None) => "ok".to_owned(),
        (None, Some(why)) => format!("NO: {why}"),
        _ => panic!("not a serialized Result: {result}"),
    }
}

/// What `doctor` prints, built from what `doctor --json` says.
fn doctor_text_from_json(json: &Value) -> String {
    let mut text = format!("kernel          {}\n", json["kernel"].as_str().unwrap());
    let root = &json["cgroup_v2_root"];
    let root = match root["Ok"].as_str() {
        Some(path) => path.to_owned(),
        None => status_text(root),
    };
    text += &format!("cgroup v2       {root}\n");
    text += &format!("monitor         {}\n", status_text(&json["monitor"]));
    text += &format!("docker          {}\n", status_text(&json["docker"]));
    text += "\ninjection engines (auto: an errno before the call on the first pre-call engine that \
             works and covers the syscall, else ptrace; when=after and delays on stop; experiments \
             prefer stop to ptrace):\n";
    for engine in json["engines"].as_array().unwrap() {
        let state = match (engine["works"].as_bool(), engine["reason"].as_str()) {
            (Some(true), None) => "works".to_owned(),
            (Some(false), Some(why)) if !why.is_empty() => format!("unavailable: {why}"),
            _ => panic!("works and reason disagree: {engine}"),
        };
        let name = engine["engine"].as_str().unwrap();
        text += &format!("  {name:<12} {state}\n");
        text += &format!(
            "  {:<12} covers: {}\n",
            "",
            engine["covers"].as_str().unwrap()
        );
    }
    let works = |name: &str| {
        json["engines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|engine| engine["engine"] == name && engine["works"] == true)
    };
    if works("ptrace") {
        text += "\nnote: ptrace stops every call of the target in chaos-user (microseconds each: a \
                 busy server can lose most of its throughput)";
        if works("stop") {
            text += "; the stop engine (when=after, and delays) stops only the perturbed calls";
        }
        text += "\n";
    }
    text
}

#[test]
fn doctor_text_says_what_doctor_json_says() {
    let floor = newest_program_id();
    let text = doctor(&[]);
    let json: Value = serde_json::from_str(&doctor(&["--json"])).unwrap();
    assert_eq!(
        text,
        doctor_text_from_json(&json),
        "doctor --json:\n{json:#}"
    );

    // What the text says, checked against the host.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(json["kernel"], release.trim());
    assert_eq!(
        json["cgroup_v2_root"]["Ok"],
        cgroup_v2_root().to_str().unwrap()
    );
    let lines: Vec<&str> = text.lines().collect();
    // Everything else in this suite runs on the monitor, and the tests start dockerd.
    assert!(lines.contains(&"monitor         ok"), "{text}");
    assert!(lines.contains(&"docker          ok"), "{text}");
    let engines: Vec<&str> = json["engines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|engine| engine["engine"].as_str().unwrap())
        .collect();
    assert_eq!(
        engines,
        [
            "kprobe",
            "fmod-ret",
            "lsm",
            "cgroup-sock",
            "signal",
            "ptrace",
            "stop"
        ]
    );
    // fmod_ret is tried for real: where the kernel refuses it (this host: EPERM), doctor says
    // why, from the load itself.
    let fmod_ret = &json["engines"][1];
    assert!(
        fmod_ret["works"] == true
            || fmod_ret["reason"]
                .as_str()
                .is_some_and(|r| r.contains("the kernel refuses program inject_fmod_ret")),
        "{fmod_ret}"
    );
    // The signal engine needs 5.12 (its counters' atomics); this host has more.
    assert!(lines.contains(&"  signal       works"), "{text}");
    // ptrace comes with its cost, and the faster engine this host has.
    assert!(
        text.contains("note: ptrace stops every call of the target")
            && text.contains(
                "the stop engine (when=after, and delays) stops only the perturbed calls"
            ),
        "{text}"
    );
    // Doctor loads every program to see what works, and leaves none behind.
    assert_no_programs_since(floor);
}

#[test]
fn the_live_view_shows_the_target_table_and_ctrl_c_exits_zero() {
    let web = Container::start("live", &["--getppid", "1234", "--open-missing", "5"]);
    let (_, cgroup_id) = container_cgroup(&web);
    let floor = newest_program_id();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let chaos_user = chaos_user_bin();
    // The shell survives the Ctrl-C (a trap) to tell chaos-user's exit status.
    let script = r#"trap : INT; "$1" attach --container "$2" --interval 1s --metrics-addr "$3"; echo "EXIT=$?"; sleep 60"#;
    let tmux = Tmux::start(
        "live",
        (200, 50),
        script,
        &[chaos_user.to_str().unwrap(), &web.name, &addr],
    );
    let header = format!("syschaos  metrics: http://{addr}/metrics  Ctrl-C to detach");
    let target = format!("{} (cgroup {cgroup_id})   cpu ", web.name);
    tmux.wait_screen("the live view", Duration::from_secs(30), |screen| {
        assert!(!screen.contains("EXIT="), "chaos-user exited:\n{screen}");
        let lines: Vec<&str> = screen.lines().collect();
        (lines.first() == Some(&header.as_str())
            && lines.iter().any(|line| line.starts_with(&target)))
        .then_some(())
    });
    let columns = format!(
        "  {:<18} {:>10} {:>10} {:<24} {:>10} {:>10} {:>12}",
        "SYSCALL", "CALLS/s", "ERRORS/s", "ERRNO", "P50", "P99", "TOTAL"
    );

    // The signal alone (not `trigger_round`, which waits for the report): the screen is
    // watched from the moment the round starts, so no interval's frame (1 s on screen) is missed.
    docker(&["kill", "-s", "USR1", &web.name]);
    // The interval(s) with the round show the failures by errno; a later one none, with the
    // same totals: the view refreshes.
    let mut errno_frames: Vec<String> = Vec::new();
    tmux.wait_screen(
        "the round's calls, then an interval without calls",
        Duration::from_secs(15),
        |screen| {
            assert!(screen.lines().any(|line| line == columns), "{screen}");
            let getppid = live_row(screen, &target, "getppid")?;
            let openat = live_row(screen, &target, "openat")?;
            assert!(getppid.total <= 1234 && openat.total <= 5, "{screen}");
            if openat.errnos != "-" && errno_frames.last() != Some(&openat.errnos) {
                errno_frames.push(openat.errnos.clone());
            }
            (getppid.total == 1234
                && openat.total == 5
                && getppid.calls_per_sec == "0.0"
                && openat.errors_per_sec == "0.0"
                && openat.errnos == "-")
                .then_some(())
        },
    );
    // One interval has the 5 failures, or two share them (the round straddled a refresh: 5 is
    // odd, so two frames never show the same count).
    let failures: u64 = errno_frames
        .iter()
        .map(|errnos| {
            errnos
                .strip_prefix("ENOENT:")
                .and_then(|count| count.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("ERRNO column `{errnos}`, expected ENOENT:N"))
        })
        .sum();
    assert_eq!(failures, 5, "ERRNO columns seen: {errno_frames:?}");
    let report = wait_for("the round's report", Duration::from_secs(10), || {
        web.reports(1).pop()
    });
    assert_eq!(report.outcome("getppid"), CallOutcome::clean(1234));
    assert_eq!(
        report.outcome("open-missing"),
        CallOutcome::failing(libc::ENOENT, (1..=5).collect(), 5)
    );

    tmux.send_keys("C-c");
    let screen = tmux.wait_screen("chaos-user to exit", Duration::from_secs(15), |screen| {
        screen.contains("EXIT=").then(|| screen.to_owned())
    });
    // The terminal echoes the Ctrl-C as `^C` where the cursor was: at the start of a line.
    let lines: Vec<&str> = screen
        .lines()
        .map(|line| line.trim_start_matches("^C"))
        .collect();
    assert!(lines.contains(&"syschaos: detached (SIGINT)"), "{screen}");
    assert!(lines.contains(&"EXIT=0"), "{screen}");
    assert_no_programs_since(floor);
}
