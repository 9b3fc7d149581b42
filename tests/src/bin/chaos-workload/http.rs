//! `serve` and `load`: the small HTTP/1.1 server and its client.
use std::{collections::BTreeMap, ffi::CString, process::ExitCode, time::Duration};

use crate::{install_exit_on_signal, usage};

pub fn serve(port: u16, site: Site) -> ExitCode {
    install_exit_on_signal();
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("chaos-workload: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Also on [::1] where the namespace has IPv6 loopback (the HTTP tests cover both families).
    if let Ok(listener) = std::net::TcpListener::bind(("::1", port)) {
        let site = site.clone();
        std::thread::spawn(move || accept_connections(listener, site));
    }
    println!("{{\"ready\":true}}");
    accept_connections(listener, site);
    ExitCode::SUCCESS
}

fn accept_connections(listener: std::net::TcpListener, site: Site) {
    for stream in listener.incoming().flatten() {
        let site = site.clone();
        std::thread::spawn(move || serve_connection(stream, &site));
    }
}

/// Answers requests on one connection until the client closes it or asks to.
fn serve_connection(stream: std::net::TcpStream, site: &Site) {
    use std::io::{BufRead as _, BufReader, IoSlice, Write as _};
    // Responses go out in several writes on purpose: without NODELAY, Nagle would hold the
    // second one for the client's delayed ACK (40 ms), as real servers avoid by setting it.
    let _ = stream.set_nodelay(true);
    // Read and write through the same fd, as servers do.
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if header.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/");
        let (code, body) = site.answer(path).unwrap_or_else(|| {
            let code: u16 = path
                .strip_prefix("/status/")
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            (code, format!("status {code}\n"))
        });
        let head = format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        let written = match code {
            400..=499 => writer
                .write_vectored(&[IoSlice::new(head.as_bytes()), IoSlice::new(body.as_bytes())])
                .map(drop),
            500..=599 => {
                let (status_line, headers) = head.split_at(head.find("\r\n").map_or(0, |i| i + 2));
                writer
                    .write_all(status_line.as_bytes())
                    .and_then(|()| writer.write_all(headers.as_bytes()))
                    .and_then(|()| writer.write_all(body.as_bytes()))
            }
            _ => writer
                .write_all(head.as_bytes())
                .and_then(|()| writer.write_all(body.as_bytes())),
        };
        if written.is_err() || close {
            return;
        }
    }
}

/// The flags of `serve` and `load`, taken out of the arguments before the round options.
#[derive(Clone, Default)]
pub struct Site {
    docroot: Option<String>,
    backend: Option<u16>,
    gets: Vec<String>,
    requests: u64,
    /// `load`: requests per connection (keep-alive); 1 closes each.
    per_connection: u64,
}

impl Site {
    pub fn take(args: &mut Vec<String>) -> Result<Self, String> {
        let mut site = Site {
            requests: 1000,
            per_connection: 1,
            ..Site::default()
        };
        let mut i = 1;
        while i < args.len() {
            let flag = args[i].as_str();
            if !matches!(
                flag,
                "--docroot" | "--backend" | "--get" | "--requests" | "--per-connection"
            ) {
                // Every other flag takes a value too.
                i += 2;
                continue;
            }
            let value = args
                .get(i + 1)
                .ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = || format!("{flag}: not a number: {value}");
            match flag {
                "--docroot" => site.docroot = Some(value.clone()),
                "--backend" => site.backend = Some(value.parse().map_err(|_| bad())?),
                "--get" => site.gets.push(value.clone()),
                "--per-connection" => {
                    site.per_connection = value.parse().map_err(|_| bad())?;
                    if site.per_connection == 0 {
                        return Err("--per-connection: at least 1".into());
                    }
                }
                _ => site.requests = value.parse().map_err(|_| bad())?,
            }
            args.drain(i..i + 2);
        }
        Ok(site)
    }

    /// The answer to GET `path` when it is a file or backend path.
    fn answer(&self, path: &str) -> Option<(u16, String)> {
        if let (Some(dir), Some(name)) = (&self.docroot, path.strip_prefix("/file/")) {
            return Some(read_file(dir, name));
        }
        let rest = path.strip_prefix("/backend")?;
        let port = self.backend?;
        Some(
            match http_get(port, if rest.is_empty() { "/" } else { rest }) {
                Ok(code) => (code, format!("backend answered {code}\n")),
                Err(e) => (502, format!("backend: {e}\n")),
            },
        )
    }
}

/// DIR/NAME through openat, which is tried again as long as it fails with EINTR.
fn read_file(dir: &str, name: &str) -> (u16, String) {
    use std::{io::Read as _, os::fd::FromRawFd as _};
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return (404, "no such file\n".into());
    }
    let Ok(path) = CString::new(format!("{dir}/{name}")) else {
        return (404, "no such file\n".into());
    };
    let fd = loop {
        // SAFETY: a valid NUL-terminated path; the fd is owned by the File below.
        let fd = unsafe {
            libc::openat(
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            break fd;
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return (500, format!("cannot open {name}: {error}\n"));
        }
    };
    // SAFETY: fd was just opened and is not used elsewhere.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut content = String::new();
    match file.read_to_string(&mut content) {
        Ok(_) => (200, content),
        Err(e) => (500, format!("cannot read {name}: {e}\n")),
    }
}

/// GET 127.0.0.1:PORT/PATH on a new connection; the status code.
fn http_get(port: u16, path: &str) -> std::io::Result<u16> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

/// A connection `load` reuses, and how many requests it made.
struct KeptAlive {
    reader: std::io::BufReader<std::net::TcpStream>,
    used: u64,
}

/// GET on a kept-alive connection (a new one after `per_connection` requests or an error).
fn kept_alive_get(
    connection: &mut Option<KeptAlive>,
    port: u16,
    path: &str,
    per_connection: u64,
) -> std::io::Result<u16> {
    use std::io::{BufRead as _, Read as _, Write as _};
    if connection.as_ref().is_none_or(|c| c.used >= per_connection) {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        *connection = Some(KeptAlive {
            reader: std::io::BufReader::new(stream),
            used: 0,
        });
    }
    let Some(kept) = connection.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    kept.used += 1;
    let result = (|| {
        // One write: pieces would meet Nagle and the server's delayed ACK (40 ms each).
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        kept.reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        kept.reader.read_line(&mut line)?;
        let code = line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status line"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if kept.reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        kept.reader.read_exact(&mut body)?;
        Ok(code)
    })();
    if result.is_err() {
        *connection = None;
    }
    result
}

/// `load`: a bounded number of GETs, then a summary line.
pub fn load(port: u16, site: &Site, interval: Duration) -> ExitCode {
    install_exit_on_signal();
    if site.gets.is_empty() {
        return usage("load needs --get PATH");
    }
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut failed = 0u64;
    let mut connection: Option<KeptAlive> = None;
    for i in 0..site.requests {
        let path = &site.gets[i as usize % site.gets.len()];
        let answer = match site.per_connection {
            1 => http_get(port, path),
            n => kept_alive_get(&mut connection, port, path, n),
        };
        match answer {
            Ok(code) => *codes.entry(code).or_default() += 1,
            Err(_) => failed += 1,
        }
        std::thread::sleep(interval);
    }
    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("\"{c}\":{n}")).collect();
    println!(
        "{{\"requests\":{},\"codes\":{{{}}},\"failed\":{failed}}}",
        site.requests,
        codes.join(",")
    );
    ExitCode::SUCCESS
}
