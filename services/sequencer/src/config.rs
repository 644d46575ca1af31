//! The `[sequencers.NAME]` section of the configuration: the sections every node has, and the
//! sequencer's own (`high_availability`, `writer`, `reader`). Defaults are those of
//! [`SequencerSettings`], and so is the validation, so that the daemon refuses at load what
//! [`Sequencer::start`](crate::Sequencer::start) would.

use std::time::Duration;

use serde::Deserialize;
use syncline_node::config::{
    ApiConfig, CommonSections, HealthConfig, InvalidKey, MetricsConfig, NodeSection, PublicApiConfig, StorageOverride,
};

use crate::{MemberAuth, SequencerSettings};

/// One sequencer node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SequencerConfig {
    /// Overrides of the default `[storage]`.
    pub storage: Option<StorageOverride>,
    /// Public gRPC API.
    pub public_api: PublicApiConfig,
    /// Admin gRPC API.
    pub admin_api: ApiConfig,
    /// Health and metrics HTTP server.
    pub health: HealthConfig,
    /// Optional extra metrics listener.
    pub metrics: Option<MetricsConfig>,
    /// `"required"` (default): every public call carries the token of the member it acts as
    /// (`authorization: Bearer <token>`, issued by `syncline admin register-member`,
    /// `bootstrap` or `join-participant`); `"off"`: anyone reaching the public API may act as
    /// any member, for trusted networks only.
    #[serde(default)]
    pub member_auth: MemberAuth,
    /// HA parameters.
    #[serde(default)]
    pub high_availability: HaConfig,
    /// Writer parameters.
    #[serde(default)]
    pub writer: WriterConfig,
    /// Reader parameters.
    #[serde(default)]
    pub reader: ReaderConfig,
}

/// Sequencer HA parameters.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// `N` of timestamp partitioning (< 32, the same on every node).
    pub total_node_count: u32,
    /// Idle watermark advance.
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    /// Period of the liveness check.
    #[serde(with = "humantime_serde")]
    pub online_check_interval: Duration,
    /// Watermark age after which a node is knocked offline.
    #[serde(with = "humantime_serde")]
    pub offline_duration: Duration,
    /// Longest wait for this host's clock to reach the highest watermark before going online.
    #[serde(with = "humantime_serde")]
    pub max_clock_wait: Duration,
}

/// Sequencer writer parameters.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Sends waiting for the writer.
    pub queue_size: usize,
    /// Most sends per transaction.
    pub max_batch_size: usize,
    /// Unanswered sends per SendStream before the node stops reading it (default 256).
    pub send_stream_window: usize,
    /// Writer lanes per process (1..=4, default 1), each with its own node index: counted
    /// against `high_availability.total_node_count`.
    pub writer_lanes: u32,
    /// Largest distance of a max-sequencing-time into the future.
    #[serde(with = "humantime_serde")]
    pub max_sequencing_horizon: Duration,
    /// Accept a database with `synchronous_commit = off` (can lose delivered events on a
    /// PostgreSQL crash): throwaway test databases only.
    pub allow_unsafe_commit: bool,
}

/// Sequencer reader parameters.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReaderConfig {
    /// Events per read.
    pub read_batch_size: u32,
    /// Fallback re-read period when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub polling_interval: Duration,
    /// A caught-up subscription reads at most once per this interval (default 2 ms; "0s" reads
    /// at every notification).
    #[serde(with = "humantime_serde")]
    pub read_spacing: Duration,
    /// Bytes of events buffered per subscription for a slow client (default 8 MiB).
    pub subscription_buffer_bytes: usize,
    /// Subscriptions served at once; beyond it RESOURCE_EXHAUSTED (default 1000).
    pub max_subscriptions: usize,
}

// The defaults of every section are those of `SequencerSettings`, their one source.

impl Default for HaConfig {
    fn default() -> Self {
        let s = SequencerSettings::default();
        HaConfig {
            total_node_count: s.total_node_count,
            keep_alive_interval: s.keep_alive_interval,
            online_check_interval: s.online_check_interval,
            offline_duration: s.offline_duration,
            max_clock_wait: s.max_clock_wait,
        }
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        let s = SequencerSettings::default();
        WriterConfig {
            queue_size: s.queue_size,
            max_batch_size: s.max_batch_size,
            send_stream_window: s.send_stream_window,
            writer_lanes: s.writer_lanes,
            max_sequencing_horizon: s.max_sequencing_horizon,
            allow_unsafe_commit: s.allow_unsafe_commit,
        }
    }
}

impl Default for ReaderConfig {
    fn default() -> Self {
        let s = SequencerSettings::default();
        ReaderConfig {
            read_batch_size: s.read_batch_size,
            polling_interval: s.polling_interval,
            read_spacing: s.read_spacing,
            subscription_buffer_bytes: s.subscription_buffer_bytes,
            max_subscriptions: s.max_subscriptions,
        }
    }
}

impl SequencerConfig {
    /// The sequencer's settings for node `name`.
    pub fn settings(&self, name: &str) -> SequencerSettings {
        let (ha, w, r) = (&self.high_availability, &self.writer, &self.reader);
        SequencerSettings {
            name: name.to_string(),
            total_node_count: ha.total_node_count,
            keep_alive_interval: ha.keep_alive_interval,
            online_check_interval: ha.online_check_interval,
            offline_duration: ha.offline_duration,
            polling_interval: r.polling_interval,
            read_spacing: r.read_spacing,
            queue_size: w.queue_size,
            max_batch_size: w.max_batch_size,
            send_stream_window: w.send_stream_window,
            writer_lanes: w.writer_lanes,
            read_batch_size: r.read_batch_size,
            subscription_buffer_bytes: r.subscription_buffer_bytes,
            max_subscriptions: r.max_subscriptions,
            max_request_size: self.public_api.max_request_size,
            max_sequencing_horizon: w.max_sequencing_horizon,
            max_clock_wait: ha.max_clock_wait,
            allow_unsafe_commit: w.allow_unsafe_commit,
            member_auth: self.member_auth,
            ..SequencerSettings::default()
        }
    }
}

impl NodeSection for SequencerConfig {
    fn common(&self) -> CommonSections<'_> {
        CommonSections {
            storage: self.storage.as_ref(),
            public_api: &self.public_api,
            admin_api: &self.admin_api,
            health: &self.health,
            metrics: self.metrics.as_ref(),
        }
    }

    fn validate(&self) -> Result<(), InvalidKey> {
        self.settings("").validate().map_err(|e| InvalidKey { key: key_of(e.field), problem: e.problem })
    }
}

/// Where this section sets a [`SequencerSettings`] field, below `sequencers.NAME`.
fn key_of(field: &str) -> String {
    let table = match field {
        "total_node_count"
        | "keep_alive_interval"
        | "online_check_interval"
        | "offline_duration"
        | "max_clock_wait" => "high_availability",
        "queue_size"
        | "max_batch_size"
        | "send_stream_window"
        | "writer_lanes"
        | "max_sequencing_horizon"
        | "write_timeout" => "writer",
        "max_request_size" => "public_api",
        _ => "reader",
    };
    format!("{table}.{field}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use syncline_node::config::{nodes_of, ConfigError, HealthCheck, NodeKind, NodeRef, NodesConfig, StorageConfig};

    use super::*;

    /// A binary that runs sequencers only.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sequencers {
        storage: Option<StorageConfig>,
        #[serde(default)]
        sequencers: BTreeMap<String, SequencerConfig>,
    }

    impl NodesConfig for Sequencers {
        fn default_storage(&self) -> Option<&StorageConfig> {
            self.storage.as_ref()
        }
        fn nodes(&self) -> Vec<NodeRef<'_>> {
            nodes_of(NodeKind::Sequencer, &self.sequencers).collect()
        }
    }

    fn load(paths: &[PathBuf]) -> Result<Sequencers, ConfigError> {
        syncline_node::config::load(paths)
    }

    use syncline_testkit::files::write_file as write;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    const NODE: &str = r#"
[sequencers.seq1]
public_api = { address = "127.0.0.1:4001" }
admin_api = { address = "127.0.0.1:4002" }
health = { address = "127.0.0.1:4003" }
"#;

    const STORAGE: &str = "[storage]\nurl = \"postgres://a@h/db\"\n";

    #[test]
    fn defaults_are_the_settings_defaults() {
        let d = tmp();
        let a = write(d.path(), "a.toml", &format!("{STORAGE}{NODE}"));
        let s = load(&[a]).unwrap().sequencers["seq1"].settings("seq1");
        let defaults = SequencerSettings { name: "seq1".into(), ..SequencerSettings::default() };
        assert_eq!(format!("{s:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn files_merge_in_order_and_tables_merge_deeply() {
        let d = tmp();
        let a = write(d.path(), "storage.toml", "[storage]\nurl = \"postgres://a@h/db\"\npool_size = 4\n");
        let b =
            write(d.path(), "seq.toml", &format!("{NODE}[sequencers.seq1.high_availability]\ntotal_node_count = 5\n"));
        let c = write(
            d.path(),
            "override.toml",
            "[storage]\npool_size = 16\n[sequencers.seq1.high_availability]\nkeep_alive_interval = \"20ms\"\n",
        );
        let cfg = load(&[a, b, c]).unwrap();
        let s = cfg.storage.as_ref().unwrap();
        assert_eq!((s.url.as_deref(), s.pool_size), (Some("postgres://a@h/db"), 16));
        let ha = &cfg.sequencers["seq1"].high_availability;
        assert_eq!(ha.total_node_count, 5, "kept from the earlier file");
        assert_eq!(ha.keep_alive_interval, Duration::from_millis(20), "set by the later file");
        assert_eq!(ha.offline_duration, Duration::from_secs(8), "default");
        assert_eq!(cfg.sequencers["seq1"].health.check, HealthCheck::Ping);
    }

    #[test]
    fn member_auth_is_required_unless_turned_off_and_other_values_are_refused() {
        let d = tmp();
        let a = write(d.path(), "a.toml", &format!("{STORAGE}{NODE}"));
        assert_eq!(load(&[a]).unwrap().sequencers["seq1"].settings("seq1").member_auth, MemberAuth::Required);
        let b = write(d.path(), "b.toml", &format!("{STORAGE}{NODE}member_auth = \"off\"\n"));
        assert_eq!(load(&[b]).unwrap().sequencers["seq1"].settings("seq1").member_auth, MemberAuth::Off);
        let c = write(d.path(), "c.toml", &format!("{STORAGE}{NODE}member_auth = \"optional\"\n"));
        let e = load(std::slice::from_ref(&c)).unwrap_err().to_string();
        assert!(
            e.contains("sequencers.seq1.member_auth") && e.contains("`optional`") && e.contains("`required` or `off`"),
            "{e}"
        );
        assert!(e.contains(&c.display().to_string()), "{e}");
    }

    #[test]
    fn per_node_storage_overrides_the_default() {
        let d = tmp();
        let a = write(
            d.path(),
            "a.toml",
            &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}storage = {{ url = \"postgres://b@h/other\" }}\n"),
        );
        let cfg = load(&[a]).unwrap();
        let s = cfg.sequencers["seq1"].storage(cfg.storage.as_ref());
        assert_eq!(s.url.as_deref(), Some("postgres://b@h/other"));
        assert_eq!(s.pool_size, 8);
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_and_file() {
        let d = tmp();
        let a = write(d.path(), "storage.toml", "[storage]\nurl = \"postgres://a@h/db\"\n");
        let b = write(d.path(), "typo.toml", &format!("{NODE}[sequencers.seq1.high_availability]\ntotal_nodes = 3\n"));
        let e = load(&[a, b.clone()]).unwrap_err().to_string();
        assert!(e.contains("sequencers.seq1.high_availability") && e.contains("total_nodes"), "{e}");
        assert!(e.contains(&b.display().to_string()), "{e}");
    }

    #[test]
    fn wrong_types_and_bad_values_are_explained() {
        let d = tmp();
        let a = write(d.path(), "a.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}[sequencers.seq1.high_availability]\ntotal_node_count = \"ten\"\n"));
        let e = load(&[a]).unwrap_err().to_string();
        assert!(e.contains("sequencers.seq1.high_availability.total_node_count"), "{e}");
        let b = write(d.path(), "b.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}[sequencers.seq1.high_availability]\ntotal_node_count = 40\n"));
        let e = load(std::slice::from_ref(&b)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "sequencers.seq1.high_availability.total_node_count: 40 is not between 1 and 31 (in {})",
                b.display()
            )
        );
        let c = write(d.path(), "c.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}[sequencers.seq1.writer]\nmax_sequencing_horizon = \"soon\"\n"));
        assert!(load(&[c]).unwrap_err().to_string().contains("max_sequencing_horizon"));
        let s = write(d.path(), "s.toml", "[storage\nurl = 1");
        let e = load(std::slice::from_ref(&s)).unwrap_err().to_string();
        assert!(e.starts_with(&s.display().to_string()), "{e}");
    }

    #[test]
    fn zero_intervals_are_refused_at_load_naming_key_and_file() {
        let d = tmp();
        let seq = |name: &str, table: &str, body: &str| {
            write(d.path(), name, &format!("{STORAGE}{NODE}[sequencers.seq1.{table}]\n{body}\n"))
        };
        let a = seq("a.toml", "high_availability", "online_check_interval = \"0s\"");
        assert_eq!(
            load(std::slice::from_ref(&a)).unwrap_err().to_string(),
            format!("sequencers.seq1.high_availability.online_check_interval: must be positive (in {})", a.display())
        );
        let b = seq("b.toml", "high_availability", "keep_alive_interval = \"0ms\"");
        assert_eq!(
            load(std::slice::from_ref(&b)).unwrap_err().to_string(),
            format!("sequencers.seq1.high_availability.keep_alive_interval: must be positive (in {})", b.display())
        );
        for (table, body, key) in [
            ("reader", "polling_interval = \"0s\"", "reader.polling_interval"),
            ("reader", "read_batch_size = 0", "reader.read_batch_size"),
            ("writer", "queue_size = 0", "writer.queue_size"),
            ("writer", "max_batch_size = 0", "writer.max_batch_size"),
            ("writer", "writer_lanes = 0", "writer.writer_lanes"),
            ("writer", "writer_lanes = 5", "writer.writer_lanes"),
            ("writer", "max_sequencing_horizon = \"0s\"", "writer.max_sequencing_horizon"),
            ("high_availability", "offline_duration = \"0s\"", "high_availability.offline_duration"),
            ("high_availability", "online_check_interval = \"100000years\"", "high_availability.online_check_interval"),
            ("high_availability", "keep_alive_interval = \"10s\"", "high_availability.keep_alive_interval"),
        ] {
            let f = seq("c.toml", table, body);
            let e = load(std::slice::from_ref(&f)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("sequencers.seq1.{key}: ")) && e.ends_with(&format!("(in {})", f.display())),
                "{body}: {e}"
            );
        }
        let e = seq("e.toml", "high_availability", "keep_alive_interval = \"10s\"");
        let e = load(&[e]).unwrap_err().to_string();
        assert!(e.contains("10s must be shorter than offline_duration (8s)"), "{e}");
        let p = write(d.path(), "p.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\npool_size = 0\n{NODE}"));
        assert_eq!(
            load(std::slice::from_ref(&p)).unwrap_err().to_string(),
            format!("storage.pool_size: must be positive (in {})", p.display())
        );
        let q = write(d.path(), "q.toml", &format!("{STORAGE}{NODE}storage = {{ connect_timeout = \"0s\" }}\n"));
        let e = load(std::slice::from_ref(&q)).unwrap_err().to_string();
        assert_eq!(e, format!("sequencers.seq1.storage.connect_timeout: must be positive (in {})", q.display()));
        let r = write(
            d.path(),
            "r.toml",
            &format!("{STORAGE}{}", NODE.replace("4001\" }", "4001\", max_request_size = 0 }")),
        );
        let e = load(std::slice::from_ref(&r)).unwrap_err().to_string();
        assert_eq!(e, format!("sequencers.seq1.public_api.max_request_size: must be positive (in {})", r.display()));
    }

    #[test]
    fn missing_storage_duplicate_addresses_and_empty_configs_are_refused() {
        let d = tmp();
        let a = write(d.path(), "a.toml", NODE);
        let e = load(&[a]).unwrap_err().to_string();
        assert!(e.contains("sequencers.seq1.storage.url") && e.contains("no database url"), "{e}");
        let b = write(d.path(), "b.toml", &format!("[storage]\nurl = \"postgres://a@h/db\"\n{NODE}[sequencers.seq2]\npublic_api = {{ address = \"127.0.0.1:4001\" }}\nadmin_api = {{ address = \"127.0.0.1:5002\" }}\nhealth = {{ address = \"127.0.0.1:5003\" }}\n"));
        let e = load(&[b]).unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:4001 is already used"), "{e}");
        let c = write(d.path(), "c.toml", "[storage]\nurl = \"postgres://a@h/db\"\n");
        assert!(load(&[c]).unwrap_err().to_string().contains("no node is configured"));
        let e = load(&[d.path().join("missing.toml")]).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
