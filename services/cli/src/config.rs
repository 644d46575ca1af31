//! The configuration of `syncline daemon`: the default `[storage]` and the nodes of every
//! kind, each kind's section owned by its service; loaded by the node runtime's loader.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use syncline_mediator::config::MediatorConfig;
use syncline_node::config::{nodes_of, ConfigError, NodeKind, NodeRef, NodesConfig, StorageConfig};
use syncline_participant::config::ParticipantConfig;
use syncline_sequencer::config::SequencerConfig;

/// A whole configuration: default storage and the nodes of this process.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default storage of every node.
    pub storage: Option<StorageConfig>,
    /// Sequencer nodes by name.
    #[serde(default)]
    pub sequencers: BTreeMap<String, SequencerConfig>,
    /// Mediator nodes by name.
    #[serde(default)]
    pub mediators: BTreeMap<String, MediatorConfig>,
    /// Participant nodes by name.
    #[serde(default)]
    pub participants: BTreeMap<String, ParticipantConfig>,
}

impl NodesConfig for Config {
    fn default_storage(&self) -> Option<&StorageConfig> {
        self.storage.as_ref()
    }

    /// Sequencers, then mediators, then participants, each by name.
    fn nodes(&self) -> Vec<NodeRef<'_>> {
        nodes_of(NodeKind::Sequencer, &self.sequencers)
            .chain(nodes_of(NodeKind::Mediator, &self.mediators))
            .chain(nodes_of(NodeKind::Participant, &self.participants))
            .collect()
    }
}

/// Load and validate the configuration from `paths`, merged in order.
pub fn load(paths: &[PathBuf]) -> Result<Config, ConfigError> {
    syncline_node::config::load(paths)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use syncline_coordination::leadership::LeadershipConfig;
    use syncline_node::config::{HealthCheck, NodeSection};

    use super::*;

    use syncline_testkit::files::write_file as write;

    const NODE: &str = r#"
[sequencers.seq1]
public_api = { address = "127.0.0.1:4001" }
admin_api = { address = "127.0.0.1:4002" }
health = { address = "127.0.0.1:4003" }
"#;

    const MEDIATOR: &str = r#"
[mediators.med1]
public_api = { address = "127.0.0.1:4011" }
admin_api = { address = "127.0.0.1:4012" }
health = { address = "127.0.0.1:4013" }
sequencer = { endpoints = ["http://127.0.0.1:4001"] }
"#;

    const PARTICIPANT: &str = r#"
[participants.part1]
public_api = { address = "127.0.0.1:4021", max_request_size = 1024 }
admin_api = { address = "127.0.0.1:4022" }
health = { address = "127.0.0.1:4023", check = "ping" }
metrics = { address = "127.0.0.1:4024" }
sequencer = { endpoints = ["http://127.0.0.1:4001"] }
"#;

    const STORAGE: &str = "[storage]\nurl = \"postgres://a@h/db\"\n";

    #[test]
    fn mediators_and_participants_are_replicated_nodes_with_defaults() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "a.toml",
            &format!("{STORAGE}{NODE}{MEDIATOR}{PARTICIPANT}storage = {{ pool_size = 2 }}\n"),
        );
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
        assert_eq!(
            (m.member("med1"), m.sequencer.endpoints.len()),
            ("med1", 1),
            "the member defaults to the node's name"
        );
        assert_eq!(m.mediator, syncline_mediator::config::MediatorParameters::default());
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
        assert_eq!((p.member("part1"), p.sequencer.endpoints.len()), ("part1", 1));
        assert_eq!(p.participant, syncline_participant::config::ParticipantParameters::default());
        assert_eq!(p.participant.max_deduplication_duration, Duration::from_secs(7 * 24 * 3600));
        let s = p.storage(cfg.storage.as_ref());
        assert_eq!((s.url.as_deref(), s.pool_size), (Some("postgres://a@h/db"), 2));
        assert_eq!(cfg.sequencers["seq1"].health.check, HealthCheck::Ping, "sequencers still default to ping");
        let nodes: Vec<_> = cfg.nodes().iter().map(|n| (n.kind, n.name)).collect();
        assert_eq!(
            nodes,
            [(NodeKind::Sequencer, "seq1"), (NodeKind::Mediator, "med1"), (NodeKind::Participant, "part1")]
        );
        assert_eq!((cfg.kind_of("part1"), cfg.kind_of("nope")), (Some(NodeKind::Participant), None));
        // A configuration of replicated nodes only is complete.
        let c = write(d.path(), "c.toml", &format!("{STORAGE}{MEDIATOR}"));
        assert_eq!(load(&[c]).unwrap().nodes().len(), 1);
    }

    #[test]
    fn a_mediator_needs_sequencer_urls_and_sane_parameters() {
        let d = tempfile::tempdir().unwrap();
        let endpoints = "sequencer = { endpoints = [\"http://127.0.0.1:4001\"] }\n";
        for (text, want) in [
            (
                MEDIATOR.replace(endpoints, "sequencer = { endpoints = [] }\n"),
                "mediators.med1.sequencer.endpoints: needs at least one URL",
            ),
            (
                MEDIATOR.replace(endpoints, "sequencer = { endpoints = [\"127.0.0.1:1\"] }\n"),
                "\"127.0.0.1:1\" is not an http:// or https:// URL",
            ),
            (
                format!("{MEDIATOR}[mediators.med1.mediator]\ntime_proof_delay = \"0s\"\n"),
                "mediators.med1.mediator.time_proof_delay: must be between",
            ),
            (format!("{MEDIATOR}[mediators.med1.mediator]\ntime_proof = \"1s\"\n"), "time_proof"),
            (
                MEDIATOR.replace(
                    endpoints,
                    "sequencer = { endpoints = [\"http://127.0.0.1:4001\"], token = \"t\", token_file = \"/t\" }\n",
                ),
                "mediators.med1.sequencer.token: give either token or token_file, not both",
            ),
            (
                MEDIATOR.replace(endpoints, "sequencer = { endpoints = [\"http://127.0.0.1:4001\"], token = \" \" }\n"),
                "mediators.med1.sequencer.token: is empty",
            ),
            (
                MEDIATOR
                    .replace(endpoints, "sequencer = { endpoints = [\"http://127.0.0.1:4001\"], tokens = \"t\" }\n"),
                "tokens",
            ),
        ] {
            let f = write(d.path(), "m.toml", &format!("{STORAGE}{text}"));
            let e = load(&[f]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn a_participant_needs_sequencer_urls_and_sane_parameters() {
        let d = tempfile::tempdir().unwrap();
        let endpoints = "sequencer = { endpoints = [\"http://127.0.0.1:4001\"] }\n";
        for (text, want) in [
            (PARTICIPANT.replace(endpoints, ""), "sequencer"),
            (
                PARTICIPANT.replace(endpoints, "sequencer = { endpoints = [] }\n"),
                "participants.part1.sequencer.endpoints: needs at least one URL",
            ),
            (
                format!("{PARTICIPANT}[participants.part1.participant]\nmax_deduplication_duration = \"0s\"\n"),
                "participants.part1.participant.max_deduplication_duration: must be positive",
            ),
            (format!("{PARTICIPANT}[participants.part1.participant]\nmax_dedup = \"1s\"\n"), "max_dedup"),
        ] {
            let f = write(d.path(), "p.toml", &format!("{STORAGE}{text}"));
            let e = load(&[f]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let f = write(
            d.path(),
            "q.toml",
            &format!("{STORAGE}{PARTICIPANT}[participants.part1.participant]\nmax_deduplication_duration = \"1h\"\n"),
        );
        let p = &load(&[f]).unwrap().participants["part1"];
        assert_eq!(p.participant.max_deduplication_duration, Duration::from_secs(3600));
    }

    #[test]
    fn the_test_kit_topology_writes_configurations_the_daemon_loads() {
        use syncline_testkit::{Kind, NodeSpec, Topology};
        let d = tempfile::tempdir().unwrap();
        let mut t = Topology::new(std::path::Path::new("/bin/true"), d.path(), "postgres://u@h/db");
        let s1 = t.add(NodeSpec::new(Kind::Sequencer, "s1"));
        let endpoints = format!("sequencer = {{ endpoints = [\"{}\"] }}", s1.public_url());
        t.add(NodeSpec::new(Kind::Mediator, "m1").with(&format!("member = \"mediator\"\n{endpoints}")));
        t.add(NodeSpec::new(Kind::Mediator, "m2").with(&format!("member = \"mediator\"\n{endpoints}")));
        let files: Vec<_> =
            ["storage.toml", "s1.toml", "m1.toml", "m2.toml"].iter().map(|f| d.path().join(f)).collect();
        let cfg = load(&files).unwrap();
        assert_eq!((cfg.sequencers.len(), cfg.mediators.len()), (1, 2));
        assert_eq!(cfg.mediators["m2"].member("m2"), "mediator");
        assert_eq!(cfg.mediators["m1"].health.check, HealthCheck::IsActive);
        let remote = syncline_node::config::load_remote(&[t.remote_config()]).unwrap();
        assert_eq!(remote.nodes().count(), 3);
    }

    #[test]
    fn unknown_top_level_tables_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let g = write(
            d.path(),
            "g.toml",
            &format!("{STORAGE}[observers.o1]\nadmin_api = {{ address = \"127.0.0.1:1\" }}\n"),
        );
        let e = load(&[g]).unwrap_err().to_string();
        assert!(e.contains("observers"), "{e}");
    }

    #[test]
    fn names_and_addresses_are_unique_across_node_kinds_and_replicated_nodes_need_storage() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.toml", &format!("{STORAGE}{NODE}{}", MEDIATOR.replace("4013", "4003")));
        let e = load(&[a]).unwrap_err().to_string();
        assert!(e.starts_with("mediators.med1.health.address: 127.0.0.1:4003 is already used by another listener (sequencers.seq1.health.address)"), "{e}");
        let b = write(d.path(), "b.toml", &format!("{STORAGE}{}", PARTICIPANT.replace("4024", "4021")));
        let e = load(&[b]).unwrap_err().to_string();
        assert!(e.starts_with("participants.part1.metrics.address: 127.0.0.1:4021 is already used by another listener (participants.part1.public_api.address)"), "{e}");
        let c = write(d.path(), "c.toml", &format!("{STORAGE}{NODE}{}", PARTICIPANT.replace("part1", "seq1")));
        let e = load(&[c]).unwrap_err().to_string();
        assert!(e.starts_with("participants.seq1: the name seq1 is already used by sequencer seq1"), "{e}");
        let f = write(d.path(), "f.toml", MEDIATOR);
        let e = load(&[f]).unwrap_err().to_string();
        assert!(e.contains("mediators.med1.storage.url") && e.contains("no database url"), "{e}");
        let g = write(d.path(), "g.toml", &format!("{MEDIATOR}storage = {{ url = \"not a url\" }}\n"));
        let e = load(&[g]).unwrap_err().to_string();
        assert!(e.contains("mediators.med1.storage.url") && e.contains("is not a PostgreSQL connection string"), "{e}");
    }
}
