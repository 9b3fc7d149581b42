//! `cargo xtask vm-test`: boot the test kernels under QEMU with an initramfs of our static binaries.
use clap::Args;

#[derive(Debug, Args, Default)]
pub struct VmTestArgs {}

pub fn run(_args: VmTestArgs) -> anyhow::Result<()> {
    anyhow::bail!("vm-test: not written yet")
}
