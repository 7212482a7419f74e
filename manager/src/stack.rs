//! A stack deploy as one command group: which networks to create, which services to create
//! or update, with attachment targets resolved to ids, all checked by the store in one apply
//! so a refusal anywhere leaves the cluster as it was.

use crate::ca::DataKey;
use crate::ids::new_id;
use crate::store::{ClusterState, Command, PendingNames, StoreError, lookup};
use shoal_api::control::{StackDeployed, StackSecret};
use shoal_api::objects::{NetworkSpec, ServiceSpec};
use shoal_api::secrets::ConfigSpec;
use std::collections::BTreeMap;

/// The commands for a stack deploy against `state`, and what they will do by name.
///
/// Networks that already exist by name are left alone (a redeploy); services that exist by
/// name are updated at the version read here, so a concurrent change makes the whole group
/// fail on the version check instead of overwriting it.
pub fn plan(
    state: &ClusterState,
    networks: Vec<NetworkSpec>,
    services: Vec<ServiceSpec>,
    now: &str,
) -> Result<(Vec<Command>, StackDeployed), StoreError> {
    plan_with_files(state, Files::default(), networks, services, now)
}

/// A stack's secrets and configs, and the data key that seals new secrets and opens
/// existing ones to compare their content (none on a swarm from before data keys).
#[derive(Default)]
pub struct Files<'a> {
    pub secrets: Vec<StackSecret>,
    pub configs: Vec<ConfigSpec>,
    pub data_key: Option<&'a DataKey>,
}

/// [`plan`] with the stack's secrets and configs, created first in the same group. One that
/// exists by name is kept when its content is the same and refused when it differs: both
/// are immutable, so a changed file needs a new name (Docker refuses the same way).
pub fn plan_with_files(
    state: &ClusterState,
    files: Files<'_>,
    networks: Vec<NetworkSpec>,
    services: Vec<ServiceSpec>,
    now: &str,
) -> Result<(Vec<Command>, StackDeployed), StoreError> {
    let mut commands = Vec::new();
    let mut done = StackDeployed::default();
    let mut pending = PendingNames::default();
    for secret in files.secrets {
        let name = secret.spec.name.clone();
        if let Some(existing) = state.secrets.values().find(|s| s.spec.name == name) {
            let same_data = || {
                let sealed = state.secret_data.get(&existing.id);
                match (files.data_key, sealed) {
                    (Some(k), Some(sealed)) => k
                        .open_b64(&existing.id, sealed)
                        .is_ok_and(|plain| plain.as_slice() == secret.data.as_slice()),
                    _ => false,
                }
            };
            let same = existing.spec.templating == secret.spec.templating && same_data();
            if !same {
                return Err(immutable("secret", &name));
            }
            continue;
        }
        let Some(key) = files.data_key else {
            return Err(StoreError::precondition(
                format!("secret {name}"),
                "this manager has no cluster data key, so it can't keep secrets",
            ));
        };
        let id = new_id();
        pending.secrets.insert(name.clone(), id.clone());
        done.created_secrets.push(name);
        commands.push(Command::CreateSecret {
            sealed: key.seal_b64(&id, secret.data.as_slice()),
            id,
            spec: secret.spec,
            now: now.to_string(),
        });
    }
    for spec in files.configs {
        if let Some(existing) = state.configs.values().find(|c| c.spec.name == spec.name) {
            if existing.spec.data != spec.data || existing.spec.templating != spec.templating {
                return Err(immutable("config", &spec.name));
            }
            continue;
        }
        let id = new_id();
        pending.configs.insert(spec.name.clone(), id.clone());
        done.created_configs.push(spec.name.clone());
        commands.push(Command::CreateConfig {
            id,
            spec,
            now: now.to_string(),
        });
    }
    // Networks of this request by name, with the id they will get.
    let mut new_ids: BTreeMap<String, String> = BTreeMap::new();
    for spec in networks {
        if state.networks.values().any(|n| n.spec.name == spec.name) {
            continue;
        }
        let id = new_id();
        new_ids.insert(spec.name.clone(), id.clone());
        done.created_networks.push(spec.name.clone());
        commands.push(Command::CreateNetwork {
            id,
            spec,
            now: now.to_string(),
        });
    }
    for mut spec in services {
        for a in &mut spec.task_template.networks {
            if state.networks.contains_key(&a.target) {
                continue;
            }
            a.target = match new_ids.get(&a.target) {
                Some(id) => id.clone(),
                None => lookup(&state.networks, &a.target)
                    .map_err(|e| in_service(&spec.name, e))?
                    .id
                    .clone(),
            };
        }
        // Ids as the store will fill them in, so that an unchanged service compares equal;
        // an unknown name is left for the store to refuse with its message.
        let name = spec.name.clone();
        let _ = state.resolve_file_refs(&name, &mut spec.task_template.container_spec, &pending);
        match state.services.values().find(|s| s.spec.name == spec.name) {
            Some(s) if s.spec == spec => {}
            Some(s) => {
                done.updated_services
                    .push((spec.name.clone(), s.id.clone()));
                commands.push(Command::UpdateService {
                    id: s.id.clone(),
                    version: s.version.index,
                    spec,
                    now: now.to_string(),
                });
            }
            None => {
                let id = new_id();
                done.created_services.push((spec.name.clone(), id.clone()));
                commands.push(Command::CreateService {
                    id,
                    spec,
                    now: now.to_string(),
                });
            }
        }
    }
    Ok((commands, done))
}

/// The id of every service a deploy planned as `done` touches or leaves as it was, by name:
/// where its registry credentials go.
pub fn service_ids(state: &ClusterState, done: &StackDeployed) -> BTreeMap<String, String> {
    let mut ids: BTreeMap<String, String> = state
        .services
        .values()
        .map(|s| (s.spec.name.clone(), s.id.clone()))
        .collect();
    ids.extend(done.created_services.iter().cloned());
    ids
}

fn immutable(kind: &str, name: &str) -> StoreError {
    StoreError::precondition(
        format!("{kind} {name}"),
        format!(
            "it exists with other content, and {kind}s can't be changed; give the changed {kind} a new name in the stack file (or remove the old one first)"
        ),
    )
}

/// A lookup failure for one of a service's networks, naming the service.
fn in_service(service: &str, e: StoreError) -> StoreError {
    StoreError::Invalid {
        object: format!("service {service}"),
        reason: format!("{e}; create the network first or declare it in the stack"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{cluster, net_spec, service_spec};

    const NOW: &str = "2026-12-01T12:00:00Z";

    fn apply(s: &mut ClusterState, index: u64, commands: Vec<Command>) -> Result<(), StoreError> {
        s.apply(index, Command::All(commands)).map(|_| ())
    }

    #[test]
    fn new_networks_are_named_by_services_and_a_redeploy_changes_only_what_differs() {
        let mut s = cluster((30000, 30010));
        let nets = || vec![net_spec("shop_app", false, None)];
        let svcs = |replicas| {
            vec![
                service_spec("shop_web", replicas, &[(8080, 80)], &["shop_app"]),
                service_spec("shop_db", 1, &[], &["shop_app"]),
            ]
        };
        let (commands, done) = plan(&s, nets(), svcs(2), NOW).unwrap();
        assert_eq!(done.created_networks, ["shop_app"]);
        assert_eq!(done.created_services.len(), 2);
        apply(&mut s, 2, commands).unwrap();
        let net = lookup(&s.networks, "shop_app").unwrap().id.clone();
        let web = lookup(&s.services, "shop_web").unwrap();
        assert_eq!(web.spec.task_template.networks[0].target, net);

        // Same file: nothing to do.
        let (commands, done) = plan(&s, nets(), svcs(2), NOW).unwrap();
        assert!(commands.is_empty(), "{done:?}");
        // One service changed: one update, at the version read.
        let (commands, done) = plan(&s, nets(), svcs(3), NOW).unwrap();
        assert_eq!(done.updated_services.len(), 1);
        assert_eq!(done.updated_services[0].0, "shop_web");
        assert!(done.created_services.is_empty() && done.created_networks.is_empty());
        apply(&mut s, 3, commands).unwrap();
    }

    #[test]
    fn registry_credentials_find_new_changed_and_unchanged_services_of_the_stack() {
        let mut s = cluster((30000, 30010));
        let svcs = |replicas| {
            vec![
                service_spec("shop_web", replicas, &[], &[]),
                service_spec("shop_db", 1, &[], &[]),
            ]
        };
        let (commands, done) = plan(&s, vec![], svcs(1), NOW).unwrap();
        let ids = service_ids(&s, &done);
        assert_eq!(ids.len(), 2, "both new services, by the ids they will get");
        let mut commands = commands;
        commands.push(Command::SetRegistryAuth {
            service_id: ids["shop_web"].clone(),
            sealed: "c2VhbGVk".into(),
        });
        apply(&mut s, 2, commands).unwrap();
        let web = lookup(&s.services, "shop_web").unwrap().id.clone();
        assert_eq!(s.registry_auth[&web], "c2VhbGVk");
        // A redeploy that changes only shop_web still finds shop_db, which it leaves as is.
        let (_, done) = plan(&s, vec![], svcs(2), NOW).unwrap();
        let ids = service_ids(&s, &done);
        assert_eq!(ids["shop_web"], web);
        assert_eq!(ids["shop_db"], lookup(&s.services, "shop_db").unwrap().id);
    }

    #[test]
    fn an_unknown_network_names_the_service_and_plans_nothing() {
        let s = cluster((30000, 30010));
        let err = plan(
            &s,
            vec![],
            vec![service_spec("shop_web", 1, &[], &["nowhere"])],
            NOW,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("service shop_web") && err.contains("nowhere"),
            "{err}"
        );
    }

    #[test]
    fn a_refused_service_leaves_the_whole_stack_undeployed() {
        let mut s = cluster((30000, 30010));
        s.apply(
            2,
            Command::CreateService {
                id: "other".into(),
                spec: service_spec("other", 1, &[(8080, 80)], &[]),
                now: NOW.into(),
            },
        )
        .unwrap();
        let before = s.clone();
        let (commands, _) = plan(
            &s,
            vec![net_spec("shop_app", false, None)],
            vec![
                service_spec("shop_db", 1, &[], &["shop_app"]),
                service_spec("shop_web", 1, &[(8080, 80)], &["shop_app"]),
            ],
            NOW,
        )
        .unwrap();
        let err = apply(&mut s, 3, commands).unwrap_err().to_string();
        assert!(err.contains("8080") && err.contains("other"), "{err}");
        assert_eq!(s, before);
    }

    #[test]
    fn stack_files_are_created_first_kept_when_equal_and_refused_when_changed() {
        use shoal_api::secrets::*;
        let mut s = cluster((30000, 30010));
        let key = crate::ca::DataKey::generate();
        let secret = |data: &str| StackSecret {
            spec: SecretSpec {
                name: "shop_db_pw".into(),
                ..Default::default()
            },
            data: SensitiveBytes::new(data.as_bytes().to_vec()),
        };
        let config = |data: &str| ConfigSpec {
            name: "shop_site".into(),
            data: data.as_bytes().to_vec(),
            ..Default::default()
        };
        let svc = || {
            let mut spec = service_spec("shop_web", 1, &[], &[]);
            spec.task_template.container_spec.secrets = vec![SecretReference {
                file: Some(FileTarget::new("db_pw")),
                secret_id: String::new(),
                secret_name: "shop_db_pw".into(),
            }];
            spec.task_template.container_spec.configs = vec![ConfigReference {
                file: Some(FileTarget::new("/etc/site.conf")),
                config_id: String::new(),
                config_name: "shop_site".into(),
            }];
            vec![spec]
        };
        let files = |pw: &str, site: &str| Files {
            secrets: vec![secret(pw)],
            configs: vec![config(site)],
            data_key: Some(&key),
        };
        let (commands, done) = plan_with_files(&s, files("pw1", "a"), vec![], svc(), NOW).unwrap();
        assert_eq!(done.created_secrets, ["shop_db_pw"]);
        assert_eq!(done.created_configs, ["shop_site"]);
        apply(&mut s, 2, commands).unwrap();
        let web = lookup(&s.services, "shop_web").unwrap();
        let id = &web.spec.task_template.container_spec.secrets[0].secret_id;
        assert_eq!(s.secrets[id].spec.name, "shop_db_pw");
        assert_eq!(
            key.open_b64(id, &s.secret_data[id]).unwrap().as_slice(),
            b"pw1"
        );
        // The same files again: nothing to do, the service included.
        let (commands, _) = plan_with_files(&s, files("pw1", "a"), vec![], svc(), NOW).unwrap();
        assert!(commands.is_empty(), "{commands:?}");
        // Changed content: refused, naming the object and the way out.
        for (pw, site, what) in [
            ("pw2", "a", "secret shop_db_pw"),
            ("pw1", "b", "config shop_site"),
        ] {
            let err = plan_with_files(&s, files(pw, site), vec![], svc(), NOW)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what) && err.contains("new name"), "{err}");
        }
    }
}
