//! One boot of a test kernel under QEMU (TCG): its command line, the serial console echoed and
//! read for the init's per-test lines and summary, and what the boot gave.
use std::{
    io::{BufRead as _, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::build::Arch;

/// How QEMU boots an architecture.
struct QemuArch {
    binary: &'static str,
    /// The Debian package that has it.
    package: &'static str,
    machine: &'static [&'static str],
    /// The serial console's device in the guest.
    console: &'static str,
}

impl QemuArch {
    fn of(arch: Arch) -> Self {
        match arch {
            Arch::X86_64 => Self {
                binary: "qemu-system-x86_64",
                package: "qemu-system-x86",
                machine: &[],
                console: "ttyS0",
            },
            // Debian's arm64 vmlinuz is a gzipped Image, which QEMU unpacks itself.
            Arch::Aarch64 => Self {
                binary: "qemu-system-aarch64",
                package: "qemu-system-arm",
                machine: &["-M", "virt"],
                console: "ttyAMA0",
            },
        }
    }
}

/// One kernel to boot and what to run in it.
pub(super) struct Boot {
    pub(super) name: &'static str,
    pub(super) arch: Arch,
    pub(super) kernel: PathBuf,
    pub(super) initrd: PathBuf,
    pub(super) tests: String,
    pub(super) timeout: Duration,
    /// More `syschaos.*=` parameters for the init.
    pub(super) params: Vec<String>,
}

/// What one boot gave.
pub(super) struct BootResult {
    pub(super) name: &'static str,
    pub(super) passed: u32,
    pub(super) failed: u32,
    /// Why the kernel failed beyond failed tests: no summary, timeout, QEMU error.
    pub(super) problem: Option<String>,
    pub(super) boot_time: Option<Duration>,
    pub(super) total_time: Duration,
    /// The kernel's own oops on an int3 in its text (see `run`).
    pub(super) text_patch_oops: Option<String>,
}

impl BootResult {
    /// Nothing run yet.
    pub(super) fn new(name: &'static str) -> Self {
        Self {
            name,
            passed: 0,
            failed: 0,
            problem: None,
            boot_time: None,
            total_time: Duration::ZERO,
            text_patch_oops: None,
        }
    }
}

impl Boot {
    pub(super) fn run(&self) -> BootResult {
        let started = Instant::now();
        let mut result = BootResult::new(self.name);
        match self.watch(started) {
            Ok(serial) => serial.judge(&self.tests, &mut result),
            Err(e) => {
                result.failed = self.test_count().max(1);
                result.problem = Some(format!("{e:#}"));
            }
        }
        result.total_time = started.elapsed();
        result
    }

    fn test_count(&self) -> u32 {
        self.tests.split(',').filter(|t| !t.is_empty()).count() as u32
    }

    fn qemu(&self) -> Command {
        // The init's watchdog fires first, so a stuck test still ends with a summary line.
        let watchdog = self
            .timeout
            .saturating_sub(Duration::from_secs(15))
            .max(Duration::from_secs(10));
        let qemu_arch = QemuArch::of(self.arch);
        let mut append = format!(
            "console={} quiet panic=-1 syschaos.tests={} syschaos.watchdog={}",
            qemu_arch.console,
            self.tests,
            watchdog.as_secs()
        );
        for param in &self.params {
            append.push(' ');
            append.push_str(param);
        }
        let mut qemu = Command::new(qemu_arch.binary);
        // KVM does not work here: always TCG. No network device at all.
        qemu.args(qemu_arch.machine)
            .args([
                "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2", "-nic", "none",
            ])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", &append, "-nographic", "-no-reboot"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        qemu
    }

    /// Boots the kernel, echoing the serial console, until QEMU exits or the timeout.
    pub(super) fn watch(&self, started: Instant) -> anyhow::Result<Serial> {
        let mut command = self.qemu();
        let package = QemuArch::of(self.arch).package;
        let mut qemu = command.spawn().with_context(|| {
            format!("cannot start {command:?} (install it with `apt-get install -y {package}`)")
        })?;
        let lines = self.echo_output(&mut qemu)?;
        let mut serial = Serial::default();
        let deadline = started + self.timeout;
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => serial.read(&line, started.elapsed()),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = qemu.kill();
                    let _ = qemu.wait();
                    let timeout = self.timeout.as_secs();
                    serial.qemu_problem = Some(format!("timed out after {timeout}s: QEMU killed"));
                    return Ok(serial);
                }
            }
        }
        let status = qemu.wait().context("waiting for QEMU")?;
        if !status.success() {
            serial.qemu_problem = Some(format!("QEMU exited with {status}"));
        }
        Ok(serial)
    }

    /// Prints QEMU's stdout (the serial console) and stderr prefixed with the kernel name;
    /// the console lines also come back through the channel, which closes when QEMU exits.
    fn echo_output(&self, qemu: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
        let (send, receive) = mpsc::channel();
        let stdout = qemu.stdout.take().context("QEMU's stdout is piped")?;
        let stderr = qemu.stderr.take().context("QEMU's stderr is piped")?;
        let prefix = format!("[{}]", self.name);
        let stderr_prefix = format!("[{} qemu]", self.name);
        thread::spawn(move || {
            for_each_line(stdout, |line| {
                println!("{prefix} {line}");
                let _ = send.send(line);
            })
        });
        thread::spawn(move || for_each_line(stderr, |line| eprintln!("{stderr_prefix} {line}")));
        Ok(receive)
    }
}

/// Calls `f` for each line, tolerating non-UTF-8 bytes and the serial console's "\r\n".
fn for_each_line(pipe: impl Read, mut f: impl FnMut(String)) {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    while matches!(reader.read_until(b'\n', &mut buffer), Ok(n) if n > 0) {
        f(printable(&String::from_utf8_lossy(&buffer)));
        buffer.clear();
    }
}

/// Drops the firmware's terminal escape sequences (ESC c, ESC [ ... letter) and control
/// characters such as "\r", which would garble our terminal.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next() == Some('[') {
                    // Parameters, then one final byte in '@'..='~'.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// What the serial console told us.
#[derive(Default)]
pub(super) struct Serial {
    boot_time: Option<Duration>,
    /// Per-test lines seen, in case the summary never comes.
    ok_lines: u32,
    failed_lines: u32,
    summary: Option<(u32, u32)>,
    /// A timeout or QEMU's failure.
    qemu_problem: Option<String>,
    /// `vm-bench ...` lines of an in-VM benchmark.
    pub(super) bench_lines: Vec<String>,
    /// The first "Oops: int3" line and the RIP line after it.
    text_patch_oops: Option<String>,
    /// Waiting for the RIP line of that oops.
    oops_rip_pending: bool,
}

impl Serial {
    fn read(&mut self, line: &str, elapsed: Duration) {
        if self.boot_time.is_none() && line.contains("syschaos-vm: init started") {
            self.boot_time = Some(elapsed);
        }
        if line.starts_with("vm-bench ") {
            self.bench_lines.push(line.to_owned());
        }
        if self.text_patch_oops.is_none() && line.contains("Oops: int3") {
            self.text_patch_oops = Some("the kernel oopsed on an int3".to_owned());
            self.oops_rip_pending = true;
        } else if self.oops_rip_pending && line.contains("RIP: ") {
            self.oops_rip_pending = false;
            if let (Some(oops), Some((_, rip))) =
                (&mut self.text_patch_oops, line.split_once("RIP: "))
            {
                oops.push_str(&format!(" at {rip}"));
            }
        }
        if line.starts_with("vm-test ") && line.ends_with(" ... ok") {
            self.ok_lines += 1;
        } else if line.starts_with("vm-test ") && line.contains(" ... FAILED") {
            self.failed_lines += 1;
        }
        if let Some(counts) = line
            .split_once("syschaos-vm: ")
            .and_then(|(_, rest)| parse_counts(rest))
        {
            self.summary = Some(counts);
        }
    }

    pub(super) fn judge(self, tests: &str, result: &mut BootResult) {
        result.boot_time = self.boot_time;
        result.text_patch_oops = self.text_patch_oops;
        // Every requested test that did not report counts as failed.
        let requested = tests.split(',').filter(|t| !t.is_empty()).count() as u32;
        match self.summary {
            Some((passed, failed)) => {
                result.passed = passed;
                result.failed = failed;
                let unreported = requested.saturating_sub(passed + failed);
                if unreported > 0 {
                    result.failed += unreported;
                    result.problem = Some(format!(
                        "{unreported} of {requested} tests not in the summary"
                    ));
                }
            }
            None => {
                let unreported = requested.saturating_sub(self.ok_lines + self.failed_lines);
                result.passed = self.ok_lines;
                result.failed = (self.failed_lines + unreported).max(1);
                result.problem = Some("no summary line on the serial console".to_owned());
            }
        }
        if let Some(problem) = self.qemu_problem {
            result.problem = Some(problem);
            result.failed = result.failed.max(1);
        }
    }
}

/// "N passed, M failed" -> (N, M).
fn parse_counts(text: &str) -> Option<(u32, u32)> {
    let (passed, failed) = text.trim().split_once(" passed, ")?;
    let failed = failed.strip_suffix(" failed")?;
    Some((passed.parse().ok()?, failed.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_removed() {
        let line = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r\n";
        assert_eq!(printable(line), "SeaBIOS (version 1.16)");
    }

    #[test]
    fn summary_line() {
        let mut serial = Serial::default();
        serial.read("vm-test monitor ... ok", Duration::ZERO);
        serial.read("vm-test lsm ... FAILED: no LSM", Duration::ZERO);
        serial.read("syschaos-vm: 1 passed, 1 failed", Duration::ZERO);
        assert_eq!((serial.ok_lines, serial.failed_lines), (1, 1));
        assert_eq!(serial.summary, Some((1, 1)));
        assert_eq!(parse_counts("kernel 6.12"), None);
    }

    #[test]
    fn text_patching_oops_is_named() {
        let mut serial = Serial::default();
        serial.read(
            "[   56.83] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
            Duration::ZERO,
        );
        serial.read(
            "[   56.83] CPU: 1 UID: 0 PID: 337 Comm: chaos-user",
            Duration::ZERO,
        );
        serial.read(
            "[   56.83] RIP: 0010:syscall_trace_enter+0xd8/0x1a0",
            Duration::ZERO,
        );
        serial.read(
            "[   56.84] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI",
            Duration::ZERO,
        );
        let mut result = BootResult::new("debian");
        serial.judge("monitor", &mut result);
        assert_eq!(
            result.text_patch_oops.as_deref(),
            Some("the kernel oopsed on an int3 at 0010:syscall_trace_enter+0xd8/0x1a0")
        );
    }

    #[test]
    fn unreported_tests_fail() {
        let mut serial = Serial::default();
        serial.read("syschaos-vm: 1 passed, 0 failed", Duration::ZERO);
        let mut result = BootResult::new("override");
        serial.judge("monitor,inject-kprobe", &mut result);
        assert_eq!((result.passed, result.failed), (1, 1));
        assert!(result.problem.is_some());
    }

    #[test]
    fn missing_summary_fails() {
        let mut serial = Serial::default();
        serial.read("vm-test monitor ... ok", Duration::ZERO);
        let mut result = BootResult::new("debian");
        serial.judge("monitor,lsm", &mut result);
        assert_eq!((result.passed, result.failed), (1, 1));
        assert!(result.problem.is_some());
    }
}
