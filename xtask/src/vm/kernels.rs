//! The test kernels: from `../shared/kernels` (or `$SYSCHAOS_KERNELS_DIR`) when they are there,
//! else fetched and built once into `target/vm-kernels/` (`cargo clean` clears them).
//!
//! - debian, bookworm, bullseye: the stock `linux-image-*-amd64` of Debian trixie (6.12),
//!   bookworm (6.1) and bullseye (5.10), the one `linux-image-amd64` of that release depends on
//!   today, its `boot/vmlinuz-*` unchanged: the kernel of the `-unsigned` package (which
//!   `../shared/kernels` holds for trixie), with Debian's Secure Boot signature that QEMU ignores.
//! - bookworm-arm64: bookworm's `linux-image-*-arm64` the same way (`linux-image-arm64`); its
//!   `vmlinuz` is a plain arm64 Image, which qemu-system-aarch64 boots as it is.
//! - override: built from trixie's `linux-source-6.12`: `make tinyconfig`, the options of
//!   `xtask/kernels/override.config-fragment` and `override-x86_64.config-fragment` merged,
//!   `make olddefconfig`, `make bzImage`.
//! - override-arm64: the same source for arm64 (`override-arm64.config-fragment`, `make Image`),
//!   cross-compiled with Debian's `gcc-aarch64-linux-gnu` on an x86_64 host.
//!
//! Debian's packages come through an apt configuration of our own per release (sources list,
//! lists, cache and an empty dpkg status under `target/vm-kernels/work/apt-<release>/`, signed by
//! Debian's archive keyring): the machine's apt sources are left alone. Every step runs with a time limit and its output in
//! `target/vm-kernels/work/log`; a kernel gets its final name last, once complete (a rename).
use std::{
    fs::{self, File},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, ensure};

use super::Kernel;
use crate::build::{self, Arch};

mod apt;
mod steps;
#[cfg(test)]
mod tests;

use self::{apt::*, steps::*};

/// Where to look for the kernels instead of `../shared/kernels`.
const DIR_VARIABLE: &str = "SYSCHAOS_KERNELS_DIR";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The archive of every release we take kernels from (bullseye included, as long as it is there).
const MIRROR: &str = "http://deb.debian.org/debian";
/// The release of the kernel source of the override build.
const SOURCE_RELEASE: &str = "trixie";
/// The metapackage that names the stock kernel of the release: `linux-image-<Debian arch>`.
const IMAGE_METAPACKAGE: &str = "linux-image-";
const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// The options of both override kernels; each architecture's own are in its recipe.
const FRAGMENT: &str = include_str!("../../kernels/override.config-fragment");
const FRAGMENT_X86_64: &str = include_str!("../../kernels/override-x86_64.config-fragment");
const FRAGMENT_ARM64: &str = include_str!("../../kernels/override-arm64.config-fragment");
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

/// What differs between the override builds of the two architectures.
struct Recipe {
    /// The architecture's own options (merged with [`FRAGMENT`]), and their file.
    arch_fragment_path: &'static str,
    arch_fragment: &'static str,
    /// `make`'s target, and where it leaves the kernel.
    make_target: &'static str,
    image: &'static str,
    /// `ARCH=`, and the cross compiler (`CROSS_COMPILE=` and its Debian package), used on a
    /// host of the other architecture (`cross`).
    make_arch: &'static str,
    cross_prefix: &'static str,
    cross_package: &'static str,
    cross: bool,
}

impl Recipe {
    fn of(arch: Arch) -> Self {
        match arch {
            Arch::X86_64 => Self {
                arch_fragment_path: "xtask/kernels/override-x86_64.config-fragment",
                arch_fragment: FRAGMENT_X86_64,
                make_target: "bzImage",
                image: "arch/x86/boot/bzImage",
                make_arch: "x86_64",
                cross_prefix: "x86_64-linux-gnu-",
                cross_package: "gcc-x86-64-linux-gnu",
                cross: Arch::HOST != Arch::X86_64,
            },
            Arch::Aarch64 => Self {
                arch_fragment_path: "xtask/kernels/override-arm64.config-fragment",
                arch_fragment: FRAGMENT_ARM64,
                make_target: "Image",
                image: "arch/arm64/boot/Image",
                make_arch: "arm64",
                cross_prefix: "aarch64-linux-gnu-",
                cross_package: "gcc-aarch64-linux-gnu",
                cross: Arch::HOST != Arch::Aarch64,
            },
        }
    }

    /// Every option to merge: both kernels' and this architecture's.
    fn fragment(&self) -> String {
        format!("{FRAGMENT}{}", self.arch_fragment)
    }

    /// The files they come from, for messages.
    fn fragment_paths(&self) -> String {
        format!(
            "xtask/kernels/override.config-fragment and {}",
            self.arch_fragment_path
        )
    }
}

/// How a kernel missing from the shared directory gets into `target/vm-kernels/`.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The stock kernel package of this Debian release (`trixie`, `bookworm`...), unchanged.
    DebianImage(&'static str),
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
    /// One private apt configuration per Debian release and architecture, its lists read on
    /// first use.
    apts: Vec<((&'static str, Arch), Apt)>,
    started: Instant,
    /// Held while we fetch: a second vm-test would fight over `work/`.
    _lock: File,
}

impl Fetch {
    /// Takes the lock, empties `work/`.
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
        Ok(Self {
            log: work.join("log"),
            apts: Vec::new(),
            work,
            started: Instant::now(),
            _lock: lock,
        })
    }

    /// The private apt configuration of `release` for `arch`, its package lists read the
    /// first time.
    fn apt(&mut self, release: &'static str, arch: Arch) -> anyhow::Result<&Apt> {
        let key = (release, arch);
        let index = match self.apts.iter().position(|(name, _)| *name == key) {
            Some(index) => index,
            None => {
                let debian_arch = arch.debian();
                let root = self.work.join(format!("apt-{release}-{debian_arch}"));
                let apt = Apt::new(&root, MIRROR, release, debian_arch)?;
                println!(
                    "vm-test: reading Debian {release}'s {debian_arch} package lists ({MIRROR})"
                );
                self.run(
                    &format!(
                        "apt-get update (Debian {release} {debian_arch}, private configuration)"
                    ),
                    apt.get().arg("update"),
                    5 * MINUTE,
                )?;
                self.apts.push((key, apt));
                self.apts.len() - 1
            }
        };
        Ok(&self.apts[index].1)
    }

    /// Puts `kernel` at `target`, unless a run that held the lock before us did.
    fn obtain(&mut self, kernel: &Kernel, target: &Path) -> anyhow::Result<()> {
        if target.is_file() {
            return Ok(());
        }
        let started = Instant::now();
        match kernel.source {
            Source::DebianImage(release) => self.fetch_debian(release, kernel.arch, target),
            Source::OverrideBuild => self.build_override(kernel.arch, target),
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

    fn fetch_debian(
        &mut self,
        release: &'static str,
        arch: Arch,
        target: &Path,
    ) -> anyhow::Result<()> {
        let metapackage = format!("{IMAGE_METAPACKAGE}{}", arch.debian());
        let mut show = self.apt(release, arch)?.cache();
        show.args(["show", "--no-all-versions", &metapackage]);
        let show = self.output(&format!("apt-cache show {metapackage}"), &mut show, MINUTE)?;
        let (package, version) = image_package(&show)?;
        println!("vm-test: fetching Debian {release}'s {package} {version} (first run only)");
        let deb = self.download(release, arch, &package)?;
        let unpacked = self.work.join(format!("linux-image-{release}"));
        self.run(
            &format!("dpkg-deb -x {}", deb.display()),
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
            5 * MINUTE,
        )?;
        let vmlinuz = only_entry(&unpacked.join("boot"), "vmlinuz-", "")?;
        note(
            target,
            &format!(
                "Debian {release}'s {package} {version}, boot/{}",
                file_name(&vmlinuz)
            ),
        )?;
        rename(&vmlinuz, target)?;
        // Its modules: 300 MB we do not need.
        fs::remove_dir_all(&unpacked)
            .with_context(|| format!("removing {}", unpacked.display()))?;
        fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))
    }

    fn build_override(&mut self, arch: Arch, target: &Path) -> anyhow::Result<()> {
        let recipe = Recipe::of(arch);
        self.install_build_packages(&recipe)?;
        println!("vm-test: fetching Debian's {SOURCE_PACKAGE} (first run only)");
        let (source, version) = self.unpack_source()?;
        println!(
            "vm-test: configuring {version} for {}: make tinyconfig, {} merged, make olddefconfig",
            arch.debian(),
            recipe.fragment_paths()
        );
        let config = self.configure(&source, &recipe)?;
        let jobs = thread::available_parallelism().map_or(2, |n| n.get());
        let make_target = recipe.make_target;
        println!(
            "vm-test: building the {} override kernel: make -j{jobs} {make_target} (about 6 \
             minutes on 2 cores; output in {})",
            arch.debian(),
            self.log.display()
        );
        self.run(
            &format!("make -j{jobs} {make_target}"),
            make(&source, &recipe)
                .arg(format!("-j{jobs}"))
                .arg(make_target),
            90 * MINUTE,
        )?;
        let config_copy = target.with_extension("config");
        fs::write(&config_copy, config)
            .with_context(|| format!("writing {}", config_copy.display()))?;
        note(
            target,
            &format!(
                "Debian {SOURCE_RELEASE}'s {SOURCE_PACKAGE} ({version}) for {}: make tinyconfig, \
                 {} merged, make olddefconfig, make {make_target}; its .config beside",
                arch.debian(),
                recipe.fragment_paths()
            ),
        )?;
        rename(&source.join(recipe.image), target)
    }

    /// Downloads and unpacks the kernel source: its tree and its directory name (its version).
    fn unpack_source(&mut self) -> anyhow::Result<(PathBuf, String)> {
        let deb = self.download(SOURCE_RELEASE, Arch::X86_64, SOURCE_PACKAGE)?;
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
    fn configure(&self, source: &Path, recipe: &Recipe) -> anyhow::Result<String> {
        self.run(
            "make tinyconfig",
            make(source, recipe).arg("tinyconfig"),
            5 * MINUTE,
        )?;
        let fragment = self.work.join("override.config-fragment");
        let options = recipe.fragment();
        fs::write(&fragment, &options)
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
            make(source, recipe).arg("olddefconfig"),
            5 * MINUTE,
        )?;
        let config_path = source.join(".config");
        let config = fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let dropped = dropped_options(&options, &config);
        ensure!(
            dropped.is_empty(),
            "{} of {} not in the kernel's .config after make olddefconfig (a dependency they \
             need is not set; see {}): {}",
            dropped.len(),
            recipe.fragment_paths(),
            config_path.display(),
            dropped.join(", ")
        );
        Ok(config)
    }

    /// Installs the missing ones of `BUILD_PACKAGES` (and the cross compiler for another
    /// architecture) with the machine's own apt.
    fn install_build_packages(&self, recipe: &Recipe) -> anyhow::Result<()> {
        let installed = self.output(
            "dpkg-query -W",
            Command::new("dpkg-query").args(["-W", "-f", "${Package} ${db:Status-Status}\\n"]),
            MINUTE,
        )?;
        let mut wanted = BUILD_PACKAGES.to_vec();
        if recipe.cross {
            wanted.push(recipe.cross_package);
        }
        let missing = missing_packages(&installed, &wanted);
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

    /// `apt-get download PACKAGE` (`release`'s candidate for `arch`) into `work/`: the .deb.
    fn download(
        &mut self,
        release: &'static str,
        arch: Arch,
        package: &str,
    ) -> anyhow::Result<PathBuf> {
        let dir = self.work.join("debs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut download = self.apt(release, arch)?.get();
        download.arg("download").arg(package).current_dir(&dir);
        self.run(
            &format!("apt-get download {package} (Debian {release})"),
            &mut download,
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
