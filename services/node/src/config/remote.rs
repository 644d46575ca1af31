//! The configuration of `syncline admin`: admin addresses of nodes of every kind.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::NodeKind;

/// Addresses of nodes to administer (`syncline admin`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Sequencers by name.
    #[serde(default)]
    pub sequencers: BTreeMap<String, RemoteNode>,
    /// Mediator replicas by name.
    #[serde(default)]
    pub mediators: BTreeMap<String, RemoteNode>,
    /// Participant replicas by name.
    #[serde(default)]
    pub participants: BTreeMap<String, RemoteNode>,
    /// TLS files of every node that does not set its own.
    #[serde(default)]
    pub tls: RemoteTls,
}

/// The `[tls]` of a remote configuration: defaults of the nodes' `ca`, `client_cert` and
/// `client_key`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteTls {
    /// PEM file with the CA of the nodes' admin API certificates.
    pub ca: Option<PathBuf>,
    /// PEM file with the client certificate (for admin APIs requiring one).
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client certificate's key.
    pub client_key: Option<PathBuf>,
}

impl RemoteConfig {
    /// Every node with its kind: sequencers, then mediators, then participants.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeKind, &String, &RemoteNode)> {
        let kind = |k: NodeKind| move |(n, r)| (k, n, r);
        self.sequencers
            .iter()
            .map(kind(NodeKind::Sequencer))
            .chain(self.mediators.iter().map(kind(NodeKind::Mediator)))
            .chain(self.participants.iter().map(kind(NodeKind::Participant)))
    }

    /// The node called `name`, of any kind.
    pub fn node(&self, name: &str) -> Option<&RemoteNode> {
        self.nodes().find(|(_, n, _)| n.as_str() == name).map(|(_, _, r)| r)
    }
}

/// One node's admin address and the TLS files to reach it (unset ones from `[tls]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteNode {
    /// `host:port` of its admin API (`https://` when a `ca` is given), or a URL.
    pub admin_api: String,
    /// PEM file with the CA of its certificate: connect over TLS.
    pub ca: Option<PathBuf>,
    /// PEM file with a client certificate (for an admin API with `tls.client_ca`).
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client certificate's key.
    pub client_key: Option<PathBuf>,
}

impl RemoteNode {
    /// Plaintext at `admin_api`.
    pub fn plain(admin_api: impl Into<String>) -> RemoteNode {
        RemoteNode { admin_api: admin_api.into(), ca: None, client_cert: None, client_key: None }
    }

    /// The URL of its admin API: `admin_api` as given when it has a scheme, else `https://`
    /// with a CA and `http://` without.
    pub fn url(&self) -> String {
        match (self.admin_api.contains("://"), &self.ca) {
            (true, _) => self.admin_api.clone(),
            (false, Some(_)) => format!("https://{}", self.admin_api),
            (false, None) => format!("http://{}", self.admin_api),
        }
    }
}

impl RemoteConfig {
    /// Fill the TLS files every node leaves unset from `[tls]`.
    pub(crate) fn apply_tls_defaults(mut self) -> Self {
        let d = self.tls.clone();
        for nodes in [&mut self.sequencers, &mut self.mediators, &mut self.participants] {
            for n in nodes.values_mut() {
                n.ca = n.ca.take().or_else(|| d.ca.clone());
                n.client_cert = n.client_cert.take().or_else(|| d.client_cert.clone());
                n.client_key = n.client_key.take().or_else(|| d.client_key.clone());
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::config::load_remote;

    use syncline_testkit::files::write_file as write;

    #[test]
    fn remote_configs_list_admin_addresses() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "r.toml",
            "[sequencers.a]\nadmin_api = \"127.0.0.1:1\"\n[sequencers.b]\nadmin_api = \"127.0.0.1:2\"\n",
        );
        let r = load_remote(&[a]).unwrap();
        assert_eq!(r.sequencers.len(), 2);
    }

    #[test]
    fn remote_config_lists_nodes_of_every_kind_and_refuses_unknown_keys() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "remote.toml", "[sequencers.s1]\nadmin_api = \"h1:1\"\n[mediators.m1]\nadmin_api = \"h2:2\"\n[participants.p1]\nadmin_api = \"h3:3\"\n");
        let r = load_remote(&[f]).unwrap();
        let names: Vec<(NodeKind, &str)> = r.nodes().map(|(k, n, _)| (k, n.as_str())).collect();
        assert_eq!(names, vec![(NodeKind::Sequencer, "s1"), (NodeKind::Mediator, "m1"), (NodeKind::Participant, "p1")]);
        assert_eq!(r.node("m1").unwrap().admin_api, "h2:2");
        assert_eq!(r.node("m1").unwrap().url(), "http://h2:2");
        let t = write(d.path(), "tls.toml", "[tls]\nca = \"ca.pem\"\n[mediators.m1]\nadmin_api = \"h2:2\"\nclient_cert = \"op.pem\"\nclient_key = \"op.key\"\n[sequencers.s1]\nadmin_api = \"h1:1\"\nca = \"other.pem\"\n");
        let r = load_remote(&[t]).unwrap();
        let m1 = r.node("m1").unwrap();
        assert_eq!((m1.url().as_str(), m1.ca.as_deref()), ("https://h2:2", Some(std::path::Path::new("ca.pem"))));
        assert_eq!(m1.client_key.as_deref(), Some(std::path::Path::new("op.key")));
        assert_eq!(r.node("s1").unwrap().ca.as_deref(), Some(std::path::Path::new("other.pem")), "a node's own wins");
        let bad = write(d.path(), "bad.toml", "[mediators.m1]\nadmin = \"h2:2\"\n");
        let e = load_remote(&[bad]).unwrap_err().to_string();
        assert!(e.contains("admin"), "{e}");
    }
}
