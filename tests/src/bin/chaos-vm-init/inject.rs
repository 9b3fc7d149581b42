//! inject-*: the Perturbator, checked against what the victims saw.
//!
//! Each test injects into a fresh cgroup of its own, where chaos-workload makes a known set of
//! calls; at the same time a neighbour workload in another cgroup makes the same calls and must see
//! no failure. The target's failures must be exactly the ones the rules ask for, chaos-user's own
//! injection counts must equal them, and once chaos-user has exited, a further round in the same
//! cgroup must see no failure at all.
pub mod engines;
mod phase;
pub mod tracer;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    helpers::{ChaosUser, create_dir, expect_refused},
    json,
};
pub(crate) use phase::no_programs_left;
use phase::{Expect, Phase, after_round, fault, run_phase};

/// The file the workload's `open-missing` calls open (its `--path`). It exists, so an openat that
/// is not injected succeeds and every failure in the report is an injected one: `failed_at` is
/// then exactly the injected call numbers.
const OPEN_PATH: &str = "/tmp/syschaos-open/file";
/// Rules on openat carry `path-prefix=OPEN_PREFIX`, so they match the counted opens above and not
/// the workload's other openat, the one creating its data file under DATA_DIR. That open comes
/// after the 10 counted ones, so count=3 or nth=4 would not reach it anyway, but any rule still
/// live then would fail it, and with it every read, write and fsync of the round. The neighbour
/// opens the same path: there the prefix matches too and only the cgroup must keep it safe.
const OPEN_PREFIX: &str = "/tmp/syschaos-open/";
/// The workloads' data files (for read, write and fsync), one per workload.
const DATA_DIR: &str = "/tmp/syschaos-data";
const NEIGHBOUR: &str = "/sys/fs/cgroup/neighbour";

pub fn inject_kprobe() -> Result<(), String> {
    let target = prepare_inject("inject-kprobe")?;
    let faults = [
        fault("openat", libc::EACCES, "EACCES"),
        fault("read", libc::EIO, "EIO"),
        fault("write", libc::ENOSPC, "ENOSPC"),
        fault("getppid", libc::EPERM, "EPERM"),
        fault("fsync", libc::EIO, "EIO"),
    ];
    all_of([
        check_doctor(&[("kprobe", Ok(())), ("lsm", Ok(()))]),
        run_phase(
            &target,
            &Phase::rules(&faults, "count=3", Expect::At(&[1, 2, 3])),
            "kprobe",
        ),
        run_phase(
            &target,
            &Phase::rules(&faults, "nth=4", Expect::At(&[4])),
            "kprobe",
        ),
        run_phase(&target, &Phase::probability(), "kprobe"),
    ])
}

pub fn inject_lsm() -> Result<(), String> {
    let target = prepare_inject("inject-lsm")?;
    // fsync and getppid pass through no LSM hook: inject-refused checks that they are refused.
    let faults = [
        fault("openat", libc::EACCES, "EACCES"),
        fault("read", libc::EIO, "EIO"),
        fault("write", libc::EIO, "EIO"),
    ];
    // The rules name the engine: `auto` would take kprobe where it works (the override kernel).
    all_of([
        check_doctor(&[("lsm", Ok(()))]),
        run_phase(
            &target,
            &Phase::rules(&faults, "count=3,engine=lsm", Expect::At(&[1, 2, 3])),
            "lsm",
        ),
        run_phase(
            &target,
            &Phase::rules(&faults, "nth=4,engine=lsm", Expect::At(&[4])),
            "lsm",
        ),
    ])
}

/// The fmod-ret engine, named in the rules. Where the kernel has the error-injection list, it
/// modifies `__x64_sys_*`: getppid, which passes through no LSM hook, and openat; elsewhere the
/// `security_*` functions of the LSM table's syscalls: openat and read.
pub fn inject_fmod_ret() -> Result<(), String> {
    let target = prepare_inject("inject-fmod-ret")?;
    let faults = match Path::new("/sys/kernel/debug/error_injection/list").exists() {
        true => [
            fault("getppid", libc::EPERM, "EPERM"),
            fault("openat", libc::EACCES, "EACCES"),
        ],
        false => [
            fault("openat", libc::EACCES, "EACCES"),
            fault("read", libc::EIO, "EIO"),
        ],
    };
    let phase = |limit: &str, expect| Phase::rules(&faults, limit, expect);
    all_of([
        check_doctor(&[("fmod-ret", Ok(()))]),
        run_phase(
            &target,
            &phase("count=3,engine=fmod-ret", Expect::At(&[1, 2, 3])),
            "fmod-ret",
        ),
        run_phase(
            &target,
            &phase("nth=4,engine=fmod-ret", Expect::At(&[4])),
            "fmod-ret",
        ),
    ])
}

/// Without `bpf` in the active LSM list (and without bpf_override_return), `auto` takes
/// fmod-ret for the LSM table's syscalls (Debian's kernel has no error-injection list, so
/// fmod-ret modifies their `security_*` functions), and refuses it for the others.
pub fn inject_fmod_ret_auto() -> Result<(), String> {
    let target = prepare_inject("inject-fmod-ret-auto")?;
    let faults = [
        fault("openat", libc::EACCES, "EACCES"),
        fault("read", libc::EIO, "EIO"),
    ];
    let getppid = [
        "--engine",
        "fmod-ret",
        "--syscall",
        "getppid",
        "--errno",
        "EPERM",
    ];
    all_of([
        check_doctor(&[
            ("kprobe", Err("bpf_override_return")),
            ("fmod-ret", Ok(())),
            ("lsm", Err("not in the active LSM list")),
        ]),
        run_phase(
            &target,
            &Phase::rules(&faults, "count=3", Expect::At(&[1, 2, 3])),
            "fmod-ret",
        ),
        run_phase(
            &target,
            &Phase::rules(&faults, "nth=4", Expect::At(&[4])),
            "fmod-ret",
        ),
        expect_refusal(
            &target,
            &getppid,
            &["fmod-ret: covers only", "has no error-injection list"],
        ),
        after_round(&target, &[fault("getppid", libc::EPERM, "EPERM")]),
    ])
}

/// On a kernel without bpf_override_return: rules the chosen in-kernel engine cannot carry out
/// are refused up front (with `auto`, fsync would go to the ptrace engine).
pub fn inject_refused() -> Result<(), String> {
    let target = prepare_inject("inject-refused")?;
    // A refused rule must leave nothing behind either.
    let faults = [
        fault("fsync", libc::EIO, "EIO"),
        fault("getppid", libc::EPERM, "EPERM"),
    ];
    all_of([
        expect_refusal(
            &target,
            &["--engine", "lsm", "--syscall", "fsync", "--errno", "EIO"],
            &["no engine can inject fsync", "lsm: covers only"],
        ),
        expect_refusal(
            &target,
            &[
                "--engine",
                "kprobe",
                "--syscall",
                "getppid",
                "--errno",
                "EPERM",
            ],
            &["bpf_override_return"],
        ),
        after_round(&target, &faults),
    ])
}

/// The checks of a test are independent (each phase runs its own chaos-user): all of them run,
/// and the test reports every failure, not just the first.
pub(crate) fn all_of<const N: usize>(results: [Result<(), String>; N]) -> Result<(), String> {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n  and: "))
    }
}

/// Creates the test's own cgroup, the neighbour's, and the files the workloads open.
pub(crate) fn prepare_inject(name: &str) -> Result<PathBuf, String> {
    let target = Path::new("/sys/fs/cgroup").join(name);
    for dir in [target.as_path(), Path::new(NEIGHBOUR), Path::new(DATA_DIR)] {
        create_dir(dir)?;
    }
    create_dir(Path::new(OPEN_PREFIX))?;
    std::fs::write(OPEN_PATH, "syschaos").map_err(|e| format!("writing {OPEN_PATH}: {e}"))?;
    Ok(target)
}

/// `chaos-user doctor --json`, parsed.
pub(crate) fn doctor_report() -> Result<json::Value, String> {
    let output = ChaosUser::start(&["doctor", "--json"])?.finish(Duration::from_secs(60))?;
    let text = output.stdout.join("\n");
    if !output.status.success() {
        return Err(format!(
            "doctor exited with {}; stdout:\n{text}\nstderr:\n{}",
            output.status, output.stderr
        ));
    }
    json::parse(&text).map_err(|e| format!("doctor: bad JSON ({e}):\n{text}"))
}

/// Each engine of doctor's report: Ok if it works, else its reason.
pub(crate) fn doctor_engines(report: &json::Value) -> Vec<(String, Result<(), String>)> {
    let engines = report.get("engines").map_or(&[][..], json::Value::as_array);
    engines
        .iter()
        .map(|engine| {
            let name = engine.get("engine").and_then(json::Value::as_str);
            let works = engine.get("works") == Some(&json::Value::Bool(true));
            let reason = engine.get("reason").and_then(json::Value::as_str);
            let state = match (works, reason) {
                (true, _) => Ok(()),
                (false, reason) => Err(reason.unwrap_or("(no reason given)").to_owned()),
            };
            (name.unwrap_or("?").to_owned(), state)
        })
        .collect()
}

/// `chaos-user doctor --json`: each engine works (Ok) or not, with a reason containing the text.
fn check_doctor(expected: &[(&str, Result<(), &str>)]) -> Result<(), String> {
    check_engines(&doctor_report()?, expected)
}

/// The engines of doctor's `report` are as `expected`.
pub(crate) fn check_engines(
    report: &json::Value,
    expected: &[(&str, Result<(), &str>)],
) -> Result<(), String> {
    let engines = doctor_engines(report);
    for (name, expect) in expected {
        let (_, state) = engines
            .iter()
            .find(|(engine, _)| engine == name)
            .ok_or_else(|| format!("doctor reports no engine {name}: {engines:?}"))?;
        println!(
            "  doctor: {name}: {}",
            state
                .as_ref()
                .map_or_else(|r| format!("unavailable: {r}"), |()| "works".to_owned())
        );
        match (expect, state) {
            (Ok(()), Err(reason)) => {
                return Err(format!("doctor: engine {name} should work here: {reason}"));
            }
            (Err(needle), state) if !state.as_ref().is_err_and(|r| r.contains(needle)) => {
                return Err(format!(
                    "doctor: engine {name} should be unavailable with a reason mentioning \
                     {needle}; it says {state:?}"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refused with exit code 1 and one line `chaos-user: error: ...` containing every needle.
pub(crate) fn expect_refusal(target: &Path, rule: &[&str], needles: &[&str]) -> Result<(), String> {
    let label = target.to_str().ok_or("cgroup path is not UTF-8")?;
    let mut args = vec![
        "inject",
        "--cgroup",
        label,
        "--no-metrics",
        // Only in case it is wrongly accepted: then it ends soon, and the test fails.
        "--duration",
        "5s",
    ];
    args.extend(rule);
    expect_refused(&args, needles)
}
