//! A running `chaos-user attach`, stopped with SIGINT when dropped.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{chaos_user_bin, wait_for};

pub struct Attach {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<Vec<String>>>,
    pub metrics_port: u16,
}

impl Attach {
    /// Starts `chaos-user attach ARGS --quiet --metrics-addr 127.0.0.1:PORT` and waits until it
    /// says it is attached.
    pub fn start(args: &[&str]) -> Self {
        Self::run("attach", args, &["--quiet"])
    }

    /// The same with `chaos-user inject ARGS`.
    pub fn inject(args: &[&str]) -> Self {
        Self::run("inject", args, &["--quiet"])
    }

    /// `chaos-user trace ARGS`; its output lines are in [`Attach::stdout`].
    pub fn trace(args: &[&str]) -> Self {
        Self::run("trace", args, &[])
    }

    fn run(subcommand: &str, args: &[&str], extra: &[&str]) -> Self {
        let metrics_port = crate::free_port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let mut child = Command::new(chaos_user_bin())
            .arg(subcommand)
            .args(args)
            .args(extra)
            .args(["--metrics-addr", &metrics_addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chaos-user");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let out_pipe = child.stdout.take().expect("piped stdout");
        let out_sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                out_sink.lock().unwrap().push(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[chaos-user] {line}");
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut attach = Self {
            child,
            stderr,
            stdout,
            metrics_port,
        };
        wait_for("chaos-user to attach", Duration::from_secs(30), || {
            if let Ok(Some(status)) = attach.child.try_wait() {
                panic!("chaos-user exited early ({status}): {}", attach.stderr());
            }
            attach.stderr().contains("syschaos: attached").then_some(())
        });
        attach
    }

    /// What it printed on stdout so far, a line each.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> crate::metrics::Scrape {
        crate::metrics::scrape(self.metrics_port)
    }

    /// `syschaos_injections_total` of one rule.
    pub fn injections(
        &self,
        target: &str,
        syscall: &str,
        errno: &str,
        engine: &str,
    ) -> Option<f64> {
        let labels = [
            ("target", target),
            ("syscall", syscall),
            ("errno", errno),
            ("engine", engine),
        ];
        self.metrics().value("syschaos_injections_total", &labels)
    }

    /// `syschaos_syscall_errors_total` of one (syscall, errno) of a target: what the monitor saw.
    pub fn syscall_errors(&self, target: &str, syscall: &str, errno: &str) -> Option<f64> {
        let labels = [("target", target), ("syscall", syscall), ("errno", errno)];
        self.metrics()
            .value("syschaos_syscall_errors_total", &labels)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited, None while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for chaos-user")
    }

    /// Waits for chaos-user to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_for("chaos-user to exit", timeout, || {
            self.child.try_wait().ok().flatten()
        })
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: signals our own child, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }
}

impl Drop for Attach {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGINT);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `chaos-user ARGS` to completion: (exit status, stderr).
pub fn run_chaos_user(args: &[&str], configure: impl FnOnce(&mut Command)) -> (ExitStatus, String) {
    run_binary(&chaos_user_bin(), args, configure)
}

/// Runs `BINARY ARGS` (a chaos-user) to completion: (exit status, stderr).
fn run_binary(
    binary: &Path,
    args: &[&str],
    configure: impl FnOnce(&mut Command),
) -> (ExitStatus, String) {
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    configure(&mut command);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `chaos-user ARGS`, which must fail with exactly one error line containing `expected`
/// and leave no program of ours loaded.
pub fn assert_refused(args: &[&str], expected: &str, configure: impl FnOnce(&mut Command)) {
    assert_binary_refused(&chaos_user_bin(), args, expected, configure);
}

/// [`assert_refused`] for a copy of chaos-user at `binary`.
pub fn assert_binary_refused(
    binary: &Path,
    args: &[&str],
    expected: &str,
    configure: impl FnOnce(&mut Command),
) {
    let floor = crate::newest_program_id();
    let (status, stderr) = run_binary(binary, args, configure);
    assert!(!status.success(), "chaos-user {args:?} succeeded");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("chaos-user: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {stderr}");
    assert!(
        errors[0].contains(expected),
        "expected `{expected}` in: {stderr}"
    );
    crate::assert_no_programs_since(floor);
}
