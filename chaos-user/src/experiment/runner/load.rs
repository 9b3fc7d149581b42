//! The load command: started before the first baseline, watched during the phases, stopped
//! (its whole process group) at the end.
use std::time::Duration;

use anyhow::Context as _;

use super::Runner;

impl Runner {
    /// Starts the load command, if any, and waits for its warmup; Some(why) when a signal
    /// stopped the experiment during the warmup.
    pub(super) async fn start_load(&mut self) -> anyhow::Result<Option<String>> {
        if let Some(load) = self.experiment.load.clone() {
            let log = std::fs::File::create(self.out.join("load.log"))?;
            let child = tokio::process::Command::new(&load.argv[0])
                .args(&load.argv[1..])
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: the terminal's Ctrl-C reaches chaos-user only, which
                // then stops the whole group (a `sh -c` and what it started).
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting the load command {}", load.argv[0]))?;
            eprintln!(
                "syschaos: load started: {} (output in load.log)",
                load.argv.join(" ")
            );
            self.load = Some(child);
            if !load.warmup.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(load.warmup) => {}
                    _ = self.sigint.recv() => return Ok(Some("interrupted by SIGINT".into())),
                    _ = self.sigterm.recv() => return Ok(Some("interrupted by SIGTERM".into())),
                }
            }
        }
        Ok(None)
    }
}

/// SIGTERM to the load command's process group, SIGKILL if it is still there after 2 s.
pub(super) async fn stop_load(mut load: tokio::process::Child) {
    let Some(pid) = load.id() else {
        return;
    };
    let group = -(pid as libc::pid_t);
    // SAFETY: signals the process group we created for the load command.
    unsafe { libc::kill(group, libc::SIGTERM) };
    if tokio::time::timeout(Duration::from_secs(2), load.wait())
        .await
        .is_err()
    {
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = load.wait().await;
    }
}

/// Resolves when the load command exits (never without one).
pub(super) async fn wait_load(load: &mut Option<tokio::process::Child>) -> String {
    match load {
        Some(child) => match child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        },
        None => std::future::pending().await,
    }
}
