//! Secrets and configs in the store: created once (both are immutable, as in Docker),
//! removed only when nothing uses them, and referenced from container specs by id, which
//! the store fills in from the name when a spec is created or updated.

use super::{ClusterState, StoreError, lookup};
use crate::store::Applied;
use shoal_api::objects::{ContainerSpec, Version};
use shoal_api::secrets::{self, Config, ConfigSpec, Kind, Secret, SecretSpec};
use std::collections::BTreeMap;

/// Secrets and configs a command group creates before the specs that use them, by name,
/// with their ids: a stack deploy resolves references to them before they exist.
#[derive(Default, Debug, Clone)]
pub struct PendingNames {
    pub secrets: BTreeMap<String, String>,
    pub configs: BTreeMap<String, String>,
}

fn check_spec_fields(kind: Kind, name: &str) -> Result<(), StoreError> {
    secrets::check_name(kind, name)
        .map_err(|e| StoreError::invalid(format!("{} {name}", kind.word()), e))
}

impl ClusterState {
    /// `sealed` is the data sealed by the proposer under the cluster data key, with the
    /// secret's id as associated data; the plaintext never reaches the log.
    pub(super) fn create_secret(
        &mut self,
        version: Version,
        id: String,
        spec: SecretSpec,
        sealed: String,
        now: String,
    ) -> Result<Applied, StoreError> {
        self.record()?;
        check_spec_fields(Kind::Secret, &spec.name)?;
        secrets::check_drivers(
            Kind::Secret,
            &spec.name,
            spec.driver.as_ref(),
            spec.templating.as_ref(),
        )
        .map_err(|e| StoreError::invalid(format!("secret {}", spec.name), e))?;
        if let Some(other) = self.secrets.values().find(|s| s.spec.name == spec.name) {
            return Err(StoreError::NameTaken {
                kind: "secret",
                name: spec.name.clone(),
                id: other.id.clone(),
            });
        }
        if self.secrets.contains_key(&id) || sealed.is_empty() {
            return Err(StoreError::invalid(
                format!("secret {}", spec.name),
                "malformed create (id reused or no data)",
            ));
        }
        self.secret_data.insert(id.clone(), sealed);
        self.secrets.insert(
            id.clone(),
            Secret {
                id: id.clone(),
                version,
                created_at: now.clone(),
                updated_at: now,
                spec,
            },
        );
        Ok(Applied::Created(id))
    }

    pub(super) fn create_config(
        &mut self,
        version: Version,
        id: String,
        spec: ConfigSpec,
        now: String,
    ) -> Result<Applied, StoreError> {
        self.record()?;
        check_spec_fields(Kind::Config, &spec.name)?;
        let object = format!("config {}", spec.name);
        secrets::check_data(Kind::Config, &spec.name, spec.data.len())
            .map_err(|e| StoreError::invalid(&object, e))?;
        secrets::check_drivers(Kind::Config, &spec.name, None, spec.templating.as_ref())
            .map_err(|e| StoreError::invalid(&object, e))?;
        if let Some(other) = self.configs.values().find(|c| c.spec.name == spec.name) {
            return Err(StoreError::NameTaken {
                kind: "config",
                name: spec.name.clone(),
                id: other.id.clone(),
            });
        }
        if self.configs.contains_key(&id) {
            return Err(StoreError::invalid(object, "malformed create (id reused)"));
        }
        self.configs.insert(
            id.clone(),
            Config {
                id: id.clone(),
                version,
                created_at: now.clone(),
                updated_at: now,
                spec,
            },
        );
        Ok(Applied::Created(id))
    }

    pub(super) fn remove_secret(&mut self, id: &str) -> Result<Applied, StoreError> {
        let secret = lookup(&self.secrets, id)?.clone();
        self.check_unused(Kind::Secret, &secret.id, &secret.spec.name)?;
        self.secrets.remove(&secret.id);
        self.secret_data.remove(&secret.id);
        Ok(Applied::Done)
    }

    pub(super) fn remove_config(&mut self, id: &str) -> Result<Applied, StoreError> {
        let config = lookup(&self.configs, id)?.clone();
        self.check_unused(Kind::Config, &config.id, &config.spec.name)?;
        self.configs.remove(&config.id);
        Ok(Applied::Done)
    }

    /// Refuses removal while a service's spec names the object (Docker's rule) or a task
    /// that has not ended still mounts it (an old task of a rotation, still stopping).
    fn check_unused(&self, kind: Kind, id: &str, name: &str) -> Result<(), StoreError> {
        let uses = |c: &ContainerSpec| match kind {
            Kind::Secret => c.secrets.iter().any(|r| r.secret_id == id),
            Kind::Config => c.configs.iter().any(|r| r.config_id == id),
        };
        let object = format!("{} {name}", kind.word());
        let services: Vec<&str> = self
            .services
            .values()
            .filter(|s| uses(&s.spec.task_template.container_spec))
            .map(|s| s.spec.name.as_str())
            .collect();
        if !services.is_empty() {
            let (noun, them) = if services.len() == 1 {
                ("service", "it")
            } else {
                ("services", "them")
            };
            return Err(StoreError::precondition(
                object,
                format!(
                    "it is in use by the following {noun}: {}; remove it from {them} first (service update --{}-rm {name})",
                    services.join(", "),
                    kind.word()
                ),
            ));
        }
        if let Some(t) = self
            .tasks
            .values()
            .find(|t| !t.status.state.is_terminal() && uses(&t.spec.container_spec))
        {
            return Err(StoreError::precondition(
                object,
                format!(
                    "task {} still uses it while it stops; retry once it has stopped",
                    t.id
                ),
            ));
        }
        Ok(())
    }

    /// Fills in the id of every secret and config reference from its name (or checks the
    /// id it has: a rollback to a spec whose secret was removed since is refused), and
    /// checks the references' targets. `pending` holds objects the same command group
    /// creates first.
    pub(crate) fn resolve_file_refs(
        &self,
        service: &str,
        spec: &mut ContainerSpec,
        pending: &PendingNames,
    ) -> Result<(), StoreError> {
        let object = || format!("service {service}");
        secrets::check_references(&spec.secrets, &spec.configs)
            .map_err(|e| StoreError::invalid(object(), e))?;
        for r in &mut spec.secrets {
            r.secret_id = resolve_one(
                Kind::Secret,
                &r.secret_name,
                &r.secret_id,
                self.secrets
                    .values()
                    .map(|s| (s.id.as_str(), s.spec.name.as_str())),
                &pending.secrets,
            )
            .map_err(|e| StoreError::invalid(object(), e))?;
        }
        for r in &mut spec.configs {
            r.config_id = resolve_one(
                Kind::Config,
                &r.config_name,
                &r.config_id,
                self.configs
                    .values()
                    .map(|c| (c.id.as_str(), c.spec.name.as_str())),
                &pending.configs,
            )
            .map_err(|e| StoreError::invalid(object(), e))?;
        }
        Ok(())
    }
}

/// The id `name` (or `id`, when given) stands for among `known` (id, name) and `pending`.
fn resolve_one<'a>(
    kind: Kind,
    name: &str,
    id: &str,
    known: impl Iterator<Item = (&'a str, &'a str)>,
    pending: &'a BTreeMap<String, String>,
) -> Result<String, String> {
    let word = kind.word();
    let mut all = known.chain(pending.iter().map(|(n, i)| (i.as_str(), n.as_str())));
    let found = if id.is_empty() {
        all.find(|(_, n)| *n == name)
    } else {
        all.find(|(i, _)| *i == id)
    };
    match found {
        Some((i, n)) if n == name => Ok(i.to_string()),
        Some((_, n)) => Err(format!(
            "{word} reference {name} has the id of {word} {n}; give the name alone"
        )),
        None if id.is_empty() => Err(format!(
            "{word} {name} not found; create it first with `shoal {word} create {name} FILE`"
        )),
        None => Err(format!(
            "{word} {name} ({id}) no longer exists; create it again or remove it from the service"
        )),
    }
}
