//! `chaos-user run` and `chaos-user plan` against real containers: the project's HTTP server
//! (`chaos-workload serve`) in a host-network container, its backend in another, traffic from
//! `chaos-workload load` on the host, everything on 127.0.0.1. Verdicts come out right, the
//! reports are complete and the HTML one renders in headless Chromium without console errors.
#[path = "experiment_docker/helpers.rs"]
mod helpers;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use helpers::{
    STEADY, Service, check_in_chromium, injected_only_in_the_perturbation_phase, run_experiment,
    verdicts,
};
use serde_json::Value;
use tests::{TempDir, chaos_user_bin, doctor::Doctor, wait_for, workload_bin};

#[test]
fn survives_retried_eintr_and_degrades_on_refused_backend() {
    let service = Service::start("exp-verdicts");
    let dir = TempDir::new("exp-verdicts");
    let yaml = format!(
        "name: e2e-verdicts
target:
  container: {server}
{load}{STEADY}  probes:
    - name: backend
      http: {{url: \"http://127.0.0.1:{port}/backend/status/200\", status: 200}}
      timeout: 1s
      interval: 250ms
perturbations:
  - name: backend connects interrupted half the time (retried)
    rule: connect=EINTR,probability=0.5,engine=cgroup-sock
  - name: backend connections refused
    rule: connect=ECONNREFUSED,engine=cgroup-sock
",
        server = service.server.name,
        load = service.load_yaml(&["/backend/status/200"]),
        port = service.port,
    );
    let (ok, stderr, results) = run_experiment(&yaml, &dir.0);
    assert!(ok, "chaos-user run failed: {stderr}");
    assert_eq!(verdicts(&results), ["resilient", "degraded"], "{results:#}");
    assert_eq!(results["schema"], "syschaos.experiment/v1");
    assert_eq!(results["ended"], "completed");
    assert_eq!(results["summary"]["resilient"], 1);
    assert_eq!(results["summary"]["degraded"], 1);
    let perturbations = results["perturbations"].as_array().unwrap();
    for p in perturbations {
        assert_eq!(p["engine"], "cgroup-sock", "{p:#}");
        assert!(
            p["injections"].as_u64().unwrap() > 20,
            "too few injections: {p:#}"
        );
        assert_eq!(p["crashed"], false);
        assert!(
            p["injection_window"]["end_s"].as_f64() > p["injection_window"]["start_s"].as_f64()
        );
    }
    // The refused backend broke the 5xx condition during the perturbation, significantly, and
    // it came back during recovery; the retried EINTR did not move it.
    let five_xx = |p: &Value| p["conditions"][0].clone();
    let degraded = five_xx(&perturbations[1]);
    assert_eq!(degraded["metric"], "http.5xx_ratio");
    assert_eq!(degraded["perturbation"]["violated"], true, "{degraded:#}");
    assert!(
        degraded["perturbation"]["value"].as_f64().unwrap() > 0.9,
        "{degraded:#}"
    );
    assert!(
        degraded["perturbation"]["p_value"].as_f64().unwrap() < 0.05,
        "{degraded:#}"
    );
    assert_eq!(degraded["recovery"]["violated"], false, "{degraded:#}");
    let resilient = five_xx(&perturbations[0]);
    assert_eq!(
        resilient["perturbation"]["value"].as_f64(),
        Some(0.0),
        "{resilient:#}"
    );
    // The probe failed during the refused perturbation (a probe sent just before the rule
    // arrived may still succeed: the threshold, not the test, is what is certain here).
    let probe = &perturbations[1]["conditions"][2];
    assert_eq!(probe["metric"], "probe.backend.success_ratio", "{probe:#}");
    assert_eq!(probe["perturbation"]["threshold_ok"], false, "{probe:#}");
    assert!(
        probe["perturbation"]["value"].as_f64().unwrap() < 0.5,
        "{probe:#}"
    );
    assert_eq!(probe["recovery"]["threshold_ok"], true, "{probe:#}");
    // One sample a second in every phase, with the metrics recorded.
    let samples = results["samples"].as_array().unwrap();
    assert!(
        (28..=34).contains(&samples.len()),
        "{} samples",
        samples.len()
    );
    for phase in ["baseline", "perturbation", "recovery"] {
        let n = samples
            .iter()
            .filter(|s| s["perturbation"] == 2 && s["phase"] == phase)
            .count();
        assert_eq!(n, 5, "{phase}");
    }
    injected_only_in_the_perturbation_phase(&results, 2);
    // Nothing left injected: the backend answers through the server.
    assert_eq!(service.get("/backend/status/200"), 200);

    let report = dir.0.join("report");
    let csv = std::fs::read_to_string(report.join("samples.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.starts_with("t_seconds,unix_ms,perturbation,rule,phase,injections,"),
        "{header}"
    );
    assert!(header.contains("http.5xx_ratio") && header.contains("probe.backend.success_ratio"));
    assert_eq!(csv.lines().count(), samples.len() + 1);
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("| 1 | backend connects interrupted half the time (retried)"),
        "{md}"
    );
    assert!(
        md.contains("**resilient**") && md.contains("**degraded**"),
        "{md}"
    );
    assert!(
        stderr.contains("RESILIENT") && stderr.contains("DEGRADED"),
        "{stderr}"
    );
    // 3 conditions charted + the syscall's errors + injections, per perturbation.
    check_in_chromium(&report.join("report.html"), 2 * 5);
}

#[test]
fn abort_condition_stops_the_injection_and_the_experiment() {
    let service = Service::start("exp-abort");
    let dir = TempDir::new("exp-abort");
    let yaml = format!(
        "name: e2e-abort
target:
  container: {server}
{load}phases:
  baseline: 3s
  perturbation: 20s
  recovery: 3s
steady_state:
  conditions:
    - metric: http.5xx_ratio
      max: 1%
abort:
  conditions:
    - metric: http.5xx_ratio
      max: 50%
      window: 2s
perturbations:
  - rule: connect=ECONNREFUSED
  - rule: connect=EINTR,probability=0.5
",
        server = service.server.name,
        load = service.load_yaml(&["/backend/status/200"]),
    );
    let started = Instant::now();
    let (ok, stderr, results) = run_experiment(&yaml, &dir.0);
    assert!(!ok, "an aborted experiment exits non-zero");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the abort did not cut the 20s phase"
    );
    assert_eq!(verdicts(&results), ["aborted", "not-run"], "{results:#}");
    let p = &results["perturbations"][0];
    assert!(
        p["aborted_by"]
            .as_str()
            .unwrap()
            .contains("abort condition"),
        "{p:#}"
    );
    let window = &p["injection_window"];
    let injected_for = window["end_s"].as_f64().unwrap() - window["start_s"].as_f64().unwrap();
    assert!(injected_for < 5.0, "injected for {injected_for}s");
    assert!(
        p["phases"]["recovery"].is_object(),
        "recovery still ran: {p:#}"
    );
    assert!(
        results["ended"].as_str().unwrap().contains("aborted"),
        "{results:#}"
    );
    assert!(stderr.contains("ABORTED"), "{stderr}");
    assert_eq!(service.get("/backend/status/200"), 200);
}

#[test]
fn sigint_stops_injecting_at_once_and_still_reports() {
    let service = Service::start("exp-sigint");
    let dir = TempDir::new("exp-sigint");
    let yaml = format!(
        "target:
  container: {server}
{load}phases:
  baseline: 2s
  perturbation: 60s
  recovery: 2s
steady_state:
  conditions:
    - metric: http.5xx_ratio
      max: 1%
perturbations:
  - rule: connect=ECONNREFUSED
",
        server = service.server.name,
        load = service.load_yaml(&["/backend/status/200"]),
    );
    let file = dir.0.join("sigint.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = dir.0.join("report");
    let mut child = Command::new(chaos_user_bin())
        .args([
            "run",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("[chaos-user run] {line}");
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    wait_for("the perturbation phase", Duration::from_secs(30), || {
        lines
            .lock()
            .unwrap()
            .contains(": perturbation 60s")
            .then_some(())
    });
    // The injection works...
    wait_for(
        "the backend refused through the server",
        Duration::from_secs(10),
        || (service.get("/backend/status/200") == 502).then_some(()),
    );
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_for("chaos-user to exit", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    assert!(
        !status.success(),
        "an interrupted experiment exits non-zero"
    );
    // ... and is gone once chaos-user has exited.
    assert_eq!(service.get("/backend/status/200"), 200);
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(verdicts(&results), ["aborted"]);
    assert_eq!(
        results["perturbations"][0]["aborted_by"],
        "interrupted by SIGINT"
    );
    assert_eq!(results["ended"], "interrupted by SIGINT");
    assert!(out.join("report.html").exists() && out.join("samples.csv").exists());
}

/// The issue's own example on the ptrace engine (file syscalls are beyond cgroup-sock): openat
/// EINTR on the server's files is retried (resilient); EACCES answers 500 (degraded).
#[test]
fn file_faults_through_ptrace() {
    Doctor::run().require_engine("ptrace");
    let service = Service::start("exp-files");
    let dir = TempDir::new("exp-files");
    let yaml = format!(
        "target:
  container: {server}
{load}{STEADY}perturbations:
  - name: file opens interrupted half the time (retried)
    syscall: openat
    errno: EINTR
    probability: 0.5
    path_prefix: /srv
    engine: ptrace
  - name: files unreadable
    syscall: openat
    errno: EACCES
    path_prefix: /srv
    engine: ptrace
",
        server = service.server.name,
        load = service.load_yaml(&["/file/index.html"]),
    );
    let (ok, stderr, results) = run_experiment(&yaml, &dir.0);
    assert!(ok, "chaos-user run failed: {stderr}");
    assert_eq!(verdicts(&results), ["resilient", "degraded"], "{results:#}");
    for p in results["perturbations"].as_array().unwrap() {
        assert_eq!(p["engine"], "ptrace", "{p:#}");
        assert!(p["injections"].as_u64().unwrap() > 20, "{p:#}");
    }
    assert_eq!(service.get("/file/index.html"), 200);
}

/// The engine must not be what the verdict measures. A rule that never matches perturbs nothing,
/// so its perturbation is `resilient` on throughput (within 10%) on any engine: on the stop engine
/// because unperturbed calls only pay the BPF programs, on ptrace because the tracer then stays
/// attached through the baseline and the recovery too. The load is closed-loop (each GET as soon
/// as the last answered), so a tracer shows in its rate; it keeps its connection alive, as
/// clients of busy servers do: a new thread per connection would stop in the tracer once each
/// (its clone event), which the README counts among the stop engine's costs.
#[test]
fn a_rule_that_never_matches_is_resilient_on_any_engine() {
    let doctor = Doctor::run();
    doctor.require_engine("ptrace");
    // `run` picks a pre-call kernel engine for openat if the host has one, else the stop engine.
    let auto = ["kprobe", "fmod-ret", "lsm"]
        .into_iter()
        .find(|engine| doctor.engine_works(engine).is_ok())
        .unwrap_or("stop");
    doctor.require_engine(auto);
    let service = Service::start("exp-never");
    let dir = TempDir::new("exp-never");
    let never = "openat=EACCES,path-prefix=/nonexistent";
    let yaml = format!(
        "target:
  container: {server}
load:
  command: [\"{workload}\", load, --port, \"{port}\", --interval-ms, \"0\", --requests, \"100000000\", --per-connection, \"1000000\", --get, /file/index.html]
  warmup: 1s
phases:
  baseline: 4s
  perturbation: 4s
  recovery: 4s
steady_state:
  window: 3s
  conditions:
    - name: throughput
      metric: http.requests_per_sec
      max_decrease: 10%
      aggregate: median
perturbations:
  - name: never, auto
    rule: {never}
  - name: never, ptrace
    rule: {never},engine=ptrace
",
        server = service.server.name,
        workload = workload_bin().display(),
        port = service.port,
    );
    let (ok, stderr, results) = run_experiment(&yaml, &dir.0);
    assert!(ok, "chaos-user run failed: {stderr}");
    assert_eq!(
        verdicts(&results),
        ["resilient", "resilient"],
        "{results:#}"
    );
    let perturbations = results["perturbations"].as_array().unwrap();
    assert_eq!(perturbations[0]["engine"], auto, "{results:#}");
    assert_eq!(perturbations[1]["engine"], "ptrace", "{results:#}");
    for p in perturbations {
        assert_eq!(p["injections"], 0, "{p:#}");
    }
    // The tracer was there in the baseline: it ran slower than the untraced one before it.
    let baseline_rate = |index: u64| {
        let mut rates: Vec<f64> = results["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["perturbation"] == index && s["phase"] == "baseline")
            .filter_map(|s| s["values"]["http.requests_per_sec"].as_f64())
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (untraced, traced) = (baseline_rate(1), baseline_rate(2));
    assert!(
        traced < 0.8 * untraced,
        "baseline under ptrace {traced:.0} req/s, without {untraced:.0}: was the tracer attached?"
    );
}

#[test]
fn plan_amplifies_the_failures_the_service_meets() {
    let service = Service::start("exp-plan");
    // One GET in four asks for a missing file: openat fails with ENOENT 25% of the time.
    let mut load = Command::new(workload_bin())
        .args([
            "load",
            "--port",
            &service.port.to_string(),
            "--interval-ms",
            "10",
        ])
        .args(["--requests", "3000"])
        .args(["--get", "/file/index.html", "--get", "/file/missing.html"])
        .args(["--get", "/file/index.html", "--get", "/file/index.html"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let dir = TempDir::new("exp-plan");
    let planned = dir.0.join("planned.yaml");
    let output = Command::new(chaos_user_bin())
        .args([
            "plan",
            "--container",
            &service.server.name,
            "--observe",
            "6s",
        ])
        .args(["--out", planned.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = load.kill();
    let _ = load.wait();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&planned).unwrap();
    eprintln!("{text}");
    let comment = text
        .lines()
        .find(|l| l.trim_start().starts_with("# openat ENOENT: observed "))
        .unwrap_or_else(|| panic!("no openat ENOENT line:\n{text}"));
    let observed: f64 = comment
        .split("observed ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        (23.0..=27.0).contains(&observed),
        "observed {observed}%: {comment}"
    );
    assert!(comment.contains("1.2 x the max rate"), "{comment}");
    // The rule right under the comment: 1.2 x the largest per-second rate (25%, a little more
    // in a second that ends between a request for the missing file and the next).
    let rule: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != comment)
        .skip(1)
        .take(3)
        .collect();
    assert_eq!(rule[0].trim(), "- syscall: openat", "{rule:?}");
    assert_eq!(rule[1].trim(), "errno: ENOENT", "{rule:?}");
    let probability: f64 = rule[2]
        .trim()
        .strip_prefix("probability: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (0.29..=0.34).contains(&probability),
        "probability {probability}"
    );
    assert!(
        text.contains("metric: http.5xx_ratio"),
        "the service answers HTTP: {text}"
    );
    // What plan writes runs: check it (and the engines) without injecting.
    let dry = Command::new(chaos_user_bin())
        .args(["run", planned.to_str().unwrap(), "--dry-run"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(shown.contains("openat=ENOENT,probability="), "{shown}");
}

#[test]
fn bad_files_and_targets_are_refused_before_anything_runs() {
    let dir = TempDir::new("exp-bad");
    let file = dir.0.join("bad.yaml");
    std::fs::write(
        &file,
        "target:\n  container: nope\nsteady_state:\n  conditions:\n    - metric: http.5xx_ratio\n      max: 1%\nperturbations:\n  - syscall: connect\n    errno: ECONNREFUZED\n",
    )
    .unwrap();
    let output = Command::new(chaos_user_bin())
        .args(["run", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("bad.yaml:9:") && stderr.contains("perturbations[0].errno"),
        "{stderr}"
    );
    std::fs::write(
        &file,
        "target:\n  container: syschaos-no-such-container\nsteady_state:\n  conditions:\n    - metric: http.5xx_ratio\n      max: 1%\nperturbations:\n  - rule: connect=ECONNREFUSED\n",
    )
    .unwrap();
    let output = Command::new(chaos_user_bin())
        .args([
            "run",
            file.to_str().unwrap(),
            "--out",
            dir.0.join("out").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no container named `syschaos-no-such-container`"),
        "{stderr}"
    );
    assert!(!dir.0.join("out").exists(), "a report for nothing");
}

#[test]
fn a_crash_and_the_restart_are_reported_and_followed() {
    let service = Service::start_with("exp-crash", &["--restart", "always"]);
    let dir = TempDir::new("exp-crash");
    let yaml = format!(
        "target:
  container: {server}
{load}phases:
  baseline: 4s
  perturbation: 5s
  recovery: 6s
steady_state:
  window: 3s
  conditions:
    - metric: http.5xx_ratio
      max: 1%
perturbations:
  - name: killed at its third backend connect
    syscall: connect
    signal: SIGKILL
    nth: 3
",
        server = service.server.name,
        load = service.load_yaml(&["/backend/status/200"]),
    );
    let (ok, stderr, results) = run_experiment(&yaml, &dir.0);
    assert!(ok, "chaos-user run failed: {stderr}");
    let p = &results["perturbations"][0];
    assert_eq!(p["engine"], "signal", "{p:#}");
    assert_eq!(p["injections"], 1, "{p:#}");
    assert_eq!(
        (&p["crashed"], &p["restarted"]),
        (&Value::Bool(true), &Value::Bool(true)),
        "{p:#}"
    );
    let events: Vec<&str> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["died", "started"], "{p:#}");
    assert_eq!(p["events"][0]["detail"], "exit code 137", "{p:#}");
    // Back after the restart: a crash it recovers from is a degradation.
    assert_eq!(p["verdict"], "degraded", "{p:#}");
    assert!(
        p["reason"]
            .as_str()
            .unwrap()
            .contains("crashed (restarted)"),
        "{p:#}"
    );
    // The restarted container was followed: its traffic is counted in the recovery phase.
    let last = results["samples"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["values"]["http.requests_per_sec"].as_f64().unwrap() > 5.0,
        "{last:#}"
    );
}
