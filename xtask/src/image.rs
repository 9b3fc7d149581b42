//! `cargo xtask image [--arch arm64|x86_64]`: the `syschaos` image, `FROM scratch` with the
//! static `chaos-user` and nothing else (nothing is pulled), run as a privileged sidecar or
//! host-wide (README, Deployment). Another architecture's image is cross-built: its musl
//! `chaos-user`, and a COPY that runs nothing, so no emulation.
use std::process::Command;

use anyhow::Context as _;
use clap::Args;

use crate::{
    build::{self, Arch},
    dockerd,
};

/// The host architecture's image.
pub const TAG: &str = "syschaos:latest";

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Image tag (default: syschaos:latest for the host's architecture, syschaos:arm64 or
    /// syschaos:x86_64 for the other).
    #[arg(long)]
    tag: Option<String>,
    /// The architecture of the image and its chaos-user (default: the host's).
    #[arg(long, value_enum, default_value_t = Arch::HOST)]
    arch: Arch,
}

impl ImageArgs {
    fn tag(&self) -> String {
        match &self.tag {
            Some(tag) => tag.clone(),
            None if self.arch == Arch::HOST => TAG.to_owned(),
            None => format!("syschaos:{}", arch_name(self.arch)),
        }
    }
}

fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64",
        Arch::Aarch64 => "arm64",
    }
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let tag = args.tag();
    build_image(&tag, args.arch)?;
    let (size, platform) = inspect(&tag)?;
    println!(
        "xtask: built {tag} ({size} bytes, {:.1} MiB) for {platform}: FROM scratch, ENTRYPOINT \
         /chaos-user",
        size as f64 / (1024.0 * 1024.0)
    );
    anyhow::ensure!(
        platform == args.arch.docker_platform(),
        "{tag} was built for {platform}, not {}",
        args.arch.docker_platform()
    );
    Ok(())
}

/// Builds the static `chaos-user` of `arch` and image `tag` holding it.
pub fn build_image(tag: &str, arch: Arch) -> anyhow::Result<()> {
    let chaos_user = build::release("chaos-user", Some(arch.musl()))?.join("chaos-user");
    dockerd::ensure_running()?;
    dockerd::build_scratch_image(tag, &chaos_user, arch)
}

/// The image's size and platform (`linux/arm64`), as Docker records them.
fn inspect(tag: &str) -> anyhow::Result<(u64, String)> {
    let output = Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{.Size}} {{.Os}}/{{.Architecture}}",
            tag,
        ])
        .output()
        .context("run docker image inspect")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (size, platform) = text
        .trim()
        .split_once(' ')
        .with_context(|| format!("docker image inspect {tag}: {text}"))?;
    let size = size
        .parse()
        .with_context(|| format!("docker image inspect {tag}: no size"))?;
    Ok((size, platform.to_owned()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        image: ImageArgs,
    }

    #[test]
    fn arch_picks_the_tag_and_platform() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["image"], args].concat()).unwrap();
        let host = parse(&[]).image;
        assert_eq!((host.arch, host.tag()), (Arch::HOST, TAG.to_owned()));
        let arm64 = parse(&["--arch", "arm64"]).image;
        assert_eq!(arm64.arch, Arch::Aarch64);
        assert_eq!(arm64.arch.docker_platform(), "linux/arm64");
        if Arch::HOST == Arch::X86_64 {
            assert_eq!(arm64.tag(), "syschaos:arm64");
        }
        assert_eq!(parse(&["--arch", "aarch64"]).image.arch, Arch::Aarch64);
        let x86 = parse(&["--arch", "x86_64", "--tag", "me/syschaos:1"]).image;
        assert_eq!(
            (x86.arch, x86.tag()),
            (Arch::X86_64, "me/syschaos:1".to_owned())
        );
        assert!(Cli::try_parse_from(["image", "--arch", "riscv64"]).is_err());
    }
}
