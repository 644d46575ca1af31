//! The configuration of `syncline admin`: admin addresses of nodes of every kind.

use std::collections::BTreeMap;

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

/// One node's admin address.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteNode {
    /// `host:port` of its admin API.
    pub admin_api: String,
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
        let bad = write(d.path(), "bad.toml", "[mediators.m1]\nadmin = \"h2:2\"\n");
        let e = load_remote(&[bad]).unwrap_err().to_string();
        assert!(e.contains("admin"), "{e}");
    }
}
