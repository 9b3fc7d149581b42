//! CPU, memory and IO of a target, from its cgroup files (v2 where the controller is enabled,
//! v1 otherwise: on hybrid hosts the controllers live in the v1 hierarchies).
use std::{fs, path::Path};

use serde::Serialize;

use crate::target::CgroupDirs;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ResourceUsage {
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

pub fn read(dirs: &CgroupDirs) -> ResourceUsage {
    let (io_read_bytes, io_write_bytes) = match read_file(&dirs.v2.join("io.stat")) {
        Some(text) if !text.trim().is_empty() => parse_io_stat_v2(&text),
        _ => dirs
            .v1_dir("blkio")
            .and_then(|dir| read_file(&dir.join("blkio.throttle.io_service_bytes")))
            .map(|text| parse_blkio_v1(&text))
            .unwrap_or((None, None)),
    };
    ResourceUsage {
        cpu_seconds: read_file(&dirs.v2.join("cpu.stat"))
            .and_then(|text| keyed_value(&text, "usage_usec"))
            .map(|usec| usec as f64 / 1e6)
            .or_else(|| {
                let dir = dirs.v1_dir("cpuacct")?;
                let ns: u64 = read_file(&dir.join("cpuacct.usage"))?.trim().parse().ok()?;
                Some(ns as f64 / 1e9)
            }),
        memory_bytes: read_number(&dirs.v2.join("memory.current"))
            .or_else(|| read_number(&dirs.v1_dir("memory")?.join("memory.usage_in_bytes"))),
        io_read_bytes,
        io_write_bytes,
    }
}

fn read_file(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_number(path: &Path) -> Option<u64> {
    read_file(path)?.trim().parse().ok()
}

/// `usage_usec 1234` style files.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

/// `8:0 rbytes=1 wbytes=2 rios=3 ...` per device, summed.
fn parse_io_stat_v2(text: &str) -> (Option<u64>, Option<u64>) {
    let (mut read, mut write) = (0, 0);
    for field in text.split_whitespace() {
        if let Some(n) = field.strip_prefix("rbytes=") {
            read += n.parse::<u64>().unwrap_or(0);
        } else if let Some(n) = field.strip_prefix("wbytes=") {
            write += n.parse::<u64>().unwrap_or(0);
        }
    }
    (Some(read), Some(write))
}

/// `8:0 Read 4096` / `8:0 Write 0` / `Total 4096`, summed over devices.
fn parse_blkio_v1(text: &str) -> (Option<u64>, Option<u64>) {
    let (mut read, mut write) = (0, 0);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_device, op, bytes] = fields[..] {
            let bytes = bytes.parse::<u64>().unwrap_or(0);
            match op {
                "Read" => read += bytes,
                "Write" => write += bytes,
                _ => {}
            }
        }
    }
    (Some(read), Some(write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_files() {
        assert_eq!(
            keyed_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"),
            Some(1500)
        );
        assert_eq!(
            parse_io_stat_v2("8:0 rbytes=100 wbytes=7 rios=1\n8:16 rbytes=1 wbytes=2 rios=1\n"),
            (Some(101), Some(9))
        );
        assert_eq!(
            parse_blkio_v1(
                "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n"
            ),
            (Some(4096), Some(512))
        );
    }
}
