//! `report.md`: the summary table, for pull requests and chat.
use std::fmt::Write as _;

use super::{super::results::Results, number, p_value};

pub fn render(results: &Results) -> String {
    let e = &results.experiment;
    let mut out = format!("# Chaos experiment `{}`\n\n", e.name);
    let summary: Vec<String> = results
        .summary
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(verdict, n)| format!("{n} {verdict}"))
        .collect();
    let _ = writeln!(
        out,
        "Targets: {} · file: `{}` · ended: {} · {}\n",
        e.targets.join(", "),
        e.file,
        results.ended,
        summary.join(", ")
    );
    out.push_str("| # | perturbation | engine | verdict | injections | steady state: baseline → perturbation (p) → recovery |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for p in &results.perturbations {
        let mut flags = Vec::new();
        for (set, flag) in [
            (p.crashed, "crashed"),
            (p.restarted, "restarted"),
            (p.stalled, "stalled"),
        ] {
            if set {
                flags.push(flag);
            }
        }
        let verdict = match flags.is_empty() {
            true => format!("**{}**", p.verdict.name()),
            false => format!("**{}** ({})", p.verdict.name(), flags.join(", ")),
        };
        let conditions: Vec<String> = p
            .conditions
            .iter()
            .map(|c| {
                let mark = if c.perturbation.violated {
                    "✗"
                } else {
                    "✓"
                };
                format!(
                    "{mark} {}: {} → {} ({}) → {}",
                    c.condition.name,
                    number(c.baseline),
                    number(c.perturbation.value),
                    p_value(c.perturbation.p_value),
                    number(c.recovery.as_ref().and_then(|r| r.value)),
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            p.index,
            cell(&if p.name == p.rule {
                format!("`{}`", p.rule)
            } else {
                format!("{} (`{}`)", p.name, p.rule)
            }),
            p.engine_label(),
            verdict,
            p.injections,
            cell(&conditions.join("<br>"))
        );
    }
    out.push_str(
        "\n✗: threshold broken and significantly different from the baseline (Mann-Whitney U, ",
    );
    let _ = writeln!(out, "p < {}).", e.significance);
    out
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
