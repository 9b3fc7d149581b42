//! `cargo xtask test`: everything the README's test command runs.

use clap::Args;

use crate::{build, dockerd, vm};

const WORKLOAD_IMAGE: &str = "syschaos-workload:test";

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip the VM kernels (QEMU) part.
    #[arg(long)]
    skip_vm: bool,
    /// Extra arguments for `cargo test` (e.g. a test name filter).
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    // Lints first: they fail in seconds where the suite takes minutes. Release, like the builds
    // below, so the eBPF object is built once.
    build::run(build::cargo().args([
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let chaos_user = build::chaos_user()?;
    let (_, workload) = build::static_binaries(build::Arch::X86_64)?;
    dockerd::ensure_running()?;
    dockerd::build_scratch_image(WORKLOAD_IMAGE, &workload, build::Arch::X86_64)?;
    crate::image::build_image(crate::image::TAG, build::Arch::X86_64)?;

    // Integration tests share the kernel and Docker: one at a time keeps counts and checks exact.
    let mut cargo_test = build::cargo();
    cargo_test
        // chaos-ebpf builds only for the BPF target (through chaos-user), never as a host test.
        .args([
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "chaos-ebpf",
        ])
        .args(&args.cargo_test_args)
        .args(["--", "--test-threads=1"])
        .env("SYSCHAOS_CHAOS_USER", &chaos_user)
        .env("SYSCHAOS_WORKLOAD", &workload)
        .env("SYSCHAOS_WORKLOAD_IMAGE", WORKLOAD_IMAGE)
        .env("SYSCHAOS_IMAGE", crate::image::TAG);
    build::run(&mut cargo_test)?;

    if !args.skip_vm {
        vm::run(vm::VmTestArgs::default())?;
    }
    Ok(())
}
