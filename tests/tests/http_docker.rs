//! HTTP status codes counted from outside: a server in a container answers a client on the host.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
};

use tests::{attach::Attach, docker::Container, free_port};

/// Sends `paths` on one connection (keep-alive unless `close_each`), returns the status codes.
fn requests(port: u16, paths: &[&str], version: &str, close: bool) -> Vec<u32> {
    requests_to("127.0.0.1", port, paths, version, close)
}

fn requests_to(host: &str, port: u16, paths: &[&str], version: &str, close: bool) -> Vec<u32> {
    let stream = TcpStream::connect((host, port)).expect("connect to the server");
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let connection = if close { "close" } else { "keep-alive" };
    paths
        .iter()
        .map(|path| {
            write!(
                writer,
                "GET {path} {version}\r\nHost: test\r\nConnection: {connection}\r\n\r\n"
            )
            .unwrap();
            let mut status_line = String::new();
            reader.read_line(&mut status_line).unwrap();
            let code = status_line
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .expect("a status code");
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header == "\r\n" {
                    break;
                }
                if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            code
        })
        .collect()
}

/// `chaos-workload serve` in a container on the host's network, and its port.
fn server_on_host(name: &str) -> (Container, u16) {
    let port = free_port();
    let server = Container::run(
        name,
        &["--network", "host"],
        &["serve", "--port", &port.to_string()],
    );
    (server, port)
}

/// Asserts that the scrape's HTTP series of `target` are exactly `seen`, every response timed.
fn assert_http_counts(attach: &Attach, target: &str, seen: &BTreeMap<u32, u64>) {
    let scrape = attach.metrics();
    for (code, expected) in seen {
        let code = code.to_string();
        let value = scrape.value(
            "syschaos_http_responses_total",
            &[("target", target), ("code", &code)],
        );
        assert_eq!(
            value,
            Some(*expected as f64),
            "code {code}: {}",
            scrape.text
        );
    }
    let total: u64 = seen.values().sum();
    let timed = scrape.value(
        "syschaos_http_response_duration_seconds_count",
        &[("target", target)],
    );
    assert_eq!(
        timed,
        Some(total as f64),
        "every response had its request seen"
    );
    let codes = scrape.label_values("syschaos_http_responses_total", "code");
    let expected: Vec<String> = seen.keys().map(|code| code.to_string()).collect();
    assert_eq!(codes, expected);
}

fn tally(codes: Vec<u32>) -> BTreeMap<u32, u64> {
    let mut seen = BTreeMap::new();
    for code in codes {
        *seen.entry(code).or_default() += 1;
    }
    seen
}

/// 200, 404, 500, 200, ... on one keep-alive connection.
fn mixed(n: usize) -> Vec<&'static str> {
    (0..n)
        .map(|i| ["/status/200", "/status/404", "/status/500"][i % 3])
        .collect()
}

#[test]
fn responses_are_counted_by_status_code_exactly() {
    let (server, port) = server_on_host("http");
    let attach = Attach::start(&["--container", &server.name]);

    let mut codes = Vec::new();
    // Keep-alive: many responses on one connection, in a mixed order.
    codes.extend(requests(port, &mixed(30), "HTTP/1.1", false));
    // A connection per request.
    for path in [
        "/status/200",
        "/status/404",
        "/status/500",
        "/status/201",
        "/status/503",
    ] {
        codes.extend(requests(port, &[path], "HTTP/1.1", true));
    }
    // HTTP/1.0 closes after each response.
    for _ in 0..4 {
        codes.extend(requests(port, &["/status/404"], "HTTP/1.0", true));
    }
    let seen = tally(codes);
    assert_eq!(
        seen,
        BTreeMap::from([(200, 11), (201, 1), (404, 15), (500, 11), (503, 1)])
    );
    assert_http_counts(&attach, &server.name, &seen);
}

#[test]
fn responses_over_ipv6_are_counted_exactly() {
    let (server, port) = server_on_host("ipv6");
    let attach = Attach::start(&["--container", &server.name]);
    let mut codes = requests_to("::1", port, &mixed(6), "HTTP/1.1", false);
    codes.extend(requests_to("::1", port, &["/status/503"], "HTTP/1.0", true));
    let seen = tally(codes);
    assert_eq!(
        seen,
        BTreeMap::from([(200, 2), (404, 2), (500, 2), (503, 1)])
    );
    assert_http_counts(&attach, &server.name, &seen);
}

/// TCP sends a response again when the client did not get it (or its ACK was lost): the
/// response went out twice, but it is one response.
#[test]
fn responses_sent_again_on_a_lossy_link_are_counted_once() {
    let server = Container::run(
        "lossy",
        &["--network", "none"],
        &["serve", "--port", "8080"],
    );
    // The container's own loopback loses one packet in five on the way in, after the server's
    // egress (where responses are counted) saw it.
    let pid = server.pid().to_string();
    let drop_rule = [
        "-t",
        &pid,
        "-n",
        "iptables",
        "-A",
        "INPUT",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.2",
        "-j",
        "DROP",
    ];
    // Lost segments are sent again after 10 ms instead of 200 ms: a short test.
    let short_timeout = [
        "-t",
        &pid,
        "-n",
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.tcp_rto_min_us=10000",
    ];
    for command in [&drop_rule[..], &short_timeout[..]] {
        let status = std::process::Command::new("nsenter")
            .args(command)
            .status()
            .expect("run nsenter");
        assert!(status.success(), "nsenter {command:?}");
    }
    let attach = Attach::start(&["--container", &server.name]);

    let retransmitted_before = tcp_retransmissions(&pid);
    let codes = server.in_network_namespace(|| requests(8080, &mixed(60), "HTTP/1.1", false));
    let retransmitted = tcp_retransmissions(&pid) - retransmitted_before;
    assert!(
        retransmitted >= 3,
        "the link lost too little to test: {retransmitted} segments sent again"
    );
    let seen = tally(codes);
    assert_eq!(seen, BTreeMap::from([(200, 20), (404, 20), (500, 20)]));
    assert_http_counts(&attach, &server.name, &seen);
}

/// `RetransSegs` of the network namespace of process `pid`.
fn tcp_retransmissions(pid: &str) -> u64 {
    let snmp = std::fs::read_to_string(format!("/proc/{pid}/net/snmp")).expect("read net/snmp");
    let mut tcp = snmp.lines().filter(|line| line.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let index = names
        .split_whitespace()
        .position(|name| name == "RetransSegs")
        .expect("a RetransSegs column");
    values
        .split_whitespace()
        .nth(index)
        .unwrap()
        .parse()
        .unwrap()
}

/// `--no-syscalls`: the responses are counted exactly, and no syscall at all.
#[test]
fn no_syscalls_counts_the_responses_only() {
    let (server, port) = server_on_host("nosyscalls");
    let attach = Attach::start(&["--container", &server.name, "--no-syscalls"]);
    let codes = requests(port, &mixed(9), "HTTP/1.1", false);
    let seen = tally(codes);
    assert_eq!(seen, BTreeMap::from([(200, 3), (404, 3), (500, 3)]));
    assert_http_counts(&attach, &server.name, &seen);
    let scrape = attach.metrics();
    assert!(
        scrape
            .label_values("syschaos_syscalls_total", "target")
            .is_empty(),
        "{}",
        scrape.text
    );
}

#[test]
fn no_http_counts_the_syscalls_but_no_response() {
    let (server, port) = server_on_host("nohttp");
    let attach = Attach::start(&["--container", &server.name, "--no-http"]);
    assert_eq!(
        requests(port, &["/status/200"; 5], "HTTP/1.1", false),
        [200; 5]
    );
    let scrape = attach.metrics();
    assert!(
        scrape
            .label_values("syschaos_http_responses_total", "target")
            .is_empty(),
        "{}",
        scrape.text
    );
    let sends = scrape
        .value(
            "syschaos_syscalls_total",
            &[("target", &server.name), ("syscall", "sendto")],
        )
        .unwrap_or(0.0);
    assert!(sends >= 5.0, "the server's sendto calls: {sends}");
}
