//! A stack's secrets and configs, as docker/cli's converter makes them
//! (`cli/compose/convert/compose.go` `Secrets`/`Configs`, `service.go`
//! `convertServiceSecrets`/`convertServiceConfigObjs`): every declared object that is not
//! external is created as `<stack>_<key>` (or its `name:`), labelled with the stack, with
//! its data read from `file:` (relative to the first Compose file's directory) or taken
//! from a variable of the deploying shell (`environment:`); an external one is referred to
//! by its own name. A service's references go by name; the manager resolves them, also to
//! objects created in the same deploy.

use super::compose::{self, ComposeFile, External, FileRef, Scalar};
use super::convert::{Env, lexical_join, with_stack_label};
use anyhow::{Result, anyhow, bail};
use shoal_api::control::StackSecret;
use shoal_api::objects::Driver;
use shoal_api::secrets::{
    self, ConfigReference, ConfigSpec, FileTarget, Kind, SecretReference, SecretSpec,
    SensitiveBytes,
};
use std::collections::BTreeMap;
use std::path::Path;

/// The stack's secrets and configs: those to create, and the swarm name of every declared
/// key, which is what a service's reference carries.
#[derive(Debug, Default)]
pub struct Files {
    pub secrets: Vec<StackSecret>,
    pub configs: Vec<ConfigSpec>,
    secret_names: BTreeMap<String, String>,
    config_names: BTreeMap<String, String>,
}

/// What secrets and configs share in the file.
struct Def<'a> {
    name: &'a Option<String>,
    file: &'a Option<String>,
    environment: &'a Option<String>,
    external: &'a Option<External>,
    labels: &'a Option<compose::Pairs>,
    template_driver: &'a Option<String>,
}

impl<'a> From<&'a compose::SecretDef> for Def<'a> {
    fn from(d: &'a compose::SecretDef) -> Self {
        Def {
            name: &d.name,
            file: &d.file,
            environment: &d.environment,
            external: &d.external,
            labels: &d.labels,
            template_driver: &d.template_driver,
        }
    }
}

impl<'a> From<&'a compose::ConfigDef> for Def<'a> {
    fn from(d: &'a compose::ConfigDef) -> Self {
        Def {
            name: &d.name,
            file: &d.file,
            environment: &d.environment,
            external: &d.external,
            labels: &d.labels,
            template_driver: &d.template_driver,
        }
    }
}

/// An object the stack creates: its name, labels, template driver and data.
struct Made {
    name: String,
    labels: BTreeMap<String, String>,
    templating: Option<Driver>,
    data: Vec<u8>,
}

/// The object's name in the swarm, and what to create unless it is external
/// (docker/cli `loadFileObjectConfig` and `fileObjectConfig`).
fn object(env: &Env<'_>, kind: Kind, key: &str, def: &Def<'_>) -> Result<(String, Option<Made>)> {
    let word = kind.word();
    let (external, ext_name) = External::resolve(def.external);
    if external {
        if ext_name.is_some() && def.name.is_some() {
            bail!("{word}.external.name and {word}.name conflict; only use {word}.name");
        }
        let name = ext_name
            .or_else(|| def.name.clone())
            .unwrap_or_else(|| key.to_string());
        return Ok((name, None));
    }
    let name = def
        .name
        .clone()
        .unwrap_or_else(|| format!("{}_{key}", env.stack));
    secrets::check_name(kind, &name).map_err(anyhow::Error::msg)?;
    let templating = def.template_driver.as_ref().map(|t| Driver {
        name: t.clone(),
        options: BTreeMap::new(),
    });
    // Its message names the object; the caller does that already.
    secrets::check_drivers(kind, key, None, templating.as_ref())
        .map_err(|e| anyhow!("{}", e.trim_start_matches(&format!("{word} {key}: "))))?;
    let data = data(env, kind, def)?;
    let made = Made {
        name: name.clone(),
        labels: with_stack_label(env.stack, def.labels),
        templating,
        data,
    };
    Ok((name, Some(made)))
}

/// The object's content: the file's bytes, or the variable's value.
fn data(env: &Env<'_>, kind: Kind, def: &Def<'_>) -> Result<Vec<u8>> {
    let word = kind.word();
    let (data, from) = match (def.file, def.environment) {
        (Some(_), Some(_)) => bail!("give file: or environment:, not both"),
        (Some(f), None) => {
            // docker/cli's absPath: an absolute path as it is, a relative one joined.
            let path = if Path::new(f).is_absolute() {
                Path::new(f).to_path_buf()
            } else {
                lexical_join(env.workdir, f)
            };
            let data = (env.read)(&path).map_err(|e| anyhow!("file {}: {e}", path.display()))?;
            (data, format!("file {}", path.display()))
        }
        (None, Some(var)) => {
            let value = (env.lookup)(var).ok_or_else(|| {
                anyhow!("environment variable {var} is not set in the shell that deploys the stack")
            })?;
            (value.into_bytes(), format!("variable {var}"))
        }
        (None, None) => bail!(
            "give file: (a path relative to the Compose file), environment: (a variable's name) or external: true"
        ),
    };
    if data.is_empty() {
        bail!("{from} is empty; a {word} needs at least one byte");
    }
    secrets::check_data(kind, &from, data.len()).map_err(|e| {
        // check_data names the object by what it is given; here that is where the data is.
        anyhow!("{}", e.trim_start_matches(&format!("{word} ")))
    })?;
    Ok(data)
}

/// Reads and checks the file's top-level `secrets:` and `configs:`.
pub fn declared(env: &Env<'_>, file: &ComposeFile) -> Result<Files> {
    let mut files = Files::default();
    let empty_secret = compose::SecretDef::default();
    for (key, def) in &file.secrets {
        let raw = def.as_ref().unwrap_or(&empty_secret);
        if let Some(d) = &raw.driver {
            // docker/cli sends an empty secret with the driver, for a plugin to fill in.
            bail!(
                "secret {key}: driver {d:?}: shoal has no external secret drivers; it keeps secrets in its own encrypted store, so leave out driver: and give file: or environment:"
            );
        }
        if !raw.driver_opts.is_empty() {
            bail!("secret {key}: driver_opts need a secret driver, which shoal has not");
        }
        let (name, made) = object(env, Kind::Secret, key, &Def::from(raw))
            .map_err(|e| anyhow!("secret {key}: {e}"))?;
        files.secret_names.insert(key.clone(), name);
        if let Some(m) = made {
            files.secrets.push(StackSecret {
                spec: SecretSpec {
                    name: m.name,
                    labels: m.labels,
                    driver: None,
                    templating: m.templating,
                },
                data: SensitiveBytes::new(m.data),
            });
        }
    }
    let empty_config = compose::ConfigDef::default();
    for (key, def) in &file.configs {
        let raw = def.as_ref().unwrap_or(&empty_config);
        if raw.content.is_some() {
            bail!(
                "config {key}: content: is not supported by docker stack deploy; put the text in a file and give its path with file:"
            );
        }
        let (name, made) = object(env, Kind::Config, key, &Def::from(raw))
            .map_err(|e| anyhow!("config {key}: {e}"))?;
        files.config_names.insert(key.clone(), name);
        if let Some(m) = made {
            files.configs.push(ConfigSpec {
                name: m.name,
                labels: m.labels,
                data: m.data,
                templating: m.templating,
            });
        }
    }
    for (kind, names) in [
        (
            Kind::Secret,
            files
                .secrets
                .iter()
                .map(|s| &s.spec.name)
                .collect::<Vec<_>>(),
        ),
        (
            Kind::Config,
            files.configs.iter().map(|c| &c.name).collect(),
        ),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        for n in names {
            if !seen.insert(n) {
                bail!(
                    "two {}s of the file have the name {n}; give each its own name:",
                    kind.word()
                );
            }
        }
    }
    Ok(files)
}

/// `mode:` as Docker reads it: a number, or YAML's `0440` (text here) as Go reads it, where
/// a leading 0 means octal.
fn mode(m: &Scalar) -> Result<u32> {
    let n = match m {
        Scalar::Int(n) => Some(*n),
        Scalar::Text(t) => {
            let t = t.trim().replace('_', "");
            let (digits, radix) = if let Some(r) = t.strip_prefix("0o").or(t.strip_prefix("0O")) {
                (r.to_string(), 8)
            } else if let Some(r) = t.strip_prefix("0x").or(t.strip_prefix("0X")) {
                (r.to_string(), 16)
            } else if let Some(r) = t.strip_prefix("0b").or(t.strip_prefix("0B")) {
                (r.to_string(), 2)
            } else if t.len() > 1 && t.starts_with('0') {
                (t[1..].to_string(), 8)
            } else {
                (t.clone(), 10)
            };
            i64::from_str_radix(&digits, radix).ok()
        }
        Scalar::Float(_) | Scalar::Bool(_) => None,
    };
    match n {
        Some(n) if (0..=0o7777).contains(&n) => Ok(n as u32),
        _ => bail!(
            "mode {}: give permission bits in octal, such as 0440",
            m.text()
        ),
    }
}

/// One reference: the object's swarm name and the file it becomes, with docker/cli's
/// defaults (`convertFileObject`): target = the key in the file, owner 0:0, mode 0444. A
/// config's relative target lands under `/`, a secret's under `/run/secrets`.
fn reference(
    kind: Kind,
    names: &BTreeMap<String, String>,
    r: &FileRef,
) -> Result<(String, FileTarget)> {
    let word = kind.word();
    let l = r.long();
    let source = l.source.unwrap_or_default();
    let Some(name) = names.get(&source) else {
        bail!("undefined {word} {source:?}: declare it under the file's top-level {word}s:");
    };
    let target = l.target.filter(|t| !t.is_empty()).unwrap_or(source.clone());
    let mut file = FileTarget::new(target);
    let owner = |v: &Option<Scalar>| v.as_ref().map(Scalar::text).filter(|t| !t.is_empty());
    if let Some(u) = owner(&l.uid) {
        file.uid = u;
    }
    if let Some(g) = owner(&l.gid) {
        file.gid = g;
    }
    if let Some(m) = &l.mode {
        file.mode = mode(m).map_err(|e| anyhow!("{word} {source}: {e}"))?;
    }
    Ok((name.clone(), file))
}

impl Files {
    /// A service's `secrets:` and `configs:` as references, sorted by name as docker/cli
    /// sorts them (so that a redeploy of the same file changes nothing), and checked as the
    /// manager will check them.
    pub fn references(
        &self,
        secrets: &[FileRef],
        configs: &[FileRef],
    ) -> Result<(Vec<SecretReference>, Vec<ConfigReference>)> {
        let mut s = Vec::new();
        for r in secrets {
            let (name, file) = reference(Kind::Secret, &self.secret_names, r)?;
            s.push(SecretReference {
                file: Some(file),
                secret_id: String::new(),
                secret_name: name,
            });
        }
        let mut c = Vec::new();
        for r in configs {
            let (name, file) = reference(Kind::Config, &self.config_names, r)?;
            c.push(ConfigReference {
                file: Some(file),
                config_id: String::new(),
                config_name: name,
            });
        }
        s.sort_by(|a, b| a.secret_name.cmp(&b.secret_name));
        c.sort_by(|a, b| a.config_name.cmp(&b.config_name));
        secrets::check_references(&s, &c).map_err(anyhow::Error::msg)?;
        Ok((s, c))
    }
}
