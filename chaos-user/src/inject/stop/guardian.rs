//! The stop engine's guardian: a small process that outlives chaos-user, so that no target stays
//! stopped if chaos-user is killed (`kill -9`) while it holds a thread or while a SIGSTOP of the
//! engine is pending. The kernel then detaches the tracees, but a held thread keeps its stop
//! signal and a pending SIGSTOP is delivered untraced: the process group-stops. The guardian
//! reads the target cgroups on a pipe from chaos-user; at EOF without a goodbye (chaos-user
//! died) it sends SIGCONT to every process of those cgroups, a few times while the kernel
//! releases the tracees.
use std::{
    io::{BufRead as _, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{SigHandler, Signal, kill, signal},
    unistd::Pid,
};

/// The hidden subcommand chaos-user runs itself as to guard.
pub const COMMAND: &str = "__stop-guardian";
const GOODBYE: &str = "bye";
/// SIGCONT rounds after chaos-user died, and the pause between them: the tracer thread's tracees
/// are released when that thread exits, which may come after the pipe closes.
const ROUNDS: u32 = 10;
const PAUSE: Duration = Duration::from_millis(100);

/// The running guardian, as chaos-user holds it.
pub struct Guardian {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Guardian {
    pub fn start<'a>(cgroup_dirs: impl IntoIterator<Item = &'a Path>) -> std::io::Result<Self> {
        let mut child = Command::new("/proc/self/exe")
            .arg(COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Its own process group: a Ctrl-C meant for chaos-user does not reach it.
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        let mut guardian = Self { child, pipe };
        for dir in cgroup_dirs {
            guardian.watch(dir);
        }
        Ok(guardian)
    }

    /// A cgroup whose processes to continue if chaos-user dies (a restarted container's).
    pub fn watch(&mut self, cgroup_dir: &Path) {
        if let Some(pipe) = &mut self.pipe {
            let _ = writeln!(pipe, "{}", cgroup_dir.display());
        }
    }

    /// Every tracee is released: the guardian leaves without signalling anyone.
    pub fn dismiss(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = writeln!(pipe, "{GOODBYE}");
        }
        let _ = self.child.wait();
    }
}

/// The guardian's body (`chaos-user __stop-guardian`).
pub fn run() {
    // Signals meant for chaos-user's terminal or session are not for it; it ends on its own.
    for interrupt in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(interrupt, SigHandler::SigIgn) };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line == GOODBYE {
            return;
        }
        dirs.push(PathBuf::from(line));
    }
    for _ in 0..ROUNDS {
        for dir in &dirs {
            continue_processes(dir);
        }
        std::thread::sleep(PAUSE);
    }
}

fn continue_processes(cgroup_dir: &Path) {
    let Ok(procs) = std::fs::read_to_string(cgroup_dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs
        .lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
    }
}
