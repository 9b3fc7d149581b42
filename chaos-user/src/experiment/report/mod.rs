//! The reports of an experiment, in `--out DIR`: `report.html` (self-contained, no script),
//! `report.md`, `results.json` and `samples.csv`. Rewritten after every perturbation.
mod chart;
mod csv;
mod html;
mod json;
mod md;

use std::path::Path;

use anyhow::Context as _;

use super::results::Results;

pub fn write_all(dir: &Path, results: &Results) -> anyhow::Result<()> {
    write(dir, "results.json", &json::render(results)?)?;
    write(dir, "samples.csv", &csv::render(results))?;
    write(dir, "report.md", &md::render(results))?;
    write(dir, "report.html", &html::render(results)?)?;
    Ok(())
}

/// Replaces the file in one step (a reader never sees half of it).
fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))
}

/// `0.0123`, `48.5`, `1200`; `-` for no value.
pub fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), super::runner::short)
}

/// `p=0.003`, or `no test` with too few samples.
pub fn p_value(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 0.001 => "p<0.001".to_owned(),
        Some(p) => format!("p={p:.3}"),
        None => "no test".to_owned(),
    }
}
