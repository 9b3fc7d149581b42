//! `chaos-user doctor`: what this kernel and host offer syschaos, and why not where they don't.
use clap::Args;
use serde::Serialize;

use crate::{
    docker,
    inject::engine::{ALL_ENGINES, Engine},
    session::{LoadOptions, Session},
    target::CgroupRoot,
};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    cgroup_v2_root: Result<String, String>,
    monitor: Result<(), String>,
    docker: Result<(), String>,
    engines: Vec<EngineReport>,
}

#[derive(Debug, Serialize)]
struct EngineReport {
    engine: Engine,
    works: bool,
    /// Why not, when it does not.
    reason: Option<String>,
    covers: String,
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_default();
    let cgroup_v2_root = CgroupRoot::discover()
        .map(|root| root.v2.display().to_string())
        .map_err(|e| e.to_string());
    let docker = docker::ping().await.map_err(|e| e.to_string());
    // Loaded (with injection) and started, exactly as attach/inject would.
    let loaded = Session::load(&LoadOptions {
        inject: true,
        syscalls: true,
        http: true,
        ..Default::default()
    })
    .and_then(|session| session.start().map(|()| session))
    .and_then(|session| session.capabilities());
    let (monitor, engines) = match loaded {
        Ok(capabilities) => {
            let engines = ALL_ENGINES
                .into_iter()
                .map(|engine| {
                    let works = capabilities.of(engine).clone();
                    EngineReport {
                        engine,
                        works: works.is_ok(),
                        reason: works.err(),
                        covers: engine.coverage(),
                    }
                })
                .collect();
            (Ok(()), engines)
        }
        Err(e) => (Err(crate::ebpf::chain(&e)), Vec::new()),
    };
    let report = Report {
        kernel,
        cgroup_v2_root,
        monitor,
        docker,
        engines,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn print_text(report: &Report) {
    let status = |result: &Result<(), String>| match result {
        Ok(()) => "ok".to_owned(),
        Err(why) => format!("NO: {why}"),
    };
    println!("kernel          {}", report.kernel);
    match &report.cgroup_v2_root {
        Ok(root) => println!("cgroup v2       {root}"),
        Err(why) => println!("cgroup v2       NO: {why}"),
    }
    println!("monitor         {}", status(&report.monitor));
    println!("docker          {}", status(&report.docker));
    println!();
    println!(
        "injection engines (auto: an errno before the call on the first pre-call engine that works \
         and covers the syscall, else ptrace; when=after and delays on stop; experiments prefer \
         stop to ptrace):"
    );
    for engine in &report.engines {
        let state = match &engine.reason {
            None => "works".to_owned(),
            Some(why) => format!("unavailable: {why}"),
        };
        println!("  {:<12} {state}", engine.engine.name());
        println!("  {:<12} covers: {}", "", engine.covers);
    }
    let works = |wanted: Engine| {
        report
            .engines
            .iter()
            .any(|e| e.engine == wanted && e.reason.is_none())
    };
    if works(Engine::Ptrace) {
        println!();
        println!(
            "note: ptrace stops every call of the target in chaos-user (microseconds each: a busy \
             server can lose most of its throughput){}",
            match works(Engine::Stop) {
                true => "; the stop engine (when=after, and delays) stops only the perturbed calls",
                false => "",
            }
        );
    }
}
