//! The Docker daemon and the `FROM scratch` images the tests and the demo use.
use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::build::{Arch, run, workspace_root};

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

/// Builds image `tag` for `arch` holding `binary` (built for it) at `/NAME` as its entrypoint,
/// and nothing else. COPY runs nothing in the image, so another architecture needs no emulation.
pub fn build_scratch_image(tag: &str, binary: &Path, arch: Arch) -> anyhow::Result<()> {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .context("binary has no file name")?;
    let context = workspace_root()
        .join("target/images")
        .join(tag.replace([':', '/'], "-"));
    fs::create_dir_all(&context)?;
    fs::copy(binary, context.join(name)).with_context(|| format!("copy {}", binary.display()))?;
    fs::write(context.join("Dockerfile"), dockerfile(name))?;
    run(&mut build_command(tag, arch, &context))
}

fn dockerfile(binary: &str) -> String {
    format!("FROM scratch\nCOPY {binary} /{binary}\nENTRYPOINT [\"/{binary}\"]\n")
}

/// `docker build` of `context` for `arch`: the platform goes into the image's config, which
/// is all that makes a `FROM scratch` image arm64's.
fn build_command(tag: &str, arch: Arch, context: &Path) -> Command {
    let mut command = Command::new("docker");
    command
        .args([
            "build",
            "-q",
            "--platform",
            arch.docker_platform(),
            "-t",
            tag,
        ])
        .arg(context);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_images_copy_only_and_name_their_platform() {
        assert_eq!(
            dockerfile("chaos-user"),
            "FROM scratch\nCOPY chaos-user /chaos-user\nENTRYPOINT [\"/chaos-user\"]\n"
        );
        let command = build_command("syschaos:arm64", Arch::Aarch64, Path::new("/ctx"));
        let args: Vec<_> = command.get_args().filter_map(|a| a.to_str()).collect();
        assert_eq!(
            args,
            [
                "build",
                "-q",
                "--platform",
                "linux/arm64",
                "-t",
                "syschaos:arm64",
                "/ctx"
            ]
        );
    }
}
