//! `chaos-user trace` against a real container: the known calls, decoded, in order; drops
//! counted when the reader falls behind, while the counters stay exact.
use std::time::Duration;

use serde_json::Value;
use tests::{attach::Attach, docker::Container, wait_for};

const MISSING: &str = "/syschaos-trace-marker";

fn events(trace: &Attach) -> Vec<Value> {
    trace
        .stdout()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

fn of<'a>(events: &'a [Value], syscall: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["syscall"] == syscall && event["comm"] == "chaos-workload")
        .collect()
}

#[test]
fn the_trace_shows_the_known_calls_decoded_and_in_order() {
    let web = Container::start(
        "trace",
        &[
            "--getppid",
            "2",
            "--open-missing",
            "3",
            "--path",
            MISSING,
            "--connect",
            "2",
        ],
    );
    let trace = Attach::trace(&[
        "--container",
        &web.name,
        "--syscall",
        "getppid,openat,connect",
        "--json",
    ]);
    web.trigger_round(1);
    let events = wait_for(
        "the trace to show the connects",
        Duration::from_secs(10),
        || {
            let events = events(&trace);
            (of(&events, "connect").len() == 2).then_some(events)
        },
    );

    let getppid = of(&events, "getppid");
    let openat = of(&events, "openat");
    let connect = of(&events, "connect");
    assert_eq!((getppid.len(), openat.len(), connect.len()), (2, 3, 2));
    for event in &openat {
        assert_eq!(event["args"][0], "AT_FDCWD");
        assert_eq!(event["args"][1], format!("{MISSING:?}"));
        assert_eq!(event["args"][2], "O_RDONLY");
        assert_eq!(event["errno"], "ENOENT");
        assert_eq!(event["ret"], -(libc::ENOENT as i64));
        assert_eq!(event["injected"], false);
    }
    for event in &connect {
        let address = event["args"][1].as_str().unwrap();
        assert!(address.starts_with("127.0.0.1:"), "{event}");
        assert_eq!(event["ret"], 0);
    }
    // Only the calls asked for, in the order the workload made them.
    let names: Vec<&str> = events
        .iter()
        .filter(|event| event["comm"] == "chaos-workload")
        .map(|event| event["syscall"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "getppid", "getppid", "openat", "openat", "openat", "connect", "connect"
        ]
    );
    let times: Vec<u64> = events
        .iter()
        .map(|event| event["time_ns"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
}

#[test]
fn failed_only_and_injected_calls_are_marked() {
    let web = Container::start(
        "trace-failed",
        &[
            "--getppid",
            "5",
            "--open-missing",
            "2",
            "--path",
            MISSING,
            "--connect",
            "3",
        ],
    );
    let trace = Attach::trace(&[
        "--container",
        &web.name,
        "--failed",
        "--json",
        "--inject",
        "connect=ECONNREFUSED,count=1",
    ]);
    web.trigger_round(1);
    let events = wait_for("the injected connect", Duration::from_secs(10), || {
        let events = events(&trace);
        (!of(&events, "connect").is_empty()).then_some(events)
    });
    assert!(
        events.iter().all(|event| event["errno"].is_string()),
        "only failures: {events:?}"
    );
    assert_eq!(of(&events, "openat").len(), 2);
    assert!(of(&events, "getppid").is_empty());
    let connect = of(&events, "connect");
    assert_eq!(connect.len(), 1);
    assert_eq!(connect[0]["errno"], "ECONNREFUSED");
    assert_eq!(connect[0]["injected"], true);
}

#[test]
fn a_flood_drops_events_but_never_counts() {
    const CALLS: u64 = 300_000;
    let calls = CALLS.to_string();
    let web = Container::start("trace-flood", &["--getppid", &calls]);
    let mut trace = Attach::trace(&["--container", &web.name, "--syscall", "getppid", "--json"]);
    web.trigger_round(1);
    // Let the reader catch up with what is left in the ring buffer.
    std::thread::sleep(Duration::from_secs(2));
    let scrape = trace.metrics();
    let counted = scrape.value(
        "syschaos_syscalls_total",
        &[("target", &web.name), ("syscall", "getppid")],
    );
    assert_eq!(counted, Some(CALLS as f64), "the counters are exact");
    let dropped = scrape
        .value(
            "syschaos_trace_dropped_events_total",
            &[("target", &web.name)],
        )
        .expect("the drop counter is exported") as u64;
    trace.signal(libc::SIGINT);
    trace.wait_exit(Duration::from_secs(10));
    let shown = trace.stdout().len() as u64;
    assert!(
        dropped > 0,
        "a flood of {CALLS} calls drops events ({shown} shown)"
    );
    assert_eq!(
        shown + dropped,
        CALLS,
        "every call is either shown or counted as dropped"
    );
    let summary = format!("syschaos: trace: {shown} calls shown, {dropped} dropped");
    assert!(trace.stderr().contains(&summary), "{}", trace.stderr());
}
