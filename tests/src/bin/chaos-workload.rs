//! The project's own workload: makes an exact, known set of system calls, so tests can assert
//! exact counts. Built static (musl) and shipped in `FROM scratch` images.
//!
//!   chaos-workload idle [--getppid N] [--open-missing M] [--path P]
//!                                            a container's pid 1: blocks in pause() until SIGTERM/SIGINT;
//!                                            each SIGUSR1 runs one round of `calls` with these options.
//!                                            `docker kill -s USR1` triggers it without `docker exec`,
//!                                            whose runc helper would add calls of its own to the cgroup.
//!   chaos-workload calls [--getppid N] [--open-missing M] [--path P] [--connect C]
//!                                            exactly N getppid() and M openat(P) that fail with ENOENT,
//!                                            then C TCP connects to a loopback listener of its own
//!   chaos-workload loop [--interval-ms MS]   a steady mix forever (the demo): getppid, failed openat,
//!                                            write to /dev/null, nanosleep
use std::{
    ffi::CString,
    process::ExitCode,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

const DEFAULT_MISSING_PATH: &str = "/syschaos-missing-file";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("idle") => match Options::parse(&args[1..]) {
            Ok(options) => idle(&options),
            Err(e) => usage(&e),
        },
        Some("calls") => match Options::parse(&args[1..]) {
            Ok(options) => {
                calls_and_report(&options, None);
                ExitCode::SUCCESS
            }
            Err(e) => usage(&e),
        },
        Some("loop") => match Options::parse(&args[1..]) {
            Ok(options) => run_loop(&options),
            Err(e) => usage(&e),
        },
        _ => usage("expected a mode: idle, calls or loop"),
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("chaos-workload: {problem}");
    eprintln!(
        "usage: chaos-workload idle [calls options] | calls [--getppid N] [--open-missing M] [--path P] [--connect C] | loop [--interval-ms MS]"
    );
    ExitCode::from(2)
}

struct Options {
    getppid: u64,
    open_missing: u64,
    connect: u64,
    path: CString,
    interval: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            getppid: 0,
            open_missing: 0,
            connect: 0,
            path: CString::new(DEFAULT_MISSING_PATH).expect("no NUL"),
            interval: Duration::from_millis(100),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{flag}: not a number: {value}"))
            };
            match flag.as_str() {
                "--getppid" => options.getppid = number()?,
                "--open-missing" => options.open_missing = number()?,
                "--connect" => options.connect = number()?,
                "--interval-ms" => options.interval = Duration::from_millis(number()?),
                "--path" => {
                    options.path = CString::new(value.as_str()).map_err(|_| "--path has a NUL")?
                }
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        Ok(options)
    }
}

fn calls_and_report(options: &Options, round: Option<u64>) {
    let enoent = calls(options);
    let round = round.map(|r| format!("round={r} ")).unwrap_or_default();
    let mut line = format!(
        "chaos-workload: {round}getppid={} openat={} enoent={enoent}",
        options.getppid, options.open_missing
    );
    if options.connect > 0 {
        let (failed_at, errnos) = connects(options.connect);
        let errnos: Vec<String> = errnos
            .iter()
            .map(|(errno, n)| format!("{errno}:{n}"))
            .collect();
        let failed_at: Vec<String> = failed_at.iter().map(u64::to_string).collect();
        line.push_str(&format!(
            " connect={} connect_failed={} connect_errnos={} connect_failed_at={}",
            options.connect,
            failed_at.len(),
            errnos.join(","),
            failed_at.join(",")
        ));
    }
    println!("{line}");
}

/// `n` TCP connects to a listener of our own on 127.0.0.1 (inside the process's own network
/// namespace, so it works with `--network none`). Returns the 1-based indices of the connects
/// that failed, and errno -> failures.
fn connects(n: u64) -> (Vec<u64>, std::collections::BTreeMap<i32, u64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let addr = listener.local_addr().expect("listener address");
    let mut failed_at = Vec::new();
    let mut errnos = std::collections::BTreeMap::new();
    for i in 1..=n {
        match std::net::TcpStream::connect(addr) {
            // Accept at once, so the backlog never fills up.
            Ok(_stream) => drop(listener.accept()),
            Err(e) => {
                failed_at.push(i);
                *errnos.entry(e.raw_os_error().unwrap_or(-1)).or_default() += 1;
            }
        }
    }
    (failed_at, errnos)
}

/// Returns how many of the openat calls failed with ENOENT.
fn calls(options: &Options) -> u64 {
    for _ in 0..options.getppid {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::getppid() };
    }
    let mut enoent = 0;
    for _ in 0..options.open_missing {
        // SAFETY: a valid NUL-terminated path; a returned fd is closed at once.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, options.path.as_ptr(), libc::O_RDONLY) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
            enoent += 1;
        }
    }
    enoent
}

fn run_loop(options: &Options) -> ExitCode {
    install_exit_on_signal();
    let per_round = Options {
        getppid: options.getppid.max(20),
        open_missing: options.open_missing.max(5),
        connect: 0,
        path: options.path.clone(),
        interval: options.interval,
    };
    let devnull = CString::new("/dev/null").expect("no NUL");
    // SAFETY: valid path; -1 (e.g. no /dev/null in a scratch image) just skips the writes.
    let sink = unsafe { libc::open(devnull.as_ptr(), libc::O_WRONLY) };
    loop {
        calls(&per_round);
        if sink >= 0 {
            for _ in 0..10 {
                // SAFETY: writes 5 bytes from a static buffer.
                unsafe { libc::write(sink, b"chaos".as_ptr().cast(), 5) };
            }
        }
        std::thread::sleep(per_round.interval);
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
    let mut rounds_done = 0;
    loop {
        // SAFETY: pause only returns when a signal handler ran.
        unsafe { libc::pause() };
        while rounds_done < ROUNDS_REQUESTED.load(Ordering::SeqCst) {
            rounds_done += 1;
            calls_and_report(options, Some(rounds_done));
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
