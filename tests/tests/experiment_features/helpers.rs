//! What the tests of experiment_features.rs share: HTTP servers on the host, each in a cgroup of
//! its own when asked, `chaos-user run` under a deadline, plain GETs, results.json readers.
use std::{
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tests::{cgroup_v2_root, chaos_user_bin, free_port, wait_for, workload_bin};

/// A cgroup v2 directory made for the test, removed when dropped (once its processes are gone).
pub struct Cgroup {
    pub path: PathBuf,
    /// Its path relative to the v2 root, as `target: {cgroup: ...}` takes it.
    pub relative: String,
}

impl Cgroup {
    pub fn create(name: &str) -> Self {
        let relative = format!("syschaos-test-{name}-{}", std::process::id());
        let path = cgroup_v2_root().join(&relative);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        Self { path, relative }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // rmdir fails while tasks remain; killed ones need a moment to be reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}

/// `chaos-workload serve` on the host, on 127.0.0.1:`port`; killed when dropped (stopped or not).
pub struct HostServer {
    child: Child,
    pub port: u16,
}

impl HostServer {
    /// Starts the server, inside `cgroup` when given, answering `/backend/...` through
    /// 127.0.0.1:`backend` when given; returns once it answers.
    ///
    /// The process moves itself into the cgroup before exec: a socket belongs to the cgroup of
    /// the process that created it, and the HTTP counters look at the sockets' cgroup, so a
    /// server moved after it started listening would be counted where it started.
    pub fn start(cgroup: Option<&Cgroup>, backend: Option<u16>) -> Self {
        let port = free_port();
        let mut command = Command::new(workload_bin());
        command.args(["serve", "--port", &port.to_string()]);
        if let Some(backend) = backend {
            command.args(["--backend", &backend.to_string()]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(cgroup) = cgroup {
            let procs = CString::new(cgroup.path.join("cgroup.procs").as_os_str().as_bytes())
                .expect("no NUL in a cgroup path");
            // SAFETY: between fork and exec only async-signal-safe calls (open, write, close)
            // run; the path was allocated before the fork.
            unsafe {
                command.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    // "0" moves the writing process itself.
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("start chaos-workload serve");
        let server = Self { child, port };
        wait_for(
            &format!("the host server on port {port}"),
            Duration::from_secs(10),
            || (get(port, "/status/200") == Some(200)).then_some(()),
        );
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET 127.0.0.1:`port``path` on a new connection: the status code, or None (no answer within
/// a few seconds, or not HTTP).
pub fn get(port: u16, path: &str) -> Option<u16> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// The state letter of a process in /proc/PID/stat (`T`: stopped by a signal).
pub fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // `pid (comm) S ...`: comm may hold spaces and parentheses, the state follows the last ')'.
    let (_, after) = stat.rsplit_once(')').expect("a stat line");
    after.trim_start().chars().next().expect("a state")
}

/// A running `chaos-user run`, its stderr collected (and echoed); killed if still running when
/// dropped, so a failing test leaves nothing injecting.
pub struct ChaosRun {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl ChaosRun {
    /// `chaos-user run FILE --out OUT EXTRA...`.
    pub fn start(file: &Path, out: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(chaos_user_bin())
            .arg("run")
            .arg(file)
            .arg("--out")
            .arg(out)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chaos-user run");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[chaos-user run] {line}");
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Self { child, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Waits until stderr has a line containing `text`; fails if chaos-user exits first.
    pub fn wait_for_stderr(&mut self, text: &str, timeout: Duration) {
        wait_for(&format!("`{text}` from chaos-user"), timeout, || {
            if self.stderr().contains(text) {
                return Some(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chaos-user exited ({status}) before `{text}`");
            }
            None
        });
    }

    /// Its exit status, within `timeout` (after which it is killed, by the drop).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let status = wait_for("chaos-user run to exit", timeout, || {
            self.child.try_wait().expect("wait for chaos-user")
        });
        // The reader thread may still hold the last lines: let it finish them.
        std::thread::sleep(Duration::from_millis(100));
        status
    }
}

impl Drop for ChaosRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn read_results(out: &Path, stderr: &str) -> Value {
    let text = std::fs::read_to_string(out.join("results.json"))
        .unwrap_or_else(|e| panic!("no results.json ({e}): {stderr}"));
    serde_json::from_str(&text).expect("results.json is JSON")
}

pub fn verdicts(results: &Value) -> Vec<&str> {
    results["perturbations"]
        .as_array()
        .expect("perturbations")
        .iter()
        .map(|p| p["verdict"].as_str().expect("a verdict"))
        .collect()
}

/// The samples of perturbation `index` (from 1) in `phase`, in time order.
pub fn samples<'a>(results: &'a Value, index: u64, phase: &str) -> Vec<&'a Value> {
    results["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s["perturbation"] == index && s["phase"] == phase)
        .collect()
}

/// The values of metric `key` in those samples (samples without a value are left out).
pub fn values(results: &Value, index: u64, phase: &str, key: &str) -> Vec<f64> {
    samples(results, index, phase)
        .iter()
        .filter_map(|s| s["values"][key].as_f64())
        .collect()
}

/// The condition named `name` in a perturbation's results.
pub fn condition<'a>(perturbation: &'a Value, name: &str) -> &'a Value {
    perturbation["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no condition `{name}`: {perturbation:#}"))
}

/// The length of a `{start_s, end_s}` span.
pub fn span_seconds(span: &Value) -> f64 {
    span["end_s"].as_f64().expect("end_s") - span["start_s"].as_f64().expect("start_s")
}
