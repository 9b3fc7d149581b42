//! What the benchmarks run on: a timed command, tracers in the background and the tracefs mount
//! bpftrace needs. Each undoes itself on drop, so an error half-way leaves nothing behind.
use std::{
    fs,
    io::{self, BufRead as _, BufReader, Read},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::build;

/// tracefs, which bpftrace needs to resolve `tracepoint:` probes; mounted for the run if missing.
pub struct Tracefs {
    mounted_here: Option<PathBuf>,
}

impl Tracefs {
    pub fn ensure() -> anyhow::Result<Self> {
        // The two places bpftrace looks.
        let places = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
        if places.iter().any(|p| Path::new(p).join("events").is_dir()) {
            return Ok(Self { mounted_here: None });
        }
        let path = PathBuf::from(places[0]);
        build::run(
            Command::new("mount")
                .args(["-t", "tracefs", "tracefs"])
                .arg(&path),
        )
        .with_context(|| {
            format!(
                "tracefs is not mounted and mounting it on {} failed: bpftrace cannot attach \
                 `tracepoint:` probes without it (mount it, or run as root on a kernel with \
                 CONFIG_TRACING)",
                path.display()
            )
        })?;
        eprintln!("bench: mounted tracefs on {} for bpftrace", path.display());
        Ok(Self {
            mounted_here: Some(path),
        })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if let Some(path) = &self.mounted_here {
            let _ = Command::new("umount").arg(path).status();
        }
    }
}

/// How long a command took.
#[derive(Clone, Copy)]
pub struct Timing {
    pub wall: Duration,
    /// User + system time. The tracers' programs run inside its system calls, so they count
    /// here, but time spent waiting for a CPU does not: other work on the host barely moves it.
    pub cpu: Duration,
}

/// Runs `command` to completion and times it.
pub fn time(command: &mut Command) -> anyhow::Result<Timing> {
    command.stdin(Stdio::null()).stdout(Stdio::null());
    command.stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .context("stderr is piped")?
        .read_to_string(&mut stderr)?;
    // wait4 rather than Child::wait: it also returns the child's CPU time.
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data, which wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    while unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error).context("wait4");
        }
    }
    let wall = start.elapsed();
    let status = ExitStatus::from_raw(status);
    if !status.success() {
        bail!("{command:?} failed ({status}): {}", stderr.trim());
    }
    let cpu = [usage.ru_utime, usage.ru_stime]
        .iter()
        .map(|t| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000))
        .sum();
    Ok(Timing { wall, cpu })
}

/// The highest-numbered CPU this process may run on.
pub fn last_cpu() -> anyhow::Result<usize> {
    // SAFETY: cpu_set_t is a plain bit set, which sched_getaffinity fills in.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(io::Error::last_os_error()).context("sched_getaffinity");
    }
    (0..libc::CPU_SETSIZE as usize)
        .rev()
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .context("no CPU in this process's affinity mask")
}

/// Makes `command` run on `cpu` only.
pub fn pin(command: &mut Command, cpu: usize) {
    // SAFETY: sched_setaffinity is one system call on a set built on the stack: safe between
    // fork and exec.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Running tracers we did not start: their programs run for dd's calls too.
pub fn other_tracers() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
            let comm = comm.trim();
            ["chaos-user", "bpftrace"]
                .contains(&comm)
                .then(|| format!("{comm} (pid {})", entry.file_name().to_string_lossy()))
        })
        .collect()
}

/// A tracer running in the background; killed on drop unless it was stopped.
pub struct Daemon {
    name: String,
    child: Child,
    /// Its stdout and stderr, line by line, read by threads so that it never blocks on a pipe.
    lines: Receiver<String>,
    /// What it printed so far, shown when it fails.
    log: Vec<String>,
}

impl Daemon {
    pub fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let (sender, lines) = mpsc::channel();
        forward(
            child.stdout.take().context("stdout is piped")?,
            sender.clone(),
        );
        forward(child.stderr.take().context("stderr is piped")?, sender);
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            log: Vec::new(),
        })
    }

    /// The next line `wanted` accepts; fails if the daemon exits or stays silent until `timeout`.
    pub fn wait_for(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if wanted(&line) => return Ok(line),
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "{}: not ready after {timeout:?}{}",
                        self.name,
                        self.log_tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!("{} exited ({status}){}", self.name, self.log_tail())
                }
            }
        }
    }

    /// SIGINT, as Ctrl-C would (both tools detach cleanly on it), then waits for a clean exit.
    /// Returns every line it printed apart from those `wait_for` returned.
    pub fn stop(mut self) -> anyhow::Result<Vec<String>> {
        // SAFETY: kill(2) on our own child, which is not reaped yet: the pid is still its.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) } != 0 {
            return Err(io::Error::last_os_error()).context("kill -INT");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("{} still runs 30 s after SIGINT", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The pipes are closed now: the reader threads are about to send their last lines.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        if !status.success() {
            bail!(
                "{} failed on SIGINT ({status}){}",
                self.name,
                self.log_tail()
            );
        }
        Ok(std::mem::take(&mut self.log))
    }

    fn log_tail(&self) -> String {
        let start = self.log.len().saturating_sub(10);
        self.log[start..]
            .iter()
            .map(|line| format!("\n  | {line}"))
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward(stream: impl Read + Send + 'static, sender: Sender<String>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if sender.send(text).is_err() {
                break;
            }
            line.clear();
        }
    });
}

/// The 1, 5 and 15 minute load averages, to tell how busy the host was.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| text.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// The median of a set of measurements (mean of the middle two for an even count).
pub fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// `chaos-user attach --no-metrics --cgroup CGROUP EXTRA...`, returned once it says it is attached.
pub fn attach_cgroup(
    chaos_user: &std::path::Path,
    cgroup: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<Daemon> {
    let mut daemon = Daemon::spawn(
        "chaos-user attach",
        Command::new(chaos_user)
            .args(["attach", "--no-metrics", "--cgroup"])
            .arg(cgroup)
            .args(extra),
    )?;
    daemon.wait_for(
        |line| line.starts_with("syschaos: attached"),
        Duration::from_secs(30),
    )?;
    Ok(daemon)
}
