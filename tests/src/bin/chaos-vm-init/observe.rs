//! trace and http: the per-call trace of a cgroup, and the HTTP responses of a server in one,
//! counted exactly on each kernel.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::Duration,
};

use crate::{
    helpers::{ChaosUser, ChaosUserOutput, create_dir, expect_success, spawn_in_cgroup, workload},
    inject::no_programs_left,
    json,
};

/// The missing file the traced workload opens.
const MISSING: &str = "/tmp/syschaos-trace-missing";
/// Where the HTTP test's server listens.
const PORT: u16 = 8080;
/// The requests of the HTTP test: path, status, how many.
const REQUESTS: [(&str, u64, u64); 3] = [
    ("/status/200", 200, 6),
    ("/status/404", 404, 4),
    ("/status/503", 503, 2),
];

/// `trace --syscall getppid,openat --json`: exactly the target's 5 getppid and 3 openat of a
/// missing file, decoded, in order; none of the neighbour's calls.
pub fn trace() -> Result<(), String> {
    let cgroup = Path::new("/sys/fs/cgroup/trace");
    let neighbour = Path::new("/sys/fs/cgroup/trace-neighbour");
    create_dir(cgroup)?;
    create_dir(neighbour)?;
    let label = cgroup.to_str().ok_or("cgroup path is not UTF-8")?;
    let mut chaos_user = ChaosUser::start(&[
        "trace",
        "--cgroup",
        label,
        "--syscall",
        "getppid,openat",
        "--json",
        "--no-metrics",
        "--duration",
        "60s",
    ])?;
    chaos_user.wait_attached(Duration::from_secs(60))?;
    let calls = [
        "calls",
        "--getppid",
        "5",
        "--open-missing",
        "3",
        "--path",
        MISSING,
    ];
    let inside = spawn_in_cgroup(workload(&calls), cgroup)
        .map_err(|e| format!("starting the workload: {e}"))?;
    let outside = spawn_in_cgroup(workload(&calls), neighbour)
        .map_err(|e| format!("starting the neighbour: {e}"))?;
    expect_success(inside, "the traced workload")?;
    expect_success(outside, "the neighbour")?;
    thread::sleep(Duration::from_millis(1500));
    chaos_user.interrupt()?;
    let output = chaos_user.finish(Duration::from_secs(60))?;
    check_trace(&output, label)?;
    no_programs_left()
}

fn check_trace(output: &ChaosUserOutput, label: &str) -> Result<(), String> {
    let events = output.json_lines("chaos-user trace")?;
    let text = |event: &json::Value, field: &str| {
        event
            .get(field)
            .and_then(json::Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut seen = Vec::new();
    for event in &events {
        if text(event, "target") != label {
            return Err(format!(
                "an event of another target: {}",
                output.stdout.join("\n")
            ));
        }
        if text(event, "comm") != "chaos-workload" {
            continue;
        }
        let syscall = text(event, "syscall");
        let args = event.get("args").map_or(&[][..], json::Value::as_array);
        let path = args.get(1).and_then(json::Value::as_str).unwrap_or("");
        let right = match syscall.as_str() {
            "getppid" => event.get("ret").and_then(json::Value::as_u64) == Some(1),
            "openat" => path == format!("{MISSING:?}") && text(event, "errno") == "ENOENT",
            _ => false,
        };
        if !right || event.get("injected") != Some(&json::Value::Bool(false)) {
            return Err(format!("an event not as the workload made it: {event:?}"));
        }
        seen.push(syscall);
    }
    let expected: Vec<&str> = [["getppid"; 5].as_slice(), &["openat"; 3]].concat();
    if seen != expected {
        return Err(format!(
            "traced {seen:?}, expected {expected:?}; stdout:\n{}",
            output.stdout.join("\n")
        ));
    }
    Ok(())
}

/// `attach` on a cgroup where `chaos-workload serve` answers 6 200s, 4 404s and 2 503s: the
/// JSON snapshots count exactly those.
pub fn http() -> Result<(), String> {
    let cgroup = Path::new("/sys/fs/cgroup/http");
    create_dir(cgroup)?;
    let label = cgroup.to_str().ok_or("cgroup path is not UTF-8")?;
    let mut server = workload(&["serve", "--port", &PORT.to_string()]);
    server.stdout(Stdio::piped());
    let mut server =
        Server(spawn_in_cgroup(server, cgroup).map_err(|e| format!("starting the server: {e}"))?);
    server.wait_ready()?;
    let mut chaos_user = ChaosUser::on_cgroup("attach", label, "60s", &[])?;
    chaos_user.wait_attached(Duration::from_secs(60))?;
    for (path, status, count) in REQUESTS {
        for _ in 0..count {
            let got = get(path)?;
            if got != status {
                return Err(format!("GET {path} answered {got}, expected {status}"));
            }
        }
    }
    thread::sleep(Duration::from_millis(1500));
    chaos_user.interrupt()?;
    let output = chaos_user.finish(Duration::from_secs(60))?;
    drop(server);
    check_http(&output, label)?;
    no_programs_left()
}

/// The server, killed when the test ends however it ends.
struct Server(Child);

impl Server {
    /// Waits for its `{"ready":true}` line (or its exit).
    fn wait_ready(&mut self) -> Result<(), String> {
        let stdout = self
            .0
            .stdout
            .take()
            .ok_or("the server's stdout is not piped")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading the server's stdout: {e}"))?;
        match line.trim() {
            "{\"ready\":true}" => Ok(()),
            _ => Err(format!("the server did not start: {line:?}")),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` on a connection of its own, from outside the target: the status code.
fn get(path: &str) -> Result<u64, String> {
    let request = |path: &str| -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", PORT))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    let answer = request(path).map_err(|e| format!("GET {path}: {e}"))?;
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status line in {answer:?}"))
}

/// The snapshots' per-interval codes add up to the requests, and the last one's total is theirs.
fn check_http(output: &ChaosUserOutput, label: &str) -> Result<(), String> {
    let mut codes: Vec<(String, u64)> = Vec::new();
    let mut total = None;
    for report in output.json_lines("chaos-user")? {
        let http = report
            .get("targets")
            .map_or(&[][..], json::Value::as_array)
            .iter()
            .find(|t| t.get("target").and_then(json::Value::as_str) == Some(label))
            .and_then(|t| t.get("http"));
        let Some(http) = http else { continue };
        total = http.get("responses_total").and_then(json::Value::as_u64);
        if let Some(json::Value::Object(members)) = http.get("codes") {
            for (code, n) in members {
                match codes.iter_mut().find(|(c, _)| c == code) {
                    Some((_, sum)) => *sum += n.as_u64().unwrap_or(0),
                    None => codes.push((code.clone(), n.as_u64().unwrap_or(0))),
                }
            }
        }
    }
    codes.sort();
    let expected: Vec<(String, u64)> = REQUESTS
        .iter()
        .map(|(_, status, n)| (status.to_string(), *n))
        .collect();
    let requests: u64 = REQUESTS.iter().map(|(_, _, n)| n).sum();
    if codes != expected || total != Some(requests) {
        return Err(format!(
            "HTTP responses counted {codes:?} (total {total:?}), expected {expected:?} \
             ({requests}); stdout:\n{}",
            output.stdout.join("\n")
        ));
    }
    Ok(())
}
