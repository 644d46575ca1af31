//! The operations files are checked by the tools that will read them: HAProxy configs with
//! `haproxy -c`, the Prometheus config and alert rules with `promtool` (including the alert
//! unit tests), and every PromQL query of the Grafana dashboard.

use std::path::{Path, PathBuf};
use std::process::Command;

use syncline_testkit::{write_file, TempDir};

fn ops() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ops")
}

fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not installed: run ./dev test (it installs it)"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a checker");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn haproxy_configs_are_valid() {
    let mut seq = Command::new(tool("haproxy"));
    seq.arg("-c").arg("-f").arg(ops().join("haproxy/sequencers.cfg")).env("SEQ_FRONTEND", "127.0.0.1:5001");
    for i in 1..=3 {
        seq.env(format!("SEQ{i}"), format!("127.0.0.1:40{i}1")).env(format!("SEQ{i}_HEALTH"), format!("40{i}3"));
    }
    run(&mut seq);
    let mut part = Command::new(tool("haproxy"));
    part.arg("-c").arg("-f").arg(ops().join("haproxy/participants.cfg"));
    for (k, v) in [
        ("LEDGER_FRONTEND", "127.0.0.1:6001"),
        ("ADMIN_FRONTEND", "127.0.0.1:6002"),
        ("P1", "127.0.0.1:6101"),
        ("P2", "127.0.0.1:6201"),
        ("P1_ADMIN", "127.0.0.1:6102"),
        ("P2_ADMIN", "127.0.0.1:6202"),
        ("P1_HEALTH", "6103"),
        ("P2_HEALTH", "6203"),
    ] {
        part.env(k, v);
    }
    run(&mut part);
}

#[test]
fn prometheus_config_and_alert_rules_are_valid_and_their_unit_tests_pass() {
    let dir = ops().join("compose/prometheus");
    run(Command::new(tool("promtool")).arg("check").arg("config").arg(dir.join("prometheus.yml")));
    let out = run(Command::new(tool("promtool")).arg("test").arg("rules").arg("alerts_test.yml").current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let json = std::fs::read_to_string(ops().join("compose/grafana/dashboards/syncline-sequencers.json")).unwrap();
    let exprs: Vec<&str> =
        json.lines().filter_map(|l| l.trim().strip_prefix("\"expr\": ")).map(|e| e.trim_end_matches(',')).collect();
    assert!(exprs.len() >= 10, "found only {} queries", exprs.len());
    // Each query as a recording rule (the JSON string literal is valid YAML as it is).
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!("      - record: dashboard:query{i}\n        expr: {e}\n"));
    }
    let dir = TempDir::new("syncline-dashboard");
    let file = write_file(dir.path(), "queries.yml", &rules);
    let out = run(Command::new(tool("promtool")).arg("check").arg("rules").arg(&file));
    assert!(out.contains(&format!("{} rules found", exprs.len())), "{out}");
}
