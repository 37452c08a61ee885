//! The monitoring files (deploy/monitoring, decision 0032), checked offline: `promtool check rules` and
//! `promtool test rules` (every alert fires just past its threshold and stays silent just short of it), every alert
//! carries `for`, `severity`, `summary`, `description` and a `runbook_url` naming a section of a runbook in
//! docs/runbooks, the thresholds are the spec's ("Key Metrics" and "Consumer Group Monitoring") for the groups of
//! `runtime::policy`, and the Grafana dashboards follow our conventions, their queries parse and name only metrics
//! that some component exports — read from the code (metric registrations in the Rust sources, bus-monitor's
//! included) and the JMX exporter's rules.
//!
//! promtool comes from the system's `prometheus` package, installed by `deploy/local/tools` (which `make test` runs
//! first); `PROMTOOL` names another binary. A missing promtool fails the tests, naming the command that installs
//! it: nothing here skips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};
use regex::Regex;
use runtime::policy;
use serde_yaml::Value;
use testkit::workspace_root;

/// Series Prometheus itself writes for every target.
const PROMETHEUS_SYNTHETIC: &[&str] = &["up", "scrape_duration_seconds", "scrape_samples_scraped"];

/// The spec's "Key Metrics" thresholds.
const KEY_THROUGHPUT_PER_SECOND: f64 = 100.0;
const KEY_END_TO_END_P95_SECONDS: f64 = 5.0;
const KEY_LAG_MESSAGES: f64 = 1000.0;
const KEY_ERROR_RATE: f64 = 0.01;
const KEY_DLQ_PER_HOUR: f64 = 10.0;
/// "p95 > T" is written as "more than 5 % of the observations above T".
const P95_TAIL: f64 = 0.05;

/// The spec's "Consumer Group Monitoring": group, lag alert (messages), processing time alert (seconds), error rate
/// alert (fraction) — plus the rows our decisions give groups the spec does not name (payment-ingestion, 0034).
const GROUP_THRESHOLDS: &[(&str, f64, f64, f64)] = &[
    (policy::READ_MODEL_PROJECTIONS, 500.0, 2.0, 0.005),
    (policy::WEBHOOK_DELIVERY, 100.0, 10.0, 0.02),
    (policy::SETTLEMENT_PROCESSING, 10.0, 30.0, 0.001),
    (policy::ANALYTICS_AGGREGATION, 1000.0, 60.0, 0.01),
    // Not in the spec's table: decision 0034 gives the payment-ingestion group settlement's row (money).
    (policy::PAYMENT_INGESTION, 10.0, 30.0, 0.001),
];

fn monitoring_dir() -> PathBuf {
    workspace_root().join("deploy/monitoring")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.{ext} in {}", dir.display());
    files
}

fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        })
        .expect(
            "promtool not found on PATH — install it with `deploy/local/tools` (`make test` runs it; Debian's \
             `prometheus` package), or set PROMTOOL",
        )
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {value:?}"))
}

/// Every rule of deploy/monitoring/rules, with the file it is in.
fn rules() -> &'static [(String, Value)] {
    static RULES: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut all = Vec::new();
        for file in files(&monitoring_dir().join("rules"), "yaml") {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let doc = yaml(&file);
            let groups = doc["groups"].as_sequence().expect("groups");
            for group in groups {
                for rule in group["rules"].as_sequence().expect("rules") {
                    all.push((name.clone(), rule.clone()));
                }
            }
        }
        all
    })
}

fn alerts() -> impl Iterator<Item = &'static Value> {
    rules()
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.get("alert").is_some())
}

fn alerts_named(name: &str) -> Vec<&'static Value> {
    let found: Vec<_> = alerts().filter(|r| r["alert"] == name).collect();
    assert!(
        !found.is_empty(),
        "no alert {name} in deploy/monitoring/rules"
    );
    found
}

fn parse(expr: &str, what: &str) -> Expr {
    parser::parse(expr).unwrap_or_else(|e| panic!("{what}: PromQL does not parse: {e}\n{expr}"))
}

/// The threshold comparison of an alert's expression: the first comparison with a number on its right, looking
/// through parentheses and the left side of `and` / `unless` (the guards come after the condition).
fn comparison(expr: &Expr) -> Option<(&Expr, String, f64)> {
    match expr {
        Expr::Paren(p) => comparison(&p.expr),
        Expr::Binary(b) => {
            let op = b.op.to_string();
            if op == "and" || op == "unless" {
                return comparison(&b.lhs);
            }
            match (
                &*b.rhs,
                ["<", "<=", ">", ">=", "==", "!="].contains(&op.as_str()),
            ) {
                (Expr::NumberLiteral(n), true) => Some((&*b.lhs, op, n.val)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn threshold(alert: &Value) -> (Expr, String, f64) {
    let name = str_of(&alert["alert"], "alert");
    let expr = parse(str_of(&alert["expr"], name), name);
    let (lhs, op, value) = comparison(&expr)
        .map(|(lhs, op, v)| (lhs.clone(), op, v))
        .unwrap_or_else(|| {
            panic!("{name}: no `<expr> <op> <number>` comparison at the top of its expression")
        });
    (lhs, op, value)
}

/// Visits every node of an expression.
fn walk<'a>(expr: &'a Expr, visit: &mut dyn FnMut(&'a Expr)) {
    visit(expr);
    match expr {
        Expr::Aggregate(a) => {
            walk(&a.expr, visit);
            if let Some(p) = &a.param {
                walk(p, visit);
            }
        }
        Expr::Unary(u) => walk(&u.expr, visit),
        Expr::Binary(b) => {
            walk(&b.lhs, visit);
            walk(&b.rhs, visit);
        }
        Expr::Paren(p) => walk(&p.expr, visit),
        Expr::Subquery(s) => walk(&s.expr, visit),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, visit)),
        _ => {}
    }
}

/// Every vector selector (also inside range selectors): metric name and matchers.
fn selectors(expr: &Expr) -> Vec<promql_parser::parser::VectorSelector> {
    let mut found = Vec::new();
    walk(expr, &mut |e| match e {
        Expr::VectorSelector(vs) => found.push(vs.clone()),
        Expr::MatrixSelector(ms) => found.push(ms.vs.clone()),
        _ => {}
    });
    found
}

fn metric_names(expr: &Expr) -> BTreeSet<String> {
    selectors(expr)
        .into_iter()
        .filter_map(|vs| {
            vs.name.clone().or_else(|| {
                vs.matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__")
                    .map(|m| m.value.clone())
            })
        })
        .collect()
}

/// The values a label is matched with (`=`) anywhere in the expression, and the values of its `!~` matchers.
fn matched(expr: &Expr, label: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut equal, mut excluded) = (BTreeSet::new(), BTreeSet::new());
    for vs in selectors(expr) {
        for m in vs.matchers.matchers.iter().filter(|m| m.name == label) {
            match m.op {
                MatchOp::Equal => {
                    equal.insert(m.value.clone());
                }
                MatchOp::NotRe(_) => {
                    excluded.insert(m.value.clone());
                }
                _ => {}
            }
        }
    }
    (equal, excluded)
}

/// How the Rust prometheus client writes a bucket bound in `le` (Rust's f64 Display: 2 → "2", 0.5 → "0.5").
fn le(seconds: f64) -> String {
    seconds.to_string()
}

/// The bucket bounds of one of the consumer runtime's histograms, as it registers them.
fn runtime_buckets(histogram: &str) -> Vec<f64> {
    let registry = prometheus::Registry::new();
    let metrics =
        runtime::metrics::Metrics::register(&registry, "g").expect("runtime metrics register");
    metrics
        .processing_seconds
        .with_label_values(&["g", "t"])
        .observe(0.0);
    metrics
        .end_to_end_latency_seconds
        .with_label_values(&["g", "t"])
        .observe(0.0);
    let family = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == histogram)
        .unwrap_or_else(|| panic!("the runtime registers no {histogram}"));
    family.get_metric()[0]
        .get_histogram()
        .get_bucket()
        .iter()
        .map(|b| b.upper_bound())
        .collect()
}

#[test]
fn promtool_checks_the_rule_files() {
    let files = files(&monitoring_dir().join("rules"), "yaml");
    run(Command::new(promtool())
        .args(["check", "rules"])
        .args(&files));
}

#[test]
fn promtool_unit_tests_pass() {
    let dir = monitoring_dir().join("tests");
    let tests: Vec<PathBuf> = files(&dir, "yaml");
    let out = run(Command::new(promtool())
        .current_dir(&dir)
        .args(["test", "rules"])
        .args(&tests));
    assert!(
        out.contains("SUCCESS"),
        "promtool test rules printed:\n{out}"
    );
}

/// For each alert rule (each group's, for the per-group ones), the unit tests hold a case where it fires and one
/// where it is expected silent.
#[test]
fn every_alert_is_tested_firing_and_silent() {
    // (alert, group label or "") → (cases firing, cases silent)
    let mut seen: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let group_label = Regex::new(r#"group="([^"]+)""#).unwrap();
    for file in files(&monitoring_dir().join("tests"), "yaml") {
        let doc = yaml(&file);
        for test in doc["tests"].as_sequence().expect("tests") {
            let groups: BTreeSet<String> = test["input_series"]
                .as_sequence()
                .expect("input_series")
                .iter()
                .filter_map(|s| {
                    let series = str_of(&s["series"], "series");
                    group_label.captures(series).map(|c| c[1].to_string())
                })
                .collect();
            for case in test["alert_rule_test"]
                .as_sequence()
                .expect("alert_rule_test")
            {
                let alert = str_of(&case["alertname"], "alertname").to_string();
                let exp = case["exp_alerts"].as_sequence().expect("exp_alerts");
                let keys: Vec<String> = if groups.is_empty() {
                    vec![String::new()]
                } else {
                    groups.iter().cloned().collect()
                };
                for group in keys {
                    let entry = seen.entry((alert.clone(), group)).or_default();
                    if exp.is_empty() {
                        entry.1 += 1;
                    } else {
                        entry.0 += 1;
                    }
                }
            }
        }
    }
    let mut missing = Vec::new();
    for alert in alerts() {
        let name = str_of(&alert["alert"], "alert").to_string();
        let group = alert["labels"]["group"].as_str().unwrap_or("").to_string();
        let counts = if group.is_empty() {
            // Alerts across groups: any test case of the alert counts.
            seen.iter()
                .filter(|((a, _), _)| *a == name)
                .fold((0, 0), |acc, (_, c)| (acc.0 + c.0, acc.1 + c.1))
        } else {
            seen.get(&(name.clone(), group.clone()))
                .copied()
                .unwrap_or_default()
        };
        if counts.0 == 0 || counts.1 == 0 {
            missing.push(format!(
                "{name} {group}: {} firing, {} silent case(s)",
                counts.0, counts.1
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "alerts without a firing and a silent promtool case:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_alert_has_for_severity_summary_description_and_a_runbook() {
    let root = workspace_root();
    let camel = Regex::new(r"^[A-Z][A-Za-z0-9]+$").unwrap();
    let duration = Regex::new(r"^[0-9]+[smh]$").unwrap();
    let mut count = 0;
    for (file, alert) in rules().iter().filter(|(_, r)| r.get("alert").is_some()) {
        count += 1;
        let name = str_of(&alert["alert"], "alert");
        let at = format!("{file}: {name}");
        assert!(camel.is_match(name), "{at}: alert names are CamelCase");
        parse(str_of(&alert["expr"], &at), &at);
        let r#for = str_of(&alert["for"], &format!("{at}: for"));
        assert!(duration.is_match(r#for), "{at}: for: {for}");
        let severity = str_of(
            &alert["labels"]["severity"],
            &format!("{at}: labels.severity"),
        );
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{at}: severity {severity}"
        );
        for field in ["summary", "description"] {
            let text = str_of(
                &alert["annotations"][field],
                &format!("{at}: annotations.{field}"),
            );
            assert!(text.trim().len() > 10, "{at}: annotations.{field} is empty");
        }
        let runbook = str_of(
            &alert["annotations"]["runbook_url"],
            &format!("{at}: runbook_url"),
        );
        let (path, anchor) = runbook
            .split_once('#')
            .unwrap_or_else(|| panic!("{at}: runbook_url {runbook} names no section (#anchor)"));
        assert!(
            path.starts_with("docs/runbooks/"),
            "{at}: runbook_url {runbook}"
        );
        let text = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("{at}: runbook {path}: {e}"));
        let heading = text.lines().any(|l| {
            l.starts_with('#')
                && l.trim_start_matches('#')
                    .trim()
                    .to_lowercase()
                    .replace(' ', "-")
                    == anchor
        });
        assert!(heading, "{at}: {path} has no section #{anchor}");
        assert_eq!(
            anchor,
            name.to_lowercase(),
            "{at}: the runbook section is named after the alert"
        );
    }
    assert!(count >= 25, "only {count} alerts found");
}

#[test]
fn key_metric_thresholds_are_the_specs() {
    let groups_with_own_rows: BTreeSet<String> =
        GROUP_THRESHOLDS.iter().map(|g| g.0.to_string()).collect();
    let own_rows_regex = |excluded: &BTreeSet<String>, name: &str| {
        assert_eq!(excluded.len(), 1, "{name}: one group exclusion");
        let alternatives: BTreeSet<String> = excluded
            .iter()
            .next()
            .unwrap()
            .split('|')
            .map(str::to_string)
            .collect();
        assert_eq!(
            alternatives, groups_with_own_rows,
            "{name}: excludes exactly the groups with their own row (the spec's 'Consumer Group Monitoring' table, decision 0034)"
        );
    };

    // Throughput < 100/s per topic, guarded by "≥ 100/s seen within the day".
    let [throughput] = alerts_named("TopicThroughputLow")[..] else {
        panic!("one TopicThroughputLow")
    };
    let (_, op, value) = threshold(throughput);
    assert_eq!((op.as_str(), value), ("<", KEY_THROUGHPUT_PER_SECOND));
    let expr = str_of(&throughput["expr"], "TopicThroughputLow");
    assert!(
        expr.contains("[1d]) >= 100"),
        "TopicThroughputLow: the idle guard is 'carried ≥ 100/s within the last day' (decision 0032): {expr}"
    );

    // End-to-end latency p95 > 5 s, on a bucket bound of the runtime's histogram.
    let [e2e] = alerts_named("EndToEndLatencyHigh")[..] else {
        panic!("one EndToEndLatencyHigh")
    };
    let (lhs, op, value) = threshold(e2e);
    assert_eq!((op.as_str(), value), (">", P95_TAIL));
    let (les, _) = matched(&lhs, "le");
    assert_eq!(
        les,
        BTreeSet::from([le(KEY_END_TO_END_P95_SECONDS), "+Inf".to_string()])
    );
    assert!(
        runtime_buckets("checkout_consumer_end_to_end_latency_seconds")
            .contains(&KEY_END_TO_END_P95_SECONDS),
        "5 s must be a bucket bound of checkout_consumer_end_to_end_latency_seconds"
    );

    // Lag > 1000 and error rate > 1 % for the groups without their own row.
    let [lag] = alerts_named("ConsumerLagHigh")[..] else {
        panic!("one ConsumerLagHigh")
    };
    let (lhs, op, value) = threshold(lag);
    assert_eq!((op.as_str(), value), (">", KEY_LAG_MESSAGES));
    assert!(metric_names(&lhs).contains("kafka_consumergroup_group_lag"));
    own_rows_regex(&matched(&lhs, "group").1, "ConsumerLagHigh");

    let [errors] = alerts_named("ConsumerErrorRateHigh")[..] else {
        panic!("one ConsumerErrorRateHigh")
    };
    let (lhs, op, value) = threshold(errors);
    assert_eq!((op.as_str(), value), (">", KEY_ERROR_RATE));
    own_rows_regex(&matched(&lhs, "group").1, "ConsumerErrorRateHigh");

    // DLQ > 10 records per hour.
    let [dlq] = alerts_named("DeadLetterQueueVolumeHigh")[..] else {
        panic!("one DeadLetterQueueVolumeHigh")
    };
    let (lhs, op, value) = threshold(dlq);
    assert_eq!((op.as_str(), value), (">", KEY_DLQ_PER_HOUR));
    let mut ranges = Vec::new();
    walk(&lhs, &mut |e| {
        if let Expr::MatrixSelector(ms) = e {
            ranges.push(ms.range);
        }
    });
    assert_eq!(
        ranges,
        [std::time::Duration::from_secs(3600)],
        "DLQ volume per hour"
    );

    // The groups that take the key metrics' defaults exist in the runtime too.
    for group in [policy::AUDIT_LOGGING, policy::NOTIFICATION_DELIVERY] {
        assert!(policy::GroupPolicy::spec(group).is_some());
        assert!(!groups_with_own_rows.contains(group));
    }
}

#[test]
fn consumer_group_thresholds_are_the_specs_for_the_runtimes_groups() {
    let processing_buckets = runtime_buckets("checkout_consumer_processing_seconds");
    for (alert, column) in [
        ("ConsumerGroupLagHigh", 1),
        ("ConsumerGroupProcessingTimeHigh", 2),
        ("ConsumerGroupErrorRateHigh", 3),
    ] {
        let rules = alerts_named(alert);
        let in_rules: BTreeSet<&str> = rules
            .iter()
            .map(|r| str_of(&r["labels"]["group"], &format!("{alert}: labels.group")))
            .collect();
        let in_spec: BTreeSet<&str> = GROUP_THRESHOLDS.iter().map(|g| g.0).collect();
        assert_eq!(
            in_rules, in_spec,
            "{alert}: one rule per group with its own row"
        );
        for &(group, lag, seconds, error_rate) in GROUP_THRESHOLDS {
            assert!(
                policy::GroupPolicy::spec(group).is_some(),
                "{group} is not a group of runtime::policy"
            );
            let rule = rules
                .iter()
                .find(|r| r["labels"]["group"] == group)
                .unwrap();
            let (lhs, op, value) = threshold(rule);
            let (groups, _) = matched(&lhs, "group");
            assert_eq!(
                groups,
                BTreeSet::from([group.to_string()]),
                "{alert} {group}: selects its group"
            );
            assert_eq!(op, ">", "{alert} {group}");
            match column {
                1 => assert_eq!(value, lag, "{alert} {group}: lag"),
                2 => {
                    assert_eq!(value, P95_TAIL, "{alert} {group}: p95");
                    let (les, _) = matched(&lhs, "le");
                    assert_eq!(
                        les,
                        BTreeSet::from([le(seconds), "+Inf".to_string()]),
                        "{alert} {group}: processing time"
                    );
                    assert!(
                        processing_buckets.contains(&seconds),
                        "{group}: {seconds} s is not a bucket bound of checkout_consumer_processing_seconds ({processing_buckets:?})"
                    );
                }
                _ => assert_eq!(value, error_rate, "{alert} {group}: error rate"),
            }
        }
    }
}

/// The metric names some component exports: registrations in the workspace's Rust sources (`Opts::new("…")`,
/// `IntGauge::new("…")`, …, and registration helpers taking the name first — `counter("…")`, `int("…")`, with the
/// consumer runtime's `PREFIX`), the JMX exporter's rules, Prometheus' own per-target series and the recording
/// rules.
fn exported_metrics() -> &'static BTreeSet<String> {
    static EXPORTED: OnceLock<BTreeSet<String>> = OnceLock::new();
    EXPORTED.get_or_init(|| {
        let root = workspace_root();
        let mut names = BTreeSet::new();
        let add = |names: &mut BTreeSet<String>, name: String, histogram: bool| {
            if histogram {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            names.insert(name);
        };
        let direct = Regex::new(
            r#"\b(HistogramOpts|Opts|IntGauge|Gauge|IntCounter|Counter)::new\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)""#,
        )
        .unwrap();
        let prefix = Regex::new(r#"const PREFIX: &str = "([a-z_:]+)";"#).unwrap();
        let helper = Regex::new(r#"\b(counter|gauge|histogram|int|float)\(\s*"([a-z_]+)""#).unwrap();
        let mut sources = Vec::new();
        for top in ["crates", "services"] {
            for member in std::fs::read_dir(root.join(top)).expect("workspace members") {
                collect_rs(&member.expect("entry").path().join("src"), &mut sources);
            }
        }
        for file in &sources {
            let text = std::fs::read_to_string(file).expect("source file");
            for c in direct.captures_iter(&text) {
                add(&mut names, c[2].to_string(), &c[1] == "HistogramOpts");
            }
            // Registration helpers (closures or functions named counter, gauge, histogram, int, float taking the
            // name first), with the file's PREFIX when its helpers prepend one.
            let p = match prefix.captures(&text) {
                Some(p) if text.contains("format!(\"{PREFIX}{name}\")") => Some(p[1].to_string()),
                Some(_) => None,
                None if text.contains("prometheus::") => Some(String::new()),
                None => None,
            };
            if let Some(p) = p {
                for c in helper.captures_iter(&text) {
                    add(&mut names, format!("{p}{}", &c[2]), &c[1] == "histogram");
                }
            }
        }
        // The extraction must keep finding the registrations it was written for.
        for known in [
            "checkout_consumer_records_processed_total",
            "checkout_consumer_end_to_end_latency_seconds_bucket",
            "outbox_backlog_rows",
            "outbox_commit_to_ack_seconds_bucket",
            "kafka_consumergroup_group_lag_seconds",
            "kafka_consumergroup_status",
            "bus_monitor_poll_errors_total",
            "canary_roundtrip_seconds_bucket",
            "canary_probes_lost_total",
        ] {
            assert!(
                names.contains(known),
                "metric extraction from the Rust sources lost {known}"
            );
        }
        // The JMX exporter's rules name every broker metric explicitly.
        let jmx = yaml(&monitoring_dir().join("jmx-exporter.yaml"));
        for rule in jmx["rules"].as_sequence().expect("jmx rules") {
            let name = str_of(&rule["name"], "jmx-exporter rule name");
            assert!(!name.contains('$'), "jmx-exporter.yaml: name {name} must be literal");
            names.insert(name.to_string());
        }
        names.extend(PROMETHEUS_SYNTHETIC.iter().map(|s| s.to_string()));
        for (_, rule) in rules() {
            if let Some(record) = rule["record"].as_str() {
                names.insert(record.to_string());
            }
        }
        names
    })
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn rules_name_only_exported_metrics() {
    let exported = exported_metrics();
    for (file, rule) in rules() {
        let what = format!(
            "{file}: {}",
            rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?")
        );
        let expr = parse(str_of(&rule["expr"], &what), &what);
        for name in metric_names(&expr) {
            assert!(
                exported.contains(&name),
                "{what}: {name} is exported by no component"
            );
        }
    }
}

/// A Grafana query with its template variables replaced, so PromQL parsers read it.
fn substituted(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${group}", ".*")
        .replace("$group", ".*")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
}

/// (dashboard file, panel title, query) for every panel target.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let mut queries = Vec::new();
    for file in files(&monitoring_dir().join("dashboards"), "json") {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for panel in doc["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                queries.push((
                    name.clone(),
                    panel["title"].as_str().unwrap_or("?").to_string(),
                    target["expr"].as_str().expect("target.expr").to_string(),
                ));
            }
        }
    }
    queries
}

#[test]
fn dashboards_follow_the_conventions() {
    let expected = [
        ("kafka-cluster-health.json", "Kafka Cluster Health"),
        ("event-processing-health.json", "Event Processing Health"),
    ];
    let dir = monitoring_dir().join("dashboards");
    let mut uids = BTreeSet::new();
    for (file, title) in expected {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(doc["title"], title, "{file}");
        let uid = doc["uid"].as_str().expect("uid");
        assert_eq!(
            uid,
            format!("checkout-{}", file.trim_end_matches(".json")),
            "{file}: a stable uid from the file name"
        );
        assert!(uids.insert(uid.to_string()));
        assert!(
            doc["schemaVersion"].as_i64().expect("schemaVersion") >= 36,
            "{file}"
        );
        assert!(doc["id"].is_null(), "{file}: no instance-specific id");
        let vars = doc["templating"]["list"].as_array().expect("templating");
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{file}: a `datasource` variable of type datasource (prometheus)"
        );
        let mut ids = BTreeSet::new();
        let mut with_queries = 0;
        for panel in doc["panels"].as_array().expect("panels") {
            let ptitle = panel["title"].as_str().expect("panel title");
            assert!(
                ids.insert(panel["id"].as_i64().expect("panel id")),
                "{file}: duplicate panel id"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {ptitle}: the panel's datasource is the variable"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {ptitle}: no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{file}: {ptitle}");
            }
            with_queries += 1;
        }
        assert!(with_queries >= 10, "{file}: {with_queries} panels");
    }
    assert_eq!(
        files(&dir, "json").len(),
        expected.len(),
        "unexpected dashboards"
    );
}

#[test]
fn dashboard_queries_parse_and_name_only_exported_metrics() {
    let exported = exported_metrics();
    for (file, panel, expr) in dashboard_queries() {
        let parsed = parse(&substituted(&expr), &format!("{file}: {panel}"));
        let names = metric_names(&parsed);
        assert!(!names.is_empty(), "{file}: {panel}: names no metric");
        for name in names {
            assert!(
                exported.contains(&name),
                "{file}: {panel}: {name} is exported by no component"
            );
        }
    }
}

/// Prometheus' own parser (promtool) reads every dashboard query too: each becomes a recording rule of a scratch file.
#[test]
fn dashboard_queries_parse_with_promtool() {
    let queries = dashboard_queries();
    let rules: Vec<serde_yaml::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, _, expr))| {
            let mut rule = serde_yaml::Mapping::new();
            rule.insert("record".into(), format!("dashboard:query:{i}").into());
            rule.insert("expr".into(), substituted(expr).into());
            serde_yaml::Value::Mapping(rule)
        })
        .collect();
    let doc = serde_yaml::to_string(&serde_json::json!({
        "groups": [{"name": "dashboards", "rules": rules}]
    }))
    .unwrap();
    let path = std::env::temp_dir().join(format!("dashboard-queries-{}.yaml", std::process::id()));
    std::fs::write(&path, doc).unwrap();
    let result = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let output = result.expect("run promtool");
    assert!(
        output.status.success(),
        "promtool rejects a dashboard query:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
