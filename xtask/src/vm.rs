//! `cargo xtask vm-test`: boot the test kernels under QEMU with an initramfs of our static binaries.
//!
//! The initramfs holds `/init` (tests/src/bin/chaos-vm-init/), `/bin/chaos-user` and
//! `/bin/chaos-workload`. The init runs the tests named by `syschaos.tests=` on the kernel
//! command line and ends with one summary line, `syschaos-vm: N passed, M failed`, then reboots,
//! which makes QEMU (-no-reboot) exit. We read that line from the serial console.
mod initramfs;
mod kernels;

use std::{
    fs::File,
    io::{BufRead as _, BufReader, BufWriter, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use crate::build::{self, Arch};
use initramfs::Cpio;

#[derive(Debug, Args)]
pub struct VmTestArgs {
    /// Which kernel(s) to boot.
    #[arg(long, value_enum, default_value_t = KernelChoice::All)]
    kernel: KernelChoice,
    /// Comma-separated in-VM tests to run on every kernel (default: each kernel's own list).
    #[arg(long, value_name = "LIST")]
    tests: Option<String>,
    /// Kill QEMU and fail the kernel after this long (e.g. 120s, 3m).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    timeout: Duration,
    /// RUST_LOG for chaos-user in the VM (`debug` shows a refused program's whole verifier log).
    #[arg(long, value_name = "LEVEL")]
    rust_log: Option<String>,
}

/// The same as no options on the command line (`cargo xtask test` runs it so).
impl Default for VmTestArgs {
    fn default() -> Self {
        Self {
            kernel: KernelChoice::All,
            tests: None,
            timeout: DEFAULT_TIMEOUT,
            rust_log: None,
        }
    }
}

/// Each x86_64 kernel's tests take about 50 s under TCG, the arm64 kernel's about 150 s; the
/// machine may be busy.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum KernelChoice {
    /// Debian trixie's 6.12.
    Debian,
    /// The same, booted without `bpf` in the active LSM list.
    DebianNoBpfLsm,
    /// 6.12 built with bpf_override_return.
    Override,
    /// Debian bookworm's 6.1.
    Bookworm,
    /// Debian bullseye's 5.10.
    Bullseye,
    /// Debian bookworm's 6.1 for arm64 (qemu-system-aarch64, chaos-user cross-built).
    BookwormArm64,
    All,
}

struct Kernel {
    name: &'static str,
    /// Its name in `../shared/kernels`.
    file: &'static str,
    /// Its name in `target/vm-kernels/`, where it goes when the shared directory lacks it.
    cached: &'static str,
    /// How it gets there.
    source: kernels::Source,
    /// What it runs on, and what the initramfs is built for.
    arch: Arch,
    /// The tests that make sense on this kernel: every engine that works there, and the
    /// refusal of every one that does not.
    tests: &'static str,
    /// What `doctor` must say of each engine there, in its order: `ENGINE:ok`, or `ENGINE:WORD`
    /// with a word of the reason it does not work (the `doctor` test checks it).
    engines: &'static str,
    /// Whether it runs [`COMMON_TESTS`] too (a second boot of a kernel need not).
    common_tests: bool,
    /// Kernel parameters of its own.
    cmdline: &'static str,
}

/// What every kernel runs: the monitor, trace, HTTP counting, doctor, the engines that work
/// everywhere (ptrace), and the refusal of those that do not work there.
const COMMON_TESTS: &str =
    "monitor,monitor-no-latency,trace,http,doctor,inject-ptrace,engines-refused";

const KERNELS: [Kernel; 6] = [
    Kernel {
        name: "debian",
        file: "debian-6.12.117.vmlinuz",
        cached: "debian.vmlinuz",
        source: kernels::Source::DebianImage("trixie"),
        arch: Arch::X86_64,
        // No bpf_override_return: injection falls back to LSM, and what nothing covers is refused.
        tests: "inject-fmod-ret,inject-lsm,inject-cgroup-sock,inject-signal,inject-stop,inject-refused",
        // No error-injection list: fmod-ret covers the LSM table's syscalls.
        engines: "kprobe:bpf_override_return,fmod-ret:ok,lsm:ok,cgroup-sock:ok,signal:ok,ptrace:ok,stop:ok",
        common_tests: true,
        cmdline: "",
    },
    Kernel {
        name: "debian-no-bpf-lsm",
        file: "debian-6.12.117.vmlinuz",
        cached: "debian.vmlinuz",
        source: kernels::Source::DebianImage("trixie"),
        arch: Arch::X86_64,
        // The same kernel without `bpf` among the active LSMs, as distributions boot theirs:
        // auto falls back to fmod-ret. Only what differs from the Debian kernel runs here.
        tests: "doctor,inject-fmod-ret-auto,engines-refused",
        engines: "kprobe:bpf_override_return,fmod-ret:ok,lsm:active,cgroup-sock:ok,signal:ok,ptrace:ok,stop:ok",
        common_tests: false,
        cmdline: "lsm=lockdown,capability,yama",
    },
    Kernel {
        name: "override",
        file: "override-6.12.117.bzImage",
        cached: "override.bzImage",
        source: kernels::Source::OverrideBuild,
        arch: Arch::X86_64,
        tests: "inject-kprobe,inject-fmod-ret,inject-lsm,inject-cgroup-sock,inject-signal,inject-stop",
        engines: "kprobe:ok,fmod-ret:ok,lsm:ok,cgroup-sock:ok,signal:ok,ptrace:ok,stop:ok",
        common_tests: true,
        cmdline: "",
    },
    Kernel {
        name: "bookworm",
        file: "debian-6.1.vmlinuz",
        cached: "bookworm.vmlinuz",
        source: kernels::Source::DebianImage("bookworm"),
        arch: Arch::X86_64,
        tests: "inject-fmod-ret,inject-lsm,inject-cgroup-sock,inject-signal,inject-stop,inject-refused",
        engines: "kprobe:bpf_override_return,fmod-ret:ok,lsm:ok,cgroup-sock:ok,signal:ok,ptrace:ok,stop:ok",
        common_tests: true,
        cmdline: "",
    },
    Kernel {
        name: "bullseye",
        file: "debian-5.10.vmlinuz",
        cached: "bullseye.vmlinuz",
        source: kernels::Source::DebianImage("bullseye"),
        arch: Arch::X86_64,
        // No BPF atomics: only the ptrace engine injects.
        tests: "",
        // fmod_ret itself works on 5.10, but takes its decisions from the injecting entry program.
        engines: "kprobe:5.12,fmod-ret:5.12,lsm:5.12,cgroup-sock:5.12,signal:5.12,ptrace:ok,stop:5.12",
        common_tests: true,
        cmdline: "",
    },
    Kernel {
        name: "bookworm-arm64",
        file: "debian-6.1-arm64.vmlinuz",
        cached: "bookworm-arm64.vmlinuz",
        source: kernels::Source::DebianImage("bookworm"),
        arch: Arch::Aarch64,
        // No BPF trampolines on kernel functions (fentry, fmod_ret, LSM attach: ENOTSUPP), no
        // bpf_override_return. The tracer engines' registers differ from x86_64's (and the
        // kernel rewinds a restartable call before the stop engine's stop): their delays and
        // blocking calls are tested here, on x86_64 in the Docker tests.
        tests: "inject-cgroup-sock,inject-signal,inject-stop,inject-ptrace-delay,inject-stop-blocking",
        engines: "kprobe:bpf_override_return,fmod-ret:trampolines,lsm:trampolines,cgroup-sock:ok,signal:ok,ptrace:ok,stop:ok",
        common_tests: true,
        cmdline: "",
    },
];

pub fn run(args: VmTestArgs) -> anyhow::Result<()> {
    let kernels: Vec<&Kernel> = KERNELS
        .iter()
        .filter(|k| args.kernel == KernelChoice::All || k.name == kernel_name(args.kernel))
        .collect();
    // The kernels first: fetching them (first run only) fails fast where builds take minutes.
    let paths = kernels::paths(&kernels)?;
    let mut initrds: Vec<(Arch, PathBuf)> = Vec::new();
    for kernel in &kernels {
        if !initrds.iter().any(|(arch, _)| *arch == kernel.arch) {
            initrds.push((kernel.arch, build_initramfs(kernel.arch, &[])?));
        }
    }

    let mut results = Vec::new();
    for (kernel, path) in kernels.into_iter().zip(paths) {
        let tests = match &args.tests {
            Some(tests) => tests.clone(),
            None => [COMMON_TESTS, kernel.tests]
                .into_iter()
                .skip(usize::from(!kernel.common_tests))
                .filter(|list| !list.is_empty())
                .collect::<Vec<_>>()
                .join(","),
        };
        let initrd = initrds.iter().find(|(arch, _)| *arch == kernel.arch);
        let boot = Boot {
            name: kernel.name,
            arch: kernel.arch,
            kernel: path,
            initrd: initrd.map(|(_, path)| path.clone()).unwrap_or_default(),
            tests,
            timeout: args.timeout,
            params: kernel_params(kernel, args.rust_log.as_deref()),
        };
        let mut result = boot.run();
        // Under TCG, Debian's kernel now and then oopses on an int3 while it patches its own
        // text on two CPUs (static keys: at boot, or when a program attaches to the syscall
        // tracepoints), in about one boot of five: QEMU's cross-modifying code, not ours. A
        // kernel that never reached our init ran none of our code either. Boot such a kernel
        // once more; a second failure stands.
        let retry = match (&result.text_patch_oops, result.boot_time) {
            (Some(oops), _) if result.failed > 0 => Some(oops.clone()),
            (_, None) if result.failed > 0 => Some(format!(
                "the kernel never reached our init: {}",
                result.problem.as_deref().unwrap_or("no reason given")
            )),
            _ => None,
        };
        if let Some(reason) = retry {
            eprintln!("vm-test {}: {reason}; booting it once more", kernel.name);
            result = boot.run();
        }
        results.push(result);
    }
    report(&results)
}

/// The init's parameters for `kernel` beyond its tests.
fn kernel_params(kernel: &Kernel, rust_log: Option<&str>) -> Vec<String> {
    let mut params = vec![format!("syschaos.engines={}", kernel.engines)];
    params.extend(kernel.cmdline.split_whitespace().map(str::to_owned));
    if let Some(level) = rust_log {
        params.push(format!("syschaos.rust_log={level}"));
    }
    params
}

fn kernel_name(choice: KernelChoice) -> &'static str {
    match choice {
        KernelChoice::Debian => "debian",
        KernelChoice::DebianNoBpfLsm => "debian-no-bpf-lsm",
        KernelChoice::Override => "override",
        KernelChoice::Bookworm => "bookworm",
        KernelChoice::Bullseye => "bullseye",
        KernelChoice::BookwormArm64 => "bookworm-arm64",
        KernelChoice::All => "all",
    }
}

/// Builds the static binaries of `arch` and writes target/vm/<musl target>.cpio, with `extra`
/// host files (and the shared libraries they load) at their own paths.
fn build_initramfs(arch: Arch, extra: &[&Path]) -> anyhow::Result<PathBuf> {
    let (chaos_user, workload) = build::static_binaries(arch)?;
    let init = build::release("tests", Some(arch.musl()))?.join("chaos-vm-init");
    let dir = build::workspace_root().join("target").join("vm");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.cpio", arch.musl()));
    let mut host_files = Vec::new();
    for file in extra {
        host_files.push(file.to_path_buf());
        host_files.extend(shared_libraries(file)?);
    }
    write_initramfs(&path, &init, &chaos_user, &workload, &host_files)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What `ldd` says `binary` loads, the dynamic loader included.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("ldd {}", binary.display()))?;
    anyhow::ensure!(output.status.success(), "ldd {} failed", binary.display());
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

fn write_initramfs(
    path: &Path,
    init: &Path,
    chaos_user: &Path,
    workload: &Path,
    host_files: &[PathBuf],
) -> anyhow::Result<()> {
    let mut cpio = Cpio::new(BufWriter::new(File::create(path)?));
    // Mount points of the init; sysfs provides the ones below /sys itself.
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        cpio.dir(dir, 0o755)?;
    }
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    for (name, source) in [
        ("init", init),
        ("bin/chaos-user", chaos_user),
        ("bin/chaos-workload", workload),
    ] {
        cpio.file(name, 0o755, source)
            .with_context(|| format!("adding {}", source.display()))?;
    }
    let mut dirs_made = vec![PathBuf::from("bin")];
    for file in host_files {
        let inside = file.strip_prefix("/").unwrap_or(file);
        // Parents first, each once.
        let parents: Vec<&Path> = inside.ancestors().skip(1).collect();
        for dir in parents
            .into_iter()
            .rev()
            .filter(|d| !d.as_os_str().is_empty())
        {
            if !dirs_made.iter().any(|made| made == dir) {
                cpio.dir(&dir.to_string_lossy(), 0o755)?;
                dirs_made.push(dir.to_path_buf());
            }
        }
        cpio.file(&inside.to_string_lossy(), 0o755, file)
            .with_context(|| format!("adding {}", file.display()))?;
    }
    cpio.finish()?;
    Ok(())
}

/// Boots `kernel` ("debian" or "override") to run one in-VM benchmark, with `host_files` (and
/// their libraries) in the initramfs; returns its `vm-bench ...` lines once it has passed.
pub fn run_bench(
    kernel: &str,
    test: &str,
    host_files: &[&Path],
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let kernel = KERNELS
        .iter()
        .find(|k| k.name == kernel)
        .with_context(|| format!("no kernel named {kernel}"))?;
    let path = kernels::paths(&[kernel])?.into_iter().next();
    let boot = Boot {
        name: kernel.name,
        arch: kernel.arch,
        kernel: path.context("no path for the kernel")?,
        initrd: build_initramfs(kernel.arch, host_files)?,
        tests: test.to_owned(),
        timeout,
        params: Vec::new(),
    };
    let started = Instant::now();
    let serial = boot.watch(started)?;
    let lines = serial.bench_lines.clone();
    let mut result = BootResult::new(kernel.name);
    serial.judge(test, &mut result);
    if let Some(problem) = result.problem {
        bail!("{test} on the {} kernel: {problem}", kernel.name);
    }
    anyhow::ensure!(
        result.failed == 0 && result.passed == 1,
        "{test} on the {} kernel failed (its reason is above)",
        kernel.name
    );
    Ok(lines)
}

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
struct Boot {
    name: &'static str,
    arch: Arch,
    kernel: PathBuf,
    initrd: PathBuf,
    tests: String,
    timeout: Duration,
    /// More `syschaos.*=` parameters for the init.
    params: Vec<String>,
}

/// What one boot gave.
struct BootResult {
    name: &'static str,
    passed: u32,
    failed: u32,
    /// Why the kernel failed beyond failed tests: no summary, timeout, QEMU error.
    problem: Option<String>,
    boot_time: Option<Duration>,
    total_time: Duration,
    /// The kernel's own oops on an int3 in its text (see `run`).
    text_patch_oops: Option<String>,
}

impl BootResult {
    /// Nothing run yet.
    fn new(name: &'static str) -> Self {
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
    fn run(&self) -> BootResult {
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
    fn watch(&self, started: Instant) -> anyhow::Result<Serial> {
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
struct Serial {
    boot_time: Option<Duration>,
    /// Per-test lines seen, in case the summary never comes.
    ok_lines: u32,
    failed_lines: u32,
    summary: Option<(u32, u32)>,
    /// A timeout or QEMU's failure.
    qemu_problem: Option<String>,
    /// `vm-bench ...` lines of an in-VM benchmark.
    bench_lines: Vec<String>,
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

    fn judge(self, tests: &str, result: &mut BootResult) {
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

/// One line per kernel, then the total; fails if any kernel did.
fn report(results: &[BootResult]) -> anyhow::Result<()> {
    println!();
    for r in results {
        let status = match (&r.problem, r.failed) {
            (Some(problem), _) => format!("FAILED ({problem})"),
            (None, 0) => "ok".to_owned(),
            (None, _) => "FAILED".to_owned(),
        };
        let boot = r
            .boot_time
            .map_or("-".to_owned(), |t| format!("{:.1}s", t.as_secs_f64()));
        println!(
            "vm-test {}: {status}: {} passed, {} failed (boot {boot}, total {:.1}s)",
            r.name,
            r.passed,
            r.failed,
            r.total_time.as_secs_f64()
        );
    }
    let passed: u32 = results.iter().map(|r| r.passed).sum();
    let failed: u32 = results.iter().map(|r| r.failed).sum();
    println!("vm-test: {passed} passed, {failed} failed");
    let failed_kernels: Vec<&str> = results
        .iter()
        .filter(|r| r.problem.is_some() || r.failed > 0)
        .map(|r| r.name)
        .collect();
    if !failed_kernels.is_empty() {
        bail!("vm-test failed on: {}", failed_kernels.join(", "));
    }
    Ok(())
}

/// "120s", "3m" or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    number
        .parse::<u64>()
        .map(|n| Duration::from_secs(n * unit))
        .map_err(|_| format!("not a duration: {text} (try 120s or 3m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_the_command_line() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: VmTestArgs,
        }
        let parsed = <Cli as clap::Parser>::parse_from(["vm-test"]).args;
        let default = VmTestArgs::default();
        assert_eq!(parsed.kernel, default.kernel);
        assert_eq!(parsed.tests, default.tests);
        assert_eq!(parsed.timeout, default.timeout);
    }

    #[test]
    fn every_kernel_names_every_engine_once_and_each_test_once() {
        for kernel in &KERNELS {
            let engines: Vec<&str> = kernel
                .engines
                .split(',')
                .map(|item| item.split_once(':').map_or(item, |(engine, _)| engine))
                .collect();
            // doctor's order (chaos-user's ALL_ENGINES), which the `doctor` test compares.
            assert_eq!(
                engines,
                [
                    "kprobe",
                    "fmod-ret",
                    "lsm",
                    "cgroup-sock",
                    "signal",
                    "ptrace",
                    "stop"
                ],
                "{}",
                kernel.name
            );
            assert!(!kernel.engines.contains(' '), "{}", kernel.name);
            let tests: Vec<&str> = [COMMON_TESTS, kernel.tests]
                .iter()
                .skip(usize::from(!kernel.common_tests))
                .flat_map(|list| list.split(','))
                .filter(|test| !test.is_empty())
                .collect();
            let mut unique = tests.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), tests.len(), "{}: {tests:?}", kernel.name);
        }
    }

    #[test]
    fn escapes_removed() {
        let line = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r\n";
        assert_eq!(printable(line), "SeaBIOS (version 1.16)");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("soon").is_err());
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
