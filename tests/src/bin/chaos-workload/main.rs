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
//!                       [--per-connection N]
//!                                   N GETs (default 1000) to 127.0.0.1:P, a connection each, the
//!                                   paths in turn, one every MS; then {"requests":N,"codes":{..}}.
//!                                   --per-connection N: N requests per connection (keep-alive).
//!
//! CALLS, made in this order: --getppid N, --open-missing N (openat of --path, a missing file),
//! --stat-missing N (the newfstatat syscall on --path),
//! --read N, --write N, --fsync N (on --file, created first), --connect N (TCP connects to a
//! listener of its own on 127.0.0.1, inside its own network namespace), --time-getppid N (each
//! getppid timed: the report adds min_ns, p50_ns, p99_ns, max_ns and `slow`, the calls that took
//! --slow-us US or longer, default 1000), --thread-getppid N (N getppid in each of --threads T
//! threads, default 4, created for the round), --fork-getppid N (N getppid in each of --forks F
//! child processes, default 3, forked for the round), --alternate N (getppid then getuid, N
//! times: calls of two syscalls in turn), --pipe-read N (a read of an empty pipe that blocks until
//! a thread writes to it 20 ms later, EINTR not retried; timed as `pipe-read`, and the writes as
//! `pipe-write`, from the read's start), --epoll-wait N (the same with an epoll_pwait on the pipe,
//! which a signal interrupts with EINTR, never restarted; timed as `epoll-wait`), --nanosleep N
//! (a clock_nanosleep of 20 ms, which the kernel restarts through restart_syscall), --vfork N (a
//! clone with CLONE_VFORK of a child that sleeps 2 s and exits: the parent waits, unwakeable by
//! signals). --wait-ms MS sleeps before the calls.
//!
//! `idle` prints {"ready":true} once SIGUSR1 is handled. Report: {"round":1,"calls":{"getppid":{"calls":N,"failed":F,"errnos":{"13":F},"failed_at":[..]},..}}
//! (`round` is 0 for `calls`; `failed_at` lists 1-based call numbers, the first 100 of them).
//!
//! The calls and their report are in calls.rs, `serve` and `load` in http.rs.
mod calls;
mod http;

use std::{
    ffi::CString,
    process::ExitCode,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use calls::run_round;
use http::{Site, load, serve};

const KINDS: [&str; 15] = [
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
    "pipe-read",
    "epoll-wait",
    "nanosleep",
    "vfork",
    "stat-missing",
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
        "usage: chaos-workload calls|idle [--getppid N] [--open-missing N] [--read N] [--write N] [--fsync N] [--connect N] [--time-getppid N [--slow-us US]] [--thread-getppid N [--threads T]] [--fork-getppid N [--forks F]] [--alternate N] [--pipe-read N] [--epoll-wait N] [--nanosleep N] [--vfork N] [--stat-missing N] [--wait-ms MS] [--path P] [--file F] | loop [--interval-ms MS]"
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
