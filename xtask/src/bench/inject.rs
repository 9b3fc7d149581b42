//! `cargo xtask bench inject`: first what a rule costs nginx under wrk, per engine
//! (inject_http.rs); then what chaos-user's in-kernel injection adds to each call of a process,
//! for a call it leaves alone (getppid) and one it fails (connect), with 1 rule and with 1000, next
//! to the monitor alone and to strace -e inject, measured in the same run. That is the
//! cgroup-sock engine; the kprobe engine's runs follow in the override VM (inject_vm.rs).
use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, ensure};
use clap::Args;

use super::harness::{self, Daemon, Timing, median};
use crate::{build, cgroup::Cgroup};

#[derive(Clone, Debug, Args)]
pub struct InjectArgs {
    /// Workload runs per configuration and call; the table shows the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// getppid calls per run: no rule matches them.
    #[arg(long, default_value_t = 1_000_000)]
    pub getppid: u64,
    /// connect calls per run (to a loopback listener): the rule fails them with ECONNREFUSED.
    #[arg(long, default_value_t = 20_000)]
    pub connect: u64,
    /// Only the host part: skip the kprobe engine's runs in the override VM.
    #[arg(long, conflicts_with = "vm_only")]
    pub skip_vm: bool,
    /// Only the kprobe engine's runs in the override VM.
    #[arg(long)]
    pub vm_only: bool,
    /// Skip the first part: nginx under wrk with a never-matching rule on each engine.
    #[arg(long)]
    pub skip_nginx: bool,
    /// Only the first part (nginx under wrk).
    #[arg(long, conflicts_with_all = ["skip_nginx", "vm_only"])]
    pub nginx_only: bool,
    /// Length of each wrk run of the nginx part.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub wrk_duration: std::time::Duration,
    /// One more configuration of the nginx part: `chaos-user inject` with this rule (repeat for
    /// more), e.g. to tell the tracer's cost from the rule's: `getppid=EIO,engine=stop`.
    #[arg(long = "also-rule", value_name = "RULE")]
    pub also_rules: Vec<String>,
}

/// The rule under test, and the others that make 4 rules per target. The workload's listener
/// binds once: its bind rule is installed and checked, but only a billionth bind would fail.
const RULE: &str = "connect=ECONNREFUSED";
const OTHER_RULES: [&str; 3] = [
    "bind=EADDRINUSE,nth=1000000000",
    "sendto=EPERM",
    "sendmsg=EPERM",
];
/// Targets of the 1000-rule configuration: the workload's cgroup and empty ones.
const TARGETS: usize = 250;
const ECONNREFUSED: u32 = 111;

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Bare,
    Monitor,
    OneRule,
    ThousandRules,
    Strace,
}

// `config as usize` indexes the per-config results: ALL lists them in declaration order.
const _: () = {
    let mut i = 0;
    while i < Config::ALL.len() {
        assert!(Config::ALL[i] as usize == i);
        i += 1;
    }
};

impl Config {
    const ALL: [Config; 5] = [
        Config::Bare,
        Config::Monitor,
        Config::OneRule,
        Config::ThousandRules,
        Config::Strace,
    ];

    fn label(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Monitor => "chaos-user attach (monitor only)",
            Config::OneRule => "chaos-user inject, 1 rule",
            Config::ThousandRules => "chaos-user inject, 1000 rules/250 targets",
            Config::Strace => "strace -f -e inject=connect",
        }
    }

    fn injects(self) -> bool {
        matches!(
            self,
            Config::OneRule | Config::ThousandRules | Config::Strace
        )
    }
}

#[derive(Clone, Copy)]
enum Call {
    Getppid,
    Connect,
}

impl Call {
    const ALL: [Call; 2] = [Call::Getppid, Call::Connect];

    fn name(self) -> &'static str {
        match self {
            Call::Getppid => "getppid",
            Call::Connect => "connect",
        }
    }
}

struct Bench {
    chaos_user: PathBuf,
    workload: PathBuf,
    /// The workload runs here.
    target: Cgroup,
    /// Empty targets of the 1000-rule configuration.
    others: Vec<Cgroup>,
    cpu: usize,
    args: InjectArgs,
}

impl Bench {
    fn count(&self, call: Call) -> u64 {
        match call {
            Call::Getppid => self.args.getppid,
            Call::Connect => self.args.connect,
        }
    }

    /// The workload making `n` calls of `call`, in its cgroup, on the bench CPU; under strace for
    /// `Config::Strace` (strace runs in the cgroup too, and its CPU time counts).
    fn workload(&self, config: Config, call: Call, n: u64) -> anyhow::Result<Command> {
        let mut command = if config == Config::Strace {
            let mut strace = Command::new("strace");
            // Only connect is traced (printed to /dev/null), the least strace can do here;
            // without --seccomp-bpf it still stops at every call.
            strace.args(["-f", "-o", "/dev/null", "-e", "trace=connect"]);
            strace.args(["-e", "inject=connect:error=ECONNREFUSED"]);
            strace.arg(&self.workload);
            strace
        } else {
            Command::new(&self.workload)
        };
        command.args(["calls", &format!("--{}", call.name()), &n.to_string()]);
        self.target.place(&mut command)?;
        harness::pin(&mut command, self.cpu);
        Ok(command)
    }

    /// chaos-user for `config`, attached before it returns; None for the others.
    fn tracer(&self, config: Config) -> anyhow::Result<Option<Daemon>> {
        let (subcommand, rules, targets) = match config {
            Config::Bare | Config::Strace => return Ok(None),
            Config::Monitor => ("attach", vec![], 1),
            Config::OneRule => ("inject", vec![RULE], 1),
            Config::ThousandRules => ("inject", [&[RULE][..], &OTHER_RULES].concat(), TARGETS),
        };
        let mut command = Command::new(&self.chaos_user);
        command.args([subcommand, "--quiet", "--no-metrics"]);
        let cgroups = std::iter::once(&self.target).chain(&self.others);
        for cgroup in cgroups.take(targets) {
            command.arg("--cgroup").arg(&cgroup.path);
        }
        for rule in rules {
            command.args(["--rule", rule]);
        }
        let mut daemon = Daemon::spawn(&format!("chaos-user {subcommand}"), &mut command)?;
        let ready = if subcommand == "inject" {
            "syschaos: injecting"
        } else {
            "syschaos: attached"
        };
        daemon.wait_for(|line| line.starts_with(ready), Duration::from_secs(60))?;
        Ok(Some(daemon))
    }

    fn measure(&self, config: Config, call: Call) -> anyhow::Result<Timing> {
        let tracer = self.tracer(config)?;
        let timing = harness::time(&mut self.workload(config, call, self.count(call))?)?;
        if let Some(tracer) = tracer {
            tracer.stop()?;
        }
        Ok(timing)
    }

    /// An injected configuration is only worth timing if connect really fails: every one of
    /// the workload's connects must fail with ECONNREFUSED.
    fn check(&self, config: Config) -> anyhow::Result<()> {
        let tracer = self.tracer(config)?;
        let n = 1000;
        let output = self.workload(config, Call::Connect, n)?.output()?;
        if let Some(tracer) = tracer {
            tracer.stop()?;
        }
        ensure!(output.status.success(), "workload failed: {output:?}");
        let report = String::from_utf8_lossy(&output.stdout);
        let connect = report
            .split_once(r#""connect":"#)
            .map(|(_, rest)| rest)
            .context("no connect in the workload's report")?;
        let failed = json_number(connect, "failed");
        let refused = json_number(connect, &ECONNREFUSED.to_string());
        ensure!(
            failed == Some(n) && refused == Some(n),
            "{}: expected {n} connects failed with errno {ECONNREFUSED}: {report}",
            config.label()
        );
        eprintln!(
            "check: {}: connect failed {n}/{n} times with errno {ECONNREFUSED}",
            config.label()
        );
        Ok(())
    }
}

/// The number after the first `"key":` in `json`.
fn json_number(json: &str, key: &str) -> Option<u64> {
    let (_, rest) = json.split_once(&format!(r#""{key}":"#))?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

pub fn run(args: &InjectArgs) -> anyhow::Result<()> {
    if args.vm_only {
        return super::inject_vm::run();
    }
    let workload = build::release("tests", Some(build::MUSL))?.join("chaos-workload");
    let chaos_user = build::chaos_user()?;
    if !args.skip_nginx {
        super::inject_http::run(args, &chaos_user)?;
        if args.nginx_only {
            return Ok(());
        }
    }
    if Command::new("strace").arg("-V").output().is_err() {
        build::run(Command::new("apt-get").args(["install", "-y", "strace"]))?;
    }
    let target = Cgroup::create("syschaos-bench-inject")?;
    let others = (1..TARGETS)
        .map(|i| Cgroup::create(&format!("syschaos-bench-inject-{i}")))
        .collect::<anyhow::Result<_>>()?;
    let bench = Bench {
        chaos_user,
        workload,
        target,
        others,
        cpu: harness::last_cpu()?,
        args: args.clone(),
    };
    eprintln!("bench: load average {}", harness::load_average());
    for config in Config::ALL.into_iter().filter(|c| c.injects()) {
        bench
            .check(config)
            .with_context(|| format!("configuration \"{}\"", config.label()))?;
    }

    // Round-robin, so that a burst of load elsewhere hits one round of every config.
    let mut runs = vec![[const { Vec::new() }, const { Vec::new() }]; Config::ALL.len()];
    for round in 1..=args.runs {
        for (config, runs) in Config::ALL.iter().zip(&mut runs) {
            for (call, runs) in Call::ALL.iter().zip(runs) {
                let timing = bench
                    .measure(*config, *call)
                    .with_context(|| format!("configuration \"{}\"", config.label()))?;
                eprintln!(
                    "run {round}/{}: {:<42} {:<8} cpu {:.3} s  wall {:.3} s",
                    args.runs,
                    config.label(),
                    call.name(),
                    timing.cpu.as_secs_f64(),
                    timing.wall.as_secs_f64()
                );
                runs.push(timing);
            }
        }
    }
    eprintln!("bench: load average {}", harness::load_average());
    report(&bench, &runs);
    if !args.skip_vm {
        super::inject_vm::run()?;
    }
    Ok(())
}

/// Median ns per call of each configuration and call: (cpu, wall).
pub(super) type PerCall = [(f64, f64); 2];

fn report(bench: &Bench, runs: &[[Vec<Timing>; 2]]) {
    let per_call: Vec<PerCall> = runs
        .iter()
        .map(|runs| {
            std::array::from_fn(|i| {
                let n = bench.count(Call::ALL[i]) as f64;
                let ns = |f: fn(&Timing) -> Duration| {
                    let times: Vec<f64> = runs[i].iter().map(|t| f(t).as_secs_f64()).collect();
                    median(&times) / n * 1e9
                };
                (ns(|t| t.cpu), ns(|t| t.wall))
            })
        })
        .collect();
    // Config::ALL lists every config, in the order `per_call` holds them.
    let at = |config: Config| per_call[config as usize];

    println!();
    println!(
        "chaos-workload calls in its own cgroup, on CPU {}: --getppid {} (no rule matches) and \
         --connect {} (loopback; injected configs fail it with ECONNREFUSED), median of {} runs",
        bench.cpu, bench.args.getppid, bench.args.connect, bench.args.runs
    );
    println!(
        "ns per call = the process's time / N (process start included); cpu = user+sys of the \
         workload (and of strace, which waits for it); wall = elapsed"
    );
    println!(
        "{:<42} {:>12} {:>12} {:>12} {:>12}",
        "configuration", "getppid cpu", "getppid wall", "connect cpu", "connect wall"
    );
    for (config, [getppid, connect]) in Config::ALL.iter().zip(&per_call) {
        let mark = if config.injects() { "" } else { " (succeeds)" };
        println!(
            "{:<42} {:>12.0} {:>12.0} {:>12.0} {:>12.0}{mark}",
            config.label(),
            getppid.0,
            getppid.1,
            connect.0,
            connect.1
        );
    }
    println!();

    print_goals("connect", std::array::from_fn(|i| at(Config::ALL[i])));
}

/// The goal lines of both parts of the bench, from the median (cpu, wall) ns per call of the
/// non-matching getppid and of the injected call, for each configuration in `Config::ALL` order.
pub(super) fn print_goals(injected: &str, per_call: [PerCall; 5]) {
    let [bare, monitor, one, thousand, strace] = per_call.map(|[getppid, call]| (getppid, call));
    println!("goal: the non-matching path (getppid, cpu ns/call) costs no more than the monitor:");
    for (label, cost) in [("1 rule", one.0.0), ("1000 rules", thousand.0.0)] {
        println!(
            "  {label:<10} {cost:.0} ns vs monitor {:.0} ns (bare {:.0}): added {:+.0} ns over \
             the monitor, ratio {:.3}",
            monitor.0.0,
            bare.0.0,
            cost - monitor.0.0,
            cost / monitor.0.0
        );
    }
    println!("goal: 1000 rules cost the same per call as one (1000 rules / 1 rule, cpu):");
    println!(
        "  getppid {:.3}, injected {injected} {:.3}",
        thousand.0.0 / one.0.0,
        thousand.1.0 / one.1.0
    );
    println!("injected {injected}, chaos-user / strace -e inject:");
    for (label, one, thousand, strace) in [
        ("cpu", one.1.0, thousand.1.0, strace.1.0),
        ("wall", one.1.1, thousand.1.1, strace.1.1),
    ] {
        println!(
            "  {label:<4} 1 rule {one:.0} / {strace:.0} ns = {:.3}; 1000 rules {thousand:.0} / \
             {strace:.0} ns = {:.3}",
            one / strace,
            thousand / strace
        );
    }
}
