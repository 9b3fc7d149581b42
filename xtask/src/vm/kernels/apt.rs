//! Debian's packages through an apt configuration of our own, and what apt's answers say.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure};

use super::*;

/// apt-get and apt-cache with our own sources list, lists, cache and (empty) dpkg status: the
/// machine's own configuration (proxies...) still applies, its sources and pins do not.
pub(super) struct Apt {
    root: PathBuf,
    /// Debian's name of the architecture whose packages it fetches (`amd64`, `arm64`).
    arch: &'static str,
}

impl Apt {
    /// A configuration under `root` for `release` (`trixie`...) and `arch` of the archive at
    /// `mirror`.
    pub(super) fn new(
        root: &Path,
        mirror: &str,
        release: &str,
        arch: &'static str,
    ) -> anyhow::Result<Self> {
        for dir in ["state/lists/partial", "cache/archives/partial"] {
            let dir = root.join(dir);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        ensure!(
            Path::new(KEYRING).is_file(),
            "{KEYRING} not found: install it with `apt-get install debian-archive-keyring`"
        );
        let sources = root.join("sources.list");
        fs::write(
            &sources,
            format!("deb [signed-by={KEYRING}] {mirror} {release} main\n"),
        )
        .with_context(|| format!("writing {}", sources.display()))?;
        let status = root.join("status");
        fs::write(&status, "").with_context(|| format!("writing {}", status.display()))?;
        Ok(Self {
            root: root.to_owned(),
            arch,
        })
    }

    pub(super) fn get(&self) -> Command {
        let mut command = Command::new("apt-get");
        command.arg("-q");
        self.configure(&mut command);
        command
    }

    pub(super) fn cache(&self) -> Command {
        let mut command = Command::new("apt-cache");
        self.configure(&mut command);
        command
    }

    pub(super) fn configure(&self, command: &mut Command) {
        let root = self.root.display();
        let options = [
            format!("Dir::Etc::SourceList={root}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            "Dir::Etc::Preferences=/dev/null".to_owned(),
            "Dir::Etc::PreferencesParts=/dev/null".to_owned(),
            format!("Dir::State={root}/state"),
            format!("Dir::State::status={root}/status"),
            format!("Dir::Cache={root}/cache"),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures={}", self.arch),
            "Acquire::Languages=none".to_owned(),
        ];
        for option in options {
            command.arg("-o").arg(option);
        }
    }
}

/// The kernel package and its version, from `apt-cache show` of the metapackage.
pub(super) fn image_package(show: &str) -> anyhow::Result<(String, String)> {
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
            "no linux-image-* dependency and version in apt-cache show {IMAGE_METAPACKAGE}*:\n{show}"
        ),
    }
}

/// Of `packages`, those dpkg-query (`${Package} ${db:Status-Status}` lines) does not list installed.
pub(super) fn missing_packages(dpkg_query: &str, packages: &[&str]) -> Vec<String> {
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
