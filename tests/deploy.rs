//! The files of `deploy/` that are not code, checked by the tools that consume them: the alert
//! rules by `promtool` (syntax, and unit tests of what fires), the dashboard's queries by the
//! same PromQL parser, the Kubernetes manifests against the API's schemas
//! (`kubernetes-validate`) and against each other, and the example settings against the
//! worker's own defaults. Every series the dashboard and the alerts name is scraped from a real
//! worker's `/metrics`.
//!
//! `promtool` comes from Debian's `prometheus` package and `kubernetes-validate` from PyPI, in a
//! venv under `target/deploy-tools`; `scripts/test` installs both.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{App, RedisServer, Scrape, TestDb, default_key, setex, wait_until};
use serde_json::Value;

/// The metrics the worker serves, by the names the issue fixed; histograms are also queried
/// through their `_bucket`, `_sum` and `_count` series.
const METRICS: &[&str] = &[
    "order_expire_orders_cancelled_total",
    "order_expire_orders_skipped_total",
    "order_expire_stock_units_returned_total",
    "order_expire_expired_received_total",
    "order_expire_keys_ignored_total",
    "order_expire_lateness_seconds",
    "order_expire_event_to_commit_seconds",
    "order_expire_batch_size",
    "order_expire_queue_depth",
    "order_expire_queue_dropped_total",
    "order_expire_oldest_pending_seconds",
    "order_expire_subscription_up",
    "order_expire_reconnects_total",
    "order_expire_write_retries_total",
    "order_expire_last_sweep_timestamp_seconds",
    "order_expire_sweep_recovered_total",
    "order_expire_build_info",
    "order_expire_keyspace_events_total",
    "order_expire_duplicates_skipped_total",
    "order_expire_orders_parked_total",
    "order_expire_key_jobs_queued_total",
    "order_expire_replicas",
    "order_expire_set_aside",
    "order_expire_taken_over_total",
    "order_expire_orders_busy_total",
    "order_expire_outbox_backlog",
    "order_expire_outbox_parked",
];

const HISTOGRAMS: &[&str] = &[
    "order_expire_lateness_seconds",
    "order_expire_event_to_commit_seconds",
    "order_expire_batch_size",
];

/// The oldest and newest Kubernetes versions the manifests are checked against (1.27 brought
/// the PodDisruptionBudget's `unhealthyPodEvictionPolicy`).
const KUBERNETES_VERSIONS: &[&str] = &["1.27.0", "1.37.0"];

/// The port of the metrics and probe listener in the container and Kubernetes files.
const METRICS_PORT: u64 = 9464;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A tool `scripts/test` installs into `target/deploy-tools`.
fn deploy_tool(relative: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder");
    let path = target.join("deploy-tools").join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which installs it (scripts/lib/deploy-tools.sh)",
        path.display()
    );
    path
}

/// Runs a tool to completion (bounded) and returns its output, failing the test with both
/// streams if it exits non-zero.
fn run_ok(mut command: Command) -> Output {
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    common::run_ok(command, Duration::from_secs(120))
}

fn promtool(args: &[&str]) -> Output {
    let mut command = Command::new("promtool");
    command.args(args);
    run_ok(command)
}

/// The metric names a PromQL expression reads (`order_expire_*` only).
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in expr.match_indices("order_expire_") {
        let name: String = expr[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        found.insert(name);
    }
    found
}

/// The metric a series name belongs to: `x_bucket` of histogram `x` is `x`.
fn metric_of(series: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix)
            && HISTOGRAMS.contains(&base)
        {
            return base;
        }
    }
    series
}

/// Asserts that every series `exprs` read belongs to one of [`METRICS`] and returns the
/// metrics read.
fn assert_known_metrics<'a>(what: &str, exprs: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for expr in exprs {
        for series in metrics_in(expr) {
            let metric = metric_of(&series);
            assert!(
                METRICS.contains(&metric),
                "{what} queries {series}, which is not a metric order-expire serves: {expr}"
            );
            used.insert(metric.to_string());
        }
    }
    used
}

/// The documents of a YAML file as JSON, read by PyYAML from the validator's venv.
fn yaml_documents(path: &str) -> Vec<Value> {
    let python = deploy_tool("venv/bin/python");
    let mut command = Command::new(python);
    command.args([
        "-c",
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
    ]);
    command.arg(repo(path));
    let output = run_ok(command);
    let documents: Value = serde_json::from_slice(&output.stdout).expect("JSON from PyYAML");
    documents
        .as_array()
        .expect("a list of documents")
        .iter()
        .filter(|d| !d.is_null())
        .cloned()
        .collect()
}

#[test]
fn alert_rules_are_valid_and_fire_on_what_they_are_for() {
    let check = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    let said = String::from_utf8_lossy(&check.stdout);
    let alerts = read("deploy/prometheus/alerts.yml")
        .lines()
        .filter(|line| line.trim_start().starts_with("- alert:"))
        .count();
    assert!(
        said.contains(&format!("SUCCESS: {alerts} rules found")),
        "{said}"
    );
    // Each alert's unit tests: it fires on its series, with its labels and texts, and stays
    // quiet on the healthy worker beside it.
    promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
}

#[test]
fn alert_rules_cover_the_issue_and_read_only_served_metrics() {
    let rules = yaml_documents("deploy/prometheus/alerts.yml");
    let rules: Vec<&Value> = rules[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    let used = assert_known_metrics(
        "deploy/prometheus/alerts.yml",
        rules.iter().map(|r| r["expr"].as_str().expect("expr")),
    );
    // What the issue asks alerts for: lateness, readiness, drops, sweeps, reconnects.
    for metric in [
        "order_expire_lateness_seconds",
        "order_expire_subscription_up",
        "order_expire_queue_dropped_total",
        "order_expire_last_sweep_timestamp_seconds",
        "order_expire_reconnects_total",
    ] {
        assert!(used.contains(metric), "no alert on {metric}");
    }
    for rule in rules {
        let name = rule["alert"].as_str().expect("an alerting rule");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{name} has no severity"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation].is_string(),
                "{name} has no {annotation}"
            );
        }
    }
}

/// Every query of the dashboard: its panels' targets and its template variables'.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(
                target["expr"]
                    .as_str()
                    .expect("a target's expr")
                    .to_string(),
            );
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_string());
        }
    }
    queries
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/order-expire.json")).expect("dashboard JSON")
}

#[test]
fn dashboard_shows_every_served_metric_and_nothing_else() {
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    let used = assert_known_metrics(
        "deploy/grafana/order-expire.json",
        queries.iter().map(String::as_str),
    );
    let missing: Vec<_> = METRICS.iter().filter(|m| !used.contains(**m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard shows nothing of {missing:?}"
    );
}

#[test]
fn dashboard_is_importable() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "order-expire");
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let id = panel["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if x + w <= 24 && w > 0),
            "panel {id} does not fit Grafana's 24 columns: {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} queries nothing");
        let refs: BTreeSet<_> = targets.iter().map(|t| t["refId"].to_string()).collect();
        assert_eq!(refs.len(), targets.len(), "panel {id} repeats a refId");
        // Every query goes to the data source the importer picks.
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "panel {id}");
        }
    }
}

/// Every series name (`order_expire_*`) a file mentions, in a query or in a text.
fn series_named_in(path: &str) -> BTreeSet<String> {
    metrics_in(&read(path))
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_alerts_name_only_series_a_worker_serves() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 10).await;
    let unpaid = db.place_order(product, 1).await;
    let paid = db.place_order(product, 1).await;
    db.set_status(paid, 1).await;
    // With ORDER_EXPIRE_TTL the sweep runs too.
    let app = App::new(&redis, &db, "ORDER_EXPIRE_TTL=3600");
    let worker = app.start_worker(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = worker.metrics_addr();
    let mut conn = redis.conn(1);
    for id in [unpaid, paid] {
        setex(&mut conn, &default_key(id), 1, &id.to_string());
    }
    setex(&mut conn, "laravel_database_laravel_cache:CART:1", 1, "1");
    worker.wait_for_event("order_skipped", 1, Duration::from_secs(60));
    wait_until(
        Duration::from_secs(60),
        "the unpaid order cancelled",
        || async { db.status(unpaid).await == 2 },
    )
    .await;

    let scrape = Scrape::take(&addr);
    let mut named = series_named_in("deploy/grafana/order-expire.json");
    named.extend(series_named_in("deploy/prometheus/alerts.yml"));
    let missing: Vec<_> = named
        .iter()
        .filter(|name| scrape.series(name).is_empty())
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts name {missing:?}, which the worker does not serve:\n{}",
        scrape.text
    );
    // And the other way round: every metric the worker serves is one the dashboard must show.
    let unlisted: Vec<String> = served_metrics(&scrape.text)
        .into_iter()
        .filter(|metric| !METRICS.contains(&metric.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "the worker serves {unlisted:?}, which METRICS (and so the dashboard) leaves out"
    );
}

/// The metrics a scrape declares (`# TYPE` lines), named as queries read them: a counter with
/// `_total`, an info metric with `_info` (the text format 0.0.4 declares them so already).
fn served_metrics(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            let (name, kind) = (words.next()?, words.next()?);
            Some(match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                "info" if !name.ends_with("_info") => format!("{name}_info"),
                _ => name.to_string(),
            })
        })
        .collect()
}

/// A dashboard query with Grafana's variables replaced by what Grafana sends Prometheus.
fn as_promql(query: &str) -> String {
    let query = query
        .replace("$__rate_interval", "1m")
        .replace("$__range", "6h")
        .replace("$job", ".*")
        .replace("$instance", ".*");
    // label_values() is Grafana's, not PromQL: its first argument is the selector.
    match query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.rsplit_once(','))
    {
        Some((selector, _label)) => selector.to_string(),
        None => query,
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses expressions only as rules: one recording rule per query.
    let queries = dashboard_queries(&dashboard());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        let expr = serde_json::to_string(&as_promql(query)).expect("JSON string");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::TempDir::new().expect("temp dir");
    let file = dir.path().join("dashboard-queries.yml");
    fs::write(&file, rules).expect("write rules");
    let check = promtool(&["check", "rules", file.to_str().expect("UTF-8 path")]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{said}"
    );
}

const MANIFESTS: &[&str] = &[
    "deploy/k8s/deployment.yaml",
    "deploy/k8s/poddisruptionbudget.yaml",
    "deploy/k8s/service.yaml",
    "deploy/k8s/servicemonitor.yaml",
];

#[test]
fn kubernetes_manifests_match_the_api_schemas() {
    let validate = deploy_tool("venv/bin/kubernetes-validate");
    for version in KUBERNETES_VERSIONS {
        let mut command = Command::new(&validate);
        // --strict: a misspelt or misplaced field is an error, not ignored.
        command.args(["--strict", "--kubernetes-version", version]);
        command.args(MANIFESTS);
        let output = run_ok(command);
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        for manifest in &MANIFESTS[..3] {
            assert!(
                said.contains(&format!("INFO {manifest} passed")),
                "{manifest} not validated against {version}:\n{said}"
            );
        }
        // The ServiceMonitor is the Prometheus Operator's resource, whose schema the validator
        // does not have: only its warning may appear; its fields are checked below.
        let warnings: Vec<_> = said.lines().filter(|l| !l.starts_with("INFO ")).collect();
        assert!(
            warnings.len() == 1 && warnings[0].contains("kind ServiceMonitor"),
            "{said}"
        );
    }
}

/// Inside a container the listener must take connections on the pod's address (the kubelet's
/// probes, Prometheus), so its host is the unspecified address, on [`METRICS_PORT`].
fn assert_listens_on_every_interface(addr: &str) {
    let parsed: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("metrics address {addr:?}: {e}"));
    assert!(
        parsed.ip().is_unspecified(),
        "{addr} listens on every interface"
    );
    assert_eq!(u64::from(parsed.port()), METRICS_PORT, "{addr}");
}

/// The one document of a manifest file.
fn manifest(path: &str) -> Value {
    let mut documents = yaml_documents(path);
    assert_eq!(documents.len(), 1, "{path} holds one resource");
    documents.remove(0)
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_the_image() {
    let deployment = manifest("deploy/k8s/deployment.yaml");
    let pdb = manifest("deploy/k8s/poddisruptionbudget.yaml");
    let service = manifest("deploy/k8s/service.yaml");
    let monitor = manifest("deploy/k8s/servicemonitor.yaml");

    let spec = &deployment["spec"];
    let pod = &spec["template"];
    let labels = &pod["metadata"]["labels"];
    let selects = |selector: &Value| {
        selector
            .as_object()
            .expect("matchLabels")
            .iter()
            .all(|(k, v)| labels[k] == *v)
    };
    assert_eq!(
        spec["replicas"], 2,
        "two replicas: exactly once makes it safe"
    );
    assert!(selects(&spec["selector"]["matchLabels"]));
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);

    let containers = pod["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    // The listener's address, the port the probes and scrapers use, and the annotations agree.
    let env = container["env"].as_array().expect("env");
    let addr = env
        .iter()
        .find(|e| e["name"] == "ORDER_EXPIRE_METRICS_ADDR")
        .and_then(|e| e["value"].as_str())
        .expect("ORDER_EXPIRE_METRICS_ADDR");
    assert_listens_on_every_interface(addr);
    let port = &container["ports"][0];
    assert_eq!(port["containerPort"], METRICS_PORT);
    let port_name = port["name"].as_str().expect("a named port");
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], port_name, "{probe}");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], METRICS_PORT.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // Non-root, read-only, nothing granted: the image's user and its read-only .env.
    let pod_security = &pod["spec"]["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert_eq!(pod_security["runAsUser"], 65532);
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/app", "the image reads /app/.env");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert!(volume["secret"]["secretName"].is_string());
    assert_eq!(volume["secret"]["items"][0]["path"], ".env");
    // Group-readable only, by the pod's fsGroup.
    assert_eq!(volume["secret"]["defaultMode"], 0o440);
    assert_eq!(pod_security["fsGroup"], 65532);

    // Requests sized from the benchmark's peak RSS (23.6 MB at 200,000 orders at once).
    let resources = &container["resources"];
    assert_eq!(resources["requests"]["memory"], "64Mi");
    assert!(resources["limits"]["memory"].is_string());
    // The stop deadline (--stop-timeout, 8 s) fits in the grace period.
    assert!(pod["spec"]["terminationGracePeriodSeconds"].as_u64() > Some(8));

    // The budget covers these pods and leaves one running through a drain.
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"]));
    assert!(pdb["spec"]["minAvailable"].as_u64() < spec["replicas"].as_u64());

    // The Service reaches the pods' named port; the ServiceMonitor selects the Service and
    // scrapes that port.
    assert!(selects(&service["spec"]["selector"]));
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["targetPort"], port_name);
    let service_labels = &service["metadata"]["labels"];
    let monitor_selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(
        monitor_selector
            .iter()
            .all(|(k, v)| service_labels[k] == *v)
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service_port["name"]);
    assert_eq!(endpoint["path"], "/metrics");
}

#[test]
fn containerfile_matches_the_kubernetes_files() {
    let containerfile = read("deploy/container/Containerfile");
    let instruction = |name: &str| {
        containerfile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in the Containerfile"))
            .to_string()
    };
    assert_eq!(instruction("USER"), "65532:65532");
    assert_eq!(instruction("EXPOSE"), METRICS_PORT.to_string());
    let env = instruction("ENV");
    let addr = env
        .strip_prefix("ORDER_EXPIRE_METRICS_ADDR=")
        .unwrap_or_else(|| panic!("ENV sets the metrics address: {env}"));
    assert_listens_on_every_interface(addr);
    assert_eq!(
        instruction("ENTRYPOINT"),
        r#"["/usr/local/bin/order-expire", "--env", "/app/.env"]"#
    );
    // The Deployment's arguments are the image's default command.
    let deployment = manifest("deploy/k8s/deployment.yaml");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    let cmd: Value = serde_json::from_str(&instruction("CMD")).expect("CMD in JSON form");
    assert_eq!(*args, cmd);
}

/// `deploy/order-expire.env` with its default lines (`#ORDER_EXPIRE_X=value`) uncommented.
fn example_defaults() -> String {
    read("deploy/order-expire.env")
        .lines()
        .filter_map(|line| line.strip_prefix("#ORDER_EXPIRE_"))
        .map(|setting| format!("ORDER_EXPIRE_{setting}\n"))
        .collect()
}

/// `check --no-connect --json` on a `.env` holding `text`, without the file's own path.
fn resolved(text: &str) -> Value {
    let app = common::App::with_env(text);
    let output = app.run(&["check", "--no-connect", "--json"]);
    assert!(
        output.status.success(),
        "check failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut report: Value = serde_json::from_slice(&output.stdout).expect("check --json");
    report["env_file"] = Value::Null;
    report
}

#[test]
fn example_settings_show_the_defaults() {
    let defaults = example_defaults();
    assert!(
        defaults.lines().count() >= 15,
        "the example shows the defaults:\n{defaults}"
    );
    let base = "APP_NAME=Laravel\nCACHE_DRIVER=redis\nDB_DATABASE=shop\n";
    // Uncommenting a default line changes nothing the worker resolves...
    assert_eq!(resolved(base), resolved(&format!("{base}{defaults}")));
    // ... while the comparison does see a changed value.
    assert_ne!(
        resolved(base),
        resolved(&format!("{base}ORDER_EXPIRE_ORDERS_TABLE=shop_orders\n"))
    );
}

/// Each `<number> MB` / `MiB` figure of `text`, in order.
fn megabytes(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| matches!(w[1].trim_end_matches([',', ';', ')', '.']), "MB" | "MiB"))
        .filter(|w| w[0].chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(|w| format!("{} {}", w[0], w[1].trim_end_matches([',', ';', ')', '.'])))
        .collect()
}

/// The manifest's sizing comment gives the figures docs/operating.md gives (the benchmark's).
#[test]
fn the_manifests_memory_comment_agrees_with_the_docs() {
    let manifest = read("deploy/k8s/deployment.yaml");
    let comment: String = manifest
        .lines()
        .skip_while(|l| !l.contains("Sized from the benchmark"))
        .take_while(|l| l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    let docs = read("docs/operating.md");
    let start = docs
        .find("Resources, from [the benchmark]")
        .expect("the Resources paragraph");
    let paragraph = docs[start..].split("\n\n").next().unwrap_or_default();
    let (ours, theirs) = (megabytes(&comment), megabytes(paragraph));
    assert!(ours.len() >= 4, "{comment}");
    assert_eq!(ours, theirs, "deployment.yaml against docs/operating.md");
    let bench = read("docs/performance.md");
    for figure in ["16.7 MB", "21.7 MB", "23.6 MB"] {
        assert!(
            bench.contains(&format!("| {figure} |")),
            "{figure} is the benchmark's"
        );
    }
}
