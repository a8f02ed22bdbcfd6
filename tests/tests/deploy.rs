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

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
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
