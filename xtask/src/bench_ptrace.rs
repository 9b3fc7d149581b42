//! `cargo xtask bench ptrace`: the same injection done by chaos-user's ptrace engine and by
//! `strace -f -e inject=...`, both attached from outside to the same `dd if=/dev/zero
//! of=/dev/null bs=1 count=N` (a read and a write per byte), in one run.
//!
//! Each run starts `sh -c 'kill -STOP $$; exec dd ...'` in a throwaway cgroup, attaches the
//! tracer to the stopped shell (chaos-user by the cgroup, strace by its pid: both seize it), then
//! sends SIGCONT and times until dd exits. Cases:
//! - trace every call, inject none: a rule on fsync, which dd never calls;
//! - EINTR into dd's first K = N/4 writes (at most 65535, strace's limit), which dd retries
//!   (chaos-user `write=EINTR,count=K`, strace `inject=write:error=EINTR:when=1..K`); chaos-user
//!   keeps the fsync rule too, so it stays attached to the end as strace does (alone, it would
//!   detach once the count is spent).
//!
//! strace is given its cheapest settings (`-qq -o /dev/null -e raw=all -e signal=none`); it has to
//! trace (print) the calls it injects into, chaos-user only counts them. chaos-user always runs
//! its BPF monitor on the target too, whose tracepoints also see every syscall of the tracer
//! itself; the "strace + monitor" row runs strace under that same monitor (`chaos-user attach`
//! on the cgroup), to compare the two tracers with equal monitoring.
//!
//! Wall time is what the workload feels; CPU time (dd + the tracer, from the tracer's attach to
//! dd's exit) is steadier on a busy machine. The tools alternate run by run, so load drifts on
//! the host hit all alike; "best" is the least disturbed run.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{build, cgroup::Cgroup};

#[derive(Debug, Args)]
pub struct PtraceArgs {
    /// Bytes dd copies, one read and one write each.
    #[arg(long, default_value_t = 200_000)]
    pub count: u64,
    /// dd runs per configuration; the table shows the best and the median.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Bare,
    /// `chaos-user attach`: the BPF monitor alone.
    Monitor,
    /// `chaos-user inject`: the ptrace engine (and the monitor).
    ChaosUser,
    Strace,
    /// strace under `chaos-user attach`.
    StraceMonitored,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Bare => "bare dd",
            Tool::Monitor => "BPF monitor",
            Tool::ChaosUser => "chaos-user",
            Tool::Strace => "strace",
            Tool::StraceMonitored => "strace+mon",
        }
    }
}

struct Case {
    name: String,
    chaos_user: Vec<String>,
    strace: Vec<String>,
    /// Injections each tracer must make.
    injected: u64,
}

/// One run: wall time from SIGCONT to dd's exit, and the CPU time dd and the tracer used.
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// Best and median wall time, median CPU time of a row's runs.
struct Stats {
    best: Duration,
    median: Duration,
    cpu: Duration,
}

impl Stats {
    fn of(timings: &[Timing]) -> Self {
        let mut wall: Vec<Duration> = timings.iter().map(|t| t.wall).collect();
        let mut cpu: Vec<Duration> = timings.iter().map(|t| t.cpu).collect();
        wall.sort();
        cpu.sort();
        Self {
            best: wall[0],
            median: wall[wall.len() / 2],
            cpu: cpu[cpu.len() / 2],
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one benchmark script, read top to bottom: set-up, paired runs, report"
)]
pub fn run(args: &PtraceArgs) -> anyhow::Result<()> {
    if Command::new("strace").arg("-V").output().is_err() {
        bail!("bench ptrace needs strace: apt-get install -y strace");
    }
    let chaos_user = build::chaos_user()?;
    let cgroup = Cgroup::create("syschaos-bench-ptrace")?;
    // strace's when= counts up to 65535.
    let injected = (args.count / 4).min(65_535);
    let cases = [
        Case {
            name: "trace all, inject none (fsync=EIO, never called)".into(),
            chaos_user: strings(&["--rule", "fsync=EIO"]),
            strace: strings(&["-e", "trace=fsync", "-e", "inject=fsync:error=EIO"]),
            injected: 0,
        },
        Case {
            name: format!("EINTR into the first {injected} writes (dd retries)"),
            chaos_user: vec![
                "--rule".into(),
                format!("write=EINTR,count={injected}"),
                "--rule".into(),
                "fsync=EIO".into(),
            ],
            strace: vec![
                "-e".into(),
                "trace=write".into(),
                "-e".into(),
                format!("inject=write:error=EINTR:when=1..{injected}"),
            ],
            injected,
        },
    ];
    eprintln!(
        "bench ptrace: dd bs=1 count={} ({} syscalls), {} runs each",
        args.count,
        2 * args.count,
        args.runs
    );
    let bench = Bench {
        cgroup: &cgroup,
        count: args.count,
        chaos_user: &chaos_user,
    };
    let mut baseline: [Vec<Timing>; 2] = Default::default();
    for _ in 0..args.runs {
        baseline[0].push(bench.dd(Tool::Bare, &[], 0)?);
        baseline[1].push(bench.dd(Tool::Monitor, &[], 0)?);
    }
    let [bare, monitor] = baseline.map(|runs| Stats::of(&runs));
    let mut rows = Vec::new();
    for case in &cases {
        let tools = [Tool::ChaosUser, Tool::Strace, Tool::StraceMonitored];
        let mut timings: [Vec<Timing>; 3] = Default::default();
        for run in 0..args.runs as usize {
            // Rotate which goes first, so a load change on the host hits all alike.
            for k in 0..tools.len() {
                let i = (run + k) % tools.len();
                let tool_args = match tools[i] {
                    Tool::ChaosUser => &case.chaos_user,
                    _ => &case.strace,
                };
                timings[i].push(bench.dd(tools[i], tool_args, case.injected)?);
            }
        }
        rows.push((case.name.as_str(), timings.map(|runs| Stats::of(&runs))));
    }

    let calls = (2 * args.count) as f64;
    let per_call =
        |t: Duration, base: Duration| (t.as_secs_f64() - base.as_secs_f64()) * 1e6 / calls;
    println!();
    println!(
        "dd if=/dev/zero of=/dev/null bs=1 count={} ({calls} syscalls), {} runs per row",
        args.count, args.runs
    );
    println!(
        "wall seconds from SIGCONT to dd's exit (best: least disturbed run); CPU: dd + tracer (median); us/call: added per dd syscall (best)"
    );
    println!();
    println!(
        "{:<50} {:<11} {:>7} {:>8} {:>7} {:>8}",
        "case", "tool", "best s", "median s", "CPU s", "us/call"
    );
    let line = |case: &str, tool: Tool, t: &Stats| {
        println!(
            "{:<50} {:<11} {:>7.3} {:>8.3} {:>7.3} {:>8.2}",
            case,
            tool.name(),
            t.best.as_secs_f64(),
            t.median.as_secs_f64(),
            t.cpu.as_secs_f64(),
            per_call(t.best, bare.best)
        );
    };
    line("no tracer", Tool::Bare, &bare);
    line("no tracer", Tool::Monitor, &monitor);
    for (name, [ours, strace, monitored]) in &rows {
        line(name, Tool::ChaosUser, ours);
        line("", Tool::Strace, strace);
        line("", Tool::StraceMonitored, monitored);
        let ratio = |other: &Stats| {
            format!(
                "{:.2}x best, {:.2}x median, {:.2}x CPU",
                other.best.as_secs_f64() / ours.best.as_secs_f64(),
                other.median.as_secs_f64() / ours.median.as_secs_f64(),
                other.cpu.as_secs_f64() / ours.cpu.as_secs_f64()
            )
        };
        println!("{:<50}   strace / chaos-user:       {}", "", ratio(strace));
        println!(
            "{:<50}   strace+mon / chaos-user:   {}",
            "",
            ratio(monitored)
        );
    }
    println!();
    println!(
        "Ratios above 1: chaos-user is faster. chaos-user always runs its BPF monitor, which also sees each of the tracer's own syscalls; strace+mon is strace under that same monitor."
    );
    Ok(())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

struct Bench<'a> {
    cgroup: &'a Cgroup,
    count: u64,
    chaos_user: &'a Path,
}

impl Bench<'_> {
    /// One timed dd under `tool`: from SIGCONT to dd's exit.
    fn dd(&self, tool: Tool, tool_args: &[String], injected: u64) -> anyhow::Result<Timing> {
        let count = self.count;
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                &format!("kill -STOP $$; exec dd if=/dev/zero of=/dev/null bs=1 count={count}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.cgroup.place(&mut command)?;
        let mut dd = KillOnDrop(command.spawn().context("start sh -c 'dd ...'")?);
        let pid = dd.0.id();
        wait_until("the shell to stop itself", || state(pid) == Some('T'))?;

        let monitor = match tool {
            Tool::Monitor | Tool::StraceMonitored => Some(self.chaos_user("attach", &[])?),
            _ => None,
        };
        let ours = match tool {
            Tool::ChaosUser => Some(self.chaos_user("inject", tool_args)?),
            _ => None,
        };
        let strace = match tool {
            Tool::Strace | Tool::StraceMonitored => Some(strace(pid, tool_args)?),
            _ => None,
        };
        let ours_cpu_before = ours
            .as_ref()
            .map_or(Duration::ZERO, |(c, _)| cpu_time(c.0.id()));

        let start = Instant::now();
        // SAFETY: signals the shell we started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        let (status, dd_cpu) = wait_with_cpu(&mut dd.0)?;
        let wall = start.elapsed();
        let mut stderr = String::new();
        if let Some(mut pipe) = dd.0.stderr.take() {
            pipe.read_to_string(&mut stderr)?;
        }
        if !status.success() || !stderr.contains(&format!("{count}+0 records out")) {
            bail!("dd under {} failed ({status}): {stderr}", tool.name());
        }

        let mut tracer_cpu = Duration::ZERO;
        if let Some((mut child, lines)) = ours {
            tracer_cpu = cpu_time(child.0.id()).saturating_sub(ours_cpu_before);
            stop(&mut child)?;
            let report: Vec<String> = lines.try_iter().collect();
            let expected = format!("write EINTR via ptrace: {injected} injected");
            if injected > 0 && !report.iter().any(|line| line.ends_with(&expected)) {
                bail!("chaos-user did not report `{expected}`: {report:?}");
            }
        }
        if let Some(mut child) = strace {
            // strace exits by itself once its tracee is gone: all its CPU time is tracing.
            tracer_cpu = wait_with_cpu(&mut child.0)?.1;
        }
        if let Some((mut child, _)) = monitor {
            stop(&mut child)?;
        }
        let cpu = dd_cpu + tracer_cpu;
        eprintln!(
            "  {:<11} {:.3} s wall, {:.3} s CPU",
            tool.name(),
            wall.as_secs_f64(),
            cpu.as_secs_f64()
        );
        Ok(Timing { wall, cpu })
    }

    /// `chaos-user SUBCOMMAND --cgroup ... ARGS`, once it says it is attached; and its stderr.
    fn chaos_user(
        &self,
        subcommand: &str,
        args: &[String],
    ) -> anyhow::Result<(KillOnDrop, Receiver<String>)> {
        let mut child = KillOnDrop(
            Command::new(self.chaos_user)
                .arg(subcommand)
                .arg("--cgroup")
                .arg(&self.cgroup.path)
                .args(args)
                .args(["--quiet", "--no-metrics"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("start chaos-user")?,
        );
        let stderr = child.0.stderr.take().context("stderr is piped")?;
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .context("chaos-user did not attach")?;
            if line.starts_with("chaos-user: error") {
                bail!("{line}");
            }
            if line.starts_with("syschaos: attached") {
                return Ok((child, lines));
            }
        }
    }
}

/// `strace -p PID` with the cheapest output settings, once it traces PID.
fn strace(pid: u32, args: &[String]) -> anyhow::Result<KillOnDrop> {
    let mut child = KillOnDrop(
        Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                "raw=all",
                "-e",
                "signal=none",
            ])
            .args(args)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start strace")?,
    );
    let strace = child.0.id();
    wait_until("strace to attach", || {
        tracer_of(pid) == Some(strace) || child.0.try_wait().ok().flatten().is_some()
    })?;
    if let Some(status) = child.0.try_wait()? {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.0.stderr.take() {
            pipe.read_to_string(&mut stderr)?;
        }
        bail!("strace exited ({status}): {}", stderr.trim());
    }
    Ok(child)
}

/// SIGINT, then wait: chaos-user detaches and exits.
fn stop(child: &mut KillOnDrop) -> anyhow::Result<()> {
    // SAFETY: signals a child we started and have not reaped.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
    wait_with_cpu(&mut child.0).map(drop)
}

/// Waits for a child; returns its status and its user + system time.
fn wait_with_cpu(child: &mut Child) -> anyhow::Result<(ExitStatus, Duration)> {
    use std::os::unix::process::ExitStatusExt as _;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data, which wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        // SAFETY: waits for our own child.
        match unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) } {
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            0 => bail!("pid {pid} did not exit"),
            n if n == pid => break,
            _ => bail!("wait4({pid}): {}", std::io::Error::last_os_error()),
        }
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((
        ExitStatus::from_raw(status),
        time(usage.ru_utime) + time(usage.ru_stime),
    ))
}

/// utime + stime of a process, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // After the command: state is field 3 of stat, utime 14 and stime 15.
    let ticks = |index: usize| fields.get(index - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let total = ticks(14).unwrap_or(0) + ticks(15).unwrap_or(0);
    Duration::from_nanos(total * 1_000_000_000 / hz)
}

/// A child killed (and reaped) if still running when dropped: an error leaves nothing behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The state letter in /proc/PID/stat.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn tracer_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}
