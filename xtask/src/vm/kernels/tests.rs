use super::{apt::*, steps::*, *};

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

#[test]
fn the_arm64_fragment_has_every_option_but_the_x86_only_ones() {
    // The two override kernels differ only where the architectures do: a new option goes in both.
    const X86_ONLY: [&str; 6] = [
        "CONFIG_SERIAL_8250=y",
        "CONFIG_SERIAL_8250_CONSOLE=y",
        "CONFIG_HYPERVISOR_GUEST=y",
        "CONFIG_PARAVIRT=y",
        "CONFIG_KVM_GUEST=y",
        "CONFIG_PVH=y",
    ];
    let missing: Vec<&str> = FRAGMENT
        .lines()
        .filter(|line| line.starts_with("CONFIG_") && !X86_ONLY.contains(line))
        .filter(|option| !FRAGMENT_ARM64.lines().any(|line| line == *option))
        .collect();
    assert_eq!(missing, Vec::<&str>::new());
    assert!(FRAGMENT_ARM64.contains("CONFIG_SERIAL_AMBA_PL011_CONSOLE=y"));
}
