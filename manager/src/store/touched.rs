//! What one applied raft entry changed: the ids of the objects it wrote, by kind. Whoever
//! keeps something derived from the state (the dispatcher's views) reads these instead of
//! comparing whole states, so a change costs what it touched.

use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// The cluster record (spec, tokens, unlock key); it has no id.
    Cluster,
    Node,
    Service,
    Task,
    Network,
    Secret,
    Config,
    /// A service's sealed registry credentials, by service id.
    RegistryAuth,
}

/// Ids written by an entry, removed objects included: a reader looks each one up in the
/// state and finds it changed or gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub cluster: bool,
    pub nodes: BTreeSet<String>,
    pub services: BTreeSet<String>,
    pub tasks: BTreeSet<String>,
    pub networks: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    pub configs: BTreeSet<String>,
    pub registry_auth: BTreeSet<String>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        !self.cluster && self.iter().next().is_none()
    }

    /// Adds what `other` touched: several entries read at once count as one.
    pub fn merge(&mut self, other: &Touched) {
        self.cluster |= other.cluster;
        for (kind, id) in other.iter() {
            self.touch(kind, id);
        }
    }

    pub fn touch(&mut self, kind: ObjectKind, id: &str) {
        let ids = match kind {
            ObjectKind::Cluster => {
                self.cluster = true;
                return;
            }
            ObjectKind::Node => &mut self.nodes,
            ObjectKind::Service => &mut self.services,
            ObjectKind::Task => &mut self.tasks,
            ObjectKind::Network => &mut self.networks,
            ObjectKind::Secret => &mut self.secrets,
            ObjectKind::Config => &mut self.configs,
            ObjectKind::RegistryAuth => &mut self.registry_auth,
        };
        ids.insert(id.to_string());
    }

    /// Every (kind, id) with an id, kind by kind; the cluster flag is apart.
    pub fn iter(&self) -> impl Iterator<Item = (ObjectKind, &str)> {
        [
            (ObjectKind::Node, &self.nodes),
            (ObjectKind::Service, &self.services),
            (ObjectKind::Task, &self.tasks),
            (ObjectKind::Network, &self.networks),
            (ObjectKind::Secret, &self.secrets),
            (ObjectKind::Config, &self.configs),
            (ObjectKind::RegistryAuth, &self.registry_auth),
        ]
        .into_iter()
        .flat_map(|(k, ids)| ids.iter().map(move |id| (k, id.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_the_union_and_empty_means_nothing_at_all() {
        let mut a = Touched::default();
        assert!(a.is_empty());
        a.touch(ObjectKind::Task, "t1");
        let mut b = Touched::default();
        b.touch(ObjectKind::Task, "t2");
        b.touch(ObjectKind::Cluster, "");
        a.merge(&b);
        assert!(a.cluster);
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [(ObjectKind::Task, "t1"), (ObjectKind::Task, "t2")]
        );
        let mut only_cluster = Touched::default();
        only_cluster.touch(ObjectKind::Cluster, "");
        assert!(!only_cluster.is_empty());
    }
}
