//! PID 1 of the `cargo xtask vm-test` initramfs (static, musl).
//!
//! Mounts the filesystems eBPF tools expect, prints what the kernel offers, runs the tests named
//! on the kernel command line (`syschaos.tests=monitor,...`), prints one `vm-test NAME ... ok` or
//! `vm-test NAME ... FAILED: reason` line per test, then exactly one summary line
//! `syschaos-vm: N passed, M failed`, and reboots (QEMU runs with -no-reboot, so it exits).
//! Whatever happens (a panic, a stuck test), the summary is printed and the machine reboots:
//! a watchdog thread (`syschaos.watchdog=SECONDS`) makes sure of it.
use std::{
    ffi::CString,
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    panic::{self, AssertUnwindSafe},
    path::Path,
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

const TESTS: &[(&str, Test)] = &[("monitor", monitor)];
const DEFAULT_TESTS: &str = "monitor";
const DEFAULT_WATCHDOG: Duration = Duration::from_secs(100);

const CHAOS_USER: &str = "/bin/chaos-user";
const WORKLOAD: &str = "/bin/chaos-workload";

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
/// The test running now, for the watchdog's failure line.
static CURRENT: Mutex<String> = Mutex::new(String::new());

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
        for name in names.split(',').filter(|n| !n.is_empty()) {
            run_test(name);
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

fn run_test(name: &str) {
    let Some(&(_, test)) = TESTS.iter().find(|(known, _)| *known == name) else {
        let known: Vec<&str> = TESTS.iter().map(|(n, _)| *n).collect();
        record(
            name,
            Err(format!("unknown test (known: {})", known.join(", "))),
        );
        return;
    };
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = name.to_owned();
    println!("vm-test {name}: running");
    let result = panic::catch_unwind(AssertUnwindSafe(test))
        .unwrap_or_else(|_| Err("panicked (message above)".into()));
    record(name, result);
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

/// Fails the running test and ends the run if the tests have not finished by then.
fn start_watchdog(after: Duration) {
    thread::spawn(move || {
        thread::sleep(after);
        let current = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let name = if current.is_empty() { "init" } else { &current };
        record(
            name,
            Err(format!("watchdog: no result after {}s", after.as_secs())),
        );
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
        thread::spawn(move || follow_stderr(err_pipe, &kept, &tell_attached));
        let stdout = Some(thread::spawn(move || collect_stdout(out_pipe)));
        Ok(Self {
            child,
            stderr,
            attached,
            stdout,
        })
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
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
        println!("  chaos-user: {line}");
        if line.starts_with("syschaos: attached") {
            let _ = attached.send(());
        }
        kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
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

/// Just enough JSON to read chaos-user's snapshots, so the init needs nothing but libc.
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
