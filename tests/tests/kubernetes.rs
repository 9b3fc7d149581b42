//! The Kubernetes manifests (`deploy/kubernetes/`) validated offline against the Kubernetes API
//! schemas, strictly (unknown fields are errors), with `kubernetes-validate` (PyPI; it ships the
//! schemas; `./run setup` installs it).
use std::{path::PathBuf, process::Command};

/// The oldest Kubernetes release still widely run, and the newest the validator knows.
const VERSIONS: [&str; 2] = ["1.28", "1.37"];

const CORE: [&str; 3] = ["namespace.yaml", "daemonset.yaml", "service.yaml"];

fn manifest(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(name)
}

/// `kubernetes-validate --strict -k VERSION FILE...`: (success, stdout and stderr).
fn validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .expect("kubernetes-validate not found: run ./run setup (pip install kubernetes-validate)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn manifests_match_the_kubernetes_schemas() {
    let files: Vec<PathBuf> = CORE.iter().map(|name| manifest(name)).collect();
    for version in VERSIONS {
        let (ok, text) = validate(version, &files);
        assert!(ok, "Kubernetes {version}: {text}");
        for name in CORE {
            assert!(
                text.lines()
                    .any(|line| line.contains(name) && line.contains("passed")),
                "{name} not validated against {version}: {text}"
            );
        }
    }
}

#[test]
fn the_service_monitor_is_a_crd_the_validator_has_no_schema_for() {
    // The Prometheus Operator's CRD is not in the Kubernetes schemas: the validator says so
    // rather than passing it silently. Should it learn the schema, this test fails: the file
    // then belongs with CORE, validated like the others.
    for version in VERSIONS {
        let file = manifest("servicemonitor.yaml");
        let (ok, text) = validate(version, std::slice::from_ref(&file));
        assert!(ok, "Kubernetes {version}: {text}");
        let expected = format!(
            "WARN {} Couldn't find schema for kind ServiceMonitor with api version \
             monitoring.coreos.com/v1 for kubernetes version {version}",
            file.display()
        );
        assert_eq!(text.trim(), expected, "Kubernetes {version}");
    }
}

#[test]
fn the_validator_rejects_a_misspelt_field() {
    let daemonset = std::fs::read_to_string(manifest("daemonset.yaml")).unwrap();
    assert!(daemonset.contains("hostPID: true"));
    let bad = std::env::temp_dir().join(format!("syschaos-bad-{}.yaml", std::process::id()));
    std::fs::write(&bad, daemonset.replace("hostPID: true", "hostPid: true")).unwrap();
    let (ok, text) = validate(VERSIONS[1], std::slice::from_ref(&bad));
    std::fs::remove_file(&bad).unwrap();
    assert!(!ok, "{text}");
    assert!(text.contains("'hostPid' was unexpected"), "{text}");
}
