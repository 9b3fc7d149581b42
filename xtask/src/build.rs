//! Cargo builds the other tasks need, and where their outputs land.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The static target of the host's architecture (scratch images, demo, benches).
pub const MUSL: &str = Arch::HOST.musl();

/// An architecture the static binaries, the images and the VM kernels are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    /// Cross-built on any host: `.cargo/config.toml` links it with rust-lld.
    #[value(name = "arm64", alias = "aarch64")]
    Aarch64,
}

impl Arch {
    /// The architecture xtask runs on.
    pub const HOST: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };

    /// Its Docker platform (`docker build --platform`, an image's `Architecture`).
    pub const fn docker_platform(self) -> &'static str {
        match self {
            Arch::X86_64 => "linux/amd64",
            Arch::Aarch64 => "linux/arm64",
        }
    }

    /// Its static (musl) Rust target.
    pub const fn musl(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Its name in Debian (`linux-image-<it>`, `APT::Architecture`).
    pub const fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
}

pub fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root. A real parent, not "xtask/..": callers take
    // the root's own parent (`../shared` beside the clone).
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_owned()
}

/// Runs a command, failing with its command line when it fails.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// `cargo build --release -p PACKAGE [--target TARGET]`; returns the directory of the binaries.
pub fn release(package: &str, target: Option<&str>) -> anyhow::Result<PathBuf> {
    let mut command = cargo();
    command.args(["build", "--release", "-p", package]);
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    run(&mut command)?;
    let mut dir = workspace_root().join("target");
    if let Some(target) = target {
        dir.push(target);
    }
    Ok(dir.join("release"))
}

/// The host `chaos-user` binary (release).
pub fn chaos_user() -> anyhow::Result<PathBuf> {
    Ok(release("chaos-user", None)?.join("chaos-user"))
}

/// Static (musl) binaries of `arch` for scratch images and VMs: (chaos-user, chaos-workload).
pub fn static_binaries(arch: Arch) -> anyhow::Result<(PathBuf, PathBuf)> {
    let chaos_user = release("chaos-user", Some(arch.musl()))?.join("chaos-user");
    let workload = release("tests", Some(arch.musl()))?.join("chaos-workload");
    Ok((chaos_user, workload))
}
