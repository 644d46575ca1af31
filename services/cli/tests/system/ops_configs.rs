//! The operations files are checked by the tools that will read them: every node config of the
//! Compose stack with the daemon's own config loader (and `remote.toml` with the admin's),
//! HAProxy configs with `haproxy -c`, the Prometheus config and alert rules with `promtool`
//! (including the alert unit tests), and every PromQL query of the Grafana dashboard; and the
//! files agree with each other (names, ports, databases, metric names).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::OnceLock;

use syncline_node::config::{load_remote, NodeKind, NodesConfig};
use syncline_node::tls::dev::{write_dev_certs, DevCerts, LOCAL_HOSTS};
use syncline_testkit::{write_file, TempDir};

use syncline_cli::config as daemon_config;

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

/// The Compose stack's certificates (what its `certs` service writes), made once for this test
/// binary; `SYNCLINE_CERTS` points the stack's configs at them.
fn stack_certs() -> &'static DevCerts {
    static CERTS: OnceLock<(TempDir, DevCerts)> = OnceLock::new();
    &CERTS
        .get_or_init(|| {
            let dir = TempDir::new("syncline-stack-certs");
            let names: Vec<String> = [
                "sequencer1",
                "sequencer2",
                "sequencer3",
                "mediator1a",
                "mediator1b",
                "participant1a",
                "participant1b",
                "participant2a",
                "participant2b",
                "haproxy",
                "operator",
            ]
            .map(String::from)
            .to_vec();
            let certs = write_dev_certs(dir.path(), &names, &LOCAL_HOSTS).unwrap();
            // Read by the configs' `${SYNCLINE_CERTS:-/certs}`; set once, before any config loads.
            std::env::set_var("SYNCLINE_CERTS", dir.path());
            (dir, certs)
        })
        .1
}

#[test]
fn haproxy_configs_are_valid() {
    let certs = stack_certs();
    let mut seq = Command::new(tool("haproxy"));
    seq.arg("-c").arg("-f").arg(ops().join("haproxy/sequencers.cfg")).env("SEQ_FRONTEND", "127.0.0.1:5001");
    seq.env("TLS_CERT", certs.bundle("haproxy")).env("TLS_CA", &certs.ca);
    for i in 1..=3 {
        seq.env(format!("SEQ{i}"), format!("127.0.0.1:40{i}1")).env(format!("SEQ{i}_HEALTH"), format!("40{i}3"));
    }
    run(&mut seq);
    let mut part = Command::new(tool("haproxy"));
    part.arg("-c").arg("-f").arg(ops().join("haproxy/participants.cfg"));
    part.env("TLS_CERT", certs.bundle("haproxy")).env("TLS_CA", &certs.ca);
    for (k, v) in [
        ("LEDGER_FRONTEND", "127.0.0.1:6001"),
        ("ADMIN_FRONTEND", "127.0.0.1:6002"),
        ("R1", "127.0.0.1:6101"),
        ("R2", "127.0.0.1:6201"),
        ("R1_ADMIN", "127.0.0.1:6102"),
        ("R2_ADMIN", "127.0.0.1:6202"),
        ("R1_HEALTH", "6103"),
        ("R2_HEALTH", "6203"),
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `(service, arguments)` of every service of a Compose file whose `command` is a one-line
/// list, e.g. `command: ["daemon", "--config", "/config/a.toml"]`.
fn compose_commands(compose: &str) -> Vec<(String, Vec<String>)> {
    let mut in_services = false;
    let mut service: Option<String> = None;
    let mut out = Vec::new();
    for line in compose.lines() {
        if !line.is_empty() && !line.starts_with([' ', '#']) {
            in_services = line == "services:";
            continue;
        }
        let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) else {
            if let (true, Some(s), Some(list)) = (in_services, &service, line.trim().strip_prefix("command: [")) {
                let args = list.split('"').skip(1).step_by(2).map(String::from).collect();
                out.push((s.clone(), args));
            }
            continue;
        };
        if in_services && !name.starts_with([' ', '#']) {
            service = Some(name.to_string());
        }
    }
    out
}

/// The database name of a `postgres://` URL.
fn database(url: &str) -> &str {
    url.rsplit('/').next().unwrap().split('?').next().unwrap()
}

#[test]
fn every_config_file_of_the_compose_stack_loads_with_the_daemons_loader_and_the_files_agree() {
    let dir = ops().join("compose");
    let certs = stack_certs();
    let compose = read(&dir.join("docker-compose.yml"));
    let on_host =
        |p: &str| dir.join("config").join(p.strip_prefix("/config/").expect("configs are mounted at /config"));

    // Every daemon container's files, loaded as its command line loads them.
    let mut used = BTreeSet::new();
    let mut daemons = BTreeMap::new();
    for (service, args) in
        compose_commands(&compose).into_iter().filter(|(_, a)| a.first().is_some_and(|a| a == "daemon"))
    {
        let at = args.iter().position(|a| a == "--config").expect("daemon --config");
        let files: Vec<PathBuf> = args[at + 1].split(',').map(on_host).collect();
        let cfg = daemon_config::load(&files).unwrap_or_else(|e| panic!("{service}: {e}"));
        // A container runs the one node named like its service: the host name the other files use.
        let nodes: Vec<&str> = cfg.nodes().iter().map(|n| n.name).collect();
        assert_eq!(nodes, [service.as_str()], "the nodes of service {service}");
        used.extend(files);
        daemons.insert(service, cfg);
    }
    let of_kind = |kind: NodeKind| -> Vec<&str> {
        daemons.iter().filter(|(_, c)| c.nodes()[0].kind == kind).map(|(s, _)| s.as_str()).collect()
    };
    let (sequencers, mediators, participants) =
        (of_kind(NodeKind::Sequencer), of_kind(NodeKind::Mediator), of_kind(NodeKind::Participant));
    assert_eq!((sequencers.len(), mediators.len(), participants.len()), (3, 2, 4), "{daemons:?}");
    let common = |name: &str| daemons[name].nodes()[0].section.common();
    let url = |name: &str| {
        let cfg = &daemons[name];
        cfg.nodes()[0].section.storage(cfg.default_storage()).url.expect("loaded configs have a url")
    };
    // The member and the sequencer endpoints of a replica.
    fn replica<'a>(
        daemons: &'a BTreeMap<String, daemon_config::Config>,
        name: &'a str,
    ) -> (&'a str, &'a [String], Option<&'a std::path::Path>, Option<&'a std::path::Path>) {
        let cfg = &daemons[name];
        let (member, sequencer) = match (cfg.mediators.get(name), cfg.participants.get(name)) {
            (Some(m), _) => (m.member(name), &m.sequencer),
            (_, Some(p)) => (p.member(name), &p.sequencer),
            _ => panic!("{name} is not a replicated node"),
        };
        (member, &sequencer.endpoints, sequencer.token_file.as_deref(), sequencer.ca.as_deref())
    }
    let replica = |name| replica(&daemons, name);
    let init: String = std::fs::read_dir(dir.join("postgres"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| read(&p))
        .collect();
    let public: BTreeSet<String> =
        sequencers.iter().map(|s| format!("https://{s}:{}", common(s).public_api.address.port())).collect();

    // TLS on every listener of every node, with its own certificate (its service's name, which
    // the `certs` service issues); admin APIs on the network require client certificates.
    for s in daemons.keys() {
        let c = common(s);
        for (listener, tls) in
            [("public_api", &c.public_api.tls), ("admin_api", &c.admin_api.tls), ("health", &c.health.tls)]
        {
            let tls = tls.as_ref().unwrap_or_else(|| panic!("{s}.{listener} serves no TLS"));
            assert_eq!((&tls.cert, &tls.key), (&certs.cert(s), &certs.key(s)), "{s}.{listener}'s certificate");
        }
        assert!(c.admin_api.requires_client_certificates(), "{s}'s admin API requires no client certificate");
        assert!(
            compose.contains(&format!(",{s},")) || compose.contains(&format!("--names {s},")),
            "the certs service issues no certificate for {s}"
        );
    }

    // Replica groups (the mediator, each participant): the replicas of a member share one
    // database of the group's own (created in the postgres container), and connect to every
    // sequencer of the stack.
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in mediators.iter().chain(&participants) {
        groups.entry(replica(r).0).or_default().push(r);
    }
    let members: Vec<&str> = groups.keys().copied().collect();
    assert_eq!(members, ["mediator1", "participant1", "participant2"], "the replica groups");
    let mut databases = BTreeSet::new();
    for (member, replicas) in &groups {
        assert_eq!(replicas.len(), 2, "{member} runs two replicas: {replicas:?}");
        let db = url(replicas[0]);
        assert!(replicas.iter().all(|r| url(r) == db), "the replicas of {member} share one database");
        assert!(databases.insert(database(&db).to_string()), "{member}'s database {db} is another group's too");
        assert!(sequencers.iter().all(|s| database(&url(s)) != database(&db)), "{member}'s database is its own: {db}");
        assert!(init.contains(&format!("CREATE DATABASE {} ", database(&db))), "no init SQL creates {db}:\n{init}");
        for r in replicas {
            assert_eq!(
                replica(r).3,
                Some(certs.ca.as_path()),
                "{r} checks the sequencers' certificates against the CA"
            );
            let endpoints: BTreeSet<String> = replica(r).1.iter().cloned().collect();
            assert_eq!(endpoints, public, "{r} connects to every sequencer of the stack");
            let token = format!("/tokens/{member}.token");
            assert_eq!(
                replica(r).2,
                Some(std::path::Path::new(&token)),
                "{r} reads its member token where bootstrap writes it"
            );
        }
    }
    // The bootstrap writes the member tokens into the volume the replicas read them from.
    for anchor in ["x-mediator: &mediator\n", "x-participant: &participant\n"] {
        let at = compose.find(anchor).unwrap_or_else(|| panic!("no {anchor}"));
        let block = compose[at..].split("\n\n").next().unwrap();
        assert!(block.contains("\"tokens:/tokens:ro\""), "the replicas mount the tokens volume:\n{block}");
    }
    assert!(compose.contains("\"tokens:/tokens\", "), "bootstrap writes the tokens volume:\n{compose}");
    // The bootstrap publishes mediator1's topology, then joins both participants.
    for step in [
        "syncline admin -c /config/remote.toml bootstrap --mediator mediator1 --token-dir /tokens &&",
        "syncline admin -c /config/remote.toml join-participant participant1 --token-dir /tokens &&",
        "syncline admin -c /config/remote.toml join-participant participant2 --token-dir /tokens;",
    ] {
        assert!(compose.contains(step), "the bootstrap service does not run `{step}`:\n{compose}");
    }

    // Each participant has an HAProxy service in front of its replicas' ledger and admin APIs,
    // checking their health ports (ops/haproxy/participants.cfg reads these variables).
    for member in ["participant1", "participant2"] {
        let header = format!("\n  haproxy-{member}:\n");
        let at = compose.find(&header).unwrap_or_else(|| panic!("no service haproxy-{member}:\n{compose}"));
        // The service's lines: those indented deeper than a service name.
        let rest = &compose[at + header.len()..];
        let len: usize = rest.split_inclusive('\n').take_while(|l| l.starts_with("    ")).map(str::len).sum();
        let body = &rest[..len];
        assert!(body.contains("<<: *participant-haproxy"), "haproxy-{member} runs participants.cfg:\n{body}");
        for (i, r) in groups[member].iter().enumerate() {
            let c = common(r);
            let n = i + 1;
            for line in [
                format!("R{n}: {r}:{}\n", c.public_api.address.port()),
                format!("R{n}_ADMIN: {r}:{}\n", c.admin_api.address.port()),
                format!("R{n}_HEALTH: \"{}\"\n", c.health.address.port()),
            ] {
                assert!(body.contains(&line), "haproxy-{member} lacks `{}`:\n{body}", line.trim());
            }
        }
    }

    // remote.toml names every node at its admin port.
    let remote_file = dir.join("config/remote.toml");
    let remote = load_remote(std::slice::from_ref(&remote_file)).unwrap_or_else(|e| panic!("remote.toml: {e}"));
    used.insert(remote_file);
    let listed: BTreeMap<&str, &str> = remote.nodes().map(|(_, n, r)| (n.as_str(), r.admin_api.as_str())).collect();
    let want: BTreeMap<&str, String> =
        daemons.keys().map(|s| (s.as_str(), format!("{s}:{}", common(s).admin_api.address.port()))).collect();
    assert_eq!(listed, want.iter().map(|(k, v)| (*k, v.as_str())).collect(), "remote.toml");
    assert_eq!(remote.mediators.len(), 2, "remote.toml lists the mediator replicas as mediators");
    assert_eq!(remote.participants.len(), 4, "remote.toml lists the participant replicas as participants");
    for (_, n, r) in remote.nodes() {
        assert_eq!(
            (r.url(), r.ca.as_deref(), r.client_cert.as_deref()),
            (format!("https://{}", r.admin_api), Some(certs.ca.as_path()), Some(certs.cert("operator").as_path())),
            "remote.toml reaches {n} over TLS with the operator's certificate"
        );
    }

    // Prometheus scrapes every node's health port; the mediator replicas with their group.
    let prometheus = read(&dir.join("prometheus/prometheus.yml"));
    for s in daemons.keys() {
        let port = common(s).health.address.port();
        assert!(prometheus.contains(&format!("\"{s}:{port}\"")), "prometheus.yml does not scrape {s}:{port}");
        assert!(compose.contains(&format!("https://localhost:{port}/health")), "no healthcheck on {s}'s port {port}");
    }
    // Each replica group is one target group labelled with its group (`<kind>:<member>`, as
    // the nodes label their leadership series).
    for (member, replicas) in &groups {
        let kind = if mediators.contains(&replicas[0]) { "mediator" } else { "participant" };
        let targets = prometheus
            .lines()
            .skip_while(|l| !l.contains(&format!("\"{}:", replicas[0])))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            targets.contains(&format!("\"{}:", replicas[1]))
                && targets.contains(&format!("labels: {{ group: \"{kind}:{member}\" }}")),
            "the replicas of {member} are one target group labelled with their replica group:\n{targets}"
        );
    }

    // No config file the stack does not use.
    let files: BTreeSet<PathBuf> = std::fs::read_dir(dir.join("config")).unwrap().map(|f| f.unwrap().path()).collect();
    assert_eq!(files, used, "config files no service loads");
}

#[test]
fn the_alerts_and_the_dashboard_use_only_metrics_the_nodes_export() {
    fn literals(dir: &Path, out: &mut BTreeSet<String>) {
        for f in std::fs::read_dir(dir).unwrap().map(|f| f.unwrap().path()) {
            if f.is_dir() {
                literals(&f, out);
            } else if f.extension().is_some_and(|e| e == "rs") {
                let text = read(&f);
                out.extend(text.split('"').skip(1).step_by(2).filter(|s| s.starts_with("syncline_")).map(String::from));
            }
        }
    }
    let root = ops().join("..");
    let mut exported = BTreeSet::new();
    for d in ["services", "coordination"] {
        literals(&root.join(d), &mut exported);
    }
    let used = [
        ops().join("compose/prometheus/alerts.yml"),
        ops().join("compose/grafana/dashboards/syncline-sequencers.json"),
    ]
    .iter()
    .map(|f| read(f))
    .collect::<String>();
    let names: BTreeSet<&str> = used
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("syncline_") && w.len() > "syncline_".len())
        .collect();
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(n);
            !exported.contains(base) && !exported.contains(*n)
        })
        .collect();
    assert!(unknown.is_empty(), "metrics no node exports: {unknown:?}");
    for m in [
        "syncline_mediator_outstanding_requests",
        "syncline_mediator_verdicts_total",
        "syncline_mediator_decision_seconds_bucket",
        "syncline_mediator_timeouts_total",
        "syncline_mediator_time_proofs_total",
        "syncline_mediator_invalid_messages_total",
        "syncline_mediator_processing_lag_seconds",
        "syncline_participant_outstanding_requests",
        "syncline_participant_completions_total",
        "syncline_participant_processing_lag_seconds",
        "syncline_participant_ledger_end",
        "syncline_leadership_active",
        "syncline_leadership_takeovers_total",
    ] {
        assert!(names.contains(m), "neither the alerts nor the dashboard use {m}");
    }
}
