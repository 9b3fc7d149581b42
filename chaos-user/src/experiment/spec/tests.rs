//! Experiment files: every example (README and examples/) parses; malformed files are refused
//! with the line and the key; mutated files never make the parser panic.
use std::{path::PathBuf, time::Duration};

use super::{SpecError, parse};
use crate::{
    experiment::{plan, steady::Metric},
    names::Arch,
    target::TargetSpec,
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The experiment files of examples/, (name, text).
fn example_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(workspace().join("examples"))
        .expect("examples/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path.display().to_string(), text)
        })
        .collect();
    files.sort();
    files
}

/// The ```yaml blocks of the README that are experiments.
fn readme_examples() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                if block.contains("perturbations:") {
                    blocks.push(block.clone());
                }
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_example_parses_and_expands() {
    let files = example_files();
    assert!(files.len() >= 2, "{files:?}");
    let readme = readme_examples();
    assert!(!readme.is_empty(), "no experiment in the README");
    let all = files.into_iter().chain(
        readme
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("README block {i}"), t)),
    );
    for (name, text) in all {
        let experiment = parse(&text, &name).unwrap_or_else(|e| panic!("{e}"));
        let planned = plan::expand(&experiment).unwrap_or_else(|e| panic!("{e}"));
        assert!(!planned.is_empty(), "{name}");
        // The examples run as written on both architectures: no `open`, `stat`, `fork`...
        let conditions = experiment.steady.conditions.iter();
        let metrics = conditions.filter_map(|c| match &c.metric.metric {
            Metric::Syscall { name, .. } => Some(name.as_str()),
            _ => None,
        });
        for syscall in planned
            .iter()
            .map(|p| p.rule.syscall.as_str())
            .chain(metrics)
        {
            for arch in [Arch::X86_64, Arch::Aarch64] {
                assert!(
                    arch.check_syscall(syscall).is_ok(),
                    "{name}: {syscall} on {arch}"
                );
            }
        }
    }
}

#[test]
fn the_http_example_reads_as_written() {
    let text = std::fs::read_to_string(workspace().join("examples/http-service.yaml")).unwrap();
    let e = parse(&text, "http-service.yaml").unwrap();
    assert_eq!(e.name, "http-service");
    assert_eq!(e.targets, vec![TargetSpec::Container("web".into())]);
    assert_eq!(e.load.as_ref().unwrap().argv[0], "wrk");
    assert_eq!(e.load.as_ref().unwrap().warmup, Duration::from_secs(3));
    assert_eq!(e.phases.perturbation, Duration::from_secs(20));
    assert_eq!(e.steady.significance, 0.05);
    let first = &e.steady.conditions[0];
    assert_eq!(first.metric.metric, Metric::HttpClassRatio(5));
    assert_eq!(first.max, Some(0.01));
    let within = &e.steady.conditions[1];
    assert_eq!(
        (within.max_increase, within.max_decrease),
        (Some(0.2), Some(0.2))
    );
    // The two probes add a success-ratio condition each.
    assert_eq!(e.steady.conditions.len(), 4 + 2);
    assert_eq!(e.steady.probes[0].min_success_ratio, 0.95);
    assert_eq!(e.abort.conditions.len(), 1);
    let planned = plan::expand(&e).unwrap();
    let texts: Vec<&str> = planned.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "connect=ECONNREFUSED,probability=0.2",
            "openat=EACCES,probability=0.5,path-prefix=/usr/share/nginx",
            "read,probability=0.1,delay=20ms",
            "fsync=SIGKILL,nth=3",
        ]
    );
    assert_eq!(planned[2].phases.perturbation, Duration::from_secs(30));
    assert_eq!(planned[2].phases.baseline, Duration::from_secs(10));
}

const GOOD: &str = "target:
  container: web
steady_state:
  conditions:
    - metric: http.5xx_ratio
      max: 0.01
perturbations:
  - syscall: connect
    errno: ECONNREFUSED
";

fn error(text: &str) -> SpecError {
    match parse(text, "bad.yaml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

/// Edits of GOOD that break it: (text replaced, replacement, line, key, words of the message).
const MALFORMED: &[(&str, &str, u64, &str, &str)] = &[
    (
        "container: web",
        "containr: web",
        2,
        "target.containr",
        "unknown field `containr`",
    ),
    (
        "errno: ECONNREFUSED",
        "errno: ECONNREFUSD",
        9,
        "perturbations[0].errno",
        "unknown errno `ECONNREFUSD`",
    ),
    (
        "syscall: connect",
        "syscall: conect",
        8,
        "perturbations[0].syscall",
        "unknown syscall `conect`",
    ),
    (
        "metric: http.5xx_ratio",
        "metric: http.5xx_ration",
        5,
        "steady_state.conditions[0].metric",
        "unknown metric",
    ),
    (
        "max: 0.01",
        "max: lots",
        6,
        "steady_state.conditions[0].max",
        "not a number",
    ),
    (
        "max: 0.01",
        "colour: red",
        6,
        "steady_state.conditions[0].colour",
        "unknown field `colour`",
    ),
    (
        "    errno: ECONNREFUSED\n",
        "    errno: ECONNREFUSED\n    probability: 1.5\n",
        10,
        "perturbations[0].probability",
        "outside (0, 1]",
    ),
    (
        "    errno: ECONNREFUSED\n",
        "    errno: ECONNREFUSED\n    signal: SIGKILL\n",
        10,
        "perturbations[0].signal",
        "not both",
    ),
    (
        "    errno: ECONNREFUSED\n",
        "",
        8,
        "perturbations[0]",
        "give errno",
    ),
    (
        "    errno: ECONNREFUSED\n",
        "    errno: ECONNREFUSED\n    path_prefix: /x\n",
        8,
        "perturbations[0]",
        "connect takes no path",
    ),
    (
        "    errno: ECONNREFUSED\n",
        "    errno: ECONNREFUSED\n    engine: magic\n",
        10,
        "perturbations[0].engine",
        "unknown engine",
    ),
    (
        "      max: 0.01\n",
        "",
        5,
        "steady_state.conditions[0]",
        "needs a bound",
    ),
    ("  container: web\n", "", 1, "target", "expected mapping"),
    ("container: web", "containers: []", 2, "target", "no target"),
    (
        "target:\n  container: web\n",
        "",
        1,
        "",
        "missing field `target`",
    ),
    (
        "perturbations:\n",
        "perturbations: 3\n",
        7,
        "perturbations",
        "",
    ),
    (
        "    - metric: http.5xx_ratio\n",
        "    - metric: probe.health.success_ratio\n",
        5,
        "steady_state.conditions[0].metric",
        "no probe named `health`",
    ),
    ("container: web", "container: [web", 3, "", ""),
    (
        "      max: 0.01\n",
        "      max: 0.01\n      window: soon\n",
        7,
        "steady_state.conditions[0].window",
        "not a duration",
    ),
];

#[test]
fn malformed_files_are_refused_with_line_and_key() {
    assert!(parse(GOOD, "good.yaml").is_ok());
    for (from, to, line, key, words) in MALFORMED {
        assert!(GOOD.contains(from), "{from}");
        let text = GOOD.replacen(from, to, 1);
        let e = error(&text);
        assert!(e.line > 0, "no line in `{e}`");
        if *line > 0 && !key.is_empty() {
            assert_eq!((e.line, e.key.as_str()), (*line, *key), "{e}\n{text}");
        }
        assert!(e.message.contains(words), "`{e}` lacks `{words}`");
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("bad.yaml:{}:", e.line)),
            "{shown}"
        );
    }
    let phases = GOOD.to_owned() + "phases:\n  baseline: 500ms\n";
    let e = error(&phases);
    assert_eq!((e.line, e.key.as_str()), (11, "phases.baseline"), "{e}");
    let rule = GOOD.replacen(
        "  - syscall: connect\n    errno: ECONNREFUSED\n",
        "  - rule: connect=ECONNREFUSED,probability=2\n",
        1,
    );
    let e = error(&rule);
    assert_eq!(
        (e.line, e.key.as_str()),
        (8, "perturbations[0].rule"),
        "{e}"
    );
    assert!(e.message.contains("probability 2"), "{e}");
}

/// A tiny deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit: a character deleted, inserted or replaced (from YAML's special ones and
/// some text), a line deleted, duplicated or swapped, or the text cut short.
fn mutate(text: &str, rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        ":",
        "-",
        " ",
        "  ",
        "\n",
        "[",
        "]",
        "{",
        "}",
        ",",
        "'",
        "\"",
        "#",
        "&a",
        "*a",
        "!!str",
        "%",
        "|",
        ">",
        "\t",
        "?",
        "<<: *a",
        "0",
        "-1",
        "1e999",
        "null",
        "~",
        "é",
        "\u{0}",
        "999999999999999999999",
        "EINTR",
        "metric",
        "perturbations:",
    ];
    let mut chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<&str> = text.lines().collect();
    match rng.below(7) {
        0 if !chars.is_empty() => {
            chars.remove(rng.below(chars.len()));
            chars.into_iter().collect()
        }
        1 => {
            let at = rng.below(chars.len() + 1);
            let piece: Vec<char> = PIECES[rng.below(PIECES.len())].chars().collect();
            chars.splice(at..at, piece);
            chars.into_iter().collect()
        }
        2 if !chars.is_empty() => {
            let at = rng.below(chars.len());
            chars[at] = PIECES[rng.below(PIECES.len())]
                .chars()
                .next()
                .unwrap_or('x');
            chars.into_iter().collect()
        }
        3 if !lines.is_empty() => {
            lines.remove(rng.below(lines.len()));
            lines.join("\n")
        }
        4 if !lines.is_empty() => {
            let at = rng.below(lines.len());
            lines.insert(at, lines[at]);
            lines.join("\n")
        }
        5 if lines.len() > 1 => {
            let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
            lines.swap(a, b);
            lines.join("\n")
        }
        _ => chars[..rng.below(chars.len() + 1)].iter().collect(),
    }
}

#[test]
fn mutated_files_give_errors_never_panics() {
    let mut seeds: Vec<String> = example_files().into_iter().map(|(_, text)| text).collect();
    seeds.push(GOOD.to_owned());
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..4000 {
        let mut text = seeds[round % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            text = mutate(&text, &mut rng);
        }
        let outcome = std::panic::catch_unwind(|| {
            parse(&text, "fuzz.yaml").and_then(|experiment| plan::expand(&experiment).map(drop))
        });
        match outcome {
            Err(_) => panic!("the parser panicked on:\n{text}"),
            Ok(Ok(())) => accepted += 1,
            Ok(Err(e)) => {
                refused += 1;
                assert!(!e.message.is_empty(), "an empty message for:\n{text}");
                assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
            }
        }
    }
    // Both outcomes happen: the mutations are neither all harmless nor all fatal.
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}
