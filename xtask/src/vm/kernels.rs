//! The test kernels: from `../shared/kernels` (or `$SYSCHAOS_KERNELS_DIR`) when they are there,
//! else fetched and built once into `target/vm-kernels/` (`cargo clean` clears them).
//!
//! - debian: Debian trixie's stock `linux-image-*-amd64` (the one `linux-image-amd64` depends
//!   on today), its `boot/vmlinuz-*` unchanged: the kernel of the `-unsigned` package (which
//!   `../shared/kernels` holds), with Debian's Secure Boot signature that QEMU ignores.
//! - override: built from trixie's `linux-source-6.12`: `make tinyconfig`, the options of
//!   `xtask/kernels/override.config-fragment` merged, `make olddefconfig`, `make bzImage`.
//!
//! Trixie's packages come through an apt configuration of our own (sources list, lists, cache
//! and an empty dpkg status under `target/vm-kernels/work/apt/`, signed by Debian's archive keyring):
//! the machine's apt sources are left alone. Every step runs with a time limit and its output in
//! `target/vm-kernels/work/log`; a kernel gets its final name last, once complete (a rename).
use std::{
    fs::{self, File},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};

use super::Kernel;
use crate::build;

/// Where to look for the kernels instead of `../shared/kernels`.
const DIR_VARIABLE: &str = "SYSCHAOS_KERNELS_DIR";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const SOURCES: &str = "http://deb.debian.org/debian trixie main";
/// The metapackage that names the stock kernel of the release.
const IMAGE_METAPACKAGE: &str = "linux-image-amd64";
const SOURCE_PACKAGE: &str = "linux-source-6.12";
const FRAGMENT_PATH: &str = "xtask/kernels/override.config-fragment";
const FRAGMENT: &str = include_str!("../../kernels/override.config-fragment");
/// What `make bzImage` needs beyond a C toolchain (dwarves: pahole, for BTF).
const BUILD_PACKAGES: [&str; 9] = [
    "make",
    "gcc",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
    "xz-utils",
];

const MINUTE: Duration = Duration::from_secs(60);

/// How a kernel missing from the shared directory gets into `target/vm-kernels/`.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Debian's stock kernel package, unchanged.
    DebianImage,
    /// Built from Debian's kernel source with our configuration fragment.
    OverrideBuild,
}

/// The path of each kernel, fetching or building those neither shared nor cached.
pub fn paths(kernels: &[&Kernel]) -> anyhow::Result<Vec<PathBuf>> {
    let shared = shared_dir();
    let cache = build::workspace_root().join("target").join("vm-kernels");
    let mut fetch: Option<Fetch> = None;
    let mut paths = Vec::new();
    for kernel in kernels {
        let in_shared = shared.join(kernel.file);
        let cached = cache.join(kernel.cached);
        let path = if in_shared.is_file() {
            in_shared
        } else {
            if !cached.is_file() {
                let fetch = match &mut fetch {
                    Some(fetch) => fetch,
                    None => fetch.insert(Fetch::start(&cache, &shared)?),
                };
                fetch.obtain(kernel, &cached)?;
            }
            cached
        };
        println!("vm-test: {} kernel: {}", kernel.name, path.display());
        paths.push(path);
    }
    if let Some(fetch) = fetch {
        fetch.finish()?;
    }
    Ok(paths)
}

/// `$SYSCHAOS_KERNELS_DIR`, else `shared/kernels` beside the clone, wherever that is.
fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_VARIABLE).filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let root = build::workspace_root();
    root.parent()
        .unwrap_or(&root)
        .join("shared")
        .join("kernels")
}

/// One first run's fetching and building, under `target/vm-kernels/work/`.
struct Fetch {
    work: PathBuf,
    log: PathBuf,
    apt: Apt,
    started: Instant,
    /// Held while we fetch: a second vm-test would fight over `work/`.
    _lock: File,
}

impl Fetch {
    /// Takes the lock, empties `work/`, reads trixie's package lists.
    fn start(cache: &Path, shared: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let lock = lock(&cache.join("lock"))?;
        let work = cache.join("work");
        if work.exists() {
            fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
        }
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        println!(
            "vm-test: the kernels are not all in {}: fetching and building the missing ones \
             into {} (first run only; set {DIR_VARIABLE} to use another directory)",
            shared.display(),
            cache.display()
        );
        let fetch = Self {
            log: work.join("log"),
            apt: Apt::new(&work.join("apt"))?,
            work,
            started: Instant::now(),
            _lock: lock,
        };
        println!("vm-test: reading Debian trixie's package lists ({SOURCES})");
        fetch.run(
            "apt-get update (Debian trixie, private configuration)",
            fetch.apt.get().arg("update"),
            5 * MINUTE,
        )?;
        Ok(fetch)
    }

    /// Puts `kernel` at `target`, unless a run that held the lock before us did.
    fn obtain(&self, kernel: &Kernel, target: &Path) -> anyhow::Result<()> {
        if target.is_file() {
            return Ok(());
        }
        let started = Instant::now();
        match kernel.source {
            Source::DebianImage => self.fetch_debian(target),
            Source::OverrideBuild => self.build_override(target),
        }
        .with_context(|| {
            format!(
                "getting the {} kernel (log: {})",
                kernel.name,
                self.log.display()
            )
        })?;
        println!(
            "vm-test: {} kernel ready in {}: {}",
            kernel.name,
            seconds(started.elapsed()),
            target.display()
        );
        Ok(())
    }

    /// Removes what the fetch left behind but the kernels (and their notes): packages, sources,
    /// apt's lists, the log. A failed fetch leaves them for a look; the next one starts afresh.
    fn finish(self) -> anyhow::Result<()> {
        fs::remove_dir_all(&self.work)
            .with_context(|| format!("removing {}", self.work.display()))?;
        println!(
            "vm-test: the missing kernels ready in {}",
            seconds(self.started.elapsed())
        );
        Ok(())
    }

    fn fetch_debian(&self, target: &Path) -> anyhow::Result<()> {
        let show = self.output(
            &format!("apt-cache show {IMAGE_METAPACKAGE}"),
            self.apt
                .cache()
                .args(["show", "--no-all-versions", IMAGE_METAPACKAGE]),
            MINUTE,
        )?;
        let (package, version) = image_package(&show)?;
        println!("vm-test: fetching Debian's {package} {version} (first run only)");
        let deb = self.download(&package)?;
        let unpacked = self.work.join("linux-image");
        self.run(
            &format!("dpkg-deb -x {}", deb.display()),
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
            5 * MINUTE,
        )?;
        let vmlinuz = only_entry(&unpacked.join("boot"), "vmlinuz-", "")?;
        note(
            target,
            &format!(
                "Debian trixie's {package} {version}, boot/{}",
                file_name(&vmlinuz)
            ),
        )?;
        rename(&vmlinuz, target)
    }

    fn build_override(&self, target: &Path) -> anyhow::Result<()> {
        self.install_build_packages()?;
        println!("vm-test: fetching Debian's {SOURCE_PACKAGE} (first run only)");
        let (source, version) = self.unpack_source()?;
        println!(
            "vm-test: configuring {version}: make tinyconfig, {FRAGMENT_PATH} merged, make olddefconfig"
        );
        let config = self.configure(&source)?;
        let jobs = thread::available_parallelism().map_or(2, |n| n.get());
        println!(
            "vm-test: building the override kernel: make -j{jobs} bzImage (about 6 minutes on 2 cores; \
             output in {})",
            self.log.display()
        );
        self.run(
            &format!("make -j{jobs} bzImage"),
            make(&source).arg(format!("-j{jobs}")).arg("bzImage"),
            90 * MINUTE,
        )?;
        let config_copy = target.with_extension("config");
        fs::write(&config_copy, config)
            .with_context(|| format!("writing {}", config_copy.display()))?;
        note(
            target,
            &format!(
                "Debian trixie's {SOURCE_PACKAGE} ({version}): make tinyconfig, \
                 {FRAGMENT_PATH} merged, make olddefconfig, make bzImage; its .config beside"
            ),
        )?;
        rename(&source.join("arch/x86/boot/bzImage"), target)
    }

    /// Downloads and unpacks the kernel source: its tree and its directory name (its version).
    fn unpack_source(&self) -> anyhow::Result<(PathBuf, String)> {
        let deb = self.download(SOURCE_PACKAGE)?;
        let unpacked = self.work.join("source-package");
        self.run(
            &format!("dpkg-deb -x {}", deb.display()),
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
            5 * MINUTE,
        )?;
        let tarball = only_entry(&unpacked.join("usr/src"), "linux-source-", ".tar.xz")?;
        let tree = self.work.join("tree");
        fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
        println!("vm-test: unpacking {}", file_name(&tarball));
        self.run(
            &format!("tar -xf {}", tarball.display()),
            Command::new("tar")
                .arg("-xf")
                .arg(&tarball)
                .arg("-C")
                .arg(&tree),
            15 * MINUTE,
        )?;
        // The package and the tarball are 300 MB we no longer need.
        fs::remove_dir_all(&unpacked)
            .with_context(|| format!("removing {}", unpacked.display()))?;
        fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
        let source = only_entry(&tree, "linux-source-", "")?;
        let version = fs::read_to_string(source.join("Makefile"))
            .ok()
            .and_then(|makefile| kernel_version(&makefile))
            .unwrap_or_else(|| file_name(&source));
        Ok((source, version))
    }

    /// tinyconfig, the fragment, olddefconfig; fails naming what Kconfig dropped. Returns .config.
    fn configure(&self, source: &Path) -> anyhow::Result<String> {
        self.run(
            "make tinyconfig",
            make(source).arg("tinyconfig"),
            5 * MINUTE,
        )?;
        let fragment = self.work.join("override.config-fragment");
        fs::write(&fragment, FRAGMENT)
            .with_context(|| format!("writing {}", fragment.display()))?;
        self.run(
            "scripts/kconfig/merge_config.sh",
            Command::new("scripts/kconfig/merge_config.sh")
                .current_dir(source)
                .args(["-m", ".config"])
                .arg(&fragment),
            5 * MINUTE,
        )?;
        self.run(
            "make olddefconfig",
            make(source).arg("olddefconfig"),
            5 * MINUTE,
        )?;
        let config_path = source.join(".config");
        let config = fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let dropped = dropped_options(FRAGMENT, &config);
        ensure!(
            dropped.is_empty(),
            "{} of {FRAGMENT_PATH} not in the kernel's .config after make olddefconfig (a \
             dependency they need is not set; see {}): {}",
            dropped.len(),
            config_path.display(),
            dropped.join(", ")
        );
        Ok(config)
    }

    /// Installs the missing ones of `BUILD_PACKAGES` with the machine's own apt.
    fn install_build_packages(&self) -> anyhow::Result<()> {
        let installed = self.output(
            "dpkg-query -W",
            Command::new("dpkg-query").args(["-W", "-f", "${Package} ${db:Status-Status}\\n"]),
            MINUTE,
        )?;
        let missing = missing_packages(&installed, &BUILD_PACKAGES);
        if missing.is_empty() {
            return Ok(());
        }
        println!(
            "vm-test: installing what the kernel build needs: {} (apt-get)",
            missing.join(" ")
        );
        self.run(
            "apt-get update",
            Command::new("apt-get").args(["update", "-q"]),
            5 * MINUTE,
        )?;
        self.run(
            "apt-get install",
            Command::new("apt-get")
                .args(["install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            20 * MINUTE,
        )
    }

    /// `apt-get download PACKAGE` (trixie's candidate) into `work/`: the .deb.
    fn download(&self, package: &str) -> anyhow::Result<PathBuf> {
        let dir = self.work.join("debs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.run(
            &format!("apt-get download {package}"),
            self.apt
                .get()
                .arg("download")
                .arg(package)
                .current_dir(&dir),
            30 * MINUTE,
        )?;
        only_entry(&dir, &format!("{package}_"), ".deb")
    }

    /// Runs `command`, its output appended to the log, killed after `limit`.
    fn run(&self, what: &str, command: &mut Command, limit: Duration) -> anyhow::Result<()> {
        let log = self.open_log(what, command)?;
        command.stdout(log.try_clone()?).stderr(log);
        run_bounded(what, command, limit).map_err(|e| anyhow!("{e:#}\n{}", self.log_tail()))
    }

    /// Like `run`, but returns what the command printed on stdout.
    fn output(&self, what: &str, command: &mut Command, limit: Duration) -> anyhow::Result<String> {
        let log = self.open_log(what, command)?;
        let stdout_path = self.work.join("stdout");
        let mut stdout = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&stdout_path)
            .with_context(|| format!("creating {}", stdout_path.display()))?;
        command.stdout(stdout.try_clone()?).stderr(log);
        run_bounded(what, command, limit).map_err(|e| anyhow!("{e:#}\n{}", self.log_tail()))?;
        let mut text = String::new();
        stdout.seek(SeekFrom::Start(0))?;
        stdout
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", stdout_path.display()))?;
        Ok(text)
    }

    fn open_log(&self, what: &str, command: &Command) -> anyhow::Result<File> {
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(log, "\n==> {what}: {command:?}")?;
        Ok(log)
    }

    /// The last lines the last command wrote in the log, for an error.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let output = lines
            .iter()
            .rposition(|line| line.starts_with("==> "))
            .map_or(&lines[..], |header| &lines[header + 1..]);
        let tail = output[output.len().saturating_sub(20)..].join("\n    ");
        format!("its last lines in {}:\n    {tail}", self.log.display())
    }
}

/// apt-get and apt-cache with our own sources list, lists, cache and (empty) dpkg status: the
/// machine's own configuration (proxies...) still applies, its sources and pins do not.
struct Apt {
    root: PathBuf,
}

impl Apt {
    fn new(root: &Path) -> anyhow::Result<Self> {
        for dir in ["state/lists/partial", "cache/archives/partial"] {
            let dir = root.join(dir);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        ensure!(
            Path::new(KEYRING).is_file(),
            "{KEYRING} not found: install it with `apt-get install debian-archive-keyring`"
        );
        let sources = root.join("sources.list");
        fs::write(&sources, format!("deb [signed-by={KEYRING}] {SOURCES}\n"))
            .with_context(|| format!("writing {}", sources.display()))?;
        let status = root.join("status");
        fs::write(&status, "").with_context(|| format!("writing {}", status.display()))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn get(&self) -> Command {
        let mut command = Command::new("apt-get");
        command.arg("-q");
        self.configure(&mut command);
        command
    }

    fn cache(&self) -> Command {
        let mut command = Command::new("apt-cache");
        self.configure(&mut command);
        command
    }

    fn configure(&self, command: &mut Command) {
        let root = self.root.display();
        let options = [
            format!("Dir::Etc::SourceList={root}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            "Dir::Etc::Preferences=/dev/null".to_owned(),
            "Dir::Etc::PreferencesParts=/dev/null".to_owned(),
            format!("Dir::State={root}/state"),
            format!("Dir::State::status={root}/status"),
            format!("Dir::Cache={root}/cache"),
            "APT::Architecture=amd64".to_owned(),
            "APT::Architectures=amd64".to_owned(),
            "Acquire::Languages=none".to_owned(),
        ];
        for option in options {
            command.arg("-o").arg(option);
        }
    }
}

fn make(source: &Path) -> Command {
    let mut command = Command::new("make");
    // A make above us (its jobserver) is not the kernel's.
    command
        .current_dir(source)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL");
    command
}

/// Runs `command` in a process group of its own, killing the group after `limit`; says every
/// minute that it still runs.
fn run_bounded(what: &str, command: &mut Command, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut next_note = MINUTE;
    loop {
        if let Some(status) = child.try_wait().context("waiting for it")? {
            ensure!(status.success(), "{what} failed ({status})");
            return Ok(());
        }
        let elapsed = started.elapsed();
        if elapsed >= limit {
            kill_group(&mut child);
            bail!("{what} did not finish within {}: killed", seconds(limit));
        }
        if elapsed >= next_note {
            println!("vm-test: {what}: still running ({})", seconds(elapsed));
            next_note += MINUTE;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) takes plain integers; -pid is the process group `run_bounded` made.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.wait();
}

/// An exclusive `flock` on `path`, held as long as the file is open.
fn lock(path: &Path) -> anyhow::Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor that `file` owns and keeps open.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    ensure!(
        locked,
        "another vm-test is fetching the kernels ({} is locked): let it finish, then run again",
        path.display()
    );
    Ok(file)
}

/// The one entry of `dir` named `prefix...suffix`.
fn only_entry(dir: &Path, prefix: &str, suffix: &str) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            found.push(dir.join(name));
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([path]) => Ok(path),
        Err(found) => bail!(
            "expected one {prefix}*{suffix} in {}, found {}",
            dir.display(),
            found.len()
        ),
    }
}

/// Writes where a kernel came from beside it (`<kernel>.from`), before the kernel itself.
fn note(kernel: &Path, text: &str) -> anyhow::Result<()> {
    let path = PathBuf::from(format!("{}.from", kernel.display()));
    fs::write(&path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))
}

fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::rename(from, to).with_context(|| format!("moving {} to {}", from.display(), to.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
}

fn seconds(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

/// The kernel package and its version, from `apt-cache show` of the metapackage.
fn image_package(show: &str) -> anyhow::Result<(String, String)> {
    let field = |name: &str| {
        show.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let version = field("Version:");
    let package = field("Depends:").and_then(|depends| {
        depends
            .split([',', '|'])
            .filter_map(|dependency| dependency.split_whitespace().next())
            .find(|name| name.starts_with("linux-image-"))
    });
    match (package, version) {
        (Some(package), Some(version)) => Ok((package.to_owned(), version.to_owned())),
        _ => bail!(
            "no linux-image-* dependency and version in apt-cache show {IMAGE_METAPACKAGE}:\n{show}"
        ),
    }
}

/// "6.12.117" from the kernel's top Makefile.
fn kernel_version(makefile: &str) -> Option<String> {
    let field = |name: &str| {
        makefile.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    Some(format!(
        "Linux {}.{}.{}",
        field("VERSION")?,
        field("PATCHLEVEL")?,
        field("SUBLEVEL")?
    ))
}

/// Of `packages`, those dpkg-query (`${Package} ${db:Status-Status}` lines) does not list installed.
fn missing_packages(dpkg_query: &str, packages: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter(|package| {
            !dpkg_query.lines().any(|line| {
                line.split_once(' ')
                    .is_some_and(|(name, status)| name == **package && status == "installed")
            })
        })
        .map(|package| (*package).to_owned())
        .collect()
}

/// The fragment's settings the final .config does not have: `CONFIG_X=v` must be there as is,
/// `# CONFIG_X is not set` must not be set to anything.
fn dropped_options(fragment: &str, config: &str) -> Vec<String> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|line| {
            if line.starts_with("CONFIG_") {
                !config.lines().any(|l| l == *line)
            } else if let Some(name) = line
                .strip_prefix("# ")
                .and_then(|rest| rest.strip_suffix(" is not set"))
            {
                config.lines().any(|l| l.starts_with(&format!("{name}=")))
            } else {
                false
            }
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_package_from_the_metapackage() {
        let show = "Package: linux-image-amd64\nVersion: 6.12.117-1\n\
                    Depends: linux-image-6.12.117+deb13-amd64 (= 6.12.117-1)\nSize: 1464\n";
        let (package, version) = image_package(show).unwrap();
        assert_eq!(package, "linux-image-6.12.117+deb13-amd64");
        assert_eq!(version, "6.12.117-1");
        assert!(image_package("Package: linux-image-amd64\n").is_err());
    }

    #[test]
    fn version_from_the_makefile() {
        let makefile = "# SPDX\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\n";
        assert_eq!(kernel_version(makefile).as_deref(), Some("Linux 6.12.117"));
    }

    #[test]
    fn missing_build_packages() {
        let query = "bc installed\nflex not-installed\nlibelf-dev config-files\n";
        assert_eq!(
            missing_packages(query, &["bc", "flex", "libelf-dev", "dwarves"]),
            ["flex", "libelf-dev", "dwarves"]
        );
    }

    #[test]
    fn dropped_config_options() {
        let fragment = "# a comment\nCONFIG_BPF=y\nCONFIG_LSM=\"bpf\"\nCONFIG_VETH=y\n\
                        # CONFIG_MODULES is not set\n# CONFIG_DEBUG is not set\n";
        let config = "CONFIG_BPF=y\nCONFIG_LSM=\"bpf\"\n# CONFIG_VETH is not set\nCONFIG_DEBUG=y\n";
        assert_eq!(
            dropped_options(fragment, config),
            ["CONFIG_VETH=y", "# CONFIG_DEBUG is not set"]
        );
    }

    #[test]
    fn bounded_commands() {
        assert!(run_bounded("true", &mut Command::new("true"), MINUTE).is_ok());
        let failed = run_bounded("false", &mut Command::new("false"), MINUTE).unwrap_err();
        assert!(failed.to_string().contains("false failed"), "{failed}");
        let started = Instant::now();
        let mut sleep = Command::new("sh");
        sleep.args(["-c", "sleep 30 & sleep 30"]);
        let killed = run_bounded("sleep", &mut sleep, Duration::from_millis(300)).unwrap_err();
        assert!(killed.to_string().contains("did not finish"), "{killed}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_fragment_survives_in_the_shared_config() {
        // The build from ../shared/kernels' recipe kept every option of our fragment.
        let shared = shared_dir().join("override-6.12.117.config");
        if let Ok(config) = fs::read_to_string(shared) {
            assert_eq!(dropped_options(FRAGMENT, &config), Vec::<String>::new());
        }
    }
}
