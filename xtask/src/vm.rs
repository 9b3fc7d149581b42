//! `cargo xtask vm-test`: boot the test kernels under QEMU with an initramfs of our static binaries.
//!
//! The initramfs holds `/init` (tests/src/bin/chaos-vm-init/), `/bin/chaos-user` and
//! `/bin/chaos-workload`. The init runs the tests named by `syschaos.tests=` on the kernel
//! command line and ends with one summary line, `syschaos-vm: N passed, M failed`, then reboots,
//! which makes QEMU (-no-reboot) exit. We read that line from the serial console.
mod boot;
mod initramfs;
mod kernels;

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use crate::build::{self, Arch};
use boot::{Boot, BootResult};
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
    /// Debian trixie's 6.12 for arm64: BPF trampolines (ftrace direct calls, 6.5+).
    TrixieArm64,
    /// 6.12 for arm64 built with bpf_override_return (cross-compiled on first use, about 5
    /// minutes on 2 cores): not in `all`, which CI runs.
    OverrideArm64,
    /// Every kernel but override-arm64.
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
    /// Whether `--kernel all` (the default, which CI runs) boots it.
    in_all: bool,
}

/// What every kernel runs: the monitor, trace, HTTP counting, doctor, the engines that work
/// everywhere (ptrace), and the refusal of those that do not work there.
const COMMON_TESTS: &str =
    "monitor,monitor-no-latency,trace,http,doctor,inject-ptrace,engines-refused";

const KERNELS: [Kernel; 8] = [
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
        in_all: true,
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
        in_all: true,
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
        in_all: true,
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
        in_all: true,
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
        in_all: true,
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
        tests: "inject-cgroup-sock,inject-signal,inject-stop,inject-ptrace-delay,inject-stop-blocking,arm64-names",
        engines: "kprobe:bpf_override_return,fmod-ret:trampolines,lsm:trampolines,cgroup-sock:ok,signal:ok,ptrace:ok,stop:ok",
        common_tests: true,
        cmdline: "",
        in_all: true,
    },
    Kernel {
        name: "trixie-arm64",
        file: "debian-6.12-arm64.vmlinuz",
        cached: "trixie-arm64.vmlinuz",
        source: kernels::Source::DebianImage("trixie"),
        arch: Arch::Aarch64,
        // What 6.1 lacks on arm64 (trampolines on kernel functions, so fmod_ret and LSM
        // attach); still no error-injection list, so fmod-ret covers the LSM table's syscalls.
        // Every other engine doctor finds working here runs once too (their delays and
        // blocking calls on bookworm-arm64 only).
        tests: "doctor,inject-fmod-ret,inject-lsm,inject-cgroup-sock,inject-signal,inject-ptrace,inject-stop,engines-refused",
        engines: "kprobe:bpf_override_return,fmod-ret:ok,lsm:ok,cgroup-sock:ok,signal:ok,ptrace:ok,stop:ok",
        common_tests: false,
        cmdline: "",
        in_all: true,
    },
    Kernel {
        name: "override-arm64",
        file: "override-arm64-6.12.117.Image",
        cached: "override-arm64.Image",
        source: kernels::Source::OverrideBuild,
        arch: Arch::Aarch64,
        // The kprobe engine on arm64 (`__arm64_sys_*`), which no Debian arm64 kernel allows, and
        // fmod-ret on any syscall (the error-injection list). Building it would take CI to about
        // 30 minutes: run it with `--kernel override-arm64`.
        tests: "doctor,inject-kprobe,inject-fmod-ret,inject-lsm,engines-refused",
        engines: "kprobe:ok,fmod-ret:ok,lsm:ok,cgroup-sock:ok,signal:ok,ptrace:ok,stop:ok",
        common_tests: false,
        cmdline: "",
        in_all: false,
    },
];

pub fn run(args: VmTestArgs) -> anyhow::Result<()> {
    let kernels: Vec<&Kernel> = KERNELS
        .iter()
        .filter(|k| match args.kernel {
            KernelChoice::All => k.in_all,
            choice => k.name == kernel_name(choice),
        })
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
        KernelChoice::TrixieArm64 => "trixie-arm64",
        KernelChoice::OverrideArm64 => "override-arm64",
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
    fn durations() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("soon").is_err());
    }
}
