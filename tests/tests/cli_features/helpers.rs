//! What cli_features.rs needs beyond the harness: the text trace format read back strictly, a
//! chaos-user started from any command line (a private mount namespace), a tmux session, doctor's
//! output, and a container's cgroup.
use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tests::{cgroup_v2_root, chaos_user_bin, docker::Container, metrics::Scrape, wait_for};

/// One line of `chaos-user trace` without `--json`:
/// `12:00:01.123456 web 4242/4243 nginx openat(AT_FDCWD, "/x", O_RDONLY) = -1 ENOENT <3.1µs>`.
#[derive(Debug, Clone, PartialEq)]
pub struct TextCall {
    /// Wall-clock (UTC) seconds since midnight.
    pub second_of_day: u64,
    pub target: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub syscall: String,
    /// Between the parentheses, as printed.
    pub args: String,
    /// `0`, `3` or `-1 ENOENT`.
    pub result: String,
    pub latency_us: f64,
    pub injected: bool,
}

/// Reads a text trace line; anything off the format fails the test, naming the line.
pub fn parse_text_call(line: &str) -> TextCall {
    let bad = |why: &str| -> ! { panic!("not a trace line ({why}): {line:?}") };
    let mut fields = line.splitn(5, ' ');
    let mut field = |what: &str| fields.next().unwrap_or_else(|| bad(what));
    let time = field("time");
    let target = field("target").to_owned();
    let (pid, tid) = field("pid/tid")
        .split_once('/')
        .unwrap_or_else(|| bad("pid/tid"));
    let comm = field("comm").to_owned();
    let call = field("call");

    let (hms, micros) = time.split_once('.').unwrap_or_else(|| bad("time"));
    let digits = |text: &str, len: usize| -> u64 {
        if text.len() != len || !text.bytes().all(|b| b.is_ascii_digit()) {
            bad("time")
        }
        text.parse().unwrap()
    };
    digits(micros, 6);
    let hms: Vec<u64> = hms.split(':').map(|part| digits(part, 2)).collect();
    let [h, m, s] = hms[..] else { bad("time") };
    assert!(h < 24 && m < 60 && s < 60, "bad time in {line:?}");

    let (call, injected) = match call.strip_suffix(" [injected]") {
        Some(call) => (call, true),
        None => (call, false),
    };
    let (call, latency) = call.rsplit_once(" <").unwrap_or_else(|| bad("latency"));
    let latency_us = latency
        .strip_suffix("µs>")
        .and_then(|us| us.parse::<f64>().ok())
        .unwrap_or_else(|| bad("latency"));
    let (invocation, result) = call.rsplit_once(" = ").unwrap_or_else(|| bad("result"));
    let (syscall, args) = invocation.split_once('(').unwrap_or_else(|| bad("call"));
    let args = args.strip_suffix(')').unwrap_or_else(|| bad("call"));
    TextCall {
        second_of_day: h * 3600 + m * 60 + s,
        target,
        pid: pid.parse().unwrap_or_else(|_| bad("pid")),
        tid: tid.parse().unwrap_or_else(|_| bad("tid")),
        comm,
        syscall: syscall.to_owned(),
        args: args.to_owned(),
        result: result.to_owned(),
        latency_us,
        injected,
    }
}

/// Seconds from the time of day `second_of_day` (UTC) to now, across midnight.
pub fn seconds_ago(second_of_day: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86400;
    (now + 86400 - second_of_day) % 86400
}

/// The container's cgroup v2 path as /proc/PID/cgroup gives it, relative to the v2 root (no
/// leading `/`), and the directory's inode: the cgroup id chaos-user shows.
pub fn container_cgroup(container: &Container) -> (String, u64) {
    let text = std::fs::read_to_string(format!("/proc/{}/cgroup", container.pid())).unwrap();
    let path = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .trim_start_matches('/')
        .to_owned();
    let inode = std::fs::metadata(cgroup_v2_root().join(&path))
        .unwrap_or_else(|e| panic!("the cgroup of {}: {e}", container.name))
        .ino();
    (path, inode)
}

/// A chaos-user started by any command line (e.g. inside `unshare`) with `--quiet`; stopped with
/// SIGINT, then killed, when dropped.
pub struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    pub metrics_port: u16,
}

impl Running {
    /// Starts `command`, which must end up running chaos-user with `--metrics-addr
    /// 127.0.0.1:metrics_port` in this process's network namespace (it keeps the pid: `exec`),
    /// and waits until it says it is attached.
    pub fn start(mut command: Command, metrics_port: u16) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[chaos-user] {line}");
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut running = Self {
            child,
            stderr,
            metrics_port,
        };
        wait_for("chaos-user to attach", Duration::from_secs(30), || {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("{command:?} exited early ({status}): {}", running.stderr());
            }
            running
                .stderr()
                .contains("syschaos: attached")
                .then_some(())
        });
        running
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> Scrape {
        tests::metrics::scrape(self.metrics_port)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signals our own child, not reaped yet.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An empty directory to mount on in a private mount namespace; removed with `rmdir` only, never
/// recursively: were a mount ever visible here, a recursive removal would walk into it.
pub struct MountPoint(pub PathBuf);

impl MountPoint {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("syschaos-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `unshare --mount ... chaos-user ARGS`: chaos-user in a mount namespace of its own, where the
/// cgroup v2 hierarchy `v2_root` is also bind-mounted at `mount_point`. The mount lives and dies
/// with that namespace: the host never sees it, whatever happens to the test.
pub fn chaos_user_with_cgroup_mount(v2_root: &Path, mount_point: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
        .arg("sh")
        .arg(v2_root)
        .arg(mount_point)
        .arg(chaos_user_bin())
        .args(args);
    command
}

/// A tmux server of our own (its own socket) running one pane; killed when dropped, which hangs
/// up on whatever still runs in the pane.
pub struct Tmux {
    socket: String,
    /// The server's socket file, which `kill-server` leaves behind.
    socket_path: Option<PathBuf>,
}

impl Tmux {
    /// Runs `bash -c SCRIPT bash ARGS...` in a detached WIDTHxHEIGHT session.
    pub fn start(name: &str, size: (u16, u16), script: &str, args: &[&str]) -> Self {
        let mut tmux = Self {
            socket: format!("syschaos-{name}-{}", std::process::id()),
            socket_path: None,
        };
        let _ = tmux.command(&["kill-server"]).output();
        let (width, height) = (size.0.to_string(), size.1.to_string());
        // One shell command, quoted here: tmux hands several words to a shell joined unquoted.
        let mut command = format!("bash -c {} bash", quote(script));
        for arg in args {
            command = command + " " + &quote(arg);
        }
        let arguments = [
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &width,
            "-y",
            &height,
            &command,
        ];
        let output = tmux.command(&arguments).output().unwrap_or_else(|e| {
            panic!("run tmux ({e}): this test needs it (`apt-get install -y tmux`)")
        });
        assert!(
            output.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let output = tmux
            .command(&["display-message", "-p", "#{socket_path}"])
            .output()
            .expect("run tmux display-message");
        let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        tmux.socket_path = (!path.is_empty()).then(|| PathBuf::from(path));
        tmux
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("tmux");
        command
            .args(["-u", "-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color");
        command
    }

    /// What the pane shows now, a line each (`capture-pane -p`).
    pub fn screen(&self) -> String {
        let output = self
            .command(&["capture-pane", "-p", "-t", "main"])
            .output()
            .expect("run tmux capture-pane");
        assert!(
            output.status.success(),
            "tmux capture-pane failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `tmux send-keys KEYS` (e.g. `C-c`).
    pub fn send_keys(&self, keys: &str) {
        let status = self
            .command(&["send-keys", "-t", "main", keys])
            .status()
            .expect("run tmux send-keys");
        assert!(status.success(), "tmux send-keys {keys} failed");
    }

    /// Polls the screen every 100 ms until `probe` finds what it looks for; after `timeout`
    /// fails the test with `what` and the last screen.
    pub fn wait_screen<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if let Some(found) = probe(&screen) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `text` in single quotes, for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]).output();
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One row of the live view's table: `  getppid  1234.0  0.0  -  0.3µs  0.5µs  1234`.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRow {
    pub calls_per_sec: String,
    pub errors_per_sec: String,
    /// `-`, or `ENOENT:5 EACCES:1`.
    pub errnos: String,
    pub total: u64,
}

/// The row of `syscall` in the table under the header line of `target` on `screen`.
pub fn live_row(screen: &str, target_header: &str, syscall: &str) -> Option<LiveRow> {
    let mut lines = screen
        .lines()
        .skip_while(|line| !line.starts_with(target_header));
    lines.next()?;
    lines
        // The table ends at the next blank line (another target) or the end of the screen.
        .take_while(|line| !line.trim().is_empty())
        .find_map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            if tokens.first() != Some(&syscall) || tokens.len() < 7 {
                return None;
            }
            Some(LiveRow {
                calls_per_sec: tokens[1].to_owned(),
                errors_per_sec: tokens[2].to_owned(),
                errnos: tokens[3..tokens.len() - 3].join(" "),
                total: tokens[tokens.len() - 1].parse().ok()?,
            })
        })
}

/// `chaos-user doctor ARGS`: its stdout; it must succeed and say nothing on stderr.
pub fn doctor(args: &[&str]) -> String {
    let output = Command::new(chaos_user_bin())
        .arg("doctor")
        .args(args)
        .output()
        .expect("run chaos-user doctor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chaos-user doctor {args:?} failed ({}): {stderr}",
        output.status
    );
    assert!(
        stderr.is_empty(),
        "doctor {args:?} said on stderr: {stderr}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
