//! What the tests share: starting chaos-workload in a cgroup and reading its report, running
//! chaos-user and collecting its output, waiting for children.
use std::{
    ffi::CString,
    io::{self, BufRead as _, BufReader, Read as _},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::Path,
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use crate::{json, lock};

const CHAOS_USER: &str = "/bin/chaos-user";
pub const WORKLOAD: &str = "/bin/chaos-workload";

pub fn workload(args: &[&str]) -> Command {
    let mut command = Command::new(WORKLOAD);
    command.args(args);
    command
}

/// Spawns `command` already inside `cgroup`, so that every call it makes is counted.
pub fn spawn_in_cgroup(mut command: Command, cgroup: &Path) -> io::Result<Child> {
    let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())?;
    let move_self = move || {
        // SAFETY: only open/write/close between fork and exec (async-signal-safe).
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // "0" moves the writing process itself.
            let written = libc::write(fd, c"0".as_ptr().cast(), 1);
            let error = io::Error::last_os_error();
            libc::close(fd);
            if written == 1 { Ok(()) } else { Err(error) }
        }
    };
    // SAFETY: the closure allocates nothing and only makes async-signal-safe calls.
    unsafe { command.pre_exec(move_self) };
    command.spawn()
}

pub fn expect_success(mut child: Child, what: &str) -> Result<(), String> {
    let status =
        wait_timeout(&mut child, Duration::from_secs(30)).map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} exited with {status}"))
    }
}

/// Waits for `child`, killing it after `timeout`.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "still running after {}s: killed",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}

/// A running `chaos-user`: stderr is echoed to the console and kept for failure messages,
/// stdout (the JSON lines) is collected.
pub struct ChaosUser {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    attached: mpsc::Receiver<()>,
    stdout: Option<thread::JoinHandle<Vec<String>>>,
    /// Joined by `finish`, so the lines printed at exit are all in `stderr`.
    stderr_reader: Option<thread::JoinHandle<()>>,
}

pub struct ChaosUserOutput {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl ChaosUserOutput {
    /// Its stdout's JSON lines, once `command` (e.g. "chaos-user trace") exited with success.
    pub fn json_lines(&self, command: &str) -> Result<Vec<json::Value>, String> {
        if !self.status.success() {
            return Err(format!(
                "{command} exited with {}; stderr:\n{}",
                self.status, self.stderr
            ));
        }
        self.stdout
            .iter()
            .map(|line| json::parse(line).map_err(|e| format!("bad JSON line ({e}): {line}")))
            .collect()
    }
}

impl ChaosUser {
    /// `chaos-user SUBCOMMAND --cgroup LABEL --json --interval 1s --no-metrics --duration D`
    /// and `extra`: how the VM tests run it (the duration only a safety net, should a SIGINT be
    /// lost; an injection rule expires in the kernel then).
    pub fn on_cgroup(
        subcommand: &str,
        label: &str,
        duration: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        let mut args = vec![
            subcommand,
            "--cgroup",
            label,
            "--json",
            "--interval",
            "1s",
            "--no-metrics",
            "--duration",
            duration,
        ];
        args.extend(extra);
        Self::start(&args)
    }

    pub fn start(args: &[&str]) -> Result<Self, String> {
        let mut child = Command::new(CHAOS_USER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {CHAOS_USER}: {e}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tell_attached, attached) = mpsc::channel();
        let err_pipe = child.stderr.take().expect("piped");
        let out_pipe = child.stdout.take().expect("piped");
        let kept = stderr.clone();
        let stderr_reader = Some(thread::spawn(move || {
            follow_stderr(err_pipe, &kept, &tell_attached)
        }));
        let stdout = Some(thread::spawn(move || collect_stdout(out_pipe)));
        Ok(Self {
            child,
            stderr,
            attached,
            stdout,
            stderr_reader,
        })
    }

    fn stderr_text(&self) -> String {
        lock(&self.stderr).join("\n")
    }

    /// Asks chaos-user to detach and exit, as Ctrl-C would.
    pub fn interrupt(&self) -> Result<(), String> {
        // SAFETY: a signal to our own child, which has not been reaped (we hold `child`).
        if unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) } == 0 {
            Ok(())
        } else {
            Err(format!(
                "SIGINT to chaos-user: {}",
                io::Error::last_os_error()
            ))
        }
    }

    pub fn wait_attached(&mut self, timeout: Duration) -> Result<(), String> {
        match self.attached.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "chaos-user did not attach within {}s; stderr:\n{}",
                timeout.as_secs(),
                self.stderr_text()
            )),
            // stderr closed without the line: it exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_timeout(&mut self.child, Duration::from_secs(10))
                    .map_or_else(|e| e, |s| s.to_string());
                Err(format!(
                    "chaos-user exited ({status}) before attaching; stderr:\n{}",
                    self.stderr_text()
                ))
            }
        }
    }

    pub fn finish(mut self, timeout: Duration) -> Result<ChaosUserOutput, String> {
        let status = wait_timeout(&mut self.child, timeout)
            .map_err(|e| format!("chaos-user {e}; stderr:\n{}", self.stderr_text()))?;
        let stdout = self
            .stdout
            .take()
            .expect("finish runs once")
            .join()
            .map_err(|_| "stdout reader panicked".to_owned())?;
        if let Some(reader) = self.stderr_reader.take() {
            reader
                .join()
                .map_err(|_| "stderr reader panicked".to_owned())?;
        }
        Ok(ChaosUserOutput {
            status,
            stdout,
            stderr: self.stderr_text(),
        })
    }
}

impl Drop for ChaosUser {
    /// A failed test must not leave chaos-user attached for the next one.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn follow_stderr(pipe: ChildStderr, kept: &Mutex<Vec<String>>, attached: &mpsc::Sender<()>) {
    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
        // Lines naming 250 targets flood the console; the whole line is kept below.
        match line.char_indices().nth(300) {
            Some((cut, _)) => println!("  chaos-user: {} [...]", &line[..cut]),
            None => println!("  chaos-user: {line}"),
        }
        if line.starts_with("syschaos: attached") {
            let _ = attached.send(());
        }
        lock(kept).push(line);
    }
}

fn collect_stdout(pipe: ChildStdout) -> Vec<String> {
    BufReader::new(pipe)
        .lines()
        .map_while(Result::ok)
        .filter(|line| !line.trim().is_empty())
        .collect()
}

pub fn create_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(format!("mkdir {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// A chaos-workload started in a cgroup, its JSON report on a pipe.
pub struct Workload {
    child: Child,
    what: String,
}

impl Workload {
    pub fn start(args: &[String], cgroup: &Path) -> Result<Self, String> {
        let what = format!("workload in {}", cgroup.display());
        let mut command = workload(&args.iter().map(String::as_str).collect::<Vec<_>>());
        command.stdout(Stdio::piped());
        let child =
            spawn_in_cgroup(command, cgroup).map_err(|e| format!("starting the {what}: {e}"))?;
        Ok(Self { child, what })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the report (one JSON line: far less than a pipe holds, so waiting first is fine).
    pub fn report(mut self) -> Result<json::Value, String> {
        let status = wait_timeout(&mut self.child, Duration::from_secs(30))
            .map_err(|e| format!("{}: {e}", self.what))?;
        let mut text = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout
                .read_to_string(&mut text)
                .map_err(|e| format!("{}: reading its report: {e}", self.what))?;
        }
        if !status.success() {
            return Err(format!(
                "{} exited with {status}; stdout: {text}",
                self.what
            ));
        }
        json::parse(text.trim()).map_err(|e| format!("{}: bad report ({e}): {text}", self.what))
    }
}

/// One kind of call in a workload report:
/// `{"calls":N,"failed":F,"errnos":{"13":F},"failed_at":[1,2]}`.
pub struct Outcome {
    pub calls: u64,
    pub failed: u64,
    /// errno number (as text) -> failures.
    pub errnos: Vec<(String, u64)>,
    pub failed_at: Vec<u64>,
}

impl Outcome {
    pub fn of(report: &json::Value, kind: &str) -> Result<Self, String> {
        let entry = report
            .get("calls")
            .and_then(|calls| calls.get(kind))
            .ok_or_else(|| format!("the workload report has no {kind} calls"))?;
        let number = |name| {
            entry
                .get(name)
                .and_then(json::Value::as_u64)
                .ok_or_else(|| format!("the workload's {kind} report has no {name}"))
        };
        let errnos = match entry.get("errnos") {
            Some(json::Value::Object(members)) => members
                .iter()
                .map(|(errno, n)| (errno.clone(), n.as_u64().unwrap_or(0)))
                .collect(),
            _ => Vec::new(),
        };
        let failed_at = entry
            .get("failed_at")
            .map_or(&[][..], json::Value::as_array)
            .iter()
            .filter_map(json::Value::as_u64)
            .collect();
        Ok(Self {
            calls: number("calls")?,
            failed: number("failed")?,
            errnos,
            failed_at,
        })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errnos: Vec<String> = self
            .errnos
            .iter()
            .map(|(e, n)| format!("{e}: {n}"))
            .collect();
        // The first 10 call numbers are enough to see the pattern.
        let mut failed_at: Vec<String> =
            self.failed_at.iter().take(10).map(u64::to_string).collect();
        if self.failed_at.len() > 10 {
            failed_at.push("...".to_owned());
        }
        write!(
            f,
            "{} calls, {} failed (errnos {{{}}}, failed_at [{}])",
            self.calls,
            self.failed,
            errnos.join(", "),
            failed_at.join(", ")
        )
    }
}

/// `chaos-user ARGS` is refused: exit code 1 and one line `chaos-user: error: ...` containing
/// every needle.
pub fn expect_refused(args: &[&str], needles: &[&str]) -> Result<(), String> {
    let output = ChaosUser::start(args)?.finish(Duration::from_secs(60))?;
    let lines: Vec<&str> = output.stderr.lines().filter(|l| !l.is_empty()).collect();
    let refused = output.status.code() == Some(1)
        && lines.len() == 1
        && lines[0].starts_with("chaos-user: error: ")
        && needles.iter().all(|needle| lines[0].contains(needle));
    match refused {
        true => Ok(()),
        false => Err(format!(
            "`chaos-user {}` should fail with exit code 1 and one line `chaos-user: error: ...` \
             containing {needles:?}; it exited with {}, stderr:\n{}",
            args.join(" "),
            output.status,
            output.stderr
        )),
    }
}
