//! `report.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched), so
//! it opens offline and can be attached anywhere: the summary table, then per perturbation its
//! checks with p-values and a chart per steady-state metric across the three phases.
use std::{
    collections::HashSet,
    fmt::Write as _,
    time::{Duration, UNIX_EPOCH},
};

use super::{
    super::{
        results::{ConditionResult, PerturbationResult, Results},
        steady::Metric,
    },
    chart::{self, Chart},
    number, p_value,
};

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{margin-bottom:.3em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;margin:.8em 0;width:100%}
th,td{border:1px solid #ddd;padding:.35em .55em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{display:inline-block;padding:.1em .6em;border-radius:1em;font-weight:600;font-size:.9em;color:#fff}
.resilient{background:#2e7d32}.degraded{background:#ef6c00}.broken{background:#c62828}
.aborted{background:#6a1b9a}.not-run{background:#757575}
.flag{display:inline-block;margin-left:.3em;padding:0 .45em;border:1px solid #c62828;color:#c62828;border-radius:.8em;font-size:.8em}
.meta{color:#555}.bad{color:#c62828;font-weight:600}.good{color:#2e7d32}
figure{margin:1em 0}figcaption{color:#555;font-size:.85em}
.legend span{display:inline-block;width:1.4em;height:.8em;vertical-align:middle;margin:0 .3em}
";

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn time(unix_ms: u128) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn badge(verdict: &str) -> String {
    format!("<span class=\"verdict {verdict}\">{verdict}</span>")
}

fn flags(p: &PerturbationResult) -> String {
    [
        (p.crashed, "crashed"),
        (p.restarted, "restarted"),
        (p.stalled, "stalled"),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .map(|(_, flag)| format!("<span class=\"flag\">{flag}</span>"))
    .collect()
}

pub fn render(results: &Results) -> anyhow::Result<String> {
    let e = &results.experiment;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Chaos experiment {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>Chaos experiment <code>{name}</code></h1>\n\
         <p class=\"meta\">Targets: {targets} · file <code>{file}</code> · {start} to {end} (UTC) · ended: {ended}</p>\n",
        name = esc(&e.name),
        targets = esc(&e.targets.join(", ")),
        file = esc(&e.file),
        start = time(results.started_unix_ms),
        end = time(results.finished_unix_ms),
        ended = esc(&results.ended),
    );
    out.push_str("<p>");
    for (verdict, count) in &results.summary {
        if *count > 0 {
            let _ = write!(out, "{} × {count} &nbsp; ", badge(verdict));
        }
    }
    out.push_str("</p>\n<h2>Perturbations</h2>\n<table><tr><th>#</th><th>perturbation</th><th>rule</th><th>engine</th><th>verdict</th><th>injections</th><th>why</th></tr>\n");
    for p in &results.perturbations {
        let _ = writeln!(
            out,
            "<tr><td class=\"num\">{i}</td><td><a href=\"#p{i}\">{name}</a></td><td><code>{rule}</code></td><td>{engine}</td><td>{verdict}{flags}</td><td class=\"num\">{injections}</td><td>{reason}</td></tr>",
            i = p.index,
            name = esc(&p.name),
            rule = esc(&p.rule),
            engine = esc(&p.engine_label()),
            verdict = badge(p.verdict.name()),
            flags = flags(p),
            injections = p.injections,
            reason = esc(&p.reason),
        );
    }
    out.push_str("</table>\n<h2>Steady state</h2>\n<ul>\n");
    for c in &e.conditions {
        let _ = writeln!(
            out,
            "<li>{} <span class=\"meta\">({} of each phase)</span></li>",
            esc(&c.name),
            esc(&format!("{:?}", c.aggregate).to_lowercase())
        );
    }
    out.push_str("</ul>\n");
    let _ = writeln!(
        out,
        "<p class=\"meta\">A condition is violated when its threshold is broken <em>and</em> the phase's samples differ from the baseline's (two-sided Mann-Whitney U, p &lt; {}); with fewer than 3 samples on a side the threshold alone decides. Recovery is judged on the last {}s of the recovery phase.</p>",
        e.significance, e.window_s
    );
    if !e.abort_conditions.is_empty() {
        out.push_str("<p>Abort when: ");
        let names: Vec<String> = e.abort_conditions.iter().map(|c| esc(&c.name)).collect();
        let _ = writeln!(out, "{}</p>", names.join("; "));
    }
    for p in results
        .perturbations
        .iter()
        .filter(|p| p.phases.baseline.is_some())
    {
        section(&mut out, results, p)?;
    }
    out.push_str("<p class=\"meta legend\">Charts: <span style=\"background:rgba(229,57,53,.14)\"></span>injection window · <span style=\"border-top:2px dashed #e67800;height:0\"></span>condition bounds · grey dashes: phase boundaries (baseline | perturbation | recovery). One point per second.</p>\n");
    out.push_str("</body></html>\n");
    Ok(out)
}

fn check_cells(value: Option<f64>, p: Option<f64>, violated: bool) -> String {
    let class = if violated { "bad" } else { "good" };
    format!(
        "<td class=\"num {class}\">{}</td><td class=\"num\">{}</td>",
        number(value),
        p_value(p)
    )
}

fn section(out: &mut String, results: &Results, p: &PerturbationResult) -> anyhow::Result<()> {
    let _ = writeln!(
        out,
        "<section id=\"p{i}\"><h3>{i}. {name} {verdict}{flags}</h3>\n<p>Rule <code>{rule}</code> via {engine} · {injections} injections · {reason}</p>",
        i = p.index,
        name = esc(&p.name),
        verdict = badge(p.verdict.name()),
        flags = flags(p),
        rule = esc(&p.rule),
        engine = esc(&p.engine_label()),
        injections = p.injections,
        reason = esc(&p.reason),
    );
    events(out, p);
    conditions_table(out, p);
    charts(out, results, p)?;
    out.push_str("</section>\n");
    Ok(())
}

/// The container events during the perturbation, if any.
fn events(out: &mut String, p: &PerturbationResult) {
    if !p.events.is_empty() {
        out.push_str("<p>Events: ");
        let events: Vec<String> = p
            .events
            .iter()
            .map(|ev| {
                format!(
                    "{} {} at {:.0}s in {}{}",
                    esc(&ev.target),
                    esc(&ev.event),
                    ev.t,
                    ev.phase.name(),
                    ev.detail
                        .as_deref()
                        .map(|d| format!(" ({})", esc(d)))
                        .unwrap_or_default()
                )
            })
            .collect();
        let _ = writeln!(out, "{}</p>", events.join("; "));
    }
}

/// Each condition's value in the baseline, the perturbation and the end of the recovery.
fn conditions_table(out: &mut String, p: &PerturbationResult) {
    out.push_str("<table><tr><th>condition</th><th>baseline</th><th>perturbation</th><th>p</th><th>end of recovery</th><th>p</th></tr>\n");
    for c in &p.conditions {
        let recovery = c.recovery.as_ref();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td>{}{}</tr>",
            esc(&c.condition.name),
            number(c.baseline),
            check_cells(
                c.perturbation.value,
                c.perturbation.p_value,
                c.perturbation.violated
            ),
            match recovery {
                Some(r) => check_cells(r.value, r.p_value, r.violated),
                None => "<td>-</td><td>-</td>".to_owned(),
            }
        );
    }
    out.push_str("</table>\n");
}

/// A chart per charted metric across the three phases.
fn charts(out: &mut String, results: &Results, p: &PerturbationResult) -> anyhow::Result<()> {
    let origin = p.phases.baseline.map_or(0.0, |s| s.start_s);
    let samples: Vec<_> = results.samples_of(p.index).collect();
    let x_end = samples.last().map_or(1.0, |s| s.t - origin);
    let boundaries: Vec<f64> = [p.phases.perturbation, p.phases.recovery]
        .iter()
        .flatten()
        .map(|span| span.start_s - origin)
        .collect();
    let injection = p
        .injection_window
        .map(|w| (w.start_s - origin, w.end_s - origin));
    for (key, unit, bounds, caption) in charted(p) {
        let points = samples
            .iter()
            .map(|s| (s.t - origin, s.values.get(&key).copied()))
            .collect();
        let title = format!("{key} ({} injections)", p.injections);
        let svg = chart::render(&Chart {
            title: &title,
            unit: &unit,
            points,
            x_end,
            boundaries: boundaries.clone(),
            injection,
            bounds,
        })
        .map_err(|e| anyhow::anyhow!("drawing the chart of {key}: {e}"))?;
        let _ = writeln!(
            out,
            "<figure>{svg}<figcaption>{caption}</figcaption></figure>"
        );
    }
    Ok(())
}

/// What to chart, each metric once: (key, unit, bounds, caption) of the conditions' metrics,
/// then the perturbed syscall's errors and the injections.
fn charted(p: &PerturbationResult) -> Vec<(String, String, Vec<f64>, String)> {
    let mut charted = HashSet::new();
    let mut charts: Vec<(String, String, Vec<f64>, String)> = Vec::new();
    for c in &p.conditions {
        if charted.insert(c.condition.metric.clone()) {
            charts.push((
                c.condition.metric.clone(),
                unit_of(&c.condition.metric),
                bounds(c),
                esc(&c.condition.name),
            ));
        }
    }
    let syscall_errors = format!(
        "syscall.{}.errors_per_sec",
        p.rule.split([',', '=']).next().unwrap_or("")
    );
    for (key, caption) in [
        (syscall_errors.as_str(), "errors of the perturbed syscall"),
        ("injections_per_sec", "injections by the rule"),
    ] {
        if charted.insert(key.to_owned()) {
            charts.push((key.to_owned(), unit_of(key), Vec::new(), caption.to_owned()));
        }
    }
    charts
}

fn unit_of(key: &str) -> String {
    let metric = key.split('{').next().unwrap_or(key);
    metric
        .parse::<Metric>()
        .map_or_else(|_| String::new(), |m| m.unit().to_owned())
}

/// The condition's bounds as values (relative ones from the baseline).
fn bounds(c: &ConditionResult) -> Vec<f64> {
    let b = &c.condition.bounds;
    let mut values: Vec<f64> = [b.min, b.max].into_iter().flatten().collect();
    if let Some(base) = c.baseline {
        if let Some(inc) = b.max_increase {
            values.push(base + inc * base.abs());
        }
        if let Some(dec) = b.max_decrease {
            values.push(base - dec * base.abs());
        }
    }
    values
}
