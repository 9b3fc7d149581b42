//! HTTP status codes counted from outside: a server in a container answers a client on the host.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
};

use tests::{attach::Attach, docker::Container, free_port};

/// Sends `paths` on one connection (keep-alive unless `close_each`), returns the status codes.
fn requests(port: u16, paths: &[&str], version: &str, close: bool) -> Vec<u32> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
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

#[test]
fn responses_are_counted_by_status_code_exactly() {
    let port = free_port().to_string();
    let server = Container::run("http", &["--network", "host"], &["serve", "--port", &port]);
    let port: u16 = port.parse().unwrap();
    let attach = Attach::start(&["--container", &server.name]);

    let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
    let mut count = |codes: Vec<u32>| {
        codes
            .into_iter()
            .for_each(|code| *seen.entry(code).or_default() += 1)
    };
    // Keep-alive: many responses on one connection, in a mixed order.
    let mixed: Vec<&str> = (0..30)
        .map(|i| ["/status/200", "/status/404", "/status/500"][i % 3])
        .collect();
    count(requests(port, &mixed, "HTTP/1.1", false));
    // A connection per request.
    for path in [
        "/status/200",
        "/status/404",
        "/status/500",
        "/status/201",
        "/status/503",
    ] {
        count(requests(port, &[path], "HTTP/1.1", true));
    }
    // HTTP/1.0 closes after each response.
    for _ in 0..4 {
        count(requests(port, &["/status/404"], "HTTP/1.0", true));
    }
    assert_eq!(
        seen,
        BTreeMap::from([(200, 11), (201, 1), (404, 15), (500, 11), (503, 1)])
    );

    let scrape = attach.metrics();
    for (code, expected) in &seen {
        let code = code.to_string();
        let value = scrape.value(
            "syschaos_http_responses_total",
            &[("target", &server.name), ("code", &code)],
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
        &[("target", &server.name)],
    );
    assert_eq!(
        timed,
        Some(total as f64),
        "every response had its request seen"
    );
    let codes = scrape.label_values("syschaos_http_responses_total", "code");
    assert_eq!(codes, ["200", "201", "404", "500", "503"]);
}

#[test]
fn no_http_counts_the_syscalls_but_no_response() {
    let port = free_port().to_string();
    let server = Container::run(
        "nohttp",
        &["--network", "host"],
        &["serve", "--port", &port],
    );
    let port: u16 = port.parse().unwrap();
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
