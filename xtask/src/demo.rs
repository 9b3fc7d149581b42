//! `cargo xtask demo`: see chaos-user work without a container of your own.
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use clap::Args;

use crate::{build, cgroup::Cgroup, dockerd};

const DEMO_CONTAINER: &str = "syschaos-demo";
const DEMO_IMAGE: &str = "syschaos-workload:demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long to show the live view.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// Kills the workload process when the demo ends, however it ends.
struct Workload(Child);

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the demo container when the demo ends.
struct DemoContainer;

impl Drop for DemoContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", DEMO_CONTAINER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let chaos_user = build::chaos_user()?;
    let workload = build::release("tests", Some(build::MUSL))?.join("chaos-workload");

    // A workload of our own in a cgroup of its own.
    let cgroup = Cgroup::create("syschaos-demo")?;
    let mut command = Command::new(&workload);
    command.args(["loop", "--interval-ms", "100"]);
    cgroup.place(&mut command)?;
    let _workload = Workload(command.spawn()?);
    let mut attach = vec![
        "attach".to_owned(),
        "--cgroup".to_owned(),
        cgroup.path.display().to_string(),
    ];

    // And the same workload in a container, when a Docker daemon runs.
    let _container = if dockerd::is_running() {
        dockerd::build_scratch_image(DEMO_IMAGE, &workload, build::Arch::HOST)?;
        let _ = Command::new("docker")
            .args(["rm", "-f", DEMO_CONTAINER])
            .output();
        build::run(Command::new("docker").args([
            "run",
            "-d",
            "--name",
            DEMO_CONTAINER,
            "--network",
            "none",
            DEMO_IMAGE,
            "loop",
            "--interval-ms",
            "50",
        ]))?;
        attach.extend(["--container".to_owned(), DEMO_CONTAINER.to_owned()]);
        Some(DemoContainer)
    } else {
        println!("(no Docker daemon answers: the demo watches a plain cgroup only)");
        None
    };

    attach.extend([
        "--duration".to_owned(),
        humantime::format_duration(args.duration).to_string(),
    ]);
    println!("$ sudo {} {}", chaos_user.display(), attach.join(" "));
    std::thread::sleep(Duration::from_millis(500));
    build::run(Command::new(&chaos_user).args(&attach))?;

    println!();
    println!(
        "That was chaos-user watching a workload of its own, counting its system calls in the kernel."
    );
    println!("Next steps:");
    println!(
        "  - your own container:  sudo {} attach --container NAME",
        chaos_user.display()
    );
    println!(
        "  - Prometheus metrics:  http://127.0.0.1:9464/metrics while attach runs (--metrics-addr to change)"
    );
    println!(
        "  - JSON snapshots:      sudo {} attach --container NAME --json",
        chaos_user.display()
    );
    println!("  - the tests:           sudo ./run test");
    Ok(())
}
