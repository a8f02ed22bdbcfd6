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
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};

    let files = manifests()?;
    ensure!(files.len() >= 25, "{files:?}");
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
                // Only as a patch of the plugin's Deployment (checked in
                // the_cnpg_overlay_switches_the_plugins_sidecar_image_to_walships).
                ("apps/v1", "Deployment") => {
                    ensure!(
                        file.ends_with("cnpg/plugin/sidecar-image.yaml"),
                        "{what}: a Deployment outside the plugin overlay"
                    );
                    // A patch leaves out what the release has (the selector, the
                    // image), so it parses as a Deployment but does not round-trip.
                    serde_json::from_value::<Deployment>(without_nulls(document))
                        .context(what.clone())?;
                }
                ("barmancloud.cnpg.io/v1", "ObjectStore") => {
                    let parsed = walship_config::parse_value(document);
                    // The seed page's block of four alternatives at once is kept to
                    // show that walship refuses it.
                    if file.to_string_lossy().ends_with(".rejected.yaml") {
                        ensure!(parsed.is_err(), "{what}: expected walship to refuse it");
                    } else {
                        parsed.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                    }
                }
                ("postgresql.cnpg.io/v1", "Cluster") => {
                    serde_json::from_value::<cnpg::Cluster>(document.clone())
                        .context(what.clone())?;
                }
                ("postgresql.cnpg.io/v1", "ScheduledBackup") => {
                    serde_json::from_value::<cnpg::ScheduledBackup>(document.clone())
                        .context(what.clone())?;
                }
                ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {
                    serde_json::from_value::<Kustomization>(document.clone())
                        .context(what.clone())?;
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
    ensure!(kinds.len() >= 10, "{kinds:?}");

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

/// `value` without its `null` fields: a strategic merge patch writes `field: null` to
/// delete a field, which no Kubernetes type keeps.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The one document of a YAML file under deploy/.
fn document(path: &str) -> Result<Value> {
    let text = fs::read_to_string(deploy().join(path)).with_context(|| path.to_owned())?;
    serde_saphyr::from_str(&text).with_context(|| format!("{path} is not one YAML document"))
}

/// A kustomization, down to the fields deploy/ writes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Kustomization {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    resources: Vec<String>,
    #[serde(default)]
    patches: Vec<KustomizePatch>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KustomizePatch {
    path: String,
}

/// CloudNativePG's Cluster and ScheduledBackup, down to the fields deploy/ writes (no
/// Kubernetes type of them in k8s-openapi); any other field is refused.
mod cnpg {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Metadata {
        pub name: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Cluster {
        pub api_version: String,
        pub kind: String,
        pub metadata: Metadata,
        pub spec: ClusterSpec,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ClusterSpec {
        pub instances: u32,
        pub image_name: String,
        pub storage: Storage,
        pub monitoring: Monitoring,
        pub plugins: Vec<Plugin>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Storage {
        pub size: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Monitoring {
        pub enable_pod_monitor: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Plugin {
        pub name: String,
        #[serde(rename = "isWALArchiver")]
        pub is_wal_archiver: bool,
        pub parameters: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ScheduledBackup {
        pub api_version: String,
        pub kind: String,
        pub metadata: Metadata,
        pub spec: ScheduledBackupSpec,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ScheduledBackupSpec {
        pub schedule: String,
        pub backup_owner_reference: String,
        pub cluster: Metadata,
        pub method: String,
        pub plugin_configuration: Metadata,
    }
}

/// The Barman Cloud plugin's name, as CloudNativePG's Cluster and Backup name it.
const PLUGIN: &str = "barman-cloud.cloudnative-pg.io";

/// walship's version, as `walship --version` prints it: the tag `cargo xtask image`
/// gives the image.
fn walship_version() -> Result<String> {
    let out = Command::new(walship_testkit::WalshipBin::path()?)
        .arg("--version")
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("no version in {text:?}"))
}

/// An image reference deploy/ writes for walship: its tag is walship's version.
fn check_walship_image(what: &str, image: &str, version: &str) -> Result<()> {
    let (name, tag) = image
        .rsplit_once(':')
        .with_context(|| format!("{what}: {image:?} has no tag"))?;
    ensure!(
        name.ends_with("/walship") && tag == version,
        "{what}: image {image:?}, expected …/walship:{version} (the tag `cargo xtask image` gives)"
    );
    Ok(())
}

/// A default of `walship [SUBCOMMAND] --help` for `flag`, as clap prints it.
fn help_default(args: &[&str], flag: &str) -> Result<String> {
    let out = Command::new(walship_testkit::WalshipBin::path()?)
        .args(args)
        .arg("--help")
        .output()?;
    let help = String::from_utf8(out.stdout)?;
    let at = help
        .find(&format!("{flag} <"))
        .with_context(|| format!("{flag} not in walship {args:?} --help"))?;
    let rest = &help[at..];
    let end = rest.find("\n      --").unwrap_or(rest.len());
    let default = rest[..end]
        .split("[default: ")
        .nth(1)
        .and_then(|d| d.split(']').next())
        .with_context(|| format!("{flag} has no default in walship {args:?} --help"))?;
    Ok(default.to_owned())
}

#[test]
fn every_kustomization_lists_its_directorys_manifests_and_files_that_exist() -> Result<()> {
    let mut seen = 0;
    for file in manifests()? {
        if file.file_name().is_none_or(|n| n != "kustomization.yaml") {
            continue;
        }
        seen += 1;
        let dir = file.parent().context("a kustomization's directory")?;
        let kustomization: Kustomization = serde_saphyr::from_str(&fs::read_to_string(&file)?)
            .context(file.display().to_string())?;
        let mut listed = BTreeSet::new();
        for resource in &kustomization.resources {
            if let Some(url) = resource.strip_prefix("https://") {
                // Only the plugin's own release, pinned to one version.
                let version = url
                    .strip_prefix(
                        "github.com/cloudnative-pg/plugin-barman-cloud/releases/download/v",
                    )
                    .and_then(|v| v.strip_suffix("/manifest.yaml"))
                    .with_context(|| format!("{}: remote resource {resource}", file.display()))?;
                ensure!(
                    version.split('.').count() == 3
                        && version.split('.').all(|n| n.parse::<u32>().is_ok()),
                    "{}: {resource} is not pinned to a release",
                    file.display()
                );
                continue;
            }
            ensure!(
                dir.join(resource).is_file(),
                "{}: {resource} does not exist",
                file.display()
            );
            listed.insert(resource.clone());
        }
        for patch in &kustomization.patches {
            ensure!(
                dir.join(&patch.path).is_file(),
                "{}: patch {} does not exist",
                file.display(),
                patch.path
            );
            listed.insert(patch.path.clone());
        }
        // Every manifest beside it is applied by it (or is it): none is forgotten.
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && name != "kustomization.yaml" {
                ensure!(
                    listed.contains(&name),
                    "{}: {name} is beside it but not in it",
                    file.display()
                );
            }
        }
    }
    ensure!(
        seen == 3,
        "expected deploy/cnpg, deploy/cnpg/plugin and deploy/standalone"
    );
    Ok(())
}

#[test]
fn the_cnpg_overlay_switches_the_plugins_sidecar_image_to_walships_and_the_cluster_uses_the_plugin()
-> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;

    let version = walship_version()?;
    // The patch: the release's Deployment (barman-cloud in cnpg-system, its container
    // barman-cloud) reads SIDECAR_IMAGE from a Secret; the patch sets a value and
    // deletes the secretKeyRef (`valueFrom: null`), or the env var would have both.
    let patch = document("cnpg/plugin/sidecar-image.yaml")?;
    let deployment: Deployment = serde_json::from_value(without_nulls(&patch))?;
    ensure!(deployment.metadata.name.as_deref() == Some("barman-cloud"));
    ensure!(deployment.metadata.namespace.as_deref() == Some("cnpg-system"));
    let containers = &patch["spec"]["template"]["spec"]["containers"];
    ensure!(containers.as_array().is_some_and(|c| c.len() == 1));
    ensure!(containers[0]["name"] == "barman-cloud");
    let env = containers[0]["env"].as_array().context("env")?;
    ensure!(
        env.len() == 1 && env[0]["name"] == "SIDECAR_IMAGE",
        "{env:?}"
    );
    ensure!(
        env[0].get("valueFrom") == Some(&Value::Null),
        "the patch must delete the release's valueFrom: {env:?}"
    );
    check_walship_image(
        "SIDECAR_IMAGE",
        env[0]["value"].as_str().unwrap_or_default(),
        &version,
    )?;

    // The Cluster archives through the plugin into an ObjectStore of the same
    // kustomization; the ScheduledBackup backs that Cluster up through the plugin.
    let store = document("cnpg/objectstore.yaml")?;
    let store_name = store["metadata"]["name"].as_str().unwrap_or_default();
    let cluster: cnpg::Cluster = serde_json::from_value(document("cnpg/cluster.yaml")?)?;
    ensure!(cluster.api_version == "postgresql.cnpg.io/v1" && cluster.kind == "Cluster");
    ensure!(cluster.spec.instances >= 1 && !cluster.spec.image_name.is_empty());
    ensure!(!cluster.spec.storage.size.is_empty() && cluster.spec.monitoring.enable_pod_monitor);
    let plugin = &cluster.spec.plugins[0];
    ensure!(plugin.name == PLUGIN && plugin.is_wal_archiver);
    ensure!(
        plugin
            .parameters
            .get("barmanObjectName")
            .map(String::as_str)
            == Some(store_name),
        "the Cluster names {:?}, the ObjectStore is {store_name}",
        plugin.parameters
    );
    let scheduled: cnpg::ScheduledBackup =
        serde_json::from_value(document("cnpg/scheduledbackup.yaml")?)?;
    ensure!(
        scheduled.api_version == "postgresql.cnpg.io/v1" && scheduled.kind == "ScheduledBackup"
    );
    ensure!(!scheduled.metadata.name.is_empty());
    // CloudNativePG's schedule has six fields, seconds first.
    ensure!(scheduled.spec.schedule.split_whitespace().count() == 6);
    ensure!(scheduled.spec.backup_owner_reference == "self");
    ensure!(scheduled.spec.cluster.name == cluster.metadata.name);
    ensure!(
        scheduled.spec.method == "plugin" && scheduled.spec.plugin_configuration.name == PLUGIN
    );
    Ok(())
}

#[test]
fn the_standalone_statefulset_agrees_with_the_binarys_defaults_its_configmap_and_the_pod_monitor()
-> Result<()> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Container, Probe};

    let version = walship_version()?;
    let set: StatefulSet = serde_json::from_value(document("standalone/statefulset.yaml")?)?;
    let template = set.spec.template;
    let pod = template.spec.context("the pod's spec")?;
    let labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
    let inits = pod.init_containers.clone().unwrap_or_default();
    let find = |list: &[Container], name: &str| -> Result<Container> {
        list.iter()
            .find(|c| c.name == name)
            .cloned()
            .with_context(|| format!("no container {name}"))
    };
    let copy = find(&inits, "walship-copy")?;
    let daemon = find(&inits, "walship")?;
    let postgres = find(pod.containers.as_slice(), "postgres")?;
    let env = |c: &Container, name: &str| -> Option<String> {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    // The volume mounted at `path` (or at a directory above it) in `c`.
    let volume_at = |c: &Container, path: &str| -> Option<String> {
        c.volume_mounts
            .iter()
            .flatten()
            .filter(|m| Path::new(path).starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.len())
            .map(|m| m.name.clone())
    };
    let same_volume = |what: &str, path: &str| -> Result<String> {
        let in_daemon = volume_at(&daemon, path);
        ensure!(
            in_daemon.is_some() && in_daemon == volume_at(&postgres, path),
            "{what} {path}: on volume {in_daemon:?} in walship, {:?} in postgres",
            volume_at(&postgres, path)
        );
        Ok(in_daemon.unwrap_or_default())
    };

    for c in [&copy, &daemon] {
        check_walship_image(&c.name, c.image.as_deref().unwrap_or_default(), &version)?;
    }

    // The copy lands where PostgreSQL's archive_command and restore_command run it.
    let command = copy.command.clone().unwrap_or_default();
    ensure!(command.len() == 3 && command[1] == "copy-to", "{command:?}");
    let bin_dir = &command[2];
    let bin_volume = volume_at(&copy, bin_dir);
    ensure!(bin_volume.is_some() && bin_volume == volume_at(&postgres, bin_dir));
    let args = postgres.args.clone().unwrap_or_default();
    for setting in [
        format!("archive_command={bin_dir}/walship wal-push %p"),
        format!("restore_command={bin_dir}/walship wal-fetch %f %p"),
        "archive_mode=on".to_owned(),
    ] {
        ensure!(
            args.contains(&setting),
            "postgres args {args:?} lack {setting}"
        );
    }

    // The daemon: a native sidecar, started before PostgreSQL's first initdb.
    ensure!(daemon.restart_policy.as_deref() == Some("Always"));
    let daemon_command = daemon.command.clone().unwrap_or_default();
    ensure!(daemon_command.len() == 2 && daemon_command[1] == "daemon");
    ensure!(command[0] == daemon_command[0], "one binary in the image");
    ensure!(env(&daemon, "WALSHIP_WAIT_FOR_PGDATA").as_deref() == Some("true"));
    let pgdata = env(&daemon, "PGDATA").context("the daemon's PGDATA")?;
    ensure!(env(&postgres, "PGDATA").as_ref() == Some(&pgdata));
    // The journal and spool default to PGDATA's parent: they are on its volume too.
    let data_volume = same_volume("PGDATA", &pgdata)?;
    let parent = Path::new(&pgdata).parent().context("PGDATA's parent")?;
    ensure!(volume_at(&daemon, &parent.display().to_string()) == Some(data_volume));

    // wal-push finds the daemon's socket on a volume both mount.
    let socket =
        env(&daemon, "WALSHIP_SOCKET").map_or_else(|| help_default(&[], "--socket"), Ok)?;
    ensure!(env(&postgres, "WALSHIP_SOCKET") == env(&daemon, "WALSHIP_SOCKET"));
    same_volume("the socket", &socket)?;

    // Both read the ObjectStore from the ConfigMap and its Secrets where the binary
    // looks for them.
    let config =
        env(&daemon, "WALSHIP_CONFIG").map_or_else(|| help_default(&[], "--config"), Ok)?;
    ensure!(env(&postgres, "WALSHIP_CONFIG") == env(&daemon, "WALSHIP_CONFIG"));
    let config_volume = same_volume("the ObjectStore", &config)?;
    let volumes = pod.volumes.clone().unwrap_or_default();
    let map_name = volumes
        .iter()
        .find(|v| v.name == config_volume)
        .and_then(|v| v.config_map.as_ref())
        .map(|c| c.name.clone())
        .context("the ObjectStore's volume is not a ConfigMap")?;
    let map: ConfigMap = serde_json::from_value(document("standalone/objectstore.yaml")?)?;
    ensure!(map.metadata.name.as_deref() == Some(map_name.as_str()));
    let key = Path::new(&config)
        .file_name()
        .context("a file")?
        .to_string_lossy();
    let store_yaml = map
        .data
        .as_ref()
        .and_then(|d| d.get(key.as_ref()))
        .with_context(|| format!("the ConfigMap has no key {key}"))?;
    walship_config::parse(store_yaml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secrets_dir = env(&daemon, "WALSHIP_SECRETS_DIR")
        .map_or_else(|| help_default(&[], "--secrets-dir"), Ok)?;
    let store: Value = serde_saphyr::from_str(store_yaml)?;
    let mut secrets = BTreeSet::new();
    collect_secret_names(&store["spec"]["configuration"], &mut secrets);
    ensure!(!secrets.is_empty());
    for secret in &secrets {
        let path = format!("{secrets_dir}/{secret}/");
        let volume = same_volume("a Secret", &path)?;
        ensure!(
            volumes.iter().any(|v| v.name == volume
                && v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret)),
            "{path} is not the Secret {secret}"
        );
    }

    // Metrics and probes on the port the monitors scrape, at the address given.
    let addr: std::net::SocketAddr = env(&daemon, "WALSHIP_METRICS_ADDR")
        .context("the daemon must listen beyond loopback for Prometheus")?
        .parse()?;
    ensure!(addr.ip().is_unspecified());
    let port = daemon
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("walship-metrics"))
        .context("no port walship-metrics")?;
    ensure!(port.container_port == i32::from(addr.port()));
    let http_path = |probe: &Option<Probe>| -> Option<String> {
        let get = probe.as_ref()?.http_get.as_ref()?;
        match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(p)
                if p == "walship-metrics" =>
            {
                get.path.clone()
            }
            _ => None,
        }
    };
    ensure!(http_path(&daemon.startup_probe).as_deref() == Some("/healthz"));
    ensure!(http_path(&daemon.liveness_probe).as_deref() == Some("/healthz"));
    ensure!(http_path(&daemon.readiness_probe).as_deref() == Some("/readyz"));
    let monitor = document("monitoring/podmonitor.yaml")?;
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("selector")?
    {
        ensure!(
            labels.get(k).map(String::as_str) == v.as_str(),
            "the PodMonitor selects {k}={v}, the pods carry {labels:?}"
        );
    }

    // Read-only roots, as walship needs nothing writable outside its volumes.
    for c in [&copy, &daemon] {
        ensure!(
            c.security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem)
                == Some(true),
            "{}",
            c.name
        );
    }
    Ok(())
}

/// The Secrets an ObjectStore's configuration names (every `{name, key}` reference).
fn collect_secret_names(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let (Some(Value::String(name)), Some(Value::String(_)), 2) =
                (map.get("name"), map.get("key"), map.len())
            {
                out.insert(name.clone());
            }
            map.values().for_each(|v| collect_secret_names(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_secret_names(v, out)),
        _ => {}
    }
}
