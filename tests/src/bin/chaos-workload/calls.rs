//! The calls of a round, made and tallied: what each returned, as the JSON report.
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use crate::Options;

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
pub fn run_round(options: &Options, round: u64) -> String {
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    sleep(options.wait);
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
    for _ in 0..options.count("stat-missing") {
        // newfstatat itself, whatever the C library would call: its number differs between
        // the architectures (262 on x86_64, 79 on arm64, where stat(2) has no call of its own).
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a valid NUL-terminated path and a buffer of the kernel's struct stat.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_newfstatat,
                libc::AT_FDCWD,
                options.missing_path.as_ptr(),
                stat.as_mut_ptr(),
                0,
            )
        };
        tallies.entry("stat-missing").or_default().record(ret);
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
    pipe_reads(options, &mut tallies);
    epoll_waits(options, &mut tallies);
    nanosleeps(options, &mut tallies);
    for _ in 0..options.count("vfork") {
        vfork_sleeping_child(tallies.entry("vfork").or_default());
    }
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

/// Reads that block: each of an empty pipe that a thread writes one byte to 20 ms later. EINTR is
/// a failure here (not retried): a perturbation that interrupts the read must not show.
fn pipe_reads(options: &Options, tallies: &mut BTreeMap<&'static str, Tally>) {
    for _ in 0..options.count("pipe-read") {
        wait_for_pipe(options, tallies, "pipe-read", |fd| {
            let mut byte = [0u8; 1];
            // SAFETY: the read end is open; the buffer holds one byte.
            unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) as i64 }
        });
    }
}

/// epoll_pwait calls that block the same way, until the pipe they watch is readable. A signal
/// makes epoll_pwait return EINTR, which the kernel never restarts (unlike read's ERESTARTSYS).
/// The raw syscall: musl's epoll_wait is epoll_pwait too, glibc's is not.
fn epoll_waits(options: &Options, tallies: &mut BTreeMap<&'static str, Tally>) {
    for _ in 0..options.count("epoll-wait") {
        // SAFETY: creates a descriptor of ours.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            tallies.entry("epoll-wait").or_default().record(-1);
            continue;
        }
        wait_for_pipe(options, tallies, "epoll-wait", |fd| {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            // SAFETY: both descriptors are open; the kernel reads and writes `event`.
            unsafe {
                if libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) < 0 {
                    return -1;
                }
                libc::syscall(
                    libc::SYS_epoll_pwait,
                    epoll,
                    &mut event,
                    1,
                    5000,
                    std::ptr::null::<libc::sigset_t>(),
                    0,
                )
            }
        });
        // SAFETY: ours.
        unsafe { libc::close(epoll) };
    }
}

/// The workload's own sleeps, through the nanosleep syscall: Rust's `thread::sleep` is a
/// clock_nanosleep on some targets (aarch64 musl), and `--nanosleep` must be the only one.
fn sleep(duration: Duration) {
    let mut request = libc::timespec {
        tv_sec: duration.as_secs() as _,
        tv_nsec: duration.subsec_nanos() as _,
    };
    let request = std::ptr::from_mut(&mut request);
    // SAFETY: the kernel reads `request` and writes what is left of it after an interruption.
    while unsafe { libc::syscall(libc::SYS_nanosleep, request, request) } < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}

/// Sleeps of 20 ms: a raw clock_nanosleep on CLOCK_MONOTONIC (the workload's other sleeps use
/// the nanosleep syscall). A signal interrupts it with
/// -ERESTART_RESTARTBLOCK: the kernel goes on through restart_syscall.
fn nanosleeps(options: &Options, tallies: &mut BTreeMap<&'static str, Tally>) {
    let n = options.count("nanosleep");
    if n == 0 {
        return;
    }
    let tally = tallies.entry("nanosleep").or_default();
    tally.slow = options.slow;
    let request = libc::timespec {
        tv_sec: 0,
        tv_nsec: 20_000_000,
    };
    for _ in 0..n {
        let start = std::time::Instant::now();
        // SAFETY: the kernel reads `request`; no remainder is asked for.
        let result = unsafe {
            libc::syscall(
                libc::SYS_clock_nanosleep,
                libc::CLOCK_MONOTONIC,
                0,
                &request,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        tally.latencies.push(start.elapsed().as_nanos() as u64);
        tally.record(result);
    }
}

/// One `wait` on the read end of an empty pipe that a thread writes one byte to 20 ms later,
/// timed as `kind` from its start, and the write as `pipe-write`.
fn wait_for_pipe(
    options: &Options,
    tallies: &mut BTreeMap<&'static str, Tally>,
    kind: &'static str,
    wait: impl FnOnce(i32) -> i64,
) {
    const WRITE_AFTER: Duration = Duration::from_millis(20);
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } < 0 {
        tallies.entry(kind).or_default().record(-1);
        return;
    }
    let start = std::time::Instant::now();
    let writer = std::thread::spawn(move || {
        sleep(WRITE_AFTER);
        // SAFETY: the write end is open until joined; one byte from a static buffer.
        unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
        start.elapsed().as_nanos() as u64
    });
    let result = wait(fds[0]);
    let errno = (result < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(-1));
    let tally = tallies.entry(kind).or_default();
    tally.latencies.push(start.elapsed().as_nanos() as u64);
    tally.slow = options.slow;
    tally.record_errno(errno);
    let written_at = writer.join().unwrap_or(0);
    let writes = tallies.entry("pipe-write").or_default();
    writes.latencies.push(written_at);
    writes.slow = options.slow;
    writes.record(0);
    // SAFETY: both ends are ours.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

/// A vfork-style clone (CLONE_VFORK, but its own copy of memory, so the child may run any code)
/// of a child that sleeps 2 s, then exits: its parent waits killable only, so a signal sent to it
/// meanwhile stays pending until the child is gone.
fn vfork_sleeping_child(tally: &mut Tally) {
    // SAFETY: without CLONE_VM the child runs on its own copy of our memory, as after fork.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_VFORK | libc::SIGCHLD,
            0,
            0,
            0,
            0,
        )
    };
    if pid == 0 {
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    tally.record(pid);
    if pid > 0 {
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
    }
}
