//! `cargo xtask image`: the `syschaos` image, `FROM scratch` with the static `chaos-user` and
//! nothing else (nothing is pulled), run as a privileged sidecar or host-wide (README, Deployment).
use std::process::Command;

use anyhow::Context as _;
use clap::Args;

use crate::{build, dockerd};

pub const TAG: &str = "syschaos:latest";

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Image tag.
    #[arg(long, default_value = TAG)]
    tag: String,
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    build_image(&args.tag)?;
    let size = image_size(&args.tag)?;
    println!(
        "xtask: built {} ({size} bytes, {:.1} MiB): FROM scratch, ENTRYPOINT /chaos-user",
        args.tag,
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// Builds the static `chaos-user` and image `tag` holding it.
pub fn build_image(tag: &str) -> anyhow::Result<()> {
    let chaos_user = build::release("chaos-user", Some(build::MUSL))?.join("chaos-user");
    dockerd::ensure_running()?;
    dockerd::build_scratch_image(tag, &chaos_user)
}

fn image_size(tag: &str) -> anyhow::Result<u64> {
    let output = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Size}}", tag])
        .output()
        .context("run docker image inspect")?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .with_context(|| format!("docker image inspect {tag}: no size"))
}
