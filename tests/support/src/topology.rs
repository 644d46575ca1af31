//! A topology of `syncline daemon` processes of any kind for system tests: each node gets
//! fresh loopback ports and its own config file (plus a shared storage file), and can be
//! started, killed with SIGKILL, stopped with SIGTERM and restarted by name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::{free_port, write_file, Daemon};

/// The kind of a node, as its config table names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `[sequencers.NAME]`.
    Sequencer,
    /// `[mediators.NAME]`.
    Mediator,
    /// `[participants.NAME]`.
    Participant,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::Sequencer => "sequencers",
            Kind::Mediator => "mediators",
            Kind::Participant => "participants",
        }
    }
}

/// One node of a topology: its kind, name, addresses and config section.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Its kind.
    pub kind: Kind,
    /// Its name (unique in the topology).
    pub name: String,
    /// Public gRPC API.
    pub public: SocketAddr,
    /// Admin gRPC API.
    pub admin: SocketAddr,
    /// HTTP health and metrics.
    pub health: SocketAddr,
    /// Further lines of its section (TOML, e.g. `member = "m"` or a `storage` override).
    pub extra: String,
    /// TLS on every listener, if set.
    pub tls: Option<NodeTls>,
}

/// The TLS files of a node: its certificate and key, and the CA that signed them (what its
/// clients trust).
#[derive(Clone, Debug)]
pub struct NodeTls {
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// The node's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl NodeSpec {
    /// A node of `kind` named `name` on fresh loopback ports.
    pub fn new(kind: Kind, name: &str) -> NodeSpec {
        let a = |p| SocketAddr::from(([127, 0, 0, 1], p));
        NodeSpec {
            kind,
            name: name.into(),
            public: a(free_port()),
            admin: a(free_port()),
            health: a(free_port()),
            extra: String::new(),
            tls: None,
        }
    }

    /// Serve TLS with `tls` on every listener.
    pub fn with_tls(mut self, tls: NodeTls) -> NodeSpec {
        self.tls = Some(tls);
        self
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Append `lines` to its section.
    pub fn with(mut self, lines: &str) -> NodeSpec {
        self.extra.push_str(lines);
        if !lines.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// Its config section. Sequencers check `ping`, replicated nodes `is-active` (their
    /// default).
    pub fn toml(&self) -> String {
        let check = if self.kind == Kind::Sequencer { ", check = \"ping\"" } else { "" };
        let tls = match &self.tls {
            Some(t) => format!(", tls = {{ cert = \"{}\", key = \"{}\" }}", t.cert.display(), t.key.display()),
            None => String::new(),
        };
        format!(
            "[{t}.{n}]\npublic_api = {{ address = \"{p}\"{tls} }}\nadmin_api = {{ address = \"{a}\"{tls} }}\n\
             health = {{ address = \"{h}\"{check}{tls} }}\n{extra}",
            t = self.kind.table(),
            n = self.name,
            p = self.public,
            a = self.admin,
            h = self.health,
            extra = self.extra,
        )
    }

    /// Its config section followed by `extra` (further TOML lines or tables of the node).
    pub fn section(&self, extra: &str) -> String {
        format!("{}{extra}\n", self.toml())
    }

    /// URL of the public API (`https://` with TLS).
    pub fn public_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.public)
    }

    /// URL of the admin API (`https://` with TLS).
    pub fn admin_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.admin)
    }

    /// Its lines in a remote configuration for `syncline admin` (with its CA under TLS).
    pub fn remote_toml(&self) -> String {
        let ca = self.tls.as_ref().map(|t| format!("ca = \"{}\"\n", t.ca.display())).unwrap_or_default();
        format!("[{}.{}]\nadmin_api = \"{}\"\n{ca}", self.kind.table(), self.name, self.admin)
    }
}

/// Nodes with their config files in one directory, and the processes running them.
pub struct Topology {
    bin: PathBuf,
    dir: PathBuf,
    storage: PathBuf,
    nodes: BTreeMap<String, (NodeSpec, PathBuf)>,
    running: BTreeMap<String, Daemon>,
}

impl Topology {
    /// A topology of `bin` (a `syncline` binary) whose files live in `dir`, with `[storage]`
    /// `url = storage_url` as every node's default database.
    pub fn new(bin: &Path, dir: &Path, storage_url: &str) -> Topology {
        let storage = write_file(dir, "storage.toml", &format!("[storage]\nurl = \"{storage_url}\"\n"));
        Topology { bin: bin.into(), dir: dir.into(), storage, nodes: BTreeMap::new(), running: BTreeMap::new() }
    }

    /// Add `node` (its config file is written now); returns it.
    pub fn add(&mut self, node: NodeSpec) -> NodeSpec {
        let file = write_file(&self.dir, &format!("{}.toml", node.name), &node.toml());
        self.nodes.insert(node.name.clone(), (node.clone(), file));
        node
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &NodeSpec {
        &self.nodes.get(name).unwrap_or_else(|| panic!("no node {name} in the topology")).0
    }

    /// Every node of `kind`, by name.
    pub fn of(&self, kind: Kind) -> Vec<&NodeSpec> {
        self.nodes.values().map(|(n, _)| n).filter(|n| n.kind == kind).collect()
    }

    /// A remote configuration of every node, for `syncline admin --config`.
    pub fn remote_config(&self) -> PathBuf {
        let text: String = self.nodes.values().map(|(n, _)| n.remote_toml()).collect();
        write_file(&self.dir, "remote.toml", &text)
    }

    /// Start node `name` (`syncline daemon --config storage.toml,<name>.toml`).
    pub fn start(&mut self, name: &str) {
        let file = self.nodes.get(name).unwrap_or_else(|| panic!("no node {name} in the topology")).1.clone();
        let daemon = Daemon::start(&self.bin, &self.dir, name, &[self.storage.clone(), file]);
        assert!(self.running.insert(name.into(), daemon).is_none(), "{name} was already running");
    }

    /// Start every node, in name order.
    pub fn start_all(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in names {
            self.start(&n);
        }
    }

    /// SIGKILL node `name`.
    pub fn kill9(&mut self, name: &str) {
        let mut d = self.running.remove(name).unwrap_or_else(|| panic!("{name} is not running"));
        d.kill9();
    }

    /// SIGTERM node `name` and wait for it to exit; its exit status.
    pub fn terminate(&mut self, name: &str) -> std::process::ExitStatus {
        let mut d = self.running.remove(name).unwrap_or_else(|| panic!("{name} is not running"));
        d.terminate()
    }

    /// Whether node `name` runs (as far as this topology knows).
    pub fn is_running(&self, name: &str) -> bool {
        self.running.contains_key(name)
    }

    /// Node `name`'s log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_section_per_node_and_a_remote_config() {
        let dir = crate::TempDir::new("topology");
        let mut t = Topology::new(Path::new("/bin/true"), dir.path(), "postgres://u@h/db");
        let s1 = t.add(NodeSpec::new(Kind::Sequencer, "s1"));
        let m1 = t.add(
            NodeSpec::new(Kind::Mediator, "m1")
                .with(&format!("member = \"mediator\"\nsequencer = {{ endpoints = [\"{}\"] }}", s1.public_url())),
        );
        let text = std::fs::read_to_string(dir.path().join("m1.toml")).unwrap();
        assert!(text.starts_with("[mediators.m1]\n") && text.contains("member = \"mediator\"\n"), "{text}");
        assert!(!text.contains("check"), "replicated nodes keep their is-active default: {text}");
        assert!(std::fs::read_to_string(dir.path().join("s1.toml")).unwrap().contains("check = \"ping\""));
        let remote = std::fs::read_to_string(t.remote_config()).unwrap();
        assert!(remote.contains(&format!("[mediators.m1]\nadmin_api = \"{}\"", m1.admin)), "{remote}");
        assert_eq!(t.of(Kind::Mediator).len(), 1);
        assert_ne!(s1.public, m1.public);
    }
}
