//! Reading Prometheus text exposition: samples by name and labels.
use std::collections::BTreeMap;

pub struct Scrape {
    pub text: String,
}

pub fn scrape(port: u16) -> Scrape {
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("scrape /metrics")
        .body_mut()
        .read_to_string()
        .expect("read /metrics");
    Scrape { text }
}

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Scrape {
    pub fn samples(&self) -> Vec<Sample> {
        self.text.lines().filter_map(parse_line).collect()
    }

    /// The value of the sample with exactly this name and these labels among its labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples()
            .into_iter()
            .find(|sample| {
                sample.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|sample| sample.value)
    }

    /// The distinct values of label `label` over all samples of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples()
            .into_iter()
            .filter(|sample| sample.name == name)
            .filter_map(|sample| sample.labels.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="1",b="x"` (our label values hold no quotes or commas).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples() {
        let scrape = Scrape {
            text:
                "# HELP x y\nsyschaos_syscalls_total{target=\"a\",syscall=\"getppid\"} 1000\nup 1\n"
                    .into(),
        };
        assert_eq!(
            scrape.value(
                "syschaos_syscalls_total",
                &[("target", "a"), ("syscall", "getppid")]
            ),
            Some(1000.0)
        );
        assert_eq!(
            scrape.value("syschaos_syscalls_total", &[("target", "b")]),
            None
        );
        assert_eq!(scrape.value("up", &[]), Some(1.0));
        assert_eq!(
            scrape.label_values("syschaos_syscalls_total", "target"),
            ["a"]
        );
    }
}
