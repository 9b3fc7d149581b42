//! Probes chaos-user itself sends during an experiment, each on its own interval: an HTTP GET
//! that must answer an expected status within a timeout, or a command that must exit with an
//! expected code. The sampler collects their outcomes once per second.
use std::{
    collections::BTreeMap,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::Command,
    task::JoinHandle,
};

/// `http://host[:port][/path]`: plain HTTP/1.1, no TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.starts_with("https://") {
            return Err(format!(
                "`{text}`: probes speak plain HTTP only (no TLS): give an http:// URL"
            ));
        }
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{text}` is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| format!("`{text}`: port `{port}` is not a number"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("`{text}` is not a valid http:// URL"));
        }
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeKind {
    Http { url: HttpUrl, status: u16 },
    Command { argv: Vec<String>, exit_code: i32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    pub name: String,
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// The steady state needs at least this share of probes to succeed.
    pub min_success_ratio: f64,
}

/// Probe outcomes over one sampling interval.
#[derive(Debug, Clone, Default)]
pub struct ProbeTally {
    pub ok: u64,
    pub failed: u64,
    pub latency_ms_sum: f64,
    pub last_error: Option<String>,
}

impl ProbeTally {
    pub fn success_ratio(&self) -> Option<f64> {
        let total = self.ok + self.failed;
        (total > 0).then(|| self.ok as f64 / total as f64)
    }

    /// Mean latency of the probes that answered.
    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.latency_ms_sum / self.ok as f64)
    }
}

type Tallies = Arc<Mutex<BTreeMap<String, ProbeTally>>>;

/// The running probes; dropping them stops them.
pub struct Probes {
    tallies: Tallies,
    tasks: Vec<JoinHandle<()>>,
}

impl Probes {
    pub fn start(specs: &[ProbeSpec]) -> Self {
        let tallies: Tallies = Arc::default();
        let tasks = specs
            .iter()
            .cloned()
            .map(|spec| {
                let tallies = tallies.clone();
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(spec.interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticker.tick().await;
                        let started = Instant::now();
                        let outcome = probe_once(&spec).await;
                        let ms = started.elapsed().as_secs_f64() * 1e3;
                        let mut tallies = crate::lock(&tallies);
                        let tally = tallies.entry(spec.name.clone()).or_default();
                        match outcome {
                            Ok(()) => {
                                tally.ok += 1;
                                tally.latency_ms_sum += ms;
                            }
                            Err(why) => {
                                tally.failed += 1;
                                tally.last_error = Some(why);
                            }
                        }
                    }
                })
            })
            .collect();
        Self { tallies, tasks }
    }

    /// The outcomes since the last call.
    pub fn take(&self) -> BTreeMap<String, ProbeTally> {
        std::mem::take(&mut *crate::lock(&self.tallies))
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One probe: Ok, or why it failed.
pub async fn probe_once(spec: &ProbeSpec) -> Result<(), String> {
    let work = async {
        match &spec.kind {
            ProbeKind::Http { url, status } => {
                let got = http_get(url).await?;
                match got == *status {
                    true => Ok(()),
                    false => Err(format!("answered {got}, expected {status}")),
                }
            }
            ProbeKind::Command { argv, exit_code } => {
                let status = Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
                match status.code() {
                    Some(code) if code == *exit_code => Ok(()),
                    Some(code) => Err(format!("exited with {code}, expected {exit_code}")),
                    None => Err(format!("killed by a signal ({status})")),
                }
            }
        }
    };
    tokio::time::timeout(spec.timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", spec.timeout)))
}

/// GET the URL with `Connection: close`; the status code of the answer.
async fn http_get(url: &HttpUrl) -> Result<u16, String> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", url.host, url.port))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: syschaos-probe\r\nConnection: close\r\n\r\n",
        url.path, url.host, url.port
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    match (words.next(), words.next().and_then(|c| c.parse().ok())) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => Ok(code),
        _ => Err("no HTTP status line in the answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls() {
        let url: HttpUrl = "http://127.0.0.1:8080/status/200".parse().unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 8080, "/status/200")
        );
        let url: HttpUrl = "http://localhost".parse().unwrap();
        assert_eq!((url.port, url.path.as_str()), (80, "/"));
        assert!(
            "https://x/"
                .parse::<HttpUrl>()
                .unwrap_err()
                .contains("no TLS")
        );
        assert!("ftp://x/".parse::<HttpUrl>().is_err());
        assert!("http://:80/".parse::<HttpUrl>().is_err());
        assert!("http://x:port/".parse::<HttpUrl>().is_err());
    }

    #[tokio::test]
    async fn probes_a_server_and_a_command() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let spec = |kind| ProbeSpec {
            name: "p".into(),
            kind,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            min_success_ratio: 1.0,
        };
        let url: HttpUrl = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let expect = |status| ProbeKind::Http {
            url: url.clone(),
            status,
        };
        assert_eq!(probe_once(&spec(expect(503))).await, Ok(()));
        assert!(
            probe_once(&spec(expect(200)))
                .await
                .unwrap_err()
                .contains("answered 503")
        );
        let command = |argv: &[&str], exit_code| ProbeKind::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            exit_code,
        };
        assert_eq!(probe_once(&spec(command(&["true"], 0))).await, Ok(()));
        assert!(
            probe_once(&spec(command(&["false"], 0)))
                .await
                .unwrap_err()
                .contains("exited with 1")
        );
        assert_eq!(probe_once(&spec(command(&["false"], 1))).await, Ok(()));
    }
}
