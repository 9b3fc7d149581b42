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
    // The build from ../shared/kernels' recipe kept every option of our x86_64 fragments.
    let shared = shared_dir().join("override-6.12.117.config");
    if let Ok(config) = fs::read_to_string(shared) {
        let options = Recipe::of(Arch::X86_64).fragment();
        assert_eq!(dropped_options(&options, &config), Vec::<String>::new());
    }
}

#[test]
fn the_architectures_fragments_add_to_the_common_one() {
    // Each architecture's fragment has only options of its own: none repeats or contradicts
    // one of both kernels'.
    let name = |line: &str| {
        let line = line.trim_start_matches("# ");
        line.split(['=', ' ']).next().unwrap_or("").to_owned()
    };
    let common: Vec<String> = FRAGMENT
        .lines()
        .filter(|line| line.contains("CONFIG_"))
        .map(name)
        .collect();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let recipe = Recipe::of(arch);
        let shared: Vec<String> = recipe
            .arch_fragment
            .lines()
            .filter(|line| line.contains("CONFIG_"))
            .map(name)
            .filter(|option| common.contains(option))
            .collect();
        assert_eq!(
            shared,
            Vec::<String>::new(),
            "{}",
            recipe.arch_fragment_path
        );
    }
    assert!(FRAGMENT_ARM64.contains("CONFIG_SERIAL_AMBA_PL011_CONSOLE=y"));
    assert!(FRAGMENT_X86_64.contains("CONFIG_SERIAL_8250_CONSOLE=y"));
}
