//! Scenarios that the tests of more than one engine run.
use std::time::Duration;

use crate::{CallOutcome, attach::Attach, docker::Container, wait_for};

/// Five errno rules on `engine`: every `openat` of a missing path fails with EACCES, the first 4
/// reads with EIO, the 3rd write with ENOSPC, the first 10 fsyncs with EIO, the first 6 getppids
/// with EPERM. In one round of ten calls of each kind the target sees exactly those errnos, a
/// neighbour making the same calls sees none, and the monitor counts each injected fault under
/// its syscall and errno. Returns the target and chaos-user, still injecting (only the openat
/// rule has budget left), for the engine's own checks.
pub fn five_errnos(engine: &str, name_prefix: &str) -> (Container, Attach) {
    let calls = [
        "--getppid",
        "10",
        "--open-missing",
        "10",
        "--read",
        "10",
        "--write",
        "10",
        "--fsync",
        "10",
    ];
    let web = Container::start(&format!("{name_prefix}-web"), &calls);
    let neighbour = Container::start(&format!("{name_prefix}-neighbour"), &calls);
    // Named: `auto` would take another engine where the host offers one.
    let rules = [
        "openat=EACCES,path-prefix=/syschaos-missing",
        "read=EIO,count=4",
        "write=ENOSPC,nth=3",
        "fsync=EIO,count=10",
        "getppid=EPERM,count=6",
    ]
    .map(|rule| format!("{rule},engine={engine}"));
    let mut args = vec!["--container", &web.name];
    for rule in &rules {
        args.extend(["--rule", rule]);
    }
    let attach = Attach::inject(&args);
    let stderr = attach.stderr();
    assert_eq!(
        stderr.matches(&format!("via {engine}")).count(),
        5,
        "{stderr}"
    );

    let report = web.trigger_round(1);
    let all = |n: u64| (1..=n).collect::<Vec<_>>();
    for (kind, outcome) in [
        (
            "open-missing",
            CallOutcome::failing(libc::EACCES, all(10), 10),
        ),
        ("read", CallOutcome::failing(libc::EIO, all(4), 10)),
        ("write", CallOutcome::failing(libc::ENOSPC, vec![3], 10)),
        ("fsync", CallOutcome::failing(libc::EIO, all(10), 10)),
        ("getppid", CallOutcome::failing(libc::EPERM, all(6), 10)),
    ] {
        assert_eq!(report.outcome(kind), outcome, "{kind}");
    }
    // The neighbour's calls are its own: the missing file is missing (ENOENT), the rest succeed.
    let untouched = neighbour.trigger_round(1);
    assert_eq!(
        untouched.outcome("open-missing"),
        CallOutcome::failing(libc::ENOENT, all(10), 10)
    );
    for kind in ["read", "write", "fsync", "getppid"] {
        assert_eq!(untouched.outcome(kind), CallOutcome::clean(10), "{kind}");
    }
    // Every injected fault is counted by the monitor under its syscall and errno.
    for (syscall, errno, count) in [
        ("openat", "EACCES", 10.0),
        ("read", "EIO", 4.0),
        ("write", "ENOSPC", 1.0),
        ("fsync", "EIO", 10.0),
        ("getppid", "EPERM", 6.0),
    ] {
        let injected = wait_for("the injection counts", Duration::from_secs(5), || {
            attach.injections(&web.name, syscall, errno, engine)
        });
        assert_eq!(injected, count, "{syscall} {errno} injections");
        assert_eq!(
            attach.syscall_errors(&web.name, syscall, errno),
            Some(count),
            "monitor: {syscall} {errno}"
        );
    }
    (web, attach)
}
