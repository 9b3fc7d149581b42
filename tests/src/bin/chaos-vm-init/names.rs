//! arm64-names: chaos-user speaks arm64's syscall table end to end. x86_64's legacy names are
//! refused with the call to use instead, by every command, and nothing stays attached; a call
//! whose number differs between the tables, and which the `syscalls` crate misnames on arm64
//! (79, `newfstatat`), is selected and shown by its kernel name. The monitor and trace tests
//! already show getppid and openat (110/173, 257/56) by name.
use std::{path::Path, thread, time::Duration};

use crate::{
    helpers::{ChaosUser, create_dir, expect_refused, expect_success, spawn_in_cgroup, workload},
    inject::no_programs_left,
    json,
};

/// The missing file the workload stats.
const MISSING: &str = "/tmp/syschaos-names-missing";
/// Experiment files with an x86_64-only name: as a perturbation, and in a steady-state metric.
const EXPERIMENTS: [(&str, &str, &str); 2] = [
    ("/tmp/syschaos-names-rule.yaml", "open", "getppid"),
    ("/tmp/syschaos-names-metric.yaml", "openat", "stat"),
];

pub fn arm64_names() -> Result<(), String> {
    if !cfg!(target_arch = "aarch64") {
        return Err("arm64-names is a test of the arm64 kernel".into());
    }
    let cgroup = Path::new("/sys/fs/cgroup/names");
    create_dir(cgroup)?;
    let label = cgroup.to_str().ok_or("cgroup path is not UTF-8")?;
    let mut failures = Vec::new();
    for (args, needles) in refusals(label)? {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        failures.extend(expect_refused(&args, &needles).err());
        failures.extend(no_programs_left().err());
    }
    failures.extend(trace_newfstatat(cgroup, label).err());
    match failures.is_empty() {
        true => Ok(()),
        false => Err(failures.join("\n  and: ")),
    }
}

/// A command line, and what its one error line must contain.
type Refusal = (Vec<String>, Vec<String>);

/// Each command with an x86_64-only name, and what its one error line must say.
fn refusals(label: &str) -> Result<Vec<Refusal>, String> {
    for (file, syscall, metric) in EXPERIMENTS {
        let experiment = format!(
            "name: names\ntarget:\n  cgroup: {label}\nsteady_state:\n  conditions:\n    - metric: \
             syscall.{metric}.calls_per_sec\n      min: 0\nperturbations:\n  - syscall: {syscall}\n    \
             errno: EACCES\n"
        );
        std::fs::write(file, experiment).map_err(|e| format!("writing {file}: {e}"))?;
    }
    let owned = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let inject = |rule: &[&str]| {
        let mut args = vec![
            "inject",
            "--cgroup",
            label,
            "--no-metrics",
            "--duration",
            "5s",
        ];
        args.extend(rule);
        owned(&args)
    };
    let not_on_arm64 = |name: &str, use_instead: &str| {
        format!("`{name}` is not a syscall on aarch64 (use {use_instead})")
    };
    let (rule_file, metric_file) = (EXPERIMENTS[0].0, EXPERIMENTS[1].0);
    Ok(vec![
        (
            inject(&["--syscall", "open", "--errno", "EACCES"]),
            vec![not_on_arm64("open", "openat")],
        ),
        (
            inject(&["--rule", "stat=ENOENT,probability=0.5"]),
            vec![not_on_arm64("stat", "newfstatat")],
        ),
        (
            owned(&[
                "trace",
                "--cgroup",
                label,
                "--syscall",
                "fork",
                "--duration",
                "5s",
            ]),
            vec![not_on_arm64("fork", "clone")],
        ),
        (
            owned(&["run", "--dry-run", rule_file]),
            vec![format!(
                "{rule_file}:9:14: perturbations[0].syscall: {}",
                not_on_arm64("open", "openat")
            )],
        ),
        (
            owned(&["run", "--dry-run", metric_file]),
            vec![
                format!("{metric_file}:6:15: steady_state.conditions[0].metric"),
                not_on_arm64("stat", "newfstatat"),
            ],
        ),
    ])
}

/// `trace --syscall newfstatat`: exactly the workload's 3 calls, as `newfstatat(AT_FDCWD,
/// "/tmp/...", ...)` failing with ENOENT.
fn trace_newfstatat(cgroup: &Path, label: &str) -> Result<(), String> {
    let mut chaos_user = ChaosUser::start(&[
        "trace",
        "--cgroup",
        label,
        "--syscall",
        "newfstatat",
        "--json",
        "--no-metrics",
        "--duration",
        "60s",
    ])?;
    chaos_user.wait_attached(Duration::from_secs(60))?;
    let calls = ["calls", "--stat-missing", "3", "--path", MISSING];
    let inside = spawn_in_cgroup(workload(&calls), cgroup)
        .map_err(|e| format!("starting the workload: {e}"))?;
    expect_success(inside, "the workload")?;
    thread::sleep(Duration::from_millis(1500));
    chaos_user.interrupt()?;
    let output = chaos_user.finish(Duration::from_secs(60))?;
    let events = output.json_lines("chaos-user trace")?;
    let text = |event: &json::Value, field: &str| {
        event
            .get(field)
            .and_then(json::Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let quoted = format!("{MISSING:?}");
    let mut seen = 0;
    for event in events
        .iter()
        .filter(|e| text(e, "comm") == "chaos-workload")
    {
        let args: Vec<&str> = event
            .get("args")
            .map_or(&[][..], json::Value::as_array)
            .iter()
            .filter_map(json::Value::as_str)
            .collect();
        let right = text(event, "syscall") == "newfstatat"
            && args.first() == Some(&"AT_FDCWD")
            && args.get(1) == Some(&quoted.as_str())
            && text(event, "errno") == "ENOENT";
        if !right {
            return Err(format!("an event not as the workload made it: {event:?}"));
        }
        seen += 1;
    }
    if seen != 3 {
        return Err(format!(
            "traced {seen} newfstatat calls of the workload, expected 3; stdout:\n{}",
            output.stdout.join("\n")
        ));
    }
    no_programs_left()
}
