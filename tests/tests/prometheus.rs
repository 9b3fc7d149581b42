//! A real Prometheus server scrapes chaos-user; the counts read back through its query API.
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use tests::{TempDir, attach::Attach, docker::Container, free_port, wait_for};

struct Prometheus {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Prometheus {
    fn scraping(metrics_port: u16) -> Self {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: syschaos\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (Debian package `prometheus`)");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// The value of the single series an instant query returns, if it returns one.
    fn query(&self, query: &str) -> Option<f64> {
        let body = ureq::get(&format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query("query", query)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = json["data"]["result"].as_array()?;
        let [series] = result.as_slice() else {
            return None;
        };
        series["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_reads_the_exact_counts() {
    let web = Container::start("prom", &["--getppid", "1500", "--open-missing", "25"]);
    let attach = Attach::start(&["--container", &web.name]);
    web.trigger_round(1);
    let prometheus = Prometheus::scraping(attach.metrics_port);

    let calls = format!(
        "syschaos_syscalls_total{{target=\"{}\",syscall=\"getppid\"}}",
        web.name
    );
    let enoent = format!(
        "syschaos_syscall_errors_total{{target=\"{}\",syscall=\"openat\",errno=\"ENOENT\"}}",
        web.name
    );
    let p99 = format!(
        "histogram_quantile(0.99, syschaos_syscall_duration_seconds_bucket{{target=\"{}\",syscall=\"getppid\"}})",
        web.name
    );
    // Wait for the first scrape to land, then read everything back.
    let value = wait_for(
        "Prometheus to scrape chaos-user",
        Duration::from_secs(60),
        || prometheus.query(&calls),
    );
    assert_eq!(value, 1500.0);
    assert_eq!(prometheus.query(&enoent), Some(25.0));
    let p99 = prometheus.query(&p99).expect("a p99 latency");
    assert!(p99 > 0.0 && p99 < 0.1, "getppid p99 of {p99} s");
}
