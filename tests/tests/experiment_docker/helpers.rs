//! What the tests of experiment_docker.rs share: the service under test, running an experiment
//! and reading its verdicts, checking the HTML report in Chromium.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use serde_json::Value;
use tests::{TempDir, chaos_user_bin, docker::Container, free_port, workload_bin};

/// The HTTP server under test (`/backend/...` proxied to a backend container, `/file/...` from
/// a docroot mounted at /srv) and its backend.
pub struct Service {
    pub server: Container,
    _backend: Container,
    pub port: u16,
    _docroot: TempDir,
}

impl Service {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, &[])
    }

    /// With more `docker run` options for the server (e.g. a restart policy).
    pub fn start_with(name: &str, server_options: &[&str]) -> Self {
        let docroot = TempDir::new(&format!("{name}-docroot"));
        std::fs::write(docroot.0.join("index.html"), "hello\n").unwrap();
        let backend_port = free_port().to_string();
        let backend = Container::run(
            &format!("{name}-backend"),
            &["--network", "host"],
            &["serve", "--port", &backend_port],
        );
        let port = free_port();
        let mount = format!("{}:/srv:ro", docroot.0.display());
        let mut options = vec!["--network", "host", "-v", &mount];
        options.extend_from_slice(server_options);
        let server = Container::run(
            &format!("{name}-server"),
            &options,
            &[
                "serve",
                "--port",
                &port.to_string(),
                "--docroot",
                "/srv",
                "--backend",
                &backend_port,
            ],
        );
        Self {
            server,
            _backend: backend,
            port,
            _docroot: docroot,
        }
    }

    /// The `load:` section: GETs of these paths in turn, about 40 per second, bounded.
    pub fn load_yaml(&self, paths: &[&str]) -> String {
        let mut argv = vec![
            workload_bin().display().to_string(),
            "load".into(),
            "--port".into(),
            self.port.to_string(),
            "--interval-ms".into(),
            "20".into(),
            "--requests".into(),
            "20000".into(),
        ];
        for path in paths {
            argv.push("--get".into());
            argv.push((*path).into());
        }
        let quoted: Vec<String> = argv.iter().map(|a| format!("\"{a}\"")).collect();
        format!("load:\n  command: [{}]\n  warmup: 1s\n", quoted.join(", "))
    }

    /// GET a path of the server from the host: the status code.
    pub fn get(&self, path: &str) -> u16 {
        let output = Command::new(workload_bin())
            .args(["load", "--port", &self.port.to_string(), "--get", path])
            .args(["--requests", "1", "--interval-ms", "0"])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&output.stdout);
        let report: Value = serde_json::from_str(line.trim()).expect("a load report");
        let codes = report["codes"].as_object().expect("codes");
        codes.keys().next().expect("an answer").parse().unwrap()
    }
}

/// Runs `chaos-user run FILE --out DIR` to completion: (success, stderr, results.json).
pub fn run_experiment(yaml: &str, dir: &Path) -> (bool, String, Value) {
    let file = dir.join("experiment.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = dir.join("report");
    let output = Command::new(chaos_user_bin())
        .args([
            "run",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run chaos-user");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("[chaos-user run]\n{stderr}");
    let results = std::fs::read_to_string(out.join("results.json"))
        .unwrap_or_else(|e| panic!("no results.json ({e}): {stderr}"));
    (
        output.status.success(),
        stderr,
        serde_json::from_str(&results).unwrap(),
    )
}

pub fn verdicts(results: &Value) -> Vec<String> {
    results["perturbations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["verdict"].as_str().unwrap().to_owned())
        .collect()
}

/// Opens the report in headless Chromium: it renders, has its charts, logs no console message.
pub fn check_in_chromium(html: &Path, min_charts: usize) {
    let text = std::fs::read_to_string(html).unwrap();
    assert!(!text.contains("<script"), "the report has a script");
    assert!(
        !text.contains(" src=") && !text.contains("href=\"http") && !text.contains("url("),
        "the report loads something"
    );
    let profile = TempDir::new("chromium-profile");
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
                &format!("--user-data-dir={}", profile.0.display()),
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium (apt-get install chromium; ./run setup does)")
    };
    let dom = chromium(&["--dump-dom"]);
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let rendered = String::from_utf8_lossy(&dom.stdout);
    let log = String::from_utf8_lossy(&dom.stderr);
    for line in log.lines() {
        assert!(
            !line.contains(":CONSOLE") && !line.contains("Uncaught"),
            "console message while rendering the report: {line}"
        );
    }
    assert!(
        rendered.contains("<h1>"),
        "nothing rendered: {rendered:.300}"
    );
    let charts = rendered.matches("<svg").count();
    assert!(
        charts >= min_charts,
        "{charts} charts, expected at least {min_charts}"
    );
    assert!(
        rendered.contains("<polyline") || rendered.contains("<path"),
        "charts without lines"
    );
    let screenshot = profile.0.join("report.png");
    let shot = chromium(&[
        &format!("--screenshot={}", screenshot.display()),
        "--window-size=1200,2400",
        "--hide-scrollbars",
    ]);
    assert!(shot.status.success());
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "screenshot of {size} bytes: blank page?");
    if let Ok(keep) = std::env::var("SYSCHAOS_KEEP_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).unwrap();
    }
}

/// Throughput drifts on a shared 2-core machine: a wide band, the 5xx ratio does the judging.
pub const STEADY: &str = "phases:
  baseline: 5s
  perturbation: 5s
  recovery: 5s
steady_state:
  window: 3s
  conditions:
    - metric: http.5xx_ratio
      max: 1%
    - metric: http.requests_per_sec
      within: 60%
";

/// The target's connect calls that failed in each sample of perturbation `index`, as the monitor
/// counted them (`syscall.connect.errors_per_sec` times the sample's interval), independently of
/// the rules: (phase, t, failed calls), in time order.
fn failed_connects(results: &Value, index: u64) -> Vec<(String, f64, f64)> {
    let samples = results["samples"].as_array().expect("samples");
    samples
        .windows(2)
        .filter(|pair| pair[1]["perturbation"] == index)
        .map(|pair| {
            let (before, sample) = (&pair[0], &pair[1]);
            let unix_ms = |s: &Value| s["unix_ms"].as_f64().expect("unix_ms");
            let seconds = (unix_ms(sample) - unix_ms(before)) / 1000.0;
            let rate = sample["values"]["syscall.connect.errors_per_sec"]
                .as_f64()
                .unwrap_or_else(|| panic!("no connect errors recorded: {sample:#}"));
            let phase = sample["phase"].as_str().expect("a phase").to_owned();
            (phase, sample["t"].as_f64().expect("t"), rate * seconds)
        })
        .collect()
}

/// Perturbation `index` (a rule failing every backend connect of the server) failed connects
/// only while its rule was in place, as the monitor saw it: none in its baseline or recovery,
/// some in every second of its perturbation phase, and in all exactly as many as the engine
/// says it injected.
pub fn injected_only_in_the_perturbation_phase(results: &Value, index: u64) {
    let failed = failed_connects(results, index);
    eprintln!("failed connects per sample of perturbation {index}: {failed:?}");
    let of = |phase: &str| -> Vec<(f64, f64)> {
        failed
            .iter()
            .filter(|(p, ..)| p == phase)
            .map(|&(_, t, n)| (t, n))
            .collect()
    };
    let (baseline, during, recovery) = (of("baseline"), of("perturbation"), of("recovery"));
    assert!(
        !baseline.is_empty() && !during.is_empty() && recovery.len() >= 2,
        "{failed:?}"
    );
    assert!(
        baseline.iter().all(|&(_, n)| n < 0.5),
        "connects failed before the rule was installed: {baseline:?}"
    );
    assert!(
        during.iter().all(|&(_, n)| n >= 1.0),
        "a second of the perturbation phase without a failed connect: {during:?}"
    );
    assert!(
        recovery[1..].iter().all(|&(_, n)| n < 0.5),
        "connects failed in the recovery phase: {recovery:?}"
    );
    // The first recovery sample also covers the moment between the phase's last sample and the
    // rule's removal (the end of the injection window): at most the failures the phase's rate
    // gives that moment, plus the load's and the probe's request in flight.
    let perturbation = &results["perturbations"][index as usize - 1];
    let removed_at = perturbation["injection_window"]["end_s"]
        .as_f64()
        .expect("an injection window");
    let (last_t, _) = during[during.len() - 1];
    let per_second = during.iter().map(|&(_, n)| n).fold(0.0, f64::max);
    let bound = per_second * (removed_at - last_t).max(0.0) + 2.0;
    assert!(
        recovery[0].1 <= bound,
        "{} connects failed in the first recovery sample: more than fit in the {:.3} s \
         before the rule's removal (at most {bound:.1}): {recovery:?}",
        recovery[0].1,
        removed_at - last_t
    );
    let total: f64 = failed.iter().map(|&(.., n)| n).sum();
    assert_eq!(
        total.round() as u64,
        perturbation["injections"].as_u64().expect("injections"),
        "the monitor's failed connects ({total:.2}) against the engine's injections"
    );
}
