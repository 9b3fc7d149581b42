//! The project's own workload: makes an exact, known set of system calls and reports, as one JSON
//! line, what each call returned, so tests can assert exact counts and errnos. Built static (musl)
//! and shipped in `FROM scratch` images and VM initramfs.
//!
//!   chaos-workload calls [CALLS]    make the calls once, print the report, exit
//!   chaos-workload idle [CALLS]     a container's pid 1: wait in pause() until SIGTERM/SIGINT; each
//!                                   SIGUSR1 runs one round of CALLS. (`docker kill -s USR1` triggers
//!                                   it without `docker exec`, whose runc helper would add calls of
//!                                   its own to the container's cgroup.)
//!   chaos-workload loop [--interval-ms MS]
//!                                   a steady mix forever (the demo)
//!   chaos-workload serve --port P   a small HTTP/1.1 server on 127.0.0.1:P (thread per connection,
//!                                   keep-alive): `GET /status/NNN` answers NNN. Responses are split
//!                                   across writes on purpose: 2xx as head + body (two write()s),
//!                                   4xx as one writev(), 5xx as status line, headers, body.
//!
//!   chaos-workload serve --port P --docroot DIR --backend PORT
//!                                   also `GET /file/NAME`: DIR/NAME opened with openat (retried on
//!                                   EINTR), 200 with its content or 500; `GET /backend/PATH`: a
//!                                   new connection to 127.0.0.1:PORT (std retries connect on
//!                                   EINTR), `GET /PATH` there, its status passed on, or 502.
//!   chaos-workload load --port P --get PATH [--get PATH...] [--requests N] [--interval-ms MS]
//!                                   N GETs (default 1000) to 127.0.0.1:P, a connection each, the
//!                                   paths in turn, one every MS; then {"requests":N,"codes":{..}}.
//!
//! CALLS, made in this order: --getppid N, --open-missing N (openat of --path, a missing file),
//! --read N, --write N, --fsync N (on --file, created first), --connect N (TCP connects to a
//! listener of its own on 127.0.0.1, inside its own network namespace), --time-getppid N (each
//! getppid timed: the report adds min_ns, p50_ns, p99_ns, max_ns and `slow`, the calls that took
//! --slow-us US or longer, default 1000), --thread-getppid N (N getppid in each of --threads T
//! threads, default 4, created for the round), --fork-getppid N (N getppid in each of --forks F
//! child processes, default 3, forked for the round), --alternate N (getppid then getuid, N
//! times: calls of two syscalls in turn). --wait-ms MS sleeps before the calls.
//!
//! `idle` prints {"ready":true} once SIGUSR1 is handled. Report: {"round":1,"calls":{"getppid":{"calls":N,"failed":F,"errnos":{"13":F},"failed_at":[..]},..}}
//! (`round` is 0 for `calls`; `failed_at` lists 1-based call numbers, the first 100 of them).
use std::{
    collections::BTreeMap,
    ffi::CString,
    fmt::Write as _,
    process::ExitCode,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

const KINDS: [&str; 10] = [
    "getppid",
    "open-missing",
    "read",
    "write",
    "fsync",
    "connect",
    "time-getppid",
    "thread-getppid",
    "fork-getppid",
    "alternate",
];

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let site = match Site::take(&mut args) {
        Ok(site) => site,
        Err(e) => return usage(&e),
    };
    let options = match Options::parse(args.get(1..).unwrap_or_default()) {
        Ok(options) => options,
        Err(e) => return usage(&e),
    };
    match args.first().map(String::as_str) {
        Some("calls") => {
            println!("{}", run_round(&options, 0));
            ExitCode::SUCCESS
        }
        Some("idle") => idle(&options),
        Some("loop") => run_loop(&options),
        Some("serve") => serve(options.port, site),
        Some("load") => load(options.port, &site, options.interval),
        _ => usage("expected a mode: calls, idle or loop"),
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("chaos-workload: {problem}");
    eprintln!(
        "usage: chaos-workload calls|idle [--getppid N] [--open-missing N] [--read N] [--write N] [--fsync N] [--connect N] [--time-getppid N [--slow-us US]] [--thread-getppid N [--threads T]] [--fork-getppid N [--forks F]] [--alternate N] [--wait-ms MS] [--path P] [--file F] | loop [--interval-ms MS]"
    );
    ExitCode::from(2)
}

struct Options {
    /// Calls of each kind, in `KINDS` order.
    counts: [u64; KINDS.len()],
    missing_path: CString,
    data_file: CString,
    interval: Duration,
    port: u16,
    threads: u64,
    forks: u64,
    slow: Duration,
    wait: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            counts: [0; KINDS.len()],
            missing_path: CString::new("/syschaos-missing-file").expect("no NUL"),
            data_file: CString::new("chaos-workload.data").expect("no NUL"),
            interval: Duration::from_millis(100),
            port: 8080,
            threads: 4,
            forks: 3,
            slow: Duration::from_millis(1),
            wait: Duration::ZERO,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{flag}: not a number: {value}"))
            };
            let path = || CString::new(value.as_str()).map_err(|_| format!("{flag} has a NUL"));
            match flag.as_str() {
                "--path" => options.missing_path = path()?,
                "--file" => options.data_file = path()?,
                "--interval-ms" => options.interval = Duration::from_millis(number()?),
                "--threads" => options.threads = number()?,
                "--forks" => options.forks = number()?,
                "--slow-us" => options.slow = Duration::from_micros(number()?),
                "--wait-ms" => options.wait = Duration::from_millis(number()?),
                "--port" => {
                    options.port = u16::try_from(number()?).map_err(|_| "--port: too large")?
                }
                other => {
                    let kind = KINDS
                        .iter()
                        .position(|kind| other.strip_prefix("--") == Some(kind))
                        .ok_or_else(|| format!("unknown option {flag}"))?;
                    options.counts[kind] = number()?;
                }
            }
        }
        Ok(options)
    }

    fn count(&self, kind: &str) -> u64 {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.counts[i])
    }
}

/// What the calls of one kind returned.
#[derive(Default)]
struct Tally {
    calls: u64,
    errnos: BTreeMap<i32, u64>,
    failed_at: Vec<u64>,
    /// Per-call latency in ns (timed kinds only).
    latencies: Vec<u64>,
    slow: Duration,
}

impl Tally {
    /// Records the outcome of call number `self.calls + 1`: `result < 0` is a failure with errno.
    fn record(&mut self, result: i64) {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
        self.record_errno((result < 0).then_some(errno));
    }

    fn record_errno(&mut self, errno: Option<i32>) {
        self.calls += 1;
        if let Some(errno) = errno {
            *self.errnos.entry(errno).or_default() += 1;
            if self.failed_at.len() < 100 {
                self.failed_at.push(self.calls);
            }
        }
    }

    /// Adds another thread's or process's calls (their call numbers are their own: not kept).
    fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        for (errno, n) in other.errnos {
            *self.errnos.entry(errno).or_default() += n;
        }
    }

    /// min/p50/p99/max latency and the count of slow calls, for timed kinds.
    fn latency_json(&self) -> String {
        if self.latencies.is_empty() {
            return String::new();
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let slow = sorted
            .iter()
            .filter(|&&ns| ns >= self.slow.as_nanos() as u64)
            .count();
        format!(
            ",\"min_ns\":{},\"p50_ns\":{},\"p99_ns\":{},\"max_ns\":{},\"slow\":{slow}",
            sorted[0],
            at(0.5),
            at(0.99),
            sorted[sorted.len() - 1]
        )
    }

    fn record_io(&mut self, result: std::io::Result<()>) {
        self.calls += 1;
        if let Err(e) = result {
            *self
                .errnos
                .entry(e.raw_os_error().unwrap_or(-1))
                .or_default() += 1;
            if self.failed_at.len() < 100 {
                self.failed_at.push(self.calls);
            }
        }
    }

    fn json(&self) -> String {
        let errnos: Vec<String> = self
            .errnos
            .iter()
            .map(|(e, n)| format!("\"{e}\":{n}"))
            .collect();
        let failed_at: Vec<String> = self.failed_at.iter().map(u64::to_string).collect();
        format!(
            "{{\"calls\":{},\"failed\":{},\"errnos\":{{{}}},\"failed_at\":[{}]{}}}",
            self.calls,
            self.errnos.values().sum::<u64>(),
            errnos.join(","),
            failed_at.join(","),
            self.latency_json()
        )
    }
}

/// Makes one round of calls and returns the JSON report.
fn run_round(options: &Options, round: u64) -> String {
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    std::thread::sleep(options.wait);
    for _ in 0..options.count("getppid") {
        // SAFETY: no arguments; an injected fault shows as -1 with errno.
        let result = unsafe { libc::syscall(libc::SYS_getppid) };
        tallies.entry("getppid").or_default().record(result);
    }
    for _ in 0..options.count("alternate") {
        // SAFETY: no arguments. getppid then getuid: a pattern of period 2 for samplers.
        let result = unsafe { libc::syscall(libc::SYS_getppid) };
        tallies.entry("alternate").or_default().record(result);
        unsafe { libc::syscall(libc::SYS_getuid) };
    }
    for _ in 0..options.count("open-missing") {
        // SAFETY: a valid NUL-terminated path; a returned fd is closed at once.
        let fd = unsafe {
            libc::openat(
                libc::AT_FDCWD,
                options.missing_path.as_ptr(),
                libc::O_RDONLY,
            )
        };
        tallies.entry("open-missing").or_default().record(fd.into());
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
    }
    file_calls(options, &mut tallies);
    if options.count("connect") > 0 {
        connects(
            options.count("connect"),
            tallies.entry("connect").or_default(),
        );
    }
    timed_getppid(options, &mut tallies);
    threads_getppid(options, &mut tallies);
    forks_getppid(options, &mut tallies);
    let mut json = format!("{{\"round\":{round},\"calls\":{{");
    for (i, (kind, tally)) in tallies.iter().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(json, "{comma}\"{kind}\":{}", tally.json());
    }
    json.push_str("}}");
    json
}

/// read, write and fsync on the data file (created and sized first; its own open is not tallied).
fn file_calls(options: &Options, tallies: &mut BTreeMap<&'static str, Tally>) {
    let wanted = ["read", "write", "fsync"].map(|kind| options.count(kind));
    if wanted.iter().all(|&n| n == 0) {
        return;
    }
    // SAFETY: valid path; the fd is closed below.
    let fd = unsafe {
        libc::open(
            options.data_file.as_ptr(),
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )
    };
    if fd < 0 {
        // Report it as a failure of every call that could not be made.
        for (kind, n) in ["read", "write", "fsync"].into_iter().zip(wanted) {
            for _ in 0..n {
                tallies.entry(kind).or_default().record(-1);
            }
        }
        return;
    }
    let mut byte = [0u8; 1];
    // SAFETY: fd is open; buffers are valid for one byte.
    unsafe {
        libc::ftruncate(fd, 1);
        for _ in 0..wanted[0] {
            libc::lseek(fd, 0, libc::SEEK_SET);
            let result = libc::read(fd, byte.as_mut_ptr().cast(), 1);
            tallies.entry("read").or_default().record(result as i64);
        }
        for _ in 0..wanted[1] {
            let result = libc::write(fd, b"x".as_ptr().cast(), 1);
            tallies.entry("write").or_default().record(result as i64);
        }
        for _ in 0..wanted[2] {
            let result = libc::fsync(fd);
            tallies.entry("fsync").or_default().record(result.into());
        }
        libc::close(fd);
    }
}

fn getppid_errno() -> Option<i32> {
    // SAFETY: no arguments; an injected fault shows as -1 with errno.
    let result = unsafe { libc::syscall(libc::SYS_getppid) };
    (result < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
}

/// Each getppid timed on CLOCK_MONOTONIC (a vDSO read, no syscall of its own).
fn timed_getppid(options: &Options, tallies: &mut BTreeMap<&'static str, Tally>) {
    let n = options.count("time-getppid");
    if n == 0 {
        return;
    }
    let tally = tallies.entry("time-getppid").or_default();
    tally.slow = options.slow;
    tally.latencies.reserve(n as usize);
    for _ in 0..n {
        let start = std::time::Instant::now();
        let errno = getppid_errno();
        tally.latencies.push(start.elapsed().as_nanos() as u64);
        tally.record_errno(errno);
    }
}

/// getppid in threads created now (while a tracer may be attached).
fn threads_getppid(options: &Options, tallies: &mut BTreeMap<&'static str, Tally>) {
    let n = options.count("thread-getppid");
    if n == 0 {
        return;
    }
    let threads: Vec<_> = (0..options.threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut tally = Tally::default();
                for _ in 0..n {
                    tally.record_errno(getppid_errno());
                }
                tally
            })
        })
        .collect();
    let total = tallies.entry("thread-getppid").or_default();
    for thread in threads {
        total.merge(thread.join().expect("a getppid thread"));
    }
}

/// getppid in child processes forked now; each sends its errnos (0: success) through a pipe.
fn forks_getppid(options: &Options, tallies: &mut BTreeMap<&'static str, Tally>) {
    let n = options.count("fork-getppid");
    if n == 0 {
        return;
    }
    let total = tallies.entry("fork-getppid").or_default();
    for _ in 0..options.forks {
        let mut fds = [0; 2];
        // SAFETY: pipe fills two descriptors; the child only makes syscalls, writes and exits
        // (this process has no other thread at this point).
        unsafe {
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                total.record_errno(Some(-1));
                continue;
            }
            let child = libc::fork();
            if child == 0 {
                libc::close(fds[0]);
                for _ in 0..n {
                    let errno = getppid_errno().unwrap_or(0);
                    libc::write(fds[1], (&raw const errno).cast(), 4);
                }
                libc::_exit(0);
            }
            libc::close(fds[1]);
            let mut errno = 0i32;
            while libc::read(fds[0], (&raw mut errno).cast(), 4) == 4 {
                total.record_errno((errno != 0).then_some(errno));
            }
            libc::close(fds[0]);
            if child > 0 {
                libc::waitpid(child, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// TCP connects to a listener of our own on 127.0.0.1 (works with `--network none`).
fn connects(n: u64, tally: &mut Tally) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let addr = listener.local_addr().expect("listener address");
    for _ in 0..n {
        let result = std::net::TcpStream::connect(addr).map(|_stream| {
            // Accept at once, so the backlog never fills up.
            drop(listener.accept());
        });
        tally.record_io(result);
    }
}

fn run_loop(options: &Options) -> ExitCode {
    install_exit_on_signal();
    let mut round = Options::parse(&[]).expect("defaults parse");
    round.counts[0] = 20; // getppid
    round.counts[1] = 5; // open-missing
    let devnull = CString::new("/dev/null").expect("no NUL");
    // SAFETY: valid path; -1 (no /dev/null in a scratch image) just skips the writes.
    let sink = unsafe { libc::open(devnull.as_ptr(), libc::O_WRONLY) };
    loop {
        run_round(&round, 0);
        if sink >= 0 {
            for _ in 0..10 {
                // SAFETY: writes 5 bytes from a static buffer.
                unsafe { libc::write(sink, b"chaos".as_ptr().cast(), 5) };
            }
        }
        std::thread::sleep(options.interval);
    }
}

fn serve(port: u16, site: Site) -> ExitCode {
    install_exit_on_signal();
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("chaos-workload: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Also on [::1] where the namespace has IPv6 loopback (the HTTP tests cover both families).
    if let Ok(listener) = std::net::TcpListener::bind(("::1", port)) {
        let site = site.clone();
        std::thread::spawn(move || accept_connections(listener, site));
    }
    println!("{{\"ready\":true}}");
    accept_connections(listener, site);
    ExitCode::SUCCESS
}

fn accept_connections(listener: std::net::TcpListener, site: Site) {
    for stream in listener.incoming().flatten() {
        let site = site.clone();
        std::thread::spawn(move || serve_connection(stream, &site));
    }
}

/// Answers requests on one connection until the client closes it or asks to.
fn serve_connection(stream: std::net::TcpStream, site: &Site) {
    use std::io::{BufRead as _, BufReader, IoSlice, Write as _};
    // Responses go out in several writes on purpose: without NODELAY, Nagle would hold the
    // second one for the client's delayed ACK (40 ms), as real servers avoid by setting it.
    let _ = stream.set_nodelay(true);
    // Read and write through the same fd, as servers do.
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if header.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/");
        let (code, body) = site.answer(path).unwrap_or_else(|| {
            let code: u16 = path
                .strip_prefix("/status/")
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            (code, format!("status {code}\n"))
        });
        let head = format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        let written = match code {
            400..=499 => writer
                .write_vectored(&[IoSlice::new(head.as_bytes()), IoSlice::new(body.as_bytes())])
                .map(drop),
            500..=599 => {
                let (status_line, headers) = head.split_at(head.find("\r\n").map_or(0, |i| i + 2));
                writer
                    .write_all(status_line.as_bytes())
                    .and_then(|()| writer.write_all(headers.as_bytes()))
                    .and_then(|()| writer.write_all(body.as_bytes()))
            }
            _ => writer
                .write_all(head.as_bytes())
                .and_then(|()| writer.write_all(body.as_bytes())),
        };
        if written.is_err() || close {
            return;
        }
    }
}

static ROUNDS_REQUESTED: AtomicU64 = AtomicU64::new(0);

fn idle(options: &Options) -> ExitCode {
    install_exit_on_signal();
    extern "C" fn request_round(_: libc::c_int) {
        ROUNDS_REQUESTED.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: the handler only touches an atomic.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            request_round as *const () as libc::sighandler_t,
        )
    };
    // As pid 1, a SIGUSR1 that came before the handler was lost: say when it is safe to send.
    println!("{{\"ready\":true}}");
    let mut rounds_done = 0;
    loop {
        // SAFETY: pause only returns when a signal handler ran.
        unsafe { libc::pause() };
        while rounds_done < ROUNDS_REQUESTED.load(Ordering::SeqCst) {
            rounds_done += 1;
            println!("{}", run_round(options, rounds_done));
        }
    }
}

/// As a container's pid 1 we get no default signal actions: exit on SIGTERM/SIGINT ourselves so
/// `docker stop` is immediate.
fn install_exit_on_signal() {
    extern "C" fn exit_now(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs a handler that only calls an async-signal-safe function.
        unsafe { libc::signal(signal, exit_now as *const () as libc::sighandler_t) };
    }
}

/// The flags of `serve` and `load`, taken out of the arguments before the round options.
#[derive(Clone, Default)]
struct Site {
    docroot: Option<String>,
    backend: Option<u16>,
    gets: Vec<String>,
    requests: u64,
}

impl Site {
    fn take(args: &mut Vec<String>) -> Result<Self, String> {
        let mut site = Site {
            requests: 1000,
            ..Site::default()
        };
        let mut i = 1;
        while i < args.len() {
            let flag = args[i].as_str();
            if !matches!(flag, "--docroot" | "--backend" | "--get" | "--requests") {
                // Every other flag takes a value too.
                i += 2;
                continue;
            }
            let value = args
                .get(i + 1)
                .ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = || format!("{flag}: not a number: {value}");
            match flag {
                "--docroot" => site.docroot = Some(value.clone()),
                "--backend" => site.backend = Some(value.parse().map_err(|_| bad())?),
                "--get" => site.gets.push(value.clone()),
                _ => site.requests = value.parse().map_err(|_| bad())?,
            }
            args.drain(i..i + 2);
        }
        Ok(site)
    }

    /// The answer to GET `path` when it is a file or backend path.
    fn answer(&self, path: &str) -> Option<(u16, String)> {
        if let (Some(dir), Some(name)) = (&self.docroot, path.strip_prefix("/file/")) {
            return Some(read_file(dir, name));
        }
        let rest = path.strip_prefix("/backend")?;
        let port = self.backend?;
        Some(
            match http_get(port, if rest.is_empty() { "/" } else { rest }) {
                Ok(code) => (code, format!("backend answered {code}\n")),
                Err(e) => (502, format!("backend: {e}\n")),
            },
        )
    }
}

/// DIR/NAME through openat, which is tried again as long as it fails with EINTR.
fn read_file(dir: &str, name: &str) -> (u16, String) {
    use std::{io::Read as _, os::fd::FromRawFd as _};
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return (404, "no such file\n".into());
    }
    let Ok(path) = CString::new(format!("{dir}/{name}")) else {
        return (404, "no such file\n".into());
    };
    let fd = loop {
        // SAFETY: a valid NUL-terminated path; the fd is owned by the File below.
        let fd = unsafe {
            libc::openat(
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            break fd;
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return (500, format!("cannot open {name}: {error}\n"));
        }
    };
    // SAFETY: fd was just opened and is not used elsewhere.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut content = String::new();
    match file.read_to_string(&mut content) {
        Ok(_) => (200, content),
        Err(e) => (500, format!("cannot read {name}: {e}\n")),
    }
}

/// GET 127.0.0.1:PORT/PATH on a new connection; the status code.
fn http_get(port: u16, path: &str) -> std::io::Result<u16> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

/// `load`: a bounded number of GETs, then a summary line.
fn load(port: u16, site: &Site, interval: Duration) -> ExitCode {
    install_exit_on_signal();
    if site.gets.is_empty() {
        return usage("load needs --get PATH");
    }
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut failed = 0u64;
    for i in 0..site.requests {
        match http_get(port, &site.gets[i as usize % site.gets.len()]) {
            Ok(code) => *codes.entry(code).or_default() += 1,
            Err(_) => failed += 1,
        }
        std::thread::sleep(interval);
    }
    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("\"{c}\":{n}")).collect();
    println!(
        "{{\"requests\":{},\"codes\":{{{}}},\"failed\":{failed}}}",
        site.requests,
        codes.join(",")
    );
    ExitCode::SUCCESS
}
