//! The Docker daemon and the `FROM scratch` images the tests and the demo use.
use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::build::{run, workspace_root};

pub fn is_running() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Starts dockerd unless one answers already. No bridge and no iptables rules: the tests run
/// containers with `--network none` and never reach beyond loopback.
pub fn ensure_running() -> anyhow::Result<()> {
    if is_running() {
        return Ok(());
    }
    let log_path = workspace_root().join("target/dockerd.log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
    let mut dockerd = Command::new("dockerd");
    dockerd
        .args(["--bridge=none", "--iptables=false"])
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C of the test run does not take the daemon down mid-way.
        .process_group(0);
    // The daemon outlives this run: it must not keep descriptors we inherited open, such as the
    // lock of a `flock ... cargo xtask test`, which it would then hold forever.
    // SAFETY: close_range is async-signal-safe and touches only the child's descriptors.
    unsafe {
        dockerd.pre_exec(|| {
            libc::close_range(3, u32::MAX, 0);
            Ok(())
        });
    }
    dockerd
        .spawn()
        .context("cannot start dockerd (apt-get install docker.io)")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_running() {
        if Instant::now() > deadline {
            bail!(
                "dockerd did not answer within 60 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// Builds image `tag` holding `binary` at `/NAME` as its entrypoint, and nothing else.
pub fn build_scratch_image(tag: &str, binary: &Path) -> anyhow::Result<()> {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .context("binary has no file name")?;
    let context = workspace_root()
        .join("target/images")
        .join(tag.replace([':', '/'], "-"));
    fs::create_dir_all(&context)?;
    fs::copy(binary, context.join(name)).with_context(|| format!("copy {}", binary.display()))?;
    fs::write(
        context.join("Dockerfile"),
        format!("FROM scratch\nCOPY {name} /{name}\nENTRYPOINT [\"/{name}\"]\n"),
    )?;
    run(Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(&context))
}
