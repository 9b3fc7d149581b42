//! `samples.csv`: one row per second; fixed columns, then one per recorded metric (empty where
//! the metric had no value in that second).
use std::fmt::Write as _;

use super::super::results::Results;

pub fn render(results: &Results) -> String {
    let mut out = String::from("t_seconds,unix_ms,perturbation,rule,phase,injections");
    for metric in &results.metrics {
        out.push(',');
        out.push_str(&field(metric));
    }
    out.push('\n');
    for sample in &results.samples {
        let rule = results
            .perturbations
            .iter()
            .find(|p| p.index == sample.perturbation)
            .map_or(String::new(), |p| p.rule.clone());
        let _ = write!(
            out,
            "{},{},{},{},{},{}",
            sample.t,
            sample.unix_ms,
            sample.perturbation,
            field(&rule),
            sample.phase.name(),
            sample.injections
        );
        for metric in &results.metrics {
            out.push(',');
            if let Some(value) = sample.values.get(metric) {
                let _ = write!(out, "{value}");
            }
        }
        out.push('\n');
    }
    out
}

/// RFC 4180 quoting where needed.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
