//! Developer tasks: `cargo xtask demo | test | bench | vm-test`.
mod bench;
mod bench_ptrace;
mod build;
mod cgroup;
mod demo;
mod dockerd;
mod image;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a workload of our own in its own cgroup (and a container if Docker runs), attach, show the live view.
    Demo(demo::DemoArgs),
    /// Build everything and run every test: unit, Docker end-to-end and VM kernels.
    Test(test::TestArgs),
    /// Benchmarks that print ratios against baselines measured in the same run.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Boot the test kernels under QEMU and run the in-VM tests.
    VmTest(vm::VmTestArgs),
    /// Build the `syschaos` image: FROM scratch, the static chaos-user only.
    Image(image::ImageArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => demo::run(args),
        Command::Test(args) => test::run(args),
        Command::Bench(bench) => bench::run(bench),
        Command::VmTest(args) => vm::run(args),
        Command::Image(args) => image::run(args),
    }
}
