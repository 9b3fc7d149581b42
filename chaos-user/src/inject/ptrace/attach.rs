//! Finding and seizing the threads of the target cgroups: `cgroup.threads` is read until it
//! shows no thread we do not trace yet (threads created meanwhile by a thread not seized yet
//! are not followed by ptrace options, so the read repeats). Each new thread is seized
//! (PTRACE_SEIZE with the engine's options) and interrupted, so it stops at once and is resumed
//! under PTRACE_SYSCALL by the tracer loop.
use std::{fs::File, io::Read as _, os::unix::fs::MetadataExt as _};

use nix::errno::Errno;

use super::{
    sys,
    tracer::{Run, Thread, Tracer},
};
use crate::inject::InjectError;

/// Seizes the threads of every target not traced yet. At the start (`initial`) a thread that
/// cannot be traced is an error; later it is reported once and left alone.
pub fn scan(tracer: &mut Tracer, initial: bool) -> Result<(), InjectError> {
    let mut buffer = std::mem::take(&mut tracer.scan_buffer);
    let result = scan_with(tracer, initial, &mut buffer);
    tracer.scan_buffer = buffer;
    result
}

fn scan_with(tracer: &mut Tracer, initial: bool, buffer: &mut String) -> Result<(), InjectError> {
    loop {
        let mut seized_any = false;
        for target in 0..tracer.targets.len() {
            buffer.clear();
            let dir = &tracer.targets[target].dir;
            let path = dir.join("cgroup.threads");
            // A container that stopped has no cgroup until it restarts; one recreated at the same
            // path (the restart under way) is another cgroup until the session follows it.
            let same_cgroup = || {
                std::fs::metadata(dir)
                    .is_ok_and(|meta| meta.ino() == tracer.targets[target].cgroup_id)
            };
            if !same_cgroup()
                || File::open(&path)
                    .and_then(|mut file| file.read_to_string(buffer))
                    .is_err()
            {
                if initial {
                    return Err(InjectError::Ptrace(format!(
                        "cannot read {}",
                        path.display()
                    )));
                }
                continue;
            }
            for tid in buffer
                .lines()
                .filter_map(|line| line.trim().parse::<i32>().ok())
            {
                if tracer.threads.contains_key(&tid) || tracer.ignored.contains(&tid) {
                    continue;
                }
                match seize(tid) {
                    Ok(()) => {
                        tracer.threads.insert(tid, Thread::new(target, Run::Seized));
                        tracer.stop_track(tid);
                        tracer.seized += 1;
                        seized_any = true;
                    }
                    // Exited meanwhile.
                    Err(Errno::ESRCH) => {}
                    // A tracer thread of ours that just stopped: the kernel lets its tracees go
                    // as that thread exits, after `join` returned. The next scan takes it.
                    Err(_) if traced_by_this_process(tid) => {}
                    Err(errno) => {
                        tracer.ignored.insert(tid);
                        if let Some(error) = why_not(tid, errno, &tracer.targets[target].label) {
                            if initial {
                                return Err(error);
                            }
                            eprintln!("syschaos: ptrace: not tracing a newcomer: {error}");
                        }
                    }
                }
            }
        }
        if !seized_any {
            return Ok(());
        }
    }
}

fn seize(tid: i32) -> Result<(), Errno> {
    sys::seize(tid)?;
    match sys::interrupt(tid) {
        Ok(()) => Ok(()),
        Err(errno) => {
            let _ = sys::detach(tid, 0);
            Err(errno)
        }
    }
}

fn traced_by_this_process(tid: i32) -> bool {
    sys::status_field(tid, "TracerPid")
        .and_then(|tracer| sys::status_field(tracer.parse().ok()?, "Tgid"))
        .is_some_and(|tgid| tgid == std::process::id().to_string())
}

/// Why a thread cannot be seized, or None when it does not matter (a zombie, ourselves).
fn why_not(tid: i32, errno: Errno, label: &str) -> Option<InjectError> {
    let field = |name| sys::status_field(tid, name);
    if let Some(tracer) = field("TracerPid").and_then(|pid| pid.parse::<i32>().ok())
        && tracer != 0
    {
        // TracerPid names the tracing thread; say which process that is.
        let process = sys::status_field(tracer, "Tgid")
            .and_then(|pid| pid.parse::<i32>().ok())
            .unwrap_or(tracer);
        let name = std::fs::read_to_string(format!("/proc/{process}/comm"))
            .map(|comm| comm.trim().to_owned())
            .unwrap_or_else(|_| "?".into());
        return Some(InjectError::AlreadyTraced {
            target: label.to_owned(),
            tid,
            tracer: process,
            tracer_name: name,
        });
    }
    let own = field("Tgid").is_some_and(|tgid| tgid == std::process::id().to_string());
    let dead = matches!(sys::state(tid), None | Some('Z' | 'X'));
    if own || dead {
        return None;
    }
    Some(InjectError::Ptrace(format!(
        "cannot trace thread {tid} of {label}: {errno} (chaos-user needs CAP_SYS_PTRACE)"
    )))
}

/// The target whose cgroup a thread is in (for a new child whose parent is unknown).
pub fn target_of(tracer: &Tracer, tid: i32) -> Option<usize> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/cgroup")).ok()?;
    let v2 = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    let relative = v2.trim().trim_start_matches('/');
    tracer
        .targets
        .iter()
        .position(|target| !relative.is_empty() && target.dir.ends_with(relative))
}
