//! `results.json`: the whole [`Results`], schema `syschaos.experiment/v1` (README, "Experiments").
use super::super::results::Results;

pub fn render(results: &Results) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(results)? + "\n")
}
