//! deploy/monitoring checked: the alert rules parse and fire (and stay silent) as their
//! promtool unit tests expect, each alert tells on-call what to do, the dashboard's
//! every expression parses, and every metric the rules and the dashboard name is one a
//! running daemon exports.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use common::daemon::{DaemonProcess, setup};
use serde_json::Value;

fn deploy() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    fs::canonicalize(&dir).unwrap_or(dir)
}

fn monitoring() -> PathBuf {
    deploy().join("monitoring")
}

/// promtool with `args` in `dir`; Err naming the package when it is not installed.
fn promtool(dir: &Path, args: &[&str]) -> Result<String> {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "promtool is not on PATH: install the Debian package `prometheus` \
             (`.ci/run` does)"
        ),
        Err(e) => return Err(e).context("running promtool"),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool {args:?}:\n{said}");
    Ok(said)
}

/// The PrometheusRule's `spec`: a Prometheus rules file.
fn rule_groups() -> Result<Value> {
    let text = fs::read_to_string(monitoring().join("prometheusrule.yaml"))?;
    let rule: Value = serde_saphyr::from_str(&text).context("prometheusrule.yaml")?;
    ensure!(rule["kind"] == "PrometheusRule", "{}", rule["kind"]);
    Ok(rule["spec"].clone())
}

fn alerts(groups: &Value) -> Vec<&Value> {
    groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect()
}

/// Every expression of the dashboard's panels, Grafana's variables given values.
fn dashboard_expressions() -> Result<Vec<(String, String)>> {
    let text = fs::read_to_string(monitoring().join("grafana-dashboard.json"))?;
    let dashboard: Value = serde_json::from_str(&text).context("grafana-dashboard.json")?;
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().context("no panels")? {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().context("a target without expr")?;
            out.push((
                format!("{} {}", panel["title"], target["refId"]),
                expr.replace("$__rate_interval", "5m")
                    .replace("$namespace", ".*")
                    .replace("$pod", ".*"),
            ));
        }
    }
    Ok(out)
}

/// The metric names an expression reads (walship's and the plugin's).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["walship_", "barman_cloud_"] {
        let mut rest = expr;
        while let Some(at) = rest.find(prefix) {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

#[test]
fn the_alert_rules_parse_tell_on_call_what_to_do_and_fire_as_their_unit_tests_expect() -> Result<()>
{
    let groups = rule_groups()?;
    let dir = tempfile::tempdir()?;
    // As written, annotations' templates included.
    fs::write(dir.path().join("full.rules.yaml"), groups.to_string())?;
    promtool(dir.path(), &["check", "rules", "full.rules.yaml"])?;

    let rules = alerts(&groups);
    ensure!(rules.len() >= 9, "only {} alerts", rules.len());
    let mut names = BTreeSet::new();
    for rule in &rules {
        let name = rule["alert"]
            .as_str()
            .context("a rule that is not an alert")?;
        ensure!(names.insert(name), "{name} twice");
        for key in ["summary", "description", "runbook"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            ensure!(text.len() > 20, "{name} has no {key}");
        }
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        ensure!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
    }

    // The unit tests compare labels; the prose is checked above.
    let mut bare = groups.clone();
    for group in bare["groups"].as_array_mut().context("no groups")? {
        for rule in group["rules"].as_array_mut().context("no rules")? {
            rule.as_object_mut()
                .context("a rule")?
                .remove("annotations");
        }
    }
    fs::write(dir.path().join("walship.rules.yaml"), bare.to_string())?;
    let tests = fs::read_to_string(monitoring().join("tests/alerts.test.yaml"))?;
    fs::write(dir.path().join("alerts.test.yaml"), &tests)?;
    promtool(dir.path(), &["test", "rules", "alerts.test.yaml"])?;
    // Every alert is unit-tested, firing at least once.
    for name in &names {
        ensure!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no unit test"
        );
    }
    Ok(())
}

#[test]
fn every_dashboard_expression_parses() -> Result<()> {
    let expressions = dashboard_expressions()?;
    ensure!(expressions.len() >= 15, "{} expressions", expressions.len());
    // promtool parses expressions in rule files: each one as a recording rule.
    let rules: Vec<Value> = expressions
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("walship:dashboard:{i}"), "expr": expr}))
        .collect();
    let dir = tempfile::tempdir()?;
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    fs::write(dir.path().join("dashboard.rules.yaml"), file.to_string())?;
    promtool(dir.path(), &["check", "rules", "dashboard.rules.yaml"])?;
    Ok(())
}

#[test]
fn the_rules_and_the_dashboard_name_only_metrics_a_running_daemon_exports() -> Result<()> {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for rule in alerts(&rule_groups()?) {
        wanted.extend(metric_names(rule["expr"].as_str().unwrap_or_default()));
    }
    for (_, expr) in dashboard_expressions()? {
        wanted.extend(metric_names(&expr));
    }
    ensure!(wanted.len() >= 15, "{wanted:?}");

    let (archive, pg, socket) = setup()?;
    let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    let (status, exposition) = daemon.get("/metrics")?;
    ensure!(status == 200, "{status}");
    let exported: BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "named by deploy/monitoring but not exported: {missing:?}\n--- exposition ---\n{exposition}"
    );
    drop(daemon);
    Ok(())
}

/// Every file under deploy/ that is a Kubernetes manifest (the promtool tests are not).
fn manifests() -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && !path.to_string_lossy().ends_with(".test.yaml")
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&deploy(), &mut out)?;
    out.sort();
    Ok(out)
}

/// `original` read into the Kubernetes type `T` and written back: a field the type does
/// not know (a typo, a wrong level) is dropped on the way, and so differs.
fn through_type<T>(what: &str, original: &Value) -> Result<()>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(original.clone())
        .with_context(|| format!("{what} does not parse as its Kubernetes type"))?;
    let back = serde_json::to_value(&typed)?;
    ensure!(
        &back == original,
        "{what} has fields its Kubernetes type does not know, or values of another \
         type:\n  written: {original}\n  as read: {back}"
    );
    Ok(())
}

/// The prometheus-operator resources deploy/ uses, down to the fields it writes; any
/// other field is refused (no Kubernetes type of them in k8s-openapi).
mod operator {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Resource<S> {
        #[serde(rename = "apiVersion")]
        pub _api_version: String,
        pub kind: String,
        pub metadata: Metadata,
        pub spec: S,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Metadata {
        pub name: String,
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Selector {
        #[serde(rename = "matchLabels")]
        pub match_labels: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Endpoint {
        pub port: String,
        pub path: String,
        pub interval: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PodMonitorSpec {
        pub selector: Selector,
        #[serde(rename = "podMetricsEndpoints")]
        pub endpoints: Vec<Endpoint>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServiceMonitorSpec {
        pub selector: Selector,
        pub endpoints: Vec<Endpoint>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RuleSpec {
        pub groups: Vec<Group>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Group {
        pub name: String,
        pub rules: Vec<Rule>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rule {
        pub alert: String,
        pub expr: String,
        #[serde(rename = "for")]
        pub _for: Option<String>,
        pub labels: BTreeMap<String, String>,
        pub annotations: BTreeMap<String, String>,
    }
}

/// The ports a monitor's endpoints scrape, each checked to scrape `/metrics` at an
/// interval.
fn scraped_ports(what: &str, endpoints: Vec<operator::Endpoint>) -> Result<Vec<String>> {
    endpoints
        .into_iter()
        .map(|e| {
            ensure!(
                e.path == "/metrics" && !e.interval.is_empty(),
                "{what}: path {:?}, interval {:?}",
                e.path,
                e.interval
            );
            Ok(e.port)
        })
        .collect()
}

#[test]
fn every_manifest_under_deploy_parses_into_its_kubernetes_type_and_the_metrics_port_agrees()
-> Result<()> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};

    let files = manifests()?;
    ensure!(files.len() >= 5, "{files:?}");
    let mut kinds = BTreeSet::new();
    let mut services = Vec::new();
    let mut monitor_ports = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file)?;
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("{} is not YAML", file.display()))?;
        for (i, document) in documents.iter().enumerate() {
            let kind = document["kind"].as_str().unwrap_or_default().to_owned();
            let what = format!("{} (document {}, {kind})", file.display(), i + 1);
            match (
                document["apiVersion"].as_str().unwrap_or_default(),
                kind.as_str(),
            ) {
                ("v1", "ConfigMap") => {
                    through_type::<ConfigMap>(&what, document)?;
                    // An ObjectStore carried in a ConfigMap is one walship reads.
                    for (key, value) in document["data"].as_object().into_iter().flatten() {
                        if key.ends_with(".yaml") {
                            walship_config::parse(value.as_str().unwrap_or_default())
                                .map_err(|e| anyhow::anyhow!("{what}, {key}: {e}"))?;
                        }
                    }
                }
                ("v1", "Pod") => through_type::<Pod>(&what, document)?,
                ("v1", "Secret") => through_type::<Secret>(&what, document)?,
                ("v1", "Service") => {
                    through_type::<Service>(&what, document)?;
                    services.push(serde_json::from_value::<Service>(document.clone())?);
                }
                ("apps/v1", "StatefulSet") => through_type::<StatefulSet>(&what, document)?,
                ("barmancloud.cnpg.io/v1", "ObjectStore") => {
                    walship_config::parse_value(document)
                        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                }
                ("monitoring.coreos.com/v1", "PodMonitor") => {
                    let monitor: operator::Resource<operator::PodMonitorSpec> =
                        serde_json::from_value(document.clone()).context(what.clone())?;
                    ensure!(!monitor.metadata.name.is_empty() && monitor.kind == kind);
                    ensure!(!monitor.spec.selector.match_labels.is_empty(), "{what}");
                    monitor_ports.extend(scraped_ports(&what, monitor.spec.endpoints)?);
                }
                ("monitoring.coreos.com/v1", "ServiceMonitor") => {
                    let monitor: operator::Resource<operator::ServiceMonitorSpec> =
                        serde_json::from_value(document.clone()).context(what.clone())?;
                    ensure!(!monitor.metadata.name.is_empty() && monitor.kind == kind);
                    // It selects the Service by the Service's labels.
                    let selected = services.iter().any(|s| {
                        let labels = s.metadata.labels.clone().unwrap_or_default();
                        monitor
                            .spec
                            .selector
                            .match_labels
                            .iter()
                            .all(|(k, v)| labels.get(k) == Some(v))
                    });
                    ensure!(selected, "{what} selects no Service of its file");
                    monitor_ports.extend(scraped_ports(&what, monitor.spec.endpoints)?);
                }
                ("monitoring.coreos.com/v1", "PrometheusRule") => {
                    let rule: operator::Resource<operator::RuleSpec> =
                        serde_json::from_value(document.clone()).context(what.clone())?;
                    ensure!(!rule.metadata.labels.is_empty() && rule.kind == kind);
                    for group in &rule.spec.groups {
                        ensure!(!group.name.is_empty());
                        for r in &group.rules {
                            ensure!(
                                !r.alert.is_empty()
                                    && !r.expr.is_empty()
                                    && r.labels.contains_key("severity")
                                    && r.annotations.contains_key("runbook"),
                                "{what}: {}",
                                r.alert
                            );
                        }
                    }
                }
                (api, other) => bail!("{what}: no check for {api} {other}: add one"),
            }
            kinds.insert(kind);
        }
    }
    ensure!(kinds.len() >= 6, "{kinds:?}");

    // The port the monitors scrape is the one the Service names, on the daemon's
    // default metrics port (as its --help gives it).
    let help = Command::new(walship_testkit::WalshipBin::path()?)
        .args(["daemon", "--help"])
        .output()?;
    let help = String::from_utf8(help.stdout)?;
    let default_port: u16 = help
        .split("[default: ")
        .filter_map(|d| d.split(']').next())
        .find_map(|d| d.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .with_context(|| format!("no default metrics address in:\n{help}"))?;
    for service in &services {
        for port in service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
        {
            if port.name.as_deref() == Some("walship-metrics") {
                ensure!(
                    port.port == i32::from(default_port),
                    "the metrics Service's port is {}, the daemon's default {default_port}",
                    port.port
                );
            }
        }
    }
    ensure!(!monitor_ports.is_empty());
    for port in &monitor_ports {
        ensure!(port == "walship-metrics", "a monitor scrapes port {port:?}");
    }
    Ok(())
}
