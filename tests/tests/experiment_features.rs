//! The experiment features no other end-to-end test runs, in as few `chaos-user run`s as will
//! hold them, with short phases:
//!
//! - one run on four targets of every kind (`containers:`, `cgroup:`, `pid:`), all HTTP servers
//!   loaded by a string `load` command, with conditions naming a target, every aggregate,
//!   `max_increase` and `max_decrease`, a command probe and its latency, an abort condition with
//!   `stop_experiment: false`, a matrix, a delay (stop engine), and a SIGSTOP that leaves every
//!   server stopped: `degraded`, `aborted` (and the run goes on), `degraded`, `broken` + stalled;
//! - one run whose target comes from `--container` instead of the file's, ended by SIGTERM in its
//!   perturbation phase.
#[path = "experiment_features/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use helpers::{
    Cgroup, ChaosRun, HostServer, condition, get, process_state, read_results, samples,
    span_seconds, values, verdicts,
};
use serde_json::{Value, json};
use tests::{TempDir, docker::Container, doctor::Doctor, workload_bin};

/// The targets of the big run: two servers in containers, `web` answering `/backend/...`
/// through a backend on the host that is not a target, and two on the host, each in a cgroup of
/// its own, one named by its cgroup and one by its pid. Dropped servers first, cgroups last.
struct Site {
    web: Container,
    api: Container,
    in_cgroup: HostServer,
    by_pid: HostServer,
    _backend: HostServer,
    web_port: u16,
    api_port: u16,
    cgroup: Cgroup,
    _pid_cgroup: Cgroup,
}

impl Site {
    fn start() -> Self {
        let cgroup = Cgroup::create("feat-cgroup");
        let pid_cgroup = Cgroup::create("feat-pid");
        let backend = HostServer::start(None, None);
        let in_cgroup = HostServer::start(Some(&cgroup), None);
        let by_pid = HostServer::start(Some(&pid_cgroup), None);
        let web_port = tests::free_port();
        let web = Container::run(
            "feat-web",
            &["--network", "host"],
            &[
                "serve",
                "--port",
                &web_port.to_string(),
                "--backend",
                &backend.port.to_string(),
            ],
        );
        // Asked for once web listens: not the same port again.
        let api_port = tests::free_port();
        let api = Container::run(
            "feat-api",
            &["--network", "host"],
            &["serve", "--port", &api_port.to_string()],
        );
        Self {
            web,
            api,
            in_cgroup,
            by_pid,
            _backend: backend,
            web_port,
            api_port,
            cgroup,
            _pid_cgroup: pid_cgroup,
        }
    }

    fn pid_label(&self) -> String {
        self.by_pid.pid().to_string()
    }

    /// The experiment file (see the module comment).
    fn experiment(&self) -> String {
        let (web, api, cgroup, pid) = (
            &self.web.name,
            &self.api.name,
            &self.cgroup.relative,
            self.pid_label(),
        );
        let load = |port: u16, path: &str| {
            format!("    $w load --port {port} --get {path} --interval-ms 20 --requests 100000 &\n")
        };
        format!(
            "name: e2e-features
target:
  containers: [{web}, {api}]
  cgroup: {cgroup}
  pid: {pid}
load:
  command: |
    w={workload}
{web_load}{api_load}{cgroup_load}{pid_load}    wait
  warmup: 1s
phases:
  baseline: 2s
  perturbation: 2s
  recovery: 2s
stall_after: 2s
steady_state:
  window: 1s
  conditions:
    - name: web 5xx
      metric: http.5xx_ratio
      target: {web}
      max: 1%
    - name: throughput
      metric: http.requests_per_sec
      max_decrease: 50%
      aggregate: median
    - name: web p50 latency
      metric: http.p50_ms
      target: {web}
      max: 25
      aggregate: p95
    - name: web connect errors
      metric: syscall.connect.errors_per_sec
      target: {web}
      max_increase: 50%
      aggregate: max
    - name: cgroup server answers
      metric: http.2xx_per_sec
      target: {cgroup}
      min: 10
      aggregate: min
    - name: pid server sends
      metric: syscall.sendto.calls_per_sec
      target: \"{pid}\"
      min: 10
    - name: probe latency
      metric: probe.slow-ok.latency_ms
      max: 2000
      aggregate: max
  probes:
    - name: slow-ok
      command: \"sleep 0.05; exit 3\"
      exit_code: 3
      interval: 250ms
      timeout: 2s
abort:
  conditions:
    - name: web 5xx guard
      metric: http.5xx_ratio
      target: {web}
      max: 20%
      window: 1s
  stop_experiment: false
perturbations:
  - name: backend connects fail
    matrix:
      syscalls: [connect]
      errnos: [EINTR, ECONNREFUSED]
    probability: 0.5
    engine: cgroup-sock
  - name: backend connects slowed
    syscall: connect
    delay: 50ms
  - name: every server stopped at its first send
    syscall: sendto
    signal: SIGSTOP
    nth: 1
",
            workload = workload_bin().display(),
            web_load = load(self.web_port, "/backend/status/200"),
            api_load = load(self.api_port, "/status/200"),
            cgroup_load = load(self.in_cgroup.port, "/status/200"),
            pid_load = load(self.by_pid.port, "/status/200"),
        )
    }
}

#[test]
fn every_kind_of_target_matrix_abort_delay_probe_and_a_broken_stall() {
    let doctor = Doctor::run();
    for engine in ["cgroup-sock", "stop", "signal"] {
        doctor.require_engine(engine);
    }
    let site = Site::start();
    let dir = TempDir::new("exp-features");
    let file = dir.0.join("features.yaml");
    std::fs::write(&file, site.experiment()).unwrap();
    let out = dir.0.join("report");
    let started = Instant::now();
    let mut run = ChaosRun::start(&file, &out, &[]);
    let status = run.wait(Duration::from_secs(90));
    eprintln!("the run took {:.1}s", started.elapsed().as_secs_f64());
    let stderr = run.stderr();
    // An aborted perturbation does not stop the run with stop_experiment: false.
    assert!(
        status.success(),
        "chaos-user run failed ({status}): {stderr}"
    );
    let results = read_results(&out, &stderr);
    assert_eq!(results["ended"], "completed", "{results:#}");
    assert_eq!(
        verdicts(&results),
        ["degraded", "aborted", "degraded", "broken"],
        "{results:#}"
    );
    assert_eq!(
        results["summary"],
        json!({"resilient": 0, "degraded": 2, "broken": 1, "aborted": 1, "not-run": 0})
    );
    check_the_experiment(&results, &site);
    check_the_samples(&results, &site);
    check_the_matrix(&results, &site.web.name);
    check_the_delay(&results, &site.web.name);
    check_the_stop(&results);
    assert!(
        stderr.contains("DEGRADED") && stderr.contains("ABORTED") && stderr.contains("BROKEN"),
        "{stderr}"
    );

    // The SIGSTOP rule reached every target: each server is stopped, containers and host
    // processes alike. Its rule is gone with chaos-user: once continued, they all answer.
    let pids = [
        (site.web.name.clone(), site.web.pid()),
        (site.api.name.clone(), site.api.pid()),
        (site.cgroup.relative.clone(), site.in_cgroup.pid()),
        (site.pid_label(), site.by_pid.pid()),
    ];
    for (target, pid) in &pids {
        assert_eq!(
            process_state(*pid),
            'T',
            "{target} (pid {pid}) is not stopped"
        );
        // SAFETY: a process this test started (or a container's, which it owns).
        assert_eq!(unsafe { libc::kill(*pid as i32, libc::SIGCONT) }, 0);
    }
    for (port, path) in [
        (site.web_port, "/backend/status/200"),
        (site.api_port, "/status/200"),
        (site.in_cgroup.port, "/status/200"),
        (site.by_pid.port, "/status/200"),
    ] {
        assert_eq!(get(port, path), Some(200), "port {port} after SIGCONT");
    }
}

/// What results.json says of the file: the targets of every kind by their labels, the string
/// load as `sh -c`, each condition's metric key (with its target), bounds and aggregate.
fn check_the_experiment(results: &Value, site: &Site) {
    let experiment = &results["experiment"];
    let (web, cgroup, pid) = (&site.web.name, &site.cgroup.relative, site.pid_label());
    assert_eq!(
        experiment["targets"],
        json!([web, site.api.name, cgroup, pid]),
        "{experiment:#}"
    );
    let load = experiment["load"].as_array().expect("a load command");
    assert_eq!(
        (&load[0], &load[1]),
        (&json!("sh"), &json!("-c")),
        "{load:?}"
    );
    assert_eq!(load.len(), 3, "{load:?}");
    let script = load[2].as_str().unwrap();
    assert!(
        script.starts_with("w=") && script.ends_with(" &\nwait\n"),
        "{script}"
    );
    assert_eq!(experiment["window_s"], 1.0);
    assert_eq!(experiment["stall_after_s"], 2.0);
    let expected = [
        ("web 5xx", format!("http.5xx_ratio{{{web}}}"), "mean"),
        ("throughput", "http.requests_per_sec".into(), "median"),
        ("web p50 latency", format!("http.p50_ms{{{web}}}"), "p95"),
        (
            "web connect errors",
            format!("syscall.connect.errors_per_sec{{{web}}}"),
            "max",
        ),
        (
            "cgroup server answers",
            format!("http.2xx_per_sec{{{cgroup}}}"),
            "min",
        ),
        (
            "pid server sends",
            format!("syscall.sendto.calls_per_sec{{{pid}}}"),
            "mean",
        ),
        ("probe latency", "probe.slow-ok.latency_ms".into(), "max"),
        (
            "probe slow-ok succeeds ≥ 0.95",
            "probe.slow-ok.success_ratio".into(),
            "mean",
        ),
    ];
    let conditions = experiment["conditions"].as_array().unwrap();
    let got: Vec<(&str, &str, &str)> = conditions
        .iter()
        .map(|c| {
            let field = |name: &str| c[name].as_str().unwrap();
            (field("name"), field("metric"), field("aggregate"))
        })
        .collect();
    let want: Vec<(&str, &str, &str)> = expected
        .iter()
        .map(|(name, metric, aggregate)| (*name, metric.as_str(), *aggregate))
        .collect();
    assert_eq!(got, want);
    let bounds = |i: usize| &conditions[i]["bounds"];
    assert_eq!(
        bounds(1),
        &json!({"min": null, "max": null, "max_increase": null, "max_decrease": 0.5})
    );
    assert_eq!(
        bounds(3),
        &json!({"min": null, "max": null, "max_increase": 0.5, "max_decrease": null})
    );
    assert_eq!(bounds(4)["min"], 10.0);
    assert_eq!(bounds(7)["min"], 0.95);
    let abort = &experiment["abort_conditions"][0];
    assert_eq!(abort["metric"], format!("http.5xx_ratio{{{web}}}"));
    assert_eq!(abort["bounds"]["max"], 0.2);
    // Every condition's metric is recorded, and HTTP latency beside the counts.
    let metrics = results["metrics"].as_array().unwrap();
    for (_, metric, _) in &want {
        assert!(
            metrics.contains(&json!(metric)),
            "{metric} not in {metrics:?}"
        );
    }
    assert!(metrics.contains(&json!("http.p99_ms")), "{metrics:?}");
}

/// One sample a second, phase by phase (the aborted phase cut after one); injections counted
/// only in perturbation phases; every target measured on its own; the probe's outcomes and
/// latencies; HTTP latencies.
fn check_the_samples(results: &Value, site: &Site) {
    let all = results["samples"].as_array().unwrap();
    let per_phase: Vec<(u64, usize, usize, usize)> = (1..=4)
        .map(|i| {
            let n = |phase| samples(results, i, phase).len();
            (i, n("baseline"), n("perturbation"), n("recovery"))
        })
        .collect();
    assert_eq!(
        per_phase,
        [(1, 2, 2, 2), (2, 2, 1, 2), (3, 2, 2, 2), (4, 2, 2, 2)]
    );
    assert_eq!(all.len(), 23);
    for sample in all {
        let injections = sample["injections"].as_u64().unwrap();
        if sample["phase"] != "perturbation" {
            assert_eq!(injections, 0, "{sample:#}");
        }
        // The command probe answered every second, exit code 3 as expected, after its sleep.
        let values = &sample["values"];
        assert_eq!(values["probe.slow-ok.success_ratio"], 1.0, "{sample:#}");
        let latency = values["probe.slow-ok.latency_ms"].as_f64().unwrap();
        assert!((50.0..1000.0).contains(&latency), "{sample:#}");
    }
    // Each target's own counters, HTTP and syscalls, in every kind of target.
    let cgroup = &site.cgroup.relative;
    let pid = site.pid_label();
    let baseline = samples(results, 1, "baseline");
    for sample in &baseline {
        let value = |key: String| {
            sample["values"][&key]
                .as_f64()
                .unwrap_or_else(|| panic!("no {key}: {sample:#}"))
        };
        assert!(value(format!("http.2xx_per_sec{{{cgroup}}}")) > 15.0);
        // A 2xx response is sent in two writes (head, body).
        assert!(value(format!("syscall.sendto.calls_per_sec{{{pid}}}")) > 30.0);
        assert!(value(format!("http.p50_ms{{{}}}", site.web.name)) > 0.0);
        assert!(value("http.p99_ms".into()) > 0.0);
        // The four servers' responses, summed: about 45 a second each.
        assert!(value("http.requests_per_sec".into()) > 100.0, "{sample:#}");
    }
    // The aggregates are those of the samples: mean, min and max exactly.
    let first = &results["perturbations"][0];
    let of = |phase: &str, key: String| values(results, 1, phase, &key);
    let web_5xx = of("baseline", format!("http.5xx_ratio{{{}}}", site.web.name));
    assert_eq!(
        condition(first, "web 5xx")["baseline"].as_f64(),
        Some(web_5xx.iter().sum::<f64>() / web_5xx.len() as f64)
    );
    let answers = of("baseline", format!("http.2xx_per_sec{{{cgroup}}}"));
    assert_eq!(
        condition(first, "cgroup server answers")["baseline"].as_f64(),
        answers.iter().copied().reduce(f64::min)
    );
    let probe = of("perturbation", "probe.slow-ok.latency_ms".into());
    assert_eq!(
        condition(first, "probe latency")["perturbation"]["value"].as_f64(),
        probe.iter().copied().reduce(f64::max)
    );
}

/// The matrix: connect x {EINTR, ECONNREFUSED} at 50%, two perturbations. The server retries
/// EINTR: no 5xx, but its failed connects break `max_increase` on connect errors (degraded, back
/// in recovery). Refusals answer 502: the abort condition cuts the injection after a second
/// (aborted), and the run goes on.
fn check_the_matrix(results: &Value, web: &str) {
    let eintr = &results["perturbations"][0];
    let rule = "connect=EINTR,probability=0.5,engine=cgroup-sock";
    assert_eq!(eintr["rule"], rule);
    assert_eq!(eintr["name"], format!("backend connects fail: {rule}"));
    assert_eq!(eintr["engine"], "cgroup-sock");
    assert_eq!(
        eintr["reason"], "violated, then recovered: web connect errors",
        "{eintr:#}"
    );
    assert!(eintr["injections"].as_u64().unwrap() > 20, "{eintr:#}");
    let errors = condition(eintr, "web connect errors");
    assert_eq!(errors["baseline"], 0.0, "{errors:#}");
    assert!(errors["perturbation"]["value"].as_f64().unwrap() > 10.0);
    assert_eq!(errors["perturbation"]["threshold_ok"], false, "{errors:#}");
    // Two samples a side: too few to test, the threshold decides.
    assert_eq!(errors["perturbation"]["p_value"], Value::Null);
    assert_eq!(errors["perturbation"]["violated"], true);
    assert_eq!(errors["recovery"]["value"], 0.0, "{errors:#}");
    assert_eq!(errors["recovery"]["violated"], false);
    let five_xx = condition(eintr, "web 5xx");
    assert_eq!(five_xx["perturbation"]["value"], 0.0, "{five_xx:#}");

    let refused = &results["perturbations"][1];
    let rule = "connect=ECONNREFUSED,probability=0.5,engine=cgroup-sock";
    assert_eq!(refused["rule"], rule);
    assert_eq!(refused["name"], format!("backend connects fail: {rule}"));
    assert_eq!(refused["engine"], "cgroup-sock");
    let why = refused["aborted_by"].as_str().expect("aborted_by");
    assert!(
        why.starts_with(&format!(
            "abort condition `web 5xx guard` met: http.5xx_ratio{{{web}}} = "
        )) && why.ends_with(" over the last 1s"),
        "{why}"
    );
    assert_eq!(refused["reason"], why);
    let refused_5xx = values(
        results,
        2,
        "perturbation",
        &format!("http.5xx_ratio{{{web}}}"),
    );
    assert!(refused_5xx[0] > 0.2, "{refused_5xx:?}");
    let injected_for = span_seconds(&refused["injection_window"]);
    assert!(
        injected_for < 1.6,
        "injected for {injected_for}s: {refused:#}"
    );
    assert!(refused["phases"]["recovery"].is_object(), "{refused:#}");
    assert!(refused["injections"].as_u64().unwrap() > 5, "{refused:#}");
}

/// A delay alone (the stop engine, which `auto` picks for delays: each connect held 50 ms after
/// it ran): every backend connect of web held 50 ms. Web's median
/// response time goes from under a millisecond into the 2^25..2^26 ns bucket, over the 25 ms
/// bound (degraded), and comes back; nothing fails.
fn check_the_delay(results: &Value, web: &str) {
    let delayed = &results["perturbations"][2];
    assert_eq!(delayed["name"], "backend connects slowed");
    assert_eq!(delayed["rule"], "connect,delay=50ms");
    assert_eq!(delayed["engine"], "stop");
    assert_eq!(
        delayed["reason"], "violated, then recovered: web p50 latency",
        "{delayed:#}"
    );
    assert!(delayed["injections"].as_u64().unwrap() > 5, "{delayed:#}");
    let key = format!("http.p50_ms{{{web}}}");
    let before = values(results, 3, "baseline", &key);
    let during = values(results, 3, "perturbation", &key);
    let after = values(results, 3, "recovery", &key);
    eprintln!("web p50 (ms): baseline {before:?}, perturbation {during:?}, recovery {after:?}");
    assert!(before.len() == 2 && before.iter().all(|ms| *ms < 25.0));
    assert!(during.len() == 2 && during.iter().all(|ms| *ms > 33.0));
    assert!(after.last().is_some_and(|ms| *ms < 25.0));
    let latency = condition(delayed, "web p50 latency");
    assert_eq!(latency["perturbation"]["violated"], true, "{latency:#}");
    assert_eq!(latency["recovery"]["violated"], false, "{latency:#}");
    assert_eq!(
        latency["perturbation"]["value"].as_f64(),
        during.iter().copied().reduce(f64::max),
        "p95 of two samples"
    );
    let errors = values(
        results,
        3,
        "perturbation",
        &format!("syscall.connect.errors_per_sec{{{web}}}"),
    );
    assert!(errors.iter().all(|e| *e == 0.0), "{errors:?}");
}

/// SIGSTOP at each target's first send: every server stops for good. Throughput and both host
/// servers' conditions are still violated at the end of recovery, and no response came for
/// `stall_after` seconds up to the end: broken and stalled. One injection per target.
fn check_the_stop(results: &Value) {
    let stopped = &results["perturbations"][3];
    assert_eq!(stopped["rule"], "sendto=SIGSTOP,nth=1");
    assert_eq!(stopped["engine"], "signal");
    assert_eq!(
        stopped["reason"],
        "not recovered: throughput; cgroup server answers; pid server sends; \
         no progress at the end of the recovery phase",
        "{stopped:#}"
    );
    assert_eq!(stopped["stalled"], true);
    assert_eq!(stopped["injections"], 4, "{stopped:#}");
    assert_eq!(
        (&stopped["crashed"], &stopped["restarted"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(stopped["events"], json!([]));
    for name in ["throughput", "cgroup server answers", "pid server sends"] {
        let check = &condition(stopped, name)["recovery"];
        assert_eq!(check["value"], 0.0, "{name}: {check:#}");
        assert_eq!(check["violated"], true, "{name}: {check:#}");
    }
    let responses = values(results, 4, "recovery", "http.requests_per_sec");
    assert_eq!(responses, [0.0, 0.0]);
    for earlier in &results["perturbations"].as_array().unwrap()[..3] {
        assert_eq!(earlier["stalled"], false, "{earlier:#}");
    }
}

/// Target flags given to `run` replace the file's target (here a container that does not
/// exist); SIGTERM in the perturbation phase removes the rule at once, skips the rest, and still
/// writes the report; the exit status says the run stopped early.
#[test]
fn sigterm_ends_a_run_whose_target_comes_from_the_command_line() {
    let backend = HostServer::start(None, None);
    let port = tests::free_port();
    let web = Container::run(
        "feat-term-web",
        &["--network", "host"],
        &[
            "serve",
            "--port",
            &port.to_string(),
            "--backend",
            &backend.port.to_string(),
        ],
    );
    let dir = TempDir::new("exp-sigterm");
    let file = dir.0.join("sigterm.yaml");
    std::fs::write(
        &file,
        format!(
            "name: e2e-sigterm
target:
  container: syschaos-no-such-container
load:
  command: [\"{workload}\", \"load\", \"--port\", \"{port}\", \"--get\", \"/backend/status/200\", \"--interval-ms\", \"20\", \"--requests\", \"100000\"]
  warmup: 1s
phases:
  baseline: 1s
  perturbation: 60s
  recovery: 1s
steady_state:
  conditions:
    - metric: http.5xx_ratio
      max: 1%
perturbations:
  - rule: connect=ECONNREFUSED,engine=cgroup-sock
  - rule: connect=EINTR,probability=0.5,engine=cgroup-sock
",
            workload = workload_bin().display()
        ),
    )
    .unwrap();
    let out = dir.0.join("report");
    let started = Instant::now();
    let mut run = ChaosRun::start(&file, &out, &["--container", &web.name]);
    run.wait_for_stderr(": perturbation 60s", Duration::from_secs(30));
    tests::wait_for(
        "the backend refused through web",
        Duration::from_secs(10),
        || (get(port, "/backend/status/200") == Some(502)).then_some(()),
    );
    // SAFETY: signals our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(run.pid(), libc::SIGTERM) }, 0);
    let status = run.wait(Duration::from_secs(15));
    // Right after: nothing injected any more.
    assert_eq!(get(port, "/backend/status/200"), Some(200));
    eprintln!("the run took {:.1}s", started.elapsed().as_secs_f64());
    let stderr = run.stderr();
    assert!(
        !status.success(),
        "an interrupted run exits non-zero: {stderr}"
    );
    assert!(
        stderr.contains("experiment stopped early (interrupted by SIGTERM)"),
        "{stderr}"
    );
    let results = read_results(&out, &stderr);
    assert_eq!(results["experiment"]["targets"], json!([web.name]));
    assert_eq!(results["ended"], "interrupted by SIGTERM");
    assert_eq!(verdicts(&results), ["aborted", "not-run"], "{results:#}");
    assert_eq!(results["summary"]["aborted"], 1);
    assert_eq!(results["summary"]["not-run"], 1);
    let refused = &results["perturbations"][0];
    assert_eq!(refused["aborted_by"], "interrupted by SIGTERM");
    assert_eq!(refused["reason"], "interrupted by SIGTERM");
    assert!(refused["phases"]["recovery"].is_null(), "{refused:#}");
    assert!(
        span_seconds(&refused["injection_window"]) < 30.0,
        "{refused:#}"
    );
    let skipped = &results["perturbations"][1];
    assert_eq!(
        skipped["rule"],
        "connect=EINTR,probability=0.5,engine=cgroup-sock"
    );
    assert_eq!(skipped["injections"], 0);
    assert!(out.join("report.html").exists() && out.join("samples.csv").exists());
    // The 502 seen above was a connect the rule refused: at least one injection. SIGTERM came
    // before the phase's first one-second sample, which is where the count is read from.
    assert!(
        refused["injections"].as_u64().unwrap() > 0,
        "the injections made before SIGTERM are not counted: {refused:#}"
    );
}
