//! A running `chaos-user attach`, stopped with SIGINT when dropped.
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{chaos_user_bin, wait_for};

pub struct Attach {
    child: Child,
    stderr: Arc<Mutex<String>>,
    pub metrics_port: u16,
}

impl Attach {
    /// Starts `chaos-user attach ARGS --quiet --metrics-addr 127.0.0.1:PORT` and waits until it
    /// says it is attached.
    pub fn start(args: &[&str]) -> Self {
        Self::run("attach", args)
    }

    /// The same with `chaos-user inject ARGS`.
    pub fn inject(args: &[&str]) -> Self {
        Self::run("inject", args)
    }

    fn run(subcommand: &str, args: &[&str]) -> Self {
        let metrics_port = crate::free_port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let mut child = Command::new(chaos_user_bin())
            .arg(subcommand)
            .args(args)
            .args(["--quiet", "--metrics-addr", &metrics_addr])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chaos-user");
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

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> crate::metrics::Scrape {
        crate::metrics::scrape(self.metrics_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
    let mut command = Command::new(chaos_user_bin());
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    configure(&mut command);
    let output = command.output().expect("run chaos-user");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
