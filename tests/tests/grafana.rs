//! The Grafana dashboard (`deploy/grafana/syschaos.json`) asks only for metrics chaos-user
//! exports: every metric name in every PromQL expression is looked up in a live `/metrics` scrape
//! of an `inject` run with syscall, error, injection, HTTP and resource series all present.
use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use tests::{attach::Attach, docker::Container, free_port, metrics::Scrape};

/// Metrics a panel may show before chaos-user exports them: a name here is accepted without a
/// live series. Empty now: the HTTP panels' `syschaos_http_responses_total` and
/// `syschaos_http_response_duration_seconds` were planned here until chaos-user exported them.
const NOT_YET_EXPORTED: &[&str] = &[];

const DASHBOARD: &str = include_str!("../../deploy/grafana/syschaos.json");

/// Metric names in a PromQL expression: identifiers that are not functions or aggregations
/// (followed by `(`, `by` or `without`), keywords, or labels of a `by (...)`-style grouping, once strings, label
/// matchers `{...}` and ranges `[...]` are removed.
fn metric_names(expr: &str) -> Vec<String> {
    let mut cleaned = String::new();
    let (mut nesting, mut quote) = (0, None);
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{' | '[') => nesting += 1,
            (None, '}' | ']') => nesting -= 1,
            (None, c) if nesting == 0 => cleaned.push(c),
            (None, _) => {}
        }
    }
    let mut tokens = Vec::new();
    let mut rest = cleaned.as_str();
    while let Some(c) = rest.chars().next() {
        let length = if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len())
        } else if c.is_ascii_digit() || c == '.' {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .unwrap_or(rest.len())
        } else {
            c.len_utf8()
        };
        let token = &rest[..length];
        if !token.trim().is_empty() {
            tokens.push(token);
        }
        rest = &rest[length..];
    }
    let mut names = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        let next = tokens.get(i + 1).copied();
        let is_identifier = token.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if GROUPING.contains(&token) && next == Some("(") {
            // Skip the label list.
            while tokens.get(i).is_some_and(|t| *t != ")") {
                i += 1;
            }
        } else if is_identifier
            && !matches!(next, Some("(" | "by" | "without"))
            && !KEYWORDS.contains(&token)
        {
            names.push(token.to_owned());
        }
        i += 1;
    }
    names
}

const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: [&str; 10] = [
    "by",
    "without",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
];

/// The PromQL expressions of the dashboard's panels.
fn panel_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("a PromQL expr").to_owned());
        }
    }
    exprs
}

/// The metrics the template variables' `label_values(METRIC, label)` queries read.
fn variable_metrics(dashboard: &serde_json::Value) -> Vec<String> {
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    variables
        .iter()
        .filter_map(|variable| variable["query"]["query"].as_str())
        .map(|query| {
            let metric = query
                .strip_prefix("label_values(")
                .and_then(|q| q.split(',').next())
                .expect("a label_values(METRIC, label) query");
            metric.trim().to_owned()
        })
        .collect()
}

/// Metric families in a scrape, histogram samples (`_bucket`, `_sum`, `_count`) by family name.
fn exported(scrape: &Scrape) -> BTreeSet<String> {
    scrape
        .text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect()
}

fn family_of(name: &str, families: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.contains(base)
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

/// One `GET /status/200` on its own connection.
fn http_get(port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /status/200 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn promql_names_are_found() {
    let expr = r#"histogram_quantile(0.99, sum by (syscall, le) (rate(a_bucket{target=~"$t", x="}"}[$__rate_interval]))) / on (target) group_left b + c offset 5m"#;
    assert_eq!(metric_names(expr), ["a_bucket", "b", "c"]);
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains(&"target"), "{variables:?}");
    let exprs = panel_exprs(&dashboard);
    for expr in &exprs {
        assert!(
            expr.contains(r#"target=~"$target""#),
            "not filtered by the target variable: {expr}"
        );
    }

    // A server answering HTTP, and a client whose connects fail by injection.
    let port = free_port();
    let server = Container::run(
        "grafana-http",
        &["--network", "host"],
        &["serve", "--port", &port.to_string()],
    );
    let client = Container::start("grafana-connect", &["--connect", "5"]);
    let attach = Attach::inject(&[
        "--container",
        &server.name,
        "--container",
        &client.name,
        "--syscall",
        "connect",
        "--errno",
        "ECONNREFUSED",
    ]);
    client.trigger_round(1);
    http_get(port);
    let scrape = attach.metrics();
    let families = exported(&scrape);

    let mut used: BTreeSet<String> = variable_metrics(&dashboard).into_iter().collect();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        used.extend(names.iter().map(|name| family_of(name, &families)));
    }
    let unknown: Vec<&String> = used
        .iter()
        .filter(|name| !families.contains(*name) && !NOT_YET_EXPORTED.contains(&name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard asks for metrics chaos-user does not export: {unknown:?}\nexported: {families:?}"
    );
    for planned in NOT_YET_EXPORTED {
        assert!(
            !families.contains(*planned),
            "{planned} is exported now: take it out of NOT_YET_EXPORTED"
        );
    }
}
