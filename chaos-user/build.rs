//! Builds `chaos-ebpf` for the BPF target (through aya-build) and embeds it in `chaos-user`.
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

fn main() -> anyhow::Result<()> {
    check_prerequisites()?;
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "chaos-ebpf")
        .ok_or_else(|| anyhow!("chaos-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    target_bpf_cpu_v3();
    same_object_for_every_architecture();
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}

/// The injecting programs use atomic fetch-add (exact `--nth`/`--count` across CPUs), which needs
/// BPF cpu v3 (kernel 5.12+ runs it; the rest of v3, jmp32 and alu32, runs on 5.10, where the
/// monitor's programs, which hold no atomics, load). aya-build fixes the inner build's RUSTFLAGS, so the flag goes in
/// as a profile setting of that nightly cargo, through the environment it inherits from us.
fn target_bpf_cpu_v3() {
    // SAFETY: the build script is single-threaded at this point.
    unsafe {
        std::env::set_var("CARGO_UNSTABLE_PROFILE_RUSTFLAGS", "true");
        std::env::set_var("CARGO_PROFILE_RELEASE_RUSTFLAGS", "-Ctarget-cpu=v3");
        // Not for the host-side build scripts and proc macros of that build.
        std::env::set_var("CARGO_PROFILE_RELEASE_BUILD_OVERRIDE_RUSTFLAGS", "");
    }
}

/// The eBPF object is the same whatever chaos-user is built for: what differs between
/// architectures (where `struct pt_regs` keeps the arguments) is a global the loader sets
/// (`chaos_common::RegsLayout`). aya-build would build it with `--cfg bpf_target_arch` of our
/// target, which only selects aya-ebpf's per-architecture bindings; our programs read no
/// `pt_regs` field through them, and aya-ebpf 0.2's aarch64 kprobe context does not even
/// compile. So the object is built as for x86_64, everywhere.
fn same_object_for_every_architecture() {
    // SAFETY: the build script is single-threaded at this point. Read by aya-build only.
    unsafe { std::env::set_var("CARGO_CFG_TARGET_ARCH", "x86_64") };
}

/// One clear message per missing tool, instead of a wall of cargo errors from the inner build.
fn check_prerequisites() -> anyhow::Result<()> {
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        return Ok(());
    }
    const HOW: &str = "or run `./run setup` once, as root";
    if which::which("bpf-linker").is_err() {
        bail!(
            "bpf-linker not found: install it with `cargo install bpf-linker@0.10.3 --locked` ({HOW})"
        );
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let Some(sysroot) = sysroot else {
        bail!(
            "the nightly toolchain is missing: install it with `rustup toolchain install nightly` ({HOW})"
        );
    };
    let core_src = std::path::Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if !core_src.exists() {
        bail!(
            "nightly rust-src is missing: install it with `rustup component add rust-src --toolchain nightly` ({HOW})"
        );
    }
    Ok(())
}
