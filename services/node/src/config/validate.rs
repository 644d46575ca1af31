//! Checks across the nodes of a configuration (unique names and listeners, a database for
//! each) and each node's own checks, with the file that set the offending key.

use std::collections::HashMap;
use std::net::SocketAddr;

use figment::Figment;

use super::{ConfigError, NodeKind, NodeRef, NodesConfig};
use crate::tls::Protocol;

pub(super) fn validate<C: NodesConfig>(config: &C, figment: &Figment) -> Result<(), ConfigError> {
    let fail = |key: String, message: String| {
        let file = figment.find_metadata(&key).and_then(|m| m.source.as_ref()).map(|s| s.to_string());
        Err(ConfigError::Validation { key, message, file })
    };
    let nodes = config.nodes();
    if nodes.is_empty() {
        return fail(
            "sequencers".into(),
            "no node is configured (declare [sequencers.NAME], [mediators.NAME] or [participants.NAME])".into(),
        );
    }
    let mut names: HashMap<&str, NodeKind> = HashMap::new();
    let mut listeners: HashMap<SocketAddr, String> = HashMap::new();
    for node in &nodes {
        let (kind, name) = (node.kind, node.name);
        let common = node.section.common();
        let key = |k: &str| format!("{}.{name}.{k}", kind.table());
        if let Some(other) = names.insert(name, kind) {
            return fail(
                format!("{}.{name}", kind.table()),
                format!("the name {name} is already used by {other} {name} (node names are unique across sequencers, mediators and participants)"),
            );
        }
        let storage = node.section.storage(config.default_storage());
        match &storage.url {
            None => {
                return fail(
                    key("storage.url"),
                    "no database url (set [storage] url or this node's storage.url)".into(),
                )
            }
            Some(u) if u.parse::<tokio_postgres::Config>().is_err() => {
                return fail(key("storage.url"), format!("{u:?} is not a PostgreSQL connection string"))
            }
            _ => {}
        }
        // A pool of zero connections panics; a zero connect timeout fails every connection.
        if storage.pool_size == 0 {
            return fail(storage_key(node, "pool_size"), "must be positive".into());
        }
        if storage.connect_timeout.is_zero() {
            return fail(storage_key(node, "connect_timeout"), "must be positive".into());
        }
        if let Err(e) = node.section.validate() {
            return fail(key(&e.key), e.problem);
        }
        let mut addrs = vec![
            ("public_api.address", common.public_api.address),
            ("admin_api.address", common.admin_api.address),
            ("health.address", common.health.address),
        ];
        if let Some(m) = common.metrics {
            addrs.push(("metrics.address", m.address));
        }
        let tls = [
            ("public_api", common.public_api.tls.as_ref(), Protocol::Grpc),
            ("admin_api", common.admin_api.tls.as_ref(), Protocol::Grpc),
            ("health", common.health.tls.as_ref(), Protocol::Http),
            ("metrics", common.metrics.and_then(|m| m.tls.as_ref()), Protocol::Http),
        ];
        // Started nodes would refuse them: say so at load, naming the file and the key.
        for (listener, tls, protocol) in tls {
            if let Err(e) = tls.map(|t| t.server_config(protocol)).transpose() {
                return fail(key(&format!("{listener}.tls.{}", e.key)), e.to_string());
            }
        }
        for (k, a) in addrs {
            if a.port() == 0 {
                continue;
            }
            if let Some(other) = listeners.insert(a, key(k)) {
                return fail(key(k), format!("{a} is already used by another listener ({other})"));
            }
        }
    }
    Ok(())
}

/// The key that set storage `field` of `node`: its own override if it has one, else `[storage]`.
fn storage_key(node: &NodeRef<'_>, field: &str) -> String {
    let own = node.section.common().storage.is_some_and(|o| match field {
        "pool_size" => o.pool_size.is_some(),
        "connect_timeout" => o.connect_timeout.is_some(),
        _ => false,
    });
    if own {
        format!("{}.{}.storage.{field}", node.kind.table(), node.name)
    } else {
        format!("storage.{field}")
    }
}

#[cfg(test)]
mod tests {
    //! The common sections and the checks across nodes, on a configuration of replicated
    //! nodes (the sequencer's section is tested in its crate, the whole top level in the
    //! binary's).
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use serde::Deserialize;
    use syncline_coordination::leadership::LeadershipConfig;

    use crate::config::*;

    /// A binary that runs mediators and participants.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Replicated {
        storage: Option<StorageConfig>,
        #[serde(default)]
        mediators: BTreeMap<String, ReplicatedNodeConfig>,
        #[serde(default)]
        participants: BTreeMap<String, ReplicatedNodeConfig>,
    }

    impl NodesConfig for Replicated {
        fn default_storage(&self) -> Option<&StorageConfig> {
            self.storage.as_ref()
        }
        fn nodes(&self) -> Vec<NodeRef<'_>> {
            nodes_of(NodeKind::Mediator, &self.mediators)
                .chain(nodes_of(NodeKind::Participant, &self.participants))
                .collect()
        }
    }

    fn load(paths: &[PathBuf]) -> Result<Replicated, ConfigError> {
        crate::config::load(paths)
    }

    use syncline_testkit::files::write_file as write;

    const MEDIATOR: &str = r#"
[mediators.med1]
public_api = { address = "127.0.0.1:4011" }
admin_api = { address = "127.0.0.1:4012" }
health = { address = "127.0.0.1:4013" }
"#;

    const PARTICIPANT: &str = r#"
[participants.part1]
public_api = { address = "127.0.0.1:4021", max_request_size = 1024 }
admin_api = { address = "127.0.0.1:4022" }
health = { address = "127.0.0.1:4023", check = "ping" }
metrics = { address = "127.0.0.1:4024" }
"#;

    const STORAGE: &str = "[storage]\nurl = \"postgres://a@h/db\"\n";

    #[test]
    fn replicated_nodes_have_defaults_and_per_node_storage() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.toml", &format!("{STORAGE}{MEDIATOR}{PARTICIPANT}storage = {{ pool_size = 2 }}\n"));
        let b = write(d.path(), "b.toml", "[participants.part1.replication]\nlease_timeout = \"5s\"\ncheck_interval = \"1s 500ms\"\ntakeover_grace = \"0s\"\n");
        let cfg = load(&[a, b]).unwrap();
        let m = &cfg.mediators["med1"];
        assert_eq!(m.health.check, HealthCheck::IsActive, "replicated nodes check is-active by default");
        assert_eq!(
            m.replication,
            LeadershipConfig {
                lease_timeout: Duration::from_secs(2),
                check_interval: Duration::from_millis(200),
                takeover_grace: Duration::from_secs(1)
            }
        );
        assert_eq!((m.public_api.max_request_size, m.metrics.as_ref()), (4 * 1024 * 1024, None));
        assert_eq!(m.storage(cfg.storage.as_ref()).pool_size, 8, "the default of [storage]");
        let p = &cfg.participants["part1"];
        assert_eq!(p.health.check, HealthCheck::Ping, "set explicitly");
        assert_eq!(p.public_api.max_request_size, 1024);
        assert_eq!(p.metrics.as_ref().map(|m| m.address.port()), Some(4024));
        assert_eq!(
            p.replication,
            LeadershipConfig {
                lease_timeout: Duration::from_secs(5),
                check_interval: Duration::from_millis(1500),
                takeover_grace: Duration::ZERO
            }
        );
        let s = p.storage(cfg.storage.as_ref());
        assert_eq!((s.url.as_deref(), s.pool_size), (Some("postgres://a@h/db"), 2));
        assert_eq!((cfg.kind_of("part1"), cfg.kind_of("nope")), (Some(NodeKind::Participant), None));
        // A configuration of replicated nodes only is complete.
        let c = write(d.path(), "c.toml", &format!("{STORAGE}{MEDIATOR}"));
        assert_eq!(load(&[c]).unwrap().nodes().len(), 1);
    }

    #[test]
    fn unknown_keys_of_replicated_nodes_are_errors_naming_key_and_file() {
        let d = tempfile::tempdir().unwrap();
        let a =
            write(d.path(), "a.toml", &format!("{STORAGE}{MEDIATOR}[mediators.med1.replication]\nlease = \"1s\"\n"));
        let e = load(std::slice::from_ref(&a)).unwrap_err().to_string();
        assert!(
            e.contains("mediators.med1.replication") && e.contains("lease") && e.contains(&a.display().to_string()),
            "{e}"
        );
        let b = write(
            d.path(),
            "b.toml",
            &format!("{STORAGE}{}", MEDIATOR.replace("4013\" }", "4013\", chek = \"ping\" }")),
        );
        let e = load(std::slice::from_ref(&b)).unwrap_err().to_string();
        assert!(
            e.contains("mediators.med1.health") && e.contains("chek") && e.contains(&b.display().to_string()),
            "{e}"
        );
        let c = write(d.path(), "c.toml", &format!("{STORAGE}{}", PARTICIPANT.replace("\"ping\"", "\"alive\"")));
        let e = load(&[c]).unwrap_err().to_string();
        assert!(e.contains("participants.part1.health") && e.contains("alive"), "{e}");
        let f = write(
            d.path(),
            "f.toml",
            &format!("{STORAGE}{PARTICIPANT}[participants.part1.replication]\ntakeover_grace = \"soon\"\n"),
        );
        let e = load(&[f]).unwrap_err().to_string();
        assert!(e.contains("participants.part1.replication.takeover_grace"), "{e}");
        let g = write(
            d.path(),
            "g.toml",
            &format!("{STORAGE}[observers.o1]\nadmin_api = {{ address = \"127.0.0.1:1\" }}\n"),
        );
        let e = load(&[g]).unwrap_err().to_string();
        assert!(e.contains("observers"), "{e}");
    }

    #[test]
    fn replication_timing_is_validated() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.toml", &format!("{STORAGE}{PARTICIPANT}[participants.part1.replication]\nlease_timeout = \"1s\"\ncheck_interval = \"2s\"\n"));
        let e = load(std::slice::from_ref(&a)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "participants.part1.replication.check_interval: 2s must be shorter than lease_timeout (1s) (in {})",
                a.display()
            )
        );
        let b = write(
            d.path(),
            "b.toml",
            &format!("{STORAGE}{MEDIATOR}[mediators.med1.replication]\nlease_timeout = \"100ms\"\n"),
        );
        let e = load(&[b]).unwrap_err().to_string();
        assert_eq!(
            e, "mediators.med1.replication.check_interval: 200ms must be shorter than lease_timeout (100ms)",
            "the default check_interval is set in no file"
        );
        let c = write(
            d.path(),
            "c.toml",
            &format!("{STORAGE}{MEDIATOR}[mediators.med1.replication]\ncheck_interval = \"0s\"\n"),
        );
        let e = load(&[c]).unwrap_err().to_string();
        assert!(e.starts_with("mediators.med1.replication.check_interval: must be positive"), "{e}");
    }

    #[test]
    fn names_and_addresses_are_unique_and_every_node_needs_storage() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.toml", &format!("{STORAGE}{PARTICIPANT}{}", MEDIATOR.replace("4013", "4023")));
        let e = load(&[a]).unwrap_err().to_string();
        assert!(e.starts_with("participants.part1.health.address: 127.0.0.1:4023 is already used by another listener (mediators.med1.health.address)"), "{e}");
        let b = write(d.path(), "b.toml", &format!("{STORAGE}{}", PARTICIPANT.replace("4024", "4021")));
        let e = load(&[b]).unwrap_err().to_string();
        assert!(e.starts_with("participants.part1.metrics.address: 127.0.0.1:4021 is already used by another listener (participants.part1.public_api.address)"), "{e}");
        let c = write(d.path(), "c.toml", &format!("{STORAGE}{MEDIATOR}{}", PARTICIPANT.replace("part1", "med1")));
        let e = load(&[c]).unwrap_err().to_string();
        assert!(e.starts_with("participants.med1: the name med1 is already used by mediator med1"), "{e}");
        let f = write(d.path(), "f.toml", MEDIATOR);
        let e = load(&[f]).unwrap_err().to_string();
        assert!(e.contains("mediators.med1.storage.url") && e.contains("no database url"), "{e}");
        let g = write(d.path(), "g.toml", &format!("{MEDIATOR}storage = {{ url = \"not a url\" }}\n"));
        let e = load(&[g]).unwrap_err().to_string();
        assert!(e.contains("mediators.med1.storage.url") && e.contains("is not a PostgreSQL connection string"), "{e}");
        let h = write(d.path(), "h.toml", STORAGE);
        assert!(load(&[h]).unwrap_err().to_string().contains("no node is configured"));
    }

    #[test]
    fn admin_apis_listen_on_localhost_given_a_port_and_tls_files_are_checked_at_load() {
        let d = tempfile::tempdir().unwrap();
        let certs = crate::tls::dev::write_dev_certs(
            &d.path().join("certs"),
            &["med1".into(), "other".into()],
            &crate::tls::dev::LOCAL_HOSTS,
        )
        .unwrap();
        let node = |admin: &str, tls: &str| {
            format!("{STORAGE}[mediators.med1]\npublic_api = {{ address = \"127.0.0.1:4011\"{tls} }}\nadmin_api = {admin}\nhealth = {{ address = \"127.0.0.1:4013\"{tls} }}\n")
        };
        let tls = |cert: &std::path::Path, key: &std::path::Path| {
            format!(", tls = {{ cert = \"{}\", key = \"{}\" }}", cert.display(), key.display())
        };
        let good = tls(&certs.cert("med1"), &certs.key("med1"));
        let admin_mtls = format!(
            "{{ port = 4012, tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }} }}",
            certs.cert("med1").display(),
            certs.key("med1").display(),
            certs.ca.display()
        );
        let a = write(d.path(), "a.toml", &node(&admin_mtls, &good));
        let cfg = load(&[a]).unwrap();
        let m = &cfg.mediators["med1"];
        assert_eq!(m.admin_api.address, "127.0.0.1:4012".parse().unwrap(), "a port alone listens on localhost");
        assert!(m.admin_api.requires_client_certificates());
        assert_eq!(m.health.tls.as_ref().map(|t| t.cert.clone()), Some(certs.cert("med1")));
        let b = write(d.path(), "b.toml", &node("{ address = \"0.0.0.0:4012\" }", ""));
        assert_eq!(load(&[b]).unwrap().mediators["med1"].admin_api.address, "0.0.0.0:4012".parse().unwrap());
        let c = write(d.path(), "c.toml", &node("{ address = \"0.0.0.0:4012\", port = 1 }", ""));
        let e = load(&[c]).unwrap_err().to_string();
        assert!(e.contains("mediators.med1.admin_api") && e.contains("not both"), "{e}");

        let missing = d.path().join("missing.pem");
        let f = write(d.path(), "f.toml", &node("{ port = 4012 }", &tls(&missing, &certs.key("med1"))));
        let e = load(std::slice::from_ref(&f)).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("mediators.med1.public_api.tls.cert: {}: cannot read: ", missing.display())),
            "{e}"
        );
        assert!(e.ends_with(&format!("(in {})", f.display())), "{e}");
        let g = write(d.path(), "g.toml", &node("{ port = 4012 }", &tls(&certs.cert("med1"), &certs.key("other"))));
        let e = load(std::slice::from_ref(&g)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "mediators.med1.public_api.tls.key: {}: the private key does not belong to the certificate in {} (in {})",
                certs.key("other").display(),
                certs.cert("med1").display(),
                g.display()
            )
        );
    }
}
