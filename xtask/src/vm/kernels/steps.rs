//! The steps' plumbing: bounded commands, the lock, files given their final name last, and
//! what a kernel's files say.
use std::{
    fs::{self, File},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure};

use super::*;

/// `make` in the kernel tree for the recipe's architecture (cross-compiling on the other one).
pub(super) fn make(source: &Path, recipe: &Recipe) -> Command {
    let mut command = Command::new("make");
    // A make above us (its jobserver) is not the kernel's.
    command
        .current_dir(source)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .env("ARCH", recipe.make_arch);
    if recipe.cross {
        command.env("CROSS_COMPILE", recipe.cross_prefix);
    }
    command
}

/// Runs `command` in a process group of its own, killing the group after `limit`; says every
/// minute that it still runs.
pub(super) fn run_bounded(
    what: &str,
    command: &mut Command,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut next_note = MINUTE;
    loop {
        if let Some(status) = child.try_wait().context("waiting for it")? {
            ensure!(status.success(), "{what} failed ({status})");
            return Ok(());
        }
        let elapsed = started.elapsed();
        if elapsed >= limit {
            kill_group(&mut child);
            bail!("{what} did not finish within {}: killed", seconds(limit));
        }
        if elapsed >= next_note {
            println!("vm-test: {what}: still running ({})", seconds(elapsed));
            next_note += MINUTE;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) takes plain integers; -pid is the process group `run_bounded` made.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.wait();
}

/// An exclusive `flock` on `path`, held as long as the file is open.
pub(super) fn lock(path: &Path) -> anyhow::Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor that `file` owns and keeps open.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    ensure!(
        locked,
        "another vm-test is fetching the kernels ({} is locked): let it finish, then run again",
        path.display()
    );
    Ok(file)
}

/// The one entry of `dir` named `prefix...suffix`.
pub(super) fn only_entry(dir: &Path, prefix: &str, suffix: &str) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            found.push(dir.join(name));
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([path]) => Ok(path),
        Err(found) => bail!(
            "expected one {prefix}*{suffix} in {}, found {}",
            dir.display(),
            found.len()
        ),
    }
}

/// Writes where a kernel came from beside it (`<kernel>.from`), before the kernel itself.
pub(super) fn note(kernel: &Path, text: &str) -> anyhow::Result<()> {
    let path = PathBuf::from(format!("{}.from", kernel.display()));
    fs::write(&path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))
}

pub(super) fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::rename(from, to).with_context(|| format!("moving {} to {}", from.display(), to.display()))
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
}

pub(super) fn seconds(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

/// "6.12.117" from the kernel's top Makefile.
pub(super) fn kernel_version(makefile: &str) -> Option<String> {
    let field = |name: &str| {
        makefile.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    Some(format!(
        "Linux {}.{}.{}",
        field("VERSION")?,
        field("PATCHLEVEL")?,
        field("SUBLEVEL")?
    ))
}

/// The fragment's settings the final .config does not have: `CONFIG_X=v` must be there as is,
/// `# CONFIG_X is not set` must not be set to anything.
pub(super) fn dropped_options(fragment: &str, config: &str) -> Vec<String> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|line| {
            if line.starts_with("CONFIG_") {
                !config.lines().any(|l| l == *line)
            } else if let Some(name) = line
                .strip_prefix("# ")
                .and_then(|rest| rest.strip_suffix(" is not set"))
            {
                config.lines().any(|l| l.starts_with(&format!("{name}=")))
            } else {
                false
            }
        })
        .map(str::to_owned)
        .collect()
}
