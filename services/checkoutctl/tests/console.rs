//! `checkoutctl console` and `checkoutctl status` against a live platform, seen through a real Prometheus and a
//! real headless Chromium.
//!
//! The platform: a private bus (fresh database and topics) with the outbox publisher and the settlement,
//! projections and audit services in this process (`tests/system`), bus-monitor watching their groups, and
//! generated checkout flows appended through the outbox at a steady pace — real traffic on the real broker. A
//! real Prometheus (Debian's `prometheus`, as `make run` starts it) scrapes every one of their `/metrics` each
//! second. The console runs as the real binary; Chromium (Debian's `chromium`, installed by deploy/local/tools)
//! loads its page headless and dumps the DOM, where each chart carries `data-series-points` (points drawn) and
//! each invoice row `data-invoice` / `data-status`.
//!
//! Asserted: while the traffic flows, every chart (throughput, lag in messages and seconds, end-to-end p95, dead
//! letters, settlements) draws a non-empty series and the invoice table has rows, each an invoice of the
//! generator's plan; a screenshot is saved as `<target>/console-during-traffic.png`. Once the traffic is done and
//! the services caught up: `checkoutctl status --json` shows the settlements per currency (count, gross, fees)
//! and the invoices per status that the generator's truth says, verify ✓ and exit 0; the page lists invoices with
//! the truth's status and verify ✓ — saved as `<target>/console.png`. A missing `chromium` or `prometheus` fails
//! the test, naming the package.
//!
//! The generator's events carry historical timestamps (January 2025): the end-to-end latency is hours (the chart
//! shows the histogram's last bucket) and verify, which compares record times with its grace, may name work in
//! flight as a violation while the traffic flows — hence verify ✓ is asserted once the services caught up.

mod system;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bus_monitor::{MonitorSettings, settings::CanarySettings};
use events::money::Decimal;
use flows::{Flows, Scenario};
use lag::{GroupSpec, OffsetSource};
use service_kit::Settings;
use service_kit::shutdown::CancellationToken;

/// The charts the page must draw (ids of `live::chart_queries`).
const CHARTS: [&str; 6] = [
    "throughput",
    "lag",
    "lag_seconds",
    "latency",
    "dlq",
    "settlements",
];

/// Seconds over which the generated events are appended.
const TRAFFIC_SECONDS: usize = 50;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(binary: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(binary))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{binary}` is not installed: this test needs Debian's `{package}` package \
                 (deploy/local/tools installs it: `make tools`, or apt-get install {package})"
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The target directory (`CARGO_TARGET_TMPDIR` is `<target>/tmp`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .to_path_buf()
}

/// Starts Prometheus scraping `services` and `monitor` every second; waits until it is ready.
async fn start_prometheus(services: &[String], monitor: &str) -> (Proc, String, tempdir::Dir) {
    let bin = find("prometheus", "prometheus");
    let dir = tempdir::Dir::new("console-prometheus");
    let targets = |t: &[String]| {
        t.iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
         scrape_configs:\n  \
           - job_name: checkout-services\n    static_configs: [{{ targets: [{}] }}]\n  \
           - job_name: bus-monitor\n    static_configs: [{{ targets: [{}] }}]\n",
        targets(services),
        targets(&[monitor.to_string()])
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("prometheus.log");
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let proc = Proc(child);
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/-/ready")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Prometheus did not become ready within 60s; its log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (proc, url, dir)
}

/// A temporary directory removed when dropped.
mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> Dir {
            let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(testkit::unique_name(prefix));
            std::fs::create_dir_all(&path).expect("create a temporary directory");
            Dir(path)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The arguments pointing `status` / `console` at this platform.
fn live_args(system: &system::System, prometheus: &str) -> Vec<String> {
    let mut args = vec![
        "--prometheus".to_string(),
        prometheus.to_string(),
        "--database-url".into(),
        system.bus.db.url.clone(),
        "--bootstrap-servers".into(),
        testkit::infra().bootstrap_servers.clone(),
    ];
    args.extend(system.verify_args());
    args
}

/// Starts the console binary on a free port; returns it and the URL it printed.
fn start_console(args: &[String]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_checkoutctl"))
        .arg("console")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--refresh",
            "2s",
            "--verify-every",
            "5s",
        ])
        .args(["--range", "5m"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start checkoutctl console");
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdout
        .read_line(&mut first)
        .expect("the console's first line");
    // Keep reading: a closed pipe would end the console at its next line (a broken pipe is its exit 0).
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            eprintln!("console: {line}");
        }
    });
    let url = first
        .trim()
        .strip_prefix("console: ")
        .unwrap_or_else(|| panic!("the console prints its URL first, not {first:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (Proc(child), url)
}

/// What the page showed in Chromium's DOM dump.
#[derive(Debug, Default)]
struct Page {
    /// Chart id → points drawn.
    charts: BTreeMap<String, usize>,
    /// Invoice id → status.
    invoices: Vec<(String, String)>,
    verify: Option<String>,
}

/// Attribute `name` of the start tag `tag` (the text from `<` to `>`).
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].to_string())
}

/// The start tags of `html` that begin with `prefix`.
fn tags<'a>(html: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    html.match_indices(prefix).filter_map(|(i, _)| {
        let end = html[i..].find('>')? + i;
        Some(&html[i..=end])
    })
}

fn parse_page(html: &str) -> Page {
    let mut page = Page::default();
    for tag in tags(html, "<div class=\"chart\"") {
        if let (Some(id), Some(points)) =
            (attribute(tag, "id"), attribute(tag, "data-series-points"))
        {
            page.charts.insert(
                id.trim_start_matches("chart-").to_string(),
                points.parse().unwrap_or(0),
            );
        }
    }
    for tag in tags(html, "<tr data-invoice=") {
        page.invoices.push((
            attribute(tag, "data-invoice").unwrap_or_default(),
            attribute(tag, "data-status").unwrap_or_default(),
        ));
    }
    page.verify = tags(html, "<span id=\"verify\"")
        .next()
        .and_then(|t| attribute(t, "data-verify"));
    page
}

/// Loads `url` in headless Chromium and returns the DOM after the page's script ran (`None`, with Chromium's
/// diagnostics printed, when it produced no document — a renderer killed on this busy machine); with
/// `screenshot`, also saves the rendered page there.
async fn chromium(url: &str, screenshot: Option<&Path>) -> Option<String> {
    let bin = find("chromium", "chromium");
    let url = url.to_string();
    let screenshot = screenshot.map(Path::to_path_buf);
    tokio::task::spawn_blocking(move || {
        let profile = tempdir::Dir::new("console-chromium");
        let run = |extra: &[String]| {
            let output = Command::new(&bin)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--no-first-run",
                    "--window-size=1440,1500",
                    // The page's polls run in virtual time; --timeout bounds a page that never settles.
                    "--virtual-time-budget=6000",
                    "--timeout=30000",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .args(extra)
                .arg(&url)
                .output()
                .expect("run chromium");
            let stderr = String::from_utf8_lossy(&output.stderr)
                .lines()
                .filter(|l| !l.contains("dbus") && !l.contains("unexpected operator"))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                output.status.success(),
                "chromium failed ({}): {stderr}",
                output.status
            );
            (String::from_utf8(output.stdout).expect("utf-8 DOM"), stderr)
        };
        let (dom, stderr) = run(&["--dump-dom".to_string()]);
        if !dom.contains("</html>") {
            eprintln!(
                "chromium dumped no document ({} bytes); its stderr:\n{stderr}",
                dom.len()
            );
            return None;
        }
        if let Some(path) = screenshot {
            run(&[format!("--screenshot={}", path.display())]);
            assert!(
                path.is_file(),
                "chromium wrote no screenshot at {}",
                path.display()
            );
        }
        Some(dom)
    })
    .await
    .expect("the chromium task")
}

async fn start_monitor(system: &system::System) -> (bus_monitor::Running, CancellationToken) {
    let topic = system.bus.domain_topic.clone();
    let group = |name: &str, offsets| GroupSpec {
        group: name.to_string(),
        topics: vec![topic.clone()],
        offsets,
    };
    let service = MonitorSettings {
        poll_interval: Duration::from_secs(1),
        platform_groups: false,
        groups: vec![
            group(&system.projections_group, OffsetSource::Kafka),
            group(&system.audit_group, OffsetSource::Kafka),
            group(&system.settlement_group, OffsetSource::Database),
        ],
        canary: CanarySettings {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut config: bus_monitor::Config = Settings {
        kafka: flows::harness::kafka(),
        database: Default::default(),
        http: Default::default(),
        log: Default::default(),
        service,
    };
    config.database.url = Some(system.bus.db.url.clone().into());
    let shutdown = CancellationToken::new();
    let running = bus_monitor::start(config, shutdown.clone())
        .await
        .expect("bus-monitor starts");
    (running, shutdown)
}

/// Settlements per currency by the truth: (count, gross, fees).
fn truth_settlements(flows: &Flows) -> BTreeMap<String, (i64, Decimal, Decimal)> {
    let mut out: BTreeMap<String, (i64, Decimal, Decimal)> = BTreeMap::new();
    for s in flows.expected_settlements() {
        let e =
            out.entry(s.currency.code().to_string())
                .or_insert((0, Decimal::ZERO, Decimal::ZERO));
        e.0 += 1;
        e.1 += s.gross_amount.as_decimal();
        e.2 += s.platform_fee_amount.as_decimal();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_draws_the_live_platform_in_headless_chromium() {
    // Loud failures first: both tools are part of the project's test tools.
    find("chromium", "chromium");
    find("prometheus", "prometheus");

    let flows = flows::generate(&Scenario::new(0xc0_501e, 20, 300).settled_by_service());
    let invoice_ids: BTreeSet<String> = flows
        .truth
        .invoices
        .keys()
        .map(|id| format!("inv_{}", id.as_uuid()))
        .collect();
    let system = system::System::start().await;
    let (monitor, monitor_shutdown) = start_monitor(&system).await;
    let services: Vec<String> = [
        system.publisher.as_ref().map(|p| p.running.ops_addr),
        system.settlement.as_ref().map(|s| s.running.ops_addr),
        system.projections.as_ref().map(|s| s.running.ops_addr),
        system.audit.as_ref().map(|s| s.running.ops_addr),
    ]
    .into_iter()
    .map(|a| a.expect("every service runs").to_string())
    .collect();
    let (_prometheus, prometheus_url, _prometheus_dir) =
        start_prometheus(&services, &monitor.ops_addr.to_string()).await;
    let args = live_args(&system, &prometheus_url);
    let (_console, url) = start_console(&args);
    // The page while the traffic flows, and once the services caught up (verify ✓, the charts still showing the
    // traffic of the last minutes).
    let screenshot_during = target_dir().join("console-during-traffic.png");
    let screenshot = target_dir().join("console.png");
    let _ = std::fs::remove_file(&screenshot_during);
    let _ = std::fs::remove_file(&screenshot);

    // Real traffic for TRAFFIC_SECONDS while the page is loaded until every chart drew something.
    let rate = (flows.events.len() / TRAFFIC_SECONDS).max(1) as u32;
    let traffic = system.bus.append_paced(&flows.events, rate, 20, 2);
    let watch = async {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let dom = chromium(&url, None).await.unwrap_or_default();
            let page = parse_page(&dom);
            let drawn = CHARTS
                .iter()
                .all(|c| page.charts.get(*c).copied().unwrap_or(0) > 0);
            if drawn && !page.invoices.is_empty() {
                // The page as it is now, traffic flowing.
                chromium(&url, Some(&screenshot_during)).await;
                return (page, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(240) {
                let summary = reqwest::get(format!("{url}api/summary")).await;
                panic!(
                    "within 240s the page did not draw every chart with invoices listed: {page:?}\n\
                     GET /api/summary: {:?}\n{dom}",
                    summary.map(|r| r.status())
                );
            }
        }
    };
    let (_, (during, after)) = tokio::join!(traffic, watch);
    eprintln!(
        "console: every chart drawn after {:.0}s of traffic ({} events at {rate}/s): {:?}, {} invoice rows; \
         screenshot {}",
        after.as_secs_f64(),
        flows.events.len(),
        during.charts,
        during.invoices.len(),
        screenshot_during.display()
    );
    for (invoice, _) in &during.invoices {
        assert!(
            invoice_ids.contains(invoice),
            "{invoice} is not an invoice of the plan"
        );
    }

    // Caught up: the summary says what the truth says.
    system::wait_for_settlements(system.pool(), &[&flows], Duration::from_secs(300)).await;
    system.wait_quiescent(Duration::from_secs(300)).await;
    let output = Command::new(env!("CARGO_BIN_EXE_checkoutctl"))
        .args(["status", "--json", "--grace", "0"])
        .args(&args)
        .output()
        .expect("run checkoutctl status");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "status exits 0 on a consistent platform: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(status["verify"]["ok"], true, "{status}");
    assert_eq!(status["problems"], serde_json::json!([]), "{status}");
    let shown: BTreeMap<String, (i64, Decimal, Decimal)> = status["settlements"]
        .as_array()
        .expect("settlements")
        .iter()
        .map(|c| {
            let dec = |k: &str| Decimal::from_str(c[k].as_str().expect(k)).expect(k);
            (
                c["currency"].as_str().expect("currency").to_string(),
                (
                    c["settlements"].as_i64().expect("count"),
                    dec("gross"),
                    dec("fees"),
                ),
            )
        })
        .collect();
    assert_eq!(shown, truth_settlements(&flows), "{status}");
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    for invoice in flows.truth.invoices.values() {
        *by_status.entry(invoice.status.to_string()).or_default() += 1;
    }
    let shown_by_status: BTreeMap<String, i64> =
        serde_json::from_value(status["invoices_by_status"].clone()).expect("by status");
    assert_eq!(shown_by_status, by_status, "{status}");
    let topic_seen = status["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .any(|t| t["topic"] == system.bus.domain_topic.as_str());
    assert!(
        topic_seen,
        "the domain topic's rate is in the summary: {status}"
    );
    for group in [&system.projections_group, &system.settlement_group] {
        let seen = status["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .any(|g| g["group"] == group.as_str());
        assert!(seen, "{group}'s lag is in the summary: {status}");
    }

    // The page, once the console refreshed its snapshot: the truth's statuses, verify ✓.
    let truth_status: BTreeMap<String, &str> = flows
        .truth
        .invoices
        .iter()
        .map(|(id, t)| (format!("inv_{}", id.as_uuid()), t.status))
        .collect();
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let page = parse_page(&chromium(&url, None).await.unwrap_or_default());
        let statuses_match = !page.invoices.is_empty()
            && page
                .invoices
                .iter()
                .all(|(id, status)| truth_status.get(id).copied() == Some(status.as_str()));
        if statuses_match && page.verify.as_deref() == Some("ok") {
            chromium(&url, Some(&screenshot)).await;
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the page did not show the truth's statuses and verify ✓ within 60s: {page:?}"
        );
    }

    monitor_shutdown.cancel();
    monitor.wait().await.expect("bus-monitor stops cleanly");
    system.stop().await;
}

#[test]
fn the_dom_parser_reads_the_page_attributes() {
    let page = parse_page(
        r#"<span id="verify" data-verify="ok">verify ✓</span><div class="chart" id="chart-lag" data-series-points="12" data-series-count="2"><h3>Lag</h3></div><tr data-invoice="inv_1" data-status="paid"><td>x</td></tr>"#,
    );
    assert_eq!(page.charts.get("lag"), Some(&12));
    assert_eq!(
        page.invoices,
        vec![("inv_1".to_string(), "paid".to_string())]
    );
    assert_eq!(page.verify.as_deref(), Some("ok"));
}

/// `status --watch --for` without a terminal: a plain block per interval, then a last one deciding the exit code;
/// an unreachable Prometheus is named on every block and is exit 2 (never a pass), the database's part still
/// shows.
#[test]
fn status_watch_without_a_terminal_prints_plain_blocks_and_names_what_it_cannot_read() {
    let db = testkit::infra().database_url.clone();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let output = Command::new(env!("CARGO_BIN_EXE_checkoutctl"))
        .args([
            "status",
            "--watch",
            "--interval",
            "1s",
            "--for",
            "3s",
            "--no-verify",
        ])
        .args(["--prometheus", &dead, "--database-url", &db])
        .output()
        .expect("run checkoutctl status");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "no terminal control off a terminal: {stdout:?}"
    );
    let blocks: Vec<&str> = stdout
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .collect();
    assert!(
        blocks.len() >= 3,
        "a block per second for 3s, then the last: {stdout}"
    );
    for block in blocks {
        assert!(block.contains("verify off"), "{block}");
        assert!(
            block.contains("  invoices  "),
            "the database's part: {block}"
        );
        assert!(
            block.contains(&format!("  ! Prometheus at {dead}/ is unreachable")),
            "{block}"
        );
    }
}
