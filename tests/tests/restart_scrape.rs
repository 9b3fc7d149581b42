//! /metrics scraped back to back while the target container restarts again and again. The Docker
//! follower (a restart moves the target to a new cgroup) and every scrape take the session's
//! locks; taken in opposite orders they deadlock chaos-user: /metrics stops answering and SIGINT
//! is ignored. These tests catch that: every scrape must answer within 5 s, counting (and
//! injecting) must go on in the last cgroup, and SIGINT must still end chaos-user.
use std::{
    os::unix::fs::MetadataExt as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tests::{
    CallOutcome,
    attach::Attach,
    cgroup_v2_root,
    docker::{Container, docker},
    metrics::Scrape,
};

/// At least this many restarts; more, up to `MAX_RESTARTS`, while within `RESTART_BUDGET`: a
/// restart hits the deadlock window only now and then (it took 2 to 29 restarts here).
const MIN_RESTARTS: usize = 30;
const MAX_RESTARTS: usize = 100;
const RESTART_BUDGET: Duration = Duration::from_secs(30);
const SCRAPERS: usize = 4;
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
const READY: &str = r#"{"ready":true}"#;
/// Calls of other syscalls (and one errno) made once before the restarts: more counters in the
/// maps make each scrape's read of them, the window in which a restart deadlocks, longer.
const MORE_SYSCALLS: [&str; 8] = [
    "--open-missing",
    "5",
    "--read",
    "5",
    "--write",
    "5",
    "--fsync",
    "5",
];

/// One `/metrics` request with a deadline: the harness's own scrape has none and would hang on a
/// deadlocked chaos-user.
fn scrape(agent: &ureq::Agent, port: u16) -> Result<Scrape, String> {
    let start = Instant::now();
    let text = agent
        .get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .and_then(|mut response| response.body_mut().read_to_string())
        .map_err(|e| format!("{e} (after {:?})", start.elapsed()))?;
    Ok(Scrape { text })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(SCRAPE_TIMEOUT))
        .build()
        .into()
}

/// What one scraper saw.
#[derive(Debug, Default)]
struct ScraperReport {
    scrapes: u64,
    max_latency: Duration,
    /// The first failed scrape, and how many restarts had completed when it was sent.
    failure: Option<String>,
}

/// Threads scraping back to back until told to stop or one scrape fails; stopped when dropped.
struct Scrapers {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    threads: Vec<JoinHandle<ScraperReport>>,
}

impl Scrapers {
    fn start(port: u16, restarts_done: &Arc<AtomicUsize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let threads = (0..SCRAPERS)
            .map(|_| {
                let (stop, failed, restarts_done) =
                    (stop.clone(), failed.clone(), restarts_done.clone());
                std::thread::spawn(move || {
                    let agent = agent();
                    let mut report = ScraperReport::default();
                    while !stop.load(Ordering::SeqCst) {
                        let restarts = restarts_done.load(Ordering::SeqCst);
                        let start = Instant::now();
                        let result = scrape(&agent, port);
                        report.max_latency = report.max_latency.max(start.elapsed());
                        match result {
                            Ok(_) => report.scrapes += 1,
                            Err(e) => {
                                report.failure = Some(format!(
                                    "scrape {} (sent after {restarts} restarts): {e}",
                                    report.scrapes + 1
                                ));
                                failed.store(true, Ordering::SeqCst);
                                break;
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        Self {
            stop,
            failed,
            threads,
        }
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Stops the scrapers and waits for them (each is done within one scrape timeout).
    fn finish(mut self) -> Vec<ScraperReport> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .drain(..)
            .map(|thread| thread.join().expect("a scraper thread"))
            .collect()
    }
}

impl Drop for Scrapers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Kills chaos-user unless it exited: a deadlocked one ignores the SIGINT that [`Attach`]'s drop
/// sends, and would hold the test for its 10 s grace period.
struct KillOnDrop {
    attach: Attach,
    exited: bool,
}

impl KillOnDrop {
    fn new(attach: Attach) -> Self {
        Self {
            attach,
            exited: false,
        }
    }

    /// SIGINT must end chaos-user, cleanly and soon.
    fn interrupt(&mut self) {
        self.attach.signal(libc::SIGINT);
        let status = self.attach.wait_exit(Duration::from_secs(5));
        self.exited = true;
        assert!(status.success(), "chaos-user after SIGINT: {status}");
        let stderr = self.attach.stderr();
        assert!(stderr.contains("detached (SIGINT)"), "{stderr}");
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.exited {
            self.attach.signal(libc::SIGKILL);
        }
    }
}

/// The id chaos-user follows the container under: the inode of its cgroup directory.
fn cgroup_id(container: &Container) -> u64 {
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", container.pid()))
        .expect("read the container's cgroup");
    let path = cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    std::fs::metadata(cgroup_v2_root().join(path.trim_start_matches('/')))
        .expect("stat the container's cgroup")
        .ino()
}

/// Restarts `container` with no grace period, back to back (see `MIN_RESTARTS`), while `SCRAPERS`
/// threads scrape; stops early once a scrape failed. Then waits until the workload is ready and
/// chaos-user follows its last cgroup, and checks that every scrape answered in time.
fn restart_under_scrapes(container: &Container, chaos: &KillOnDrop) {
    let started = Instant::now();
    let starts_before = container.logs().matches(READY).count();
    let restarts_done = Arc::new(AtomicUsize::new(0));
    let scrapers = Scrapers::start(chaos.attach.metrics_port, &restarts_done);
    let mut restarts = 0;
    while restarts < MAX_RESTARTS
        && (restarts < MIN_RESTARTS || started.elapsed() < RESTART_BUDGET)
        && !scrapers.failed()
    {
        let output = docker(&["restart", "-t", "0", &container.name]);
        assert!(
            output.status.success(),
            "docker restart: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        restarts += 1;
        restarts_done.store(restarts, Ordering::SeqCst);
    }
    // Scrapes go on while the workload comes up and chaos-user moves the target to its last
    // cgroup. No panic before the scrapers' reports: a hang here is the deadlock.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut followed = false;
    while !followed && !scrapers.failed() && Instant::now() < deadline {
        if container.logs().matches(READY).count() >= starts_before + restarts {
            let following = format!("in cgroup {}: following it", cgroup_id(container));
            followed = chaos.attach.stderr().contains(&following);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let reports = scrapers.finish();
    let scrapes: u64 = reports.iter().map(|report| report.scrapes).sum();
    let max_latency = reports.iter().map(|report| report.max_latency).max();
    eprintln!(
        "{restarts} restarts, {scrapes} scrapes by {SCRAPERS} threads in {:?}, max latency {max_latency:?}",
        started.elapsed()
    );
    let failures: Vec<&String> = reports
        .iter()
        .filter_map(|report| report.failure.as_ref())
        .collect();
    assert!(
        failures.is_empty(),
        "/metrics did not answer within {SCRAPE_TIMEOUT:?} ({restarts} restarts done when noticed): {failures:#?}"
    );
    assert!(restarts >= MIN_RESTARTS, "{restarts}");
    assert!(
        followed,
        "chaos-user did not follow the last restart within 30 s: {}",
        chaos.attach.stderr()
    );
}

#[test]
fn attach_survives_restarts_under_scrapes() {
    const GETPPID: u64 = 1000;
    let calls = GETPPID.to_string();
    let web = Container::start(
        "restart-scrape",
        &[&["--getppid", &calls], &MORE_SYSCALLS[..]].concat(),
    );
    let mut chaos = KillOnDrop::new(Attach::start(&["--container", &web.name]));
    let port = chaos.attach.metrics_port;
    let agent = agent();
    let getppid = |agent: &ureq::Agent| {
        let scrape = scrape(agent, port).expect("scrape /metrics");
        let labels = [("target", web.name.as_str()), ("syscall", "getppid")];
        scrape.value("syschaos_syscalls_total", &labels)
    };
    web.trigger_round(1);
    assert_eq!(getppid(&agent), Some(GETPPID as f64));

    restart_under_scrapes(&web, &chaos);

    // The first round stays counted across the restarts (a restart's own processes, counted while
    // a cgroup was followed, may add to it); the round after the last restart counts exactly.
    let before = getppid(&agent).expect("getppid counted before the restarts");
    assert!(before >= GETPPID as f64, "{before}");
    web.trigger_round(1);
    assert_eq!(getppid(&agent), Some(before + GETPPID as f64));

    chaos.interrupt();
}

#[test]
fn inject_survives_restarts_under_scrapes() {
    const CONNECT: u64 = 20;
    let calls = CONNECT.to_string();
    let web = Container::start(
        "restart-inject",
        &[&["--connect", &calls], &MORE_SYSCALLS[..]].concat(),
    );
    // The engine is forced: the test must not depend on what `auto` picks on this host.
    let mut chaos = KillOnDrop::new(Attach::inject(&[
        "--container",
        &web.name,
        "--rule",
        "connect=ECONNREFUSED,engine=cgroup-sock",
    ]));
    let port = chaos.attach.metrics_port;
    let agent = agent();
    // (injected, monitored connect failures with ECONNREFUSED)
    let counts = |agent: &ureq::Agent| {
        let scrape = scrape(agent, port).expect("scrape /metrics");
        let injected = [
            ("target", web.name.as_str()),
            ("syscall", "connect"),
            ("errno", "ECONNREFUSED"),
            ("engine", "cgroup-sock"),
        ];
        let refused = [
            ("target", web.name.as_str()),
            ("syscall", "connect"),
            ("errno", "ECONNREFUSED"),
        ];
        (
            scrape.value("syschaos_injections_total", &injected),
            scrape.value("syschaos_syscall_errors_total", &refused),
        )
    };
    let all_refused = CallOutcome::failing(libc::ECONNREFUSED, (1..=CONNECT).collect(), CONNECT);
    assert_eq!(web.trigger_round(1).outcome("connect"), all_refused);
    let n = CONNECT as f64;
    assert_eq!(counts(&agent), (Some(n), Some(n)));

    restart_under_scrapes(&web, &chaos);

    // The rule followed the container into its last cgroup, with its counter.
    let (injected, refused) = counts(&agent);
    let (injected, refused) = (injected.expect("injections"), refused.expect("errors"));
    assert!(injected >= n && refused >= n, "{injected} {refused}");
    assert_eq!(web.trigger_round(1).outcome("connect"), all_refused);
    assert_eq!(counts(&agent), (Some(injected + n), Some(refused + n)));

    chaos.interrupt();
}
