//! PID 1 of the `cargo xtask vm-test` initramfs (static, musl).
//!
//! Mounts the filesystems eBPF tools expect, prints what the kernel offers, runs the tests named
//! on the kernel command line (`syschaos.tests=monitor,...`; see `TESTS`: the monitor, and the
//! Perturbator's engines in `inject-*`), prints one `vm-test NAME ... ok` or
//! `vm-test NAME ... FAILED: reason` line per test, then exactly one summary line
//! `syschaos-vm: N passed, M failed`, and reboots (QEMU runs with -no-reboot, so it exits).
//! Whatever happens (a panic, a stuck test), the summary is printed and the machine reboots:
//! a watchdog thread (`syschaos.watchdog=SECONDS`) makes sure of it.
//!
//! `bench-kprobe` (bench.rs) is not a test but a benchmark run for `cargo xtask bench inject`;
//! it fails like one when what it times is not what it claims.
//!
//! This file: the mounts, the loopback interface, the test list, the watchdog and the summary.
//! The tests are in monitor.rs, observe.rs (trace, HTTP), names.rs (arm64's syscall names),
//! inject.rs (kprobe, fmod-ret, LSM; with inject/phase.rs), inject/engines.rs (doctor against
//! `syschaos.engines=`, the other engines, and the refusals of those the kernel lacks) and
//! inject/tracer.rs (the tracer engines' delays and blocking calls); what they share in helpers.rs
//! and json.rs.
mod bench;
mod helpers;
mod inject;
mod json;
mod monitor;
mod names;
mod observe;

use std::{
    ffi::CString,
    io::{self, Write as _},
    panic::{self, AssertUnwindSafe},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// A test returns why it failed.
type Test = fn() -> Result<(), String>;

const TESTS: &[(&str, Test)] = &[
    ("monitor", monitor::monitor),
    ("monitor-no-latency", monitor::monitor_no_latency),
    ("trace", observe::trace),
    ("http", observe::http),
    ("doctor", inject::engines::doctor),
    ("inject-kprobe", inject::inject_kprobe),
    ("inject-fmod-ret", inject::inject_fmod_ret),
    ("inject-fmod-ret-auto", inject::inject_fmod_ret_auto),
    ("inject-lsm", inject::inject_lsm),
    ("inject-cgroup-sock", inject::engines::inject_cgroup_sock),
    ("inject-signal", inject::engines::inject_signal),
    ("inject-ptrace", inject::engines::inject_ptrace),
    ("inject-stop", inject::engines::inject_stop),
    ("inject-ptrace-delay", inject::tracer::inject_ptrace_delay),
    ("inject-stop-blocking", inject::tracer::inject_stop_blocking),
    ("inject-refused", inject::inject_refused),
    ("engines-refused", inject::engines::engines_refused),
    ("arm64-names", names::arm64_names),
    ("bench-kprobe", bench::bench_kprobe),
];
const DEFAULT_TESTS: &str = "monitor";
/// The prefix of the syscalls' entry functions on this architecture.
pub const SYSCALL_PREFIX: &str = if cfg!(target_arch = "aarch64") {
    "__arm64_sys_"
} else {
    "__x64_sys_"
};
const DEFAULT_WATCHDOG: Duration = Duration::from_secs(100);

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
/// The test running now, for the watchdog's failure line; empty between tests.
static CURRENT: Mutex<String> = Mutex::new(String::new());
/// Tests not started yet: the watchdog reports them as not run, so none goes missing.
static PENDING: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn main() {
    let mount_errors = mount_all();
    ensure_console();
    println!("syschaos-vm: init started");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    start_watchdog(
        param(&cmdline, "syschaos.watchdog").map_or(DEFAULT_WATCHDOG, |s| {
            Duration::from_secs(s.parse().unwrap_or(DEFAULT_WATCHDOG.as_secs()))
        }),
    );
    if let Some(level) = param(&cmdline, "syschaos.rust_log") {
        // SAFETY: no other thread reads the environment yet (the watchdog does not).
        unsafe { std::env::set_var("RUST_LOG", level) };
        println!("syschaos-vm: chaos-user runs with RUST_LOG={level}");
    }
    let mut setup_errors = mount_errors;
    if let Err(e) = loopback_up() {
        setup_errors.push(format!("bringing up lo: {e}"));
    }
    if !setup_errors.is_empty() {
        record("setup", Err(setup_errors.join("; ")));
    }
    let outcome = panic::catch_unwind(|| {
        print_kernel_features();
        let names = param(&cmdline, "syschaos.tests").unwrap_or(DEFAULT_TESTS);
        *lock(&PENDING) = names
            .split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        while let Some(name) = next_pending() {
            run_test(&name);
        }
    });
    if outcome.is_err() {
        record("init", Err("init panicked outside a test".into()));
    }
    finish()
}

/// `KEY=VALUE` from the kernel command line, for the tests.
pub fn cmdline_param(key: &str) -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    param(&cmdline, key).map(str::to_owned)
}

/// `KEY=VALUE` from the kernel command line.
fn param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// Mounts everything; returns the failures (tests that need a missing mount fail on their own).
fn mount_all() -> Vec<String> {
    const MOUNTS: &[(&str, &str, &str)] = &[
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tracefs", "/sys/kernel/tracing", "tracefs"),
        ("debugfs", "/sys/kernel/debug", "debugfs"),
        ("securityfs", "/sys/kernel/security", "securityfs"),
        ("bpffs", "/sys/fs/bpf", "bpf"),
        // Pure cgroup v2, unlike most hosts (and unlike Docker's hybrid setups).
        ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
        ("tmpfs", "/tmp", "tmpfs"),
    ];
    let mut errors = Vec::new();
    for &(source, target, fstype) in MOUNTS {
        // The initramfs has the top-level directories; sysfs brings its own mount points.
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(source, target, fstype) {
            errors.push(format!("mount {fstype} on {target}: {e}"));
        }
    }
    errors
}

fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).expect("no NUL in a constant");
    let (source, target, fstype) = (c(source), c(target), c(fstype));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Brings the loopback interface up (it starts down; the kernel gives it 127.0.0.1 then): the
/// HTTP test and the workload's connects use it.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a socket for the ioctls, closed below; `ifreq` is plain data, zeroed, "lo" in it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[0] = b'l' as libc::c_char;
        request.ifr_name[1] = b'o' as libc::c_char;
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut request);
        if rc == 0 {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &request);
        }
        let error = io::Error::last_os_error();
        libc::close(fd);
        if rc == 0 { Ok(()) } else { Err(error) }
    }
}

/// The kernel opens /dev/console for init from the initramfs; if that failed, try again now
/// that devtmpfs is mounted, or nothing we print would reach the serial port.
fn ensure_console() {
    // SAFETY: F_GETFD on a descriptor number has no side effects.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0 {
        return;
    }
    // SAFETY: valid path; the descriptor is duplicated onto 0, 1 and 2.
    unsafe {
        let fd = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..=2 {
                libc::dup2(fd, target);
            }
        }
    }
}

fn print_kernel_features() {
    let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_owned());
    let release = read("/proc/sys/kernel/osrelease").unwrap_or_else(|e| format!("? ({e})"));
    println!("syschaos-vm: kernel {release}");
    match read("/sys/kernel/security/lsm") {
        Ok(lsm) => println!("syschaos-vm: active LSMs: {lsm}"),
        Err(e) => println!("syschaos-vm: active LSMs: cannot read /sys/kernel/security/lsm: {e}"),
    }
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    println!("syschaos-vm: BTF: {}", yes_no(btf));
    // Functions bpf_override_return may target (needs CONFIG_FUNCTION_ERROR_INJECTION).
    // __x64_sys_getppid is an alias of __do_sys_getppid, and the list may show either name.
    match read("/sys/kernel/debug/error_injection/list") {
        Ok(list) => {
            let entry = format!("{SYSCALL_PREFIX}getppid");
            let getppid = list
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .find(|name| *name == entry || *name == "__do_sys_getppid");
            println!(
                "syschaos-vm: error_injection/list: {} functions, getppid: {}",
                list.lines().count(),
                getppid.map_or("no".to_owned(), |name| format!("yes ({name})"))
            );
        }
        Err(e) => println!("syschaos-vm: error_injection/list: {e}"),
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// A poisoned lock only means a panicking test: the data is still good.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn next_pending() -> Option<String> {
    let mut pending = lock(&PENDING);
    (!pending.is_empty()).then(|| pending.remove(0))
}

fn run_test(name: &str) {
    let Some(&(_, test)) = TESTS.iter().find(|(known, _)| *known == name) else {
        let known: Vec<&str> = TESTS.iter().map(|(n, _)| *n).collect();
        record(
            name,
            Err(format!("unknown test (known: {})", known.join(", "))),
        );
        return;
    };
    *lock(&CURRENT) = name.to_owned();
    println!("vm-test {name}: running");
    let started = Instant::now();
    let result = panic::catch_unwind(AssertUnwindSafe(test))
        .unwrap_or_else(|_| Err("panicked (message above)".into()));
    let mut current = lock(&CURRENT);
    // Otherwise the watchdog has failed this test already and is rebooting.
    if *current == name {
        current.clear();
        println!(
            "vm-test {name}: finished in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        record(name, result);
    }
}

fn record(name: &str, result: Result<(), String>) {
    match result {
        Ok(()) => {
            PASSED.fetch_add(1, Ordering::SeqCst);
            println!("vm-test {name} ... ok");
        }
        Err(reason) => {
            FAILED.fetch_add(1, Ordering::SeqCst);
            println!("vm-test {name} ... FAILED: {reason}");
        }
    }
}

/// Fails the running test, and every test not started yet, and ends the run if the tests have
/// not finished by then.
fn start_watchdog(after: Duration) {
    thread::spawn(move || {
        thread::sleep(after);
        // Held until the reboot: the test's own result, if it comes now, is not recorded.
        let mut current = lock(&CURRENT);
        let pending: Vec<String> = lock(&PENDING).drain(..).collect();
        let why = format!("watchdog: no result after {}s", after.as_secs());
        if !current.is_empty() {
            record(&current, Err(why));
            current.clear();
        } else if pending.is_empty() {
            record("init", Err(why));
        }
        for name in pending {
            record(&name, Err("not run: the watchdog ended the run".into()));
        }
        finish()
    });
}

/// Prints the summary once and reboots. PID 1 must never exit: the kernel would panic.
fn finish() -> ! {
    static FINISHED: AtomicBool = AtomicBool::new(false);
    if FINISHED.swap(true, Ordering::SeqCst) {
        // The other thread (main or the watchdog) is already rebooting.
        loop {
            thread::park();
        }
    }
    let (passed, failed) = (PASSED.load(Ordering::SeqCst), FAILED.load(Ordering::SeqCst));
    println!("syschaos-vm: {passed} passed, {failed} failed");
    let _ = io::stdout().flush();
    // SAFETY: plain system calls; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    println!("syschaos-vm: reboot failed: {}", io::Error::last_os_error());
    // Exiting makes the kernel panic, and panic=-1 reboots.
    std::process::exit(1)
}
