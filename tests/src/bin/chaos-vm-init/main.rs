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
mod bench;

use std::{
    ffi::CString,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// A test returns why it failed.
type Test = fn() -> Result<(), String>;

const TESTS: &[(&str, Test)] = &[
    ("monitor", monitor),
    ("inject-kprobe", inject_kprobe),
    ("inject-lsm", inject_lsm),
    ("inject-refused", inject_refused),
    ("bench-kprobe", bench::bench_kprobe),
];
const DEFAULT_TESTS: &str = "monitor";
const DEFAULT_WATCHDOG: Duration = Duration::from_secs(100);

const CHAOS_USER: &str = "/bin/chaos-user";
const WORKLOAD: &str = "/bin/chaos-workload";

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
    if !mount_errors.is_empty() {
        record("setup", Err(mount_errors.join("; ")));
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
            let getppid = list
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .find(|name| matches!(*name, "__x64_sys_getppid" | "__do_sys_getppid"));
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

// ---------------------------------------------------------------------------------------------
// monitor: counting a cgroup's system calls on a pure cgroup v2 host.

fn monitor() -> Result<(), String> {
    let cgroup = Path::new("/sys/fs/cgroup/t1");
    match std::fs::create_dir(cgroup) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(format!("mkdir {}: {e}", cgroup.display()));
        }
        _ => {}
    }
    let mut chaos_user = ChaosUser::start(&[
        "attach",
        "--cgroup",
        "/sys/fs/cgroup/t1",
        "--json",
        "--interval",
        "1s",
        "--no-metrics",
        "--duration",
        "8s",
    ])?;
    // TCG is slow and the verifier runs in it.
    chaos_user.wait_attached(Duration::from_secs(60))?;
    // The baseline of the first JSON interval is read just after "attached" is printed: calls
    // made before it would be in calls_total but in no interval's errnos.
    thread::sleep(Duration::from_secs(2));

    let inside = spawn_in_cgroup(
        workload(&["calls", "--getppid", "1000", "--open-missing", "50"]),
        cgroup,
    )
    .map_err(|e| format!("starting the workload in {}: {e}", cgroup.display()))?;
    let outside = workload(&["calls", "--getppid", "500"])
        .spawn()
        .map_err(|e| format!("starting the workload outside the cgroup: {e}"))?;
    expect_success(inside, "workload in t1")?;
    expect_success(outside, "workload outside t1")?;

    let output = chaos_user.finish(Duration::from_secs(60))?;
    check_monitor_output(&output, "/sys/fs/cgroup/t1")
}

fn workload(args: &[&str]) -> Command {
    let mut command = Command::new(WORKLOAD);
    command.args(args);
    command
}

/// Spawns `command` already inside `cgroup`, so that every call it makes is counted.
fn spawn_in_cgroup(mut command: Command, cgroup: &Path) -> io::Result<Child> {
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

fn expect_success(mut child: Child, what: &str) -> Result<(), String> {
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
struct ChaosUser {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    attached: mpsc::Receiver<()>,
    stdout: Option<thread::JoinHandle<Vec<String>>>,
    /// Joined by `finish`, so the lines printed at exit are all in `stderr`.
    stderr_reader: Option<thread::JoinHandle<()>>,
}

struct ChaosUserOutput {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
}

impl ChaosUser {
    fn start(args: &[&str]) -> Result<Self, String> {
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
    fn interrupt(&self) -> Result<(), String> {
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

    fn wait_attached(&mut self, timeout: Duration) -> Result<(), String> {
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

    fn finish(mut self, timeout: Duration) -> Result<ChaosUserOutput, String> {
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

/// Checks the JSON snapshots: exact getppid count (the workload outside the cgroup is not
/// counted), and the 50 failed openat calls with ENOENT.
fn check_monitor_output(output: &ChaosUserOutput, label: &str) -> Result<(), String> {
    if !output.status.success() {
        return Err(format!(
            "chaos-user exited with {}; stderr:\n{}",
            output.status, output.stderr
        ));
    }
    let reports = output
        .stdout
        .iter()
        .map(|line| json::parse(line).map_err(|e| format!("bad JSON line ({e}): {line}")))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(last) = reports.last() else {
        return Err(format!(
            "no JSON snapshot on stdout; stderr:\n{}",
            output.stderr
        ));
    };
    let calls_total =
        |name| syscall(last, label, name).and_then(|s| s.get("calls_total")?.as_u64());
    let getppid = calls_total("getppid").unwrap_or(0);
    if getppid != 1000 {
        return Err(format!(
            "getppid calls_total is {getppid}, expected 1000 (1500 would mean the workload \
             outside the cgroup was counted); last snapshot: {}",
            output.stdout.last().map_or("", String::as_str)
        ));
    }
    let openat = calls_total("openat").unwrap_or(0);
    if openat < 50 {
        return Err(format!(
            "openat calls_total is {openat}, expected at least 50"
        ));
    }
    // errnos are per interval: add them up.
    let enoent: u64 = reports
        .iter()
        .filter_map(|report| {
            syscall(report, label, "openat")?
                .get("errnos")?
                .get("ENOENT")?
                .as_u64()
        })
        .sum();
    if enoent != 50 {
        return Err(format!(
            "openat ENOENT failures add up to {enoent} over {} snapshots, expected 50",
            reports.len()
        ));
    }
    Ok(())
}

/// The entry of `syscall` for the target labelled `label` in one JSON snapshot.
fn syscall<'a>(report: &'a json::Value, label: &str, syscall: &str) -> Option<&'a json::Value> {
    let target = report
        .get("targets")?
        .as_array()
        .iter()
        .find(|t| t.get("target").and_then(json::Value::as_str) == Some(label))?;
    target
        .get("syscalls")?
        .as_array()
        .iter()
        .find(|s| s.get("syscall").and_then(json::Value::as_str) == Some(syscall))
}

// ---------------------------------------------------------------------------------------------
// inject-*: the Perturbator, checked against what the victims saw.
//
// Each test injects into a fresh cgroup of its own, where chaos-workload makes a known set of
// calls; at the same time a neighbour workload in another cgroup makes the same calls and must see
// no failure. The target's failures must be exactly the ones the rules ask for, chaos-user's own
// injection counts must equal them, and once chaos-user has exited, a further round in the same
// cgroup must see no failure at all.

/// The file the workload's `open-missing` calls open (its `--path`). It exists, so an openat that
/// is not injected succeeds and every failure in the report is an injected one: `failed_at` is
/// then exactly the injected call numbers.
const OPEN_PATH: &str = "/tmp/syschaos-open/file";
/// Rules on openat carry `path-prefix=OPEN_PREFIX`, so they match the counted opens above and not
/// the workload's other openat, the one creating its data file under DATA_DIR. That open comes
/// after the 10 counted ones, so count=3 or nth=4 would not reach it anyway, but any rule still
/// live then would fail it, and with it every read, write and fsync of the round. The neighbour
/// opens the same path: there the prefix matches too and only the cgroup must keep it safe.
const OPEN_PREFIX: &str = "/tmp/syschaos-open/";
/// The workloads' data files (for read, write and fsync), one per workload.
const DATA_DIR: &str = "/tmp/syschaos-data";
const NEIGHBOUR: &str = "/sys/fs/cgroup/neighbour";

/// Calls of each kind per round: TCG is slow, and 10 is enough for count=3 and nth=4.
const CALLS: u64 = 10;
/// getppid calls for the probability check, and the range that passes: 0.5 * 1000 plus or minus
/// 6 standard deviations (sqrt(1000 * 0.5 * 0.5) = 15.8), so a correct engine fails it about once
/// in 500 million runs.
const PROBABILITY_CALLS: u64 = 1000;
const PROBABILITY_RANGE: (u64, u64) = (405, 595);

/// A kind of call the rules of a phase make fail.
#[derive(Clone, Copy)]
struct Fault {
    syscall: &'static str,
    /// The workload's name for those calls (its `--KIND N` option and report key).
    kind: &'static str,
    errno: i32,
    errno_name: &'static str,
}

const fn fault(syscall: &'static str, errno: i32, errno_name: &'static str) -> Fault {
    let kind = match syscall.as_bytes() {
        b"openat" => "open-missing",
        _ => syscall,
    };
    Fault {
        syscall,
        kind,
        errno,
        errno_name,
    }
}

/// Which of the target's calls must fail.
enum Expect {
    /// Exactly these call numbers (1-based), with the fault's errno.
    At(&'static [u64]),
    /// Between so many failures (inclusive), with the fault's errno.
    Between(u64, u64),
}

/// One chaos-user run with its rules, and the workload round it perturbs.
struct Phase {
    /// For messages, e.g. "count=3".
    name: String,
    chaos_args: Vec<String>,
    faults: Vec<Fault>,
    /// Calls of each kind the workloads make.
    calls: u64,
    expect: Expect,
}

impl Phase {
    /// One `--rule SYSCALL=ERRNO,LIMIT` per fault (openat's with the path prefix), engine auto.
    fn rules(faults: &[Fault], limit: &str, expect: Expect) -> Self {
        let chaos_args = faults
            .iter()
            .flat_map(|f| {
                let mut rule = format!("{}={},{limit}", f.syscall, f.errno_name);
                if f.syscall == "openat" {
                    rule.push_str(&format!(",path-prefix={OPEN_PREFIX}"));
                }
                ["--rule".to_owned(), rule]
            })
            .collect();
        Self {
            name: limit.to_owned(),
            chaos_args,
            faults: faults.to_vec(),
            calls: CALLS,
            expect,
        }
    }

    /// `--syscall getppid --errno EPERM --probability 0.5 --engine auto` over 1000 calls.
    fn probability() -> Self {
        let getppid = fault("getppid", libc::EPERM, "EPERM");
        let args = [
            "--syscall",
            getppid.syscall,
            "--errno",
            getppid.errno_name,
            "--probability",
            "0.5",
            "--engine",
            "auto",
        ];
        Self {
            name: "probability=0.5".to_owned(),
            chaos_args: args.map(str::to_owned).to_vec(),
            faults: vec![getppid],
            calls: PROBABILITY_CALLS,
            expect: Expect::Between(PROBABILITY_RANGE.0, PROBABILITY_RANGE.1),
        }
    }
}

fn inject_kprobe() -> Result<(), String> {
    let target = prepare_inject("inject-kprobe")?;
    let faults = [
        fault("openat", libc::EACCES, "EACCES"),
        fault("read", libc::EIO, "EIO"),
        fault("write", libc::ENOSPC, "ENOSPC"),
        fault("getppid", libc::EPERM, "EPERM"),
        fault("fsync", libc::EIO, "EIO"),
    ];
    all_of([
        check_doctor(&[("kprobe", Ok(())), ("lsm", Ok(()))]),
        run_phase(
            &target,
            &Phase::rules(&faults, "count=3", Expect::At(&[1, 2, 3])),
            "kprobe",
        ),
        run_phase(
            &target,
            &Phase::rules(&faults, "nth=4", Expect::At(&[4])),
            "kprobe",
        ),
        run_phase(&target, &Phase::probability(), "kprobe"),
    ])
}

fn inject_lsm() -> Result<(), String> {
    let target = prepare_inject("inject-lsm")?;
    // fsync and getppid pass through no LSM hook: inject-refused checks that they are refused.
    let faults = [
        fault("openat", libc::EACCES, "EACCES"),
        fault("read", libc::EIO, "EIO"),
        fault("write", libc::EIO, "EIO"),
    ];
    all_of([
        check_doctor(&[("kprobe", Err("bpf_override_return")), ("lsm", Ok(()))]),
        run_phase(
            &target,
            &Phase::rules(&faults, "count=3", Expect::At(&[1, 2, 3])),
            "lsm",
        ),
        run_phase(
            &target,
            &Phase::rules(&faults, "nth=4", Expect::At(&[4])),
            "lsm",
        ),
    ])
}

/// On a kernel without bpf_override_return: rules the chosen in-kernel engine cannot carry out
/// are refused up front (with `auto`, fsync would go to the ptrace engine).
fn inject_refused() -> Result<(), String> {
    let target = prepare_inject("inject-refused")?;
    // A refused rule must leave nothing behind either.
    let faults = [
        fault("fsync", libc::EIO, "EIO"),
        fault("getppid", libc::EPERM, "EPERM"),
    ];
    all_of([
        expect_refusal(
            &target,
            &["--engine", "lsm", "--syscall", "fsync", "--errno", "EIO"],
            &["no engine can inject fsync", "lsm: covers only"],
        ),
        expect_refusal(
            &target,
            &[
                "--engine",
                "kprobe",
                "--syscall",
                "getppid",
                "--errno",
                "EPERM",
            ],
            &["bpf_override_return"],
        ),
        after_round(&target, &faults),
    ])
}

/// The checks of a test are independent (each phase runs its own chaos-user): all of them run,
/// and the test reports every failure, not just the first.
fn all_of<const N: usize>(results: [Result<(), String>; N]) -> Result<(), String> {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n  and: "))
    }
}

/// Creates the test's own cgroup, the neighbour's, and the files the workloads open.
fn prepare_inject(name: &str) -> Result<PathBuf, String> {
    let target = Path::new("/sys/fs/cgroup").join(name);
    for dir in [target.as_path(), Path::new(NEIGHBOUR), Path::new(DATA_DIR)] {
        create_dir(dir)?;
    }
    create_dir(Path::new(OPEN_PREFIX))?;
    std::fs::write(OPEN_PATH, "syschaos").map_err(|e| format!("writing {OPEN_PATH}: {e}"))?;
    Ok(target)
}

fn create_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(format!("mkdir {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// `chaos-user doctor --json`: each engine works (Ok) or not, with a reason containing the text.
fn check_doctor(expected: &[(&str, Result<(), &str>)]) -> Result<(), String> {
    let output = ChaosUser::start(&["doctor", "--json"])?.finish(Duration::from_secs(60))?;
    let text = output.stdout.join("\n");
    if !output.status.success() {
        return Err(format!(
            "doctor exited with {}; stdout:\n{text}\nstderr:\n{}",
            output.status, output.stderr
        ));
    }
    let report = json::parse(&text).map_err(|e| format!("doctor: bad JSON ({e}):\n{text}"))?;
    let engines = report.get("engines").map_or(&[][..], json::Value::as_array);
    for (name, expect) in expected {
        let engine = engines
            .iter()
            .find(|e| e.get("engine").and_then(json::Value::as_str) == Some(name))
            .ok_or_else(|| format!("doctor reports no engine {name}:\n{text}"))?;
        let works = engine.get("works") == Some(&json::Value::Bool(true));
        let reason = engine.get("reason").and_then(json::Value::as_str);
        println!(
            "  doctor: {name}: {}",
            reason.map_or("works".to_owned(), |r| format!("unavailable: {r}"))
        );
        match expect {
            Ok(()) if !works => {
                return Err(format!(
                    "doctor: engine {name} should work here: {}",
                    reason.unwrap_or("(no reason given)")
                ));
            }
            Err(needle) if works || !reason.is_some_and(|r| r.contains(needle)) => {
                return Err(format!(
                    "doctor: engine {name} should be unavailable with a reason mentioning \
                     {needle}; works: {works}, reason: {reason:?}"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs chaos-user with the phase's rules on `target` while the target and neighbour workloads
/// make their calls, then checks what everyone saw, and that nothing outlives chaos-user.
fn run_phase(target: &Path, phase: &Phase, engine: &str) -> Result<(), String> {
    println!(
        "  phase {}: {} rule(s) via {engine}",
        phase.name,
        phase.faults.len()
    );
    let label = target.to_str().ok_or("cgroup path is not UTF-8")?;
    let mut args = vec![
        "inject",
        "--cgroup",
        label,
        "--json",
        "--interval",
        "1s",
        "--no-metrics",
        // Only a safety net: the rules expire in the kernel then, even if the SIGINT is lost.
        "--duration",
        "60s",
    ];
    args.extend(phase.chaos_args.iter().map(String::as_str));
    let in_phase = |e: String| format!("{}: {e}", phase.name);
    let mut chaos_user = ChaosUser::start(&args).map_err(in_phase)?;
    chaos_user
        .wait_attached(Duration::from_secs(60))
        .map_err(in_phase)?;
    let inside = Workload::start(&workload_args(&phase.faults, phase.calls, "target"), target);
    let outside = Workload::start(
        &workload_args(&phase.faults, phase.calls, "neighbour"),
        Path::new(NEIGHBOUR),
    );
    let (inside, outside) = (inside?.report(), outside?.report());
    // Let one more JSON snapshot (1s interval) see the last injection.
    thread::sleep(Duration::from_millis(1500));
    chaos_user.interrupt()?;
    let output = chaos_user
        .finish(Duration::from_secs(60))
        .map_err(in_phase)?;
    if !output.status.success() {
        return Err(in_phase(format!(
            "chaos-user exited with {}; stderr:\n{}",
            output.status, output.stderr
        )));
    }
    let (inside, outside) = (inside.map_err(in_phase)?, outside.map_err(in_phase)?);
    for fault in &phase.faults {
        if let Ok(outcome) = Outcome::of(&inside, fault.kind) {
            println!("    target {}: {outcome}", fault.kind);
        }
    }
    check_engines(&output, &phase.faults, engine).map_err(in_phase)?;
    for fault in &phase.faults {
        let failed = check_target(&inside, fault, phase).map_err(in_phase)?;
        check_reported(&output, label, fault, engine, failed).map_err(in_phase)?;
        let neighbour = Outcome::of(&outside, fault.kind).map_err(in_phase)?;
        if neighbour.calls != phase.calls || neighbour.failed != 0 {
            return Err(in_phase(format!(
                "the neighbour's {}: {neighbour}, expected {} calls and no failure",
                fault.kind, phase.calls
            )));
        }
    }
    after_round(target, &phase.faults).map_err(in_phase)
}

/// `--KIND N` for each fault, the file to open and a data file of the workload's own.
fn workload_args(faults: &[Fault], calls: u64, who: &str) -> Vec<String> {
    let mut args = vec!["calls".to_owned()];
    for fault in faults {
        args.extend([format!("--{}", fault.kind), calls.to_string()]);
    }
    args.extend([
        "--path".to_owned(),
        OPEN_PATH.to_owned(),
        "--file".to_owned(),
        format!("{DATA_DIR}/{who}.data"),
    ]);
    args
}

/// The `injecting` line names, for each rule, the engine `auto` chose.
fn check_engines(output: &ChaosUserOutput, faults: &[Fault], engine: &str) -> Result<(), String> {
    let injecting = output
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("syschaos: injecting "))
        .ok_or_else(|| format!("no `syschaos: injecting` line; stderr:\n{}", output.stderr))?;
    for fault in faults {
        let rule = injecting
            .split("; ")
            .find(|rule| rule.starts_with(&format!("{} ", fault.syscall)))
            .ok_or_else(|| {
                format!(
                    "the injecting line has no {} rule: {injecting}",
                    fault.syscall
                )
            })?;
        if !rule.contains(&format!(" via {engine}")) {
            return Err(format!(
                "{} should go through the {engine} engine: {rule}",
                fault.syscall
            ));
        }
    }
    Ok(())
}

/// The target's calls of the fault's kind failed as the phase expects; returns how many failed.
fn check_target(report: &json::Value, fault: &Fault, phase: &Phase) -> Result<u64, String> {
    let outcome = Outcome::of(report, fault.kind)?;
    let errno = fault.errno.to_string();
    let only_our_errno = outcome.errnos.iter().all(|(e, _)| *e == errno);
    let right = outcome.calls == phase.calls
        && only_our_errno
        && match phase.expect {
            Expect::At(calls) => outcome.failed_at == calls,
            Expect::Between(low, high) => (low..=high).contains(&outcome.failed),
        };
    if !right {
        let expected = match phase.expect {
            Expect::At(calls) => format!("calls {calls:?} failing"),
            Expect::Between(low, high) => format!("{low} to {high} failures"),
        };
        return Err(format!(
            "the target's {}: {outcome}; expected {} calls with {expected}, all {} ({})",
            fault.kind, phase.calls, fault.errno_name, fault.errno
        ));
    }
    Ok(outcome.failed)
}

/// chaos-user's own count of the rule's injections, at exit and in the last JSON snapshot, is
/// what the workload saw.
fn check_reported(
    output: &ChaosUserOutput,
    label: &str,
    fault: &Fault,
    engine: &str,
    failed: u64,
) -> Result<(), String> {
    let prefix = format!(
        "syschaos: {label}: {} {} via {engine}: ",
        fault.syscall, fault.errno_name
    );
    let at_exit = output
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.strip_suffix(" injected"))
        .ok_or_else(|| format!("no `{prefix}N injected` line; stderr:\n{}", output.stderr))?;
    if at_exit != failed.to_string() {
        return Err(format!(
            "chaos-user says {at_exit} {} injections, the workload saw {failed} failures",
            fault.syscall
        ));
    }
    let last = output.stdout.last().ok_or("no JSON snapshot on stdout")?;
    let snapshot = json::parse(last).map_err(|e| format!("bad JSON line ({e}): {last}"))?;
    let injection = snapshot
        .get("targets")
        .map_or(&[][..], json::Value::as_array)
        .iter()
        .filter(|t| t.get("target").and_then(json::Value::as_str) == Some(label))
        .flat_map(|t| t.get("injections").map_or(&[][..], json::Value::as_array))
        .find(|i| i.get("syscall").and_then(json::Value::as_str) == Some(fault.syscall));
    let field = |name| injection.and_then(|i| i.get(name));
    let matches = field("count").and_then(json::Value::as_u64) == Some(failed)
        && field("fault").and_then(json::Value::as_str) == Some(fault.errno_name)
        && field("engine").and_then(json::Value::as_str) == Some(engine);
    if !matches {
        return Err(format!(
            "the last JSON snapshot should report {failed} {} {} injections via {engine}: {last}",
            fault.syscall, fault.errno_name
        ));
    }
    Ok(())
}

/// Once chaos-user has exited: no kprobe of ours is left, and a further round in the same cgroup
/// sees no failure.
fn after_round(target: &Path, faults: &[Fault]) -> Result<(), String> {
    no_kprobes_left()?;
    let report = Workload::start(&workload_args(faults, CALLS, "after"), target)?.report()?;
    for fault in faults {
        let outcome = Outcome::of(&report, fault.kind)?;
        if outcome.failed != 0 {
            return Err(format!(
                "after chaos-user exited, the target's {} still failed: {outcome}",
                fault.kind
            ));
        }
    }
    Ok(())
}

/// The kprobe engine's probes on `__x64_sys_*` are gone (they go when chaos-user's descriptors
/// are closed, which may trail its exit a little). Skipped without debugfs's kprobes list.
fn no_kprobes_left() -> Result<(), String> {
    const LIST: &str = "/sys/kernel/debug/kprobes/list";
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let Ok(list) = std::fs::read_to_string(LIST) else {
            return Ok(());
        };
        let ours: Vec<&str> = list.lines().filter(|l| l.contains("__x64_sys_")).collect();
        if ours.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "kprobes still registered after chaos-user exited: {}",
                ours.join("; ")
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Refused with exit code 1 and one line `chaos-user: error: ...` containing every needle.
fn expect_refusal(target: &Path, rule: &[&str], needles: &[&str]) -> Result<(), String> {
    let label = target.to_str().ok_or("cgroup path is not UTF-8")?;
    let mut args = vec![
        "inject",
        "--cgroup",
        label,
        "--no-metrics",
        // Only in case it is wrongly accepted: then it ends soon, and the test fails.
        "--duration",
        "5s",
    ];
    args.extend(rule);
    let output = ChaosUser::start(&args)?.finish(Duration::from_secs(60))?;
    let lines: Vec<&str> = output.stderr.lines().filter(|l| !l.is_empty()).collect();
    let refused = output.status.code() == Some(1)
        && lines.len() == 1
        && lines[0].starts_with("chaos-user: error: ")
        && needles.iter().all(|needle| lines[0].contains(needle));
    if !refused {
        return Err(format!(
            "`chaos-user {}` should fail with exit code 1 and one line `chaos-user: error: ...` \
             mentioning {needles:?}; it exited with {}, stderr:\n{}",
            args.join(" "),
            output.status,
            output.stderr
        ));
    }
    Ok(())
}

/// A chaos-workload started in a cgroup, its JSON report on a pipe.
struct Workload {
    child: Child,
    what: String,
}

impl Workload {
    fn start(args: &[String], cgroup: &Path) -> Result<Self, String> {
        let what = format!("workload in {}", cgroup.display());
        let mut command = workload(&args.iter().map(String::as_str).collect::<Vec<_>>());
        command.stdout(Stdio::piped());
        let child =
            spawn_in_cgroup(command, cgroup).map_err(|e| format!("starting the {what}: {e}"))?;
        Ok(Self { child, what })
    }

    /// Waits for the report (one JSON line: far less than a pipe holds, so waiting first is fine).
    fn report(mut self) -> Result<json::Value, String> {
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
struct Outcome {
    calls: u64,
    failed: u64,
    /// errno number (as text) -> failures.
    errnos: Vec<(String, u64)>,
    failed_at: Vec<u64>,
}

impl Outcome {
    fn of(report: &json::Value, kind: &str) -> Result<Self, String> {
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

/// Just enough JSON to read chaos-user's output and the workload's reports, so the init needs
/// nothing but libc.
mod json {
    #[derive(Debug, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        pub fn as_array(&self) -> &[Value] {
            match self {
                Value::Array(items) => items,
                _ => &[],
            }
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(s) => Some(s),
                _ => None,
            }
        }

        pub fn as_u64(&self) -> Option<u64> {
            match *self {
                Value::Number(n) if n >= 0.0 && n.fract() == 0.0 => Some(n as u64),
                _ => None,
            }
        }
    }

    pub fn parse(text: &str) -> Result<Value, String> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            pos: 0,
        };
        let value = parser.value()?;
        parser.skip_whitespace();
        if parser.pos != parser.bytes.len() {
            return Err(format!("trailing characters at byte {}", parser.pos));
        }
        Ok(value)
    }

    struct Parser<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.pos).copied()
        }

        fn next(&mut self) -> Result<u8, String> {
            let byte = self.peek().ok_or("unexpected end")?;
            self.pos += 1;
            Ok(byte)
        }

        fn expect(&mut self, wanted: u8) -> Result<(), String> {
            match self.next()? {
                byte if byte == wanted => Ok(()),
                byte => Err(format!(
                    "expected '{}' at byte {}, found '{}'",
                    wanted as char,
                    self.pos - 1,
                    byte as char
                )),
            }
        }

        fn skip_whitespace(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
        }

        fn value(&mut self) -> Result<Value, String> {
            self.skip_whitespace();
            match self.peek() {
                Some(b'{') => self.object(),
                Some(b'[') => self.array(),
                Some(b'"') => self.string().map(Value::String),
                Some(b't') => self.literal("true", Value::Bool(true)),
                Some(b'f') => self.literal("false", Value::Bool(false)),
                Some(b'n') => self.literal("null", Value::Null),
                Some(b'-' | b'0'..=b'9') => self.number(),
                _ => Err(format!("unexpected input at byte {}", self.pos)),
            }
        }

        fn literal(&mut self, word: &str, value: Value) -> Result<Value, String> {
            if self.bytes[self.pos..].starts_with(word.as_bytes()) {
                self.pos += word.len();
                Ok(value)
            } else {
                Err(format!("bad literal at byte {}", self.pos))
            }
        }

        fn number(&mut self) -> Result<Value, String> {
            let start = self.pos;
            while matches!(
                self.peek(),
                Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            ) {
                self.pos += 1;
            }
            let text = std::str::from_utf8(&self.bytes[start..self.pos]).expect("ASCII");
            text.parse()
                .map(Value::Number)
                .map_err(|_| format!("bad number {text:?}"))
        }

        fn string(&mut self) -> Result<String, String> {
            self.expect(b'"')?;
            let mut out = Vec::new();
            loop {
                match self.next()? {
                    b'"' => break,
                    b'\\' => {
                        let escaped = match self.next()? {
                            b'n' => '\n',
                            b't' => '\t',
                            b'r' => '\r',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'u' => self.unicode_escape()?,
                            other => other as char, // \" \\ \/
                        };
                        out.extend_from_slice(escaped.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    byte => out.push(byte),
                }
            }
            String::from_utf8(out).map_err(|_| "string is not UTF-8".to_owned())
        }

        /// `\uXXXX`; surrogate pairs (never in our output) become U+FFFD.
        fn unicode_escape(&mut self) -> Result<char, String> {
            let hex = self
                .bytes
                .get(self.pos..self.pos + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or("bad \\u escape")?;
            self.pos += 4;
            Ok(char::from_u32(hex).unwrap_or(char::REPLACEMENT_CHARACTER))
        }

        fn array(&mut self) -> Result<Value, String> {
            self.expect(b'[')?;
            let mut items = Vec::new();
            self.skip_whitespace();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            loop {
                items.push(self.value()?);
                self.skip_whitespace();
                match self.next()? {
                    b',' => continue,
                    b']' => return Ok(Value::Array(items)),
                    _ => return Err(format!("expected ',' or ']' at byte {}", self.pos - 1)),
                }
            }
        }

        fn object(&mut self) -> Result<Value, String> {
            self.expect(b'{')?;
            let mut members = Vec::new();
            self.skip_whitespace();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Object(members));
            }
            loop {
                self.skip_whitespace();
                let key = self.string()?;
                self.skip_whitespace();
                self.expect(b':')?;
                members.push((key, self.value()?));
                self.skip_whitespace();
                match self.next()? {
                    b',' => continue,
                    b'}' => return Ok(Value::Object(members)),
                    _ => return Err(format!("expected ',' or '}}' at byte {}", self.pos - 1)),
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_a_snapshot() {
            let text = r#"{"targets":[{"target":"/sys/fs/cgroup/t1","active":true,"resources":{"cpu_seconds":null},
                "syscalls":[{"syscall":"openat","calls_total":52,"calls_per_sec":1.5e1,"errnos":{"ENOENT":50},"p50_us":-0.5}]}],"s":"a\"\u00e9\n"}"#;
            let value = parse(text).unwrap();
            let call = &value.get("targets").unwrap().as_array()[0]
                .get("syscalls")
                .unwrap()
                .as_array()[0];
            assert_eq!(call.get("calls_total").unwrap().as_u64(), Some(52));
            assert_eq!(
                call.get("errnos").unwrap().get("ENOENT").unwrap().as_u64(),
                Some(50)
            );
            assert_eq!(value.get("s").unwrap().as_str(), Some("a\"é\n"));
        }

        #[test]
        fn rejects_garbage() {
            assert!(parse("{\"a\":1").is_err());
            assert!(parse("{\"a\":1} x").is_err());
            assert!(parse("[1,]").is_err());
        }
    }
}
