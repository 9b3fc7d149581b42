//! Harness for the end-to-end tests: real Docker containers, the real `chaos-user` binary,
//! metrics read over HTTP. Run through `cargo xtask test`, which builds the binaries and the
//! workload image and starts dockerd, then passes their locations in `SYSCHAOS_*` variables.
#![cfg(not(target_env = "musl"))]

pub mod attach;
pub mod docker;
pub mod doctor;
pub mod metrics;
pub mod scenario;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

/// The `chaos-user` binary under test.
pub fn chaos_user_bin() -> PathBuf {
    env_path("SYSCHAOS_CHAOS_USER", "target/release/chaos-user")
}

/// The static workload binary (for processes on the host).
pub fn workload_bin() -> PathBuf {
    env_path(
        "SYSCHAOS_WORKLOAD",
        "target/x86_64-unknown-linux-musl/release/chaos-workload",
    )
}

/// The `FROM scratch` image holding the workload.
pub fn workload_image() -> String {
    std::env::var("SYSCHAOS_WORKLOAD_IMAGE").unwrap_or_else(|_| "syschaos-workload:test".into())
}

/// The `FROM scratch` image holding `chaos-user` (`cargo xtask image`).
pub fn syschaos_image() -> String {
    std::env::var("SYSCHAOS_IMAGE").unwrap_or_else(|_| "syschaos:latest".into())
}

fn env_path(variable: &str, default_in_workspace: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(default_in_workspace)
        });
    assert!(
        path.exists(),
        "{} not found: run the tests through `cargo xtask test`",
        path.display()
    );
    path
}

/// One round's report of `chaos-workload` (see the top of its source for the format).
#[derive(Debug, Clone)]
pub struct WorkloadReport {
    pub round: u64,
    json: serde_json::Value,
}

/// What the calls of one kind returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOutcome {
    pub calls: u64,
    pub failed: u64,
    /// errno -> failures
    pub errnos: std::collections::BTreeMap<i32, u64>,
    /// 1-based numbers of the calls that failed.
    pub failed_at: Vec<u64>,
}

impl CallOutcome {
    /// `calls` calls, of which the ones numbered `failed_at` failed with `errno`.
    pub fn failing(errno: i32, failed_at: Vec<u64>, calls: u64) -> Self {
        let failed = failed_at.len() as u64;
        Self {
            calls,
            failed,
            errnos: [(errno, failed)].into_iter().collect(),
            failed_at,
        }
    }

    /// `calls` calls, none failed.
    pub fn clean(calls: u64) -> Self {
        Self {
            calls,
            ..Default::default()
        }
    }
}

/// A directory under the temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("syschaos-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup_v2_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            right
                .starts_with("cgroup2 ")
                .then(|| PathBuf::from(mount_point))
        })
        .expect("a cgroup2 mount")
}

impl WorkloadReport {
    pub fn parse(line: &str) -> Option<Self> {
        let json: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(Self {
            round: json["round"].as_u64()?,
            json,
        })
    }

    /// A numeric field of the calls of `kind` (the latency stats of timed kinds: `min_ns`...).
    pub fn field(&self, kind: &str, name: &str) -> Option<u64> {
        self.json["calls"][kind][name].as_u64()
    }

    /// Outcome of the calls of `kind` (getppid, open-missing, read, write, fsync, connect).
    pub fn outcome(&self, kind: &str) -> CallOutcome {
        let entry = &self.json["calls"][kind];
        CallOutcome {
            calls: entry["calls"].as_u64().unwrap_or(0),
            failed: entry["failed"].as_u64().unwrap_or(0),
            errnos: entry["errnos"]
                .as_object()
                .map(|errnos| {
                    errnos
                        .iter()
                        .filter_map(|(errno, n)| Some((errno.parse().ok()?, n.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default(),
            failed_at: entry["failed_at"]
                .as_array()
                .map(|list| list.iter().filter_map(serde_json::Value::as_u64).collect())
                .unwrap_or_default(),
        }
    }
}

/// Polls `probe` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Our BPF programs loaded in the kernel right now: (id, name).
pub fn syschaos_programs() -> Vec<(u32, String)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|program| Some((program.id(), program.name_as_str()?.to_owned())))
        .filter(|(_, name)| {
            OUR_PROGRAM_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .collect()
}

/// Program ids only grow: what a run loaded has an id above the largest one loaded before it.
/// Comparing ids (not names) keeps these checks exact when another chaos-user runs on the host.
pub fn newest_program_id() -> u32 {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|program| program.id())
        .max()
        .unwrap_or(0)
}

/// Our programs with an id above `floor` (see [`newest_program_id`]).
pub fn syschaos_programs_since(floor: u32) -> Vec<(u32, String)> {
    syschaos_programs()
        .into_iter()
        .filter(|(id, _)| *id > floor)
        .collect()
}

/// Asserts that every program of ours loaded since `floor` is gone. The kernel frees a program
/// shortly after its last reference goes (deferred work), so this waits a little.
pub fn assert_no_programs_since(floor: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = syschaos_programs_since(floor);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "BPF programs left loaded: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Program names as the kernel keeps them (truncated to 15 bytes): every program of ours is
/// `monitor_*`, `inject_<engine>_*` or `http_*` (chaos-common/src/lib.rs).
const OUR_PROGRAM_PREFIXES: &[&str] = &["monitor_sys", "inject_", "http_"];

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral loopback port")
}
