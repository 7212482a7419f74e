//! Reading Compose files as `docker stack deploy` does: YAML with anchors and merge keys,
//! `x-*` extension fields dropped, keys swarm mode ignores dropped with Docker's warning,
//! variables substituted from the environment, several files merged in order (later wins),
//! and then the strict typed read of `compose.rs`, whose errors are mapped back to the file,
//! line and column of the offending key.

use super::compose::{ComposeFile, External};
use super::interpolate::{self, InterpolationError};
use serde_norway::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One `-c` argument: its name (a path, or `-` for standard input) and its text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

#[derive(Debug)]
pub struct Loaded {
    pub file: ComposeFile,
    /// Lines to print on stderr before deploying, as Docker does.
    pub warnings: Vec<String>,
}

/// Service keys that swarm mode ignores; `docker stack deploy` names them in one warning
/// (docker/cli `cli/compose/types.UnsupportedProperties`, plus the keys it drops silently
/// that users most often expect to work).
const IGNORED: [&str; 21] = [
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "container_name",
    "credential_spec",
    "depends_on",
    "devices",
    "domainname",
    "expose",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "platform",
    "privileged",
    "pull_policy",
    "security_opt",
    "shm_size",
    "userns_mode",
];

/// `restart` is ignored too, but it still sets the restart policy when `deploy` has none,
/// as docker/cli's converter does: it is kept, with the warning.
const RESTART: &str = "restart";

/// Keys whose values are numbers or booleans in the schema; after substitution they may be
/// strings (`replicas: ${N}`), so they are cast back. `*` matches one key or list index.
const INTS: &[&str] = &[
    "services.*.deploy.replicas",
    "services.*.deploy.update_config.parallelism",
    "services.*.deploy.rollback_config.parallelism",
    "services.*.deploy.restart_policy.max_attempts",
    "services.*.deploy.placement.max_replicas_per_node",
    "services.*.deploy.resources.limits.pids",
    "services.*.healthcheck.retries",
    "services.*.ports.*.target",
    "services.*.ports.*.published",
    "services.*.ulimits.*",
    "services.*.ulimits.*.soft",
    "services.*.ulimits.*.hard",
    "services.*.volumes.*.tmpfs.mode",
    "services.*.secrets.*.mode",
    "services.*.configs.*.mode",
];

/// File modes of secret and config references. Go's YAML reads a literal `0440` as octal,
/// which arrives here as the text "0440" and is read as octal by the converter; a mode that
/// comes from a variable is cast as a decimal number, as docker/cli's `toInt` does.
const MODES: &[&str] = &["services.*.secrets.*.mode", "services.*.configs.*.mode"];

const FLOATS: &[&str] = &[
    "services.*.deploy.update_config.max_failure_ratio",
    "services.*.deploy.rollback_config.max_failure_ratio",
];
const BOOLS: &[&str] = &[
    "services.*.init",
    "services.*.read_only",
    "services.*.tty",
    "services.*.stdin_open",
    "services.*.healthcheck.disable",
    "services.*.volumes.*.read_only",
    "services.*.volumes.*.volume.nocopy",
    "services.*.volumes.*.bind.create_host_path",
    "networks.*.attachable",
    "networks.*.internal",
    "networks.*.enable_ipv6",
    "networks.*.external",
    "volumes.*.external",
    "secrets.*.external",
    "configs.*.external",
];

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn matches(pattern: &str, path: &[String]) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.len() == path.len() && parts.iter().zip(path).all(|(p, k)| *p == "*" || p == k)
}

/// Drops `x-*` keys at every level (Docker allows them at the top and in every object).
fn drop_extensions(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            m.retain(|k, _| !matches!(k, Value::String(s) if s.starts_with("x-")));
            for (_, v) in m.iter_mut() {
                drop_extensions(v);
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(drop_extensions),
        Value::Tagged(t) => drop_extensions(&mut t.value),
        _ => {}
    }
}

struct Walk<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    unset: BTreeSet<String>,
}

impl Walk<'_> {
    /// Substitutes variables in every string value (keys are left as they are) and casts
    /// the known numeric and boolean keys.
    fn values(&mut self, v: &mut Value, path: &mut Vec<String>) -> Result<(), InterpolationError> {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m.iter_mut() {
                    path.push(key_text(k));
                    self.values(v, path)?;
                    path.pop();
                }
            }
            Value::Sequence(s) => {
                for (i, v) in s.iter_mut().enumerate() {
                    path.push(i.to_string());
                    self.values(v, path)?;
                    path.pop();
                }
            }
            Value::String(s) => {
                let literal = !s.contains('$');
                let done = interpolate::substitute(&path.join("."), s, self.lookup)?;
                self.unset.extend(done.unset);
                *v = if literal && MODES.iter().any(|p| matches(p, path)) {
                    Value::String(done.text)
                } else {
                    cast(path, done.text)
                };
            }
            _ => {}
        }
        Ok(())
    }
}

fn cast(path: &[String], text: String) -> Value {
    let t = text.trim();
    if INTS.iter().any(|p| matches(p, path))
        && let Ok(n) = t.parse::<i64>()
    {
        return Value::Number(n.into());
    }
    if FLOATS.iter().any(|p| matches(p, path))
        && let Ok(f) = t.parse::<f64>()
    {
        return Value::Number(f.into());
    }
    if BOOLS.iter().any(|p| matches(p, path)) {
        match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => return Value::Bool(true),
            "false" | "no" | "n" | "off" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(text)
}

fn services_mut(root: &mut Mapping) -> Vec<(String, &mut Mapping)> {
    match root.get_mut("services") {
        Some(Value::Mapping(s)) => s
            .iter_mut()
            .filter_map(|(k, v)| match v {
                Value::Mapping(m) => Some((key_text(k), m)),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

/// Reads one file into a mapping, with merge keys applied and extensions dropped.
fn read_one(src: &Source) -> Result<Mapping, String> {
    let mut v: Value =
        serde_norway::from_str(&src.text).map_err(|e| format!("{}: {e}", src.name))?;
    v.apply_merge()
        .map_err(|e| format!("{}: merge key: {e}", src.name))?;
    drop_extensions(&mut v);
    match v {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => Err(format!(
            "{}: a Compose file is a mapping with `services:` at its top",
            src.name
        )),
    }
}

/// Where a key path is in the first source that has it: `file:line:column: message`.
fn located(sources: &[Source], path: &[String], message: &str) -> String {
    for src in sources.iter().rev() {
        if let Some((line, col)) = locate(&src.text, path) {
            return format!("{}:{line}:{col}: {message}", src.name);
        }
    }
    match sources.last() {
        Some(s) => format!("{}: {message}", s.name),
        None => message.to_string(),
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '-']).len()
}

fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start_matches([' ', '-']).trim_start();
    let (k, _) = t.split_once(':')?;
    Some(k.trim().trim_matches(['"', '\'']))
}

/// Finds the line (1-based) and column of the last key of `path` in block-style YAML.
/// List indices in the path are skipped; a key is searched within its parent's block.
pub fn locate(text: &str, path: &[String]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let content = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    let (mut from, mut to) = (0usize, lines.len());
    let mut found = None;
    for seg in path.iter().filter(|s| s.parse::<usize>().is_err()) {
        // Only the block's direct children: keys at the indent of its first content line
        // (a deeper key of the same name belongs to something else).
        let child_indent = lines[from..to]
            .iter()
            .find(|l| content(l))
            .map(|l| indent_of(l))?;
        let (i, ind) = lines
            .iter()
            .enumerate()
            .take(to)
            .skip(from)
            .filter(|(_, l)| content(l) && indent_of(l) == child_indent)
            .find(|(_, l)| key_of(l) == Some(seg.as_str()))
            .map(|(i, l)| (i, indent_of(l)))?;
        found = Some((i + 1, ind + 1));
        // The key's block: until the next line indented no deeper than the key (a list
        // item at the key's own indent still belongs to it).
        let end = lines
            .iter()
            .enumerate()
            .skip(i + 1)
            .find(|(_, l)| {
                let t = l.trim_start();
                let here = l.len() - t.len();
                content(l) && here <= ind && !(t.starts_with('-') && here == ind)
            })
            .map_or(lines.len(), |(j, _)| j);
        from = i + 1;
        to = end;
    }
    found
}

fn as_pairs_map(v: &Value, sep: char) -> Option<Mapping> {
    match v {
        Value::Mapping(m) => Some(m.clone()),
        Value::Sequence(s) => {
            let mut m = Mapping::new();
            for e in s {
                let Value::String(e) = e else { return None };
                match e.split_once(sep) {
                    Some((k, val)) => m.insert(Value::String(k.into()), Value::String(val.into())),
                    None => m.insert(Value::String(e.clone()), Value::Null),
                };
            }
            Some(m)
        }
        _ => None,
    }
}

fn volume_target(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(match parts.len() {
                1 => parts[0].to_string(),
                _ => parts[1].to_string(),
            })
        }
        Value::Mapping(m) => m.get("target").map(key_text),
        _ => None,
    }
}

/// The published port (and protocol) a `ports:` entry claims, which a later file's entry
/// for the same port replaces; `None` for a target-only entry.
fn published_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let (spec, proto) = s.split_once('/').unwrap_or((s, "tcp"));
            // [IP:]PUBLISHED:TARGET; a bare TARGET publishes nothing fixed.
            let parts: Vec<&str> = spec.split(':').collect();
            (parts.len() >= 2).then(|| format!("{}/{proto}", parts[parts.len() - 2]))
        }
        Value::Mapping(m) => {
            let published = m.get("published").map(key_text)?;
            let proto = m
                .get("protocol")
                .map(key_text)
                .unwrap_or_else(|| "tcp".into());
            Some(format!("{published}/{proto}"))
        }
        _ => None,
    }
}

fn networks_map(v: &Value) -> Option<Mapping> {
    match v {
        Value::Mapping(m) => Some(m.clone()),
        Value::Sequence(s) => Some(s.iter().map(|n| (n.clone(), Value::Null)).collect()),
        _ => None,
    }
}

/// The secret or config a service's `secrets:`/`configs:` entry names (`- NAME` or
/// `source: NAME`).
fn ref_source(v: &Value) -> String {
    match v {
        Value::Mapping(m) => m.get("source").map(key_text).unwrap_or_default(),
        other => key_text(other),
    }
}

/// Merges `over` into `base` as `docker stack deploy -c a -c b` does (docker/cli
/// `cli/compose/loader/merge.go`): mappings merge key by key and a later scalar wins; inside
/// a service, lists are appended (`cap_add`, `dns`, `placement.constraints`, ...) except
/// `command`, `entrypoint` and `healthcheck.test`, which are replaced, `ports`, merged by
/// published port, `volumes`, by target, `networks`, `environment`, `labels`,
/// `extra_hosts` and `sysctls`, by key in list or map form, `secrets` and `configs`, by
/// source and sorted by it, and `logging`, whose options are dropped when the driver
/// changes. A top-level secret or config of a later file replaces the earlier one whole
/// (mergo's map override), rather than key by key.
fn merge(base: &mut Value, over: Value, path: Vec<String>) {
    let in_service = path.len() >= 3 && path[0] == "services";
    let key = path.last().map(String::as_str).unwrap_or("");
    let service_key = path.len() == 3 && path[0] == "services";
    if path.len() == 1
        && (key == "secrets" || key == "configs")
        && let (Value::Mapping(b), Value::Mapping(o)) = (&mut *base, &over)
    {
        for (k, v) in o {
            b.insert(k.clone(), v.clone());
        }
        return;
    }
    if in_service {
        match key {
            "command" | "entrypoint" => {
                *base = over;
                return;
            }
            "test" if path.len() == 4 && path[2] == "healthcheck" => {
                *base = over;
                return;
            }
            "logging" if service_key => {
                let driver = |v: &Value| v.get("driver").map(key_text);
                if driver(&over).is_some() && driver(&over) != driver(base) {
                    *base = over;
                    return;
                }
            }
            "environment" | "labels" | "sysctls" | "extra_hosts"
                if service_key || (key == "labels" && path.len() == 4 && path[2] == "deploy") =>
            {
                let sep = if key == "extra_hosts" { ':' } else { '=' };
                if let (Some(mut bm), Some(om)) =
                    (as_pairs_map(base, sep), as_pairs_map(&over, sep))
                {
                    for (k, v) in om {
                        bm.insert(k, v);
                    }
                    *base = Value::Mapping(bm);
                } else {
                    *base = over;
                }
                return;
            }
            "networks" if service_key => {
                if let (Some(mut bm), Some(om)) = (networks_map(base), networks_map(&over)) {
                    for (k, v) in om {
                        match bm.get_mut(&k) {
                            Some(existing) => {
                                merge(existing, v, [path.clone(), vec![key_text(&k)]].concat())
                            }
                            None => {
                                bm.insert(k, v);
                            }
                        }
                    }
                    *base = Value::Mapping(bm);
                } else {
                    *base = over;
                }
                return;
            }
            _ => {}
        }
    }
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let mut p = path.clone();
                p.push(key_text(&k));
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v, p),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(bs), Value::Sequence(os)) if in_service => match key {
            "ports" if service_key => {
                for p in os {
                    let k = published_key(&p);
                    if k.is_some() {
                        bs.retain(|x| published_key(x) != k);
                    } else if bs.contains(&p) {
                        continue;
                    }
                    bs.push(p);
                }
            }
            "secrets" | "configs" if service_key => {
                let mut by_source: BTreeMap<String, Value> = BTreeMap::new();
                for v in bs.drain(..).chain(os) {
                    by_source.insert(ref_source(&v), v);
                }
                bs.extend(by_source.into_values());
            }
            "volumes" if service_key => {
                for v in os {
                    let t = volume_target(&v);
                    bs.retain(|x| t.is_none() || volume_target(x) != t);
                    bs.push(v);
                }
            }
            _ => {
                for v in os {
                    if !bs.contains(&v) {
                        bs.push(v);
                    }
                }
            }
        },
        (b, o) => *b = o,
    }
}

/// Docker's wording for a strict-read error: the key path, and the keys allowed there.
fn explain(sources: &[Source], err: &serde_norway::Error) -> String {
    let msg = err.to_string();
    // "services.web.deploy: unknown field `x`, expected one of `a`, `b` at line ..."
    let msg = match msg.rsplit_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => msg,
    };
    let (path, what) = match msg.split_once(": ") {
        Some((p, w)) if !p.contains(' ') => (p.to_string(), w.to_string()),
        _ => (String::new(), msg.clone()),
    };
    let mut segs: Vec<String> = path
        .replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let text = if let Some(rest) = what.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        segs.push(key.to_string());
        let allowed = expected
            .trim_start_matches(", expected ")
            .trim_start_matches("one of ")
            .replace('`', "");
        let place = if path.is_empty() {
            "the top level".to_string()
        } else {
            path.clone()
        };
        format!(
            "unknown key {key:?} in {place}: it is in no Compose file format (allowed here: {allowed})"
        )
    } else if path.is_empty() {
        what
    } else {
        format!("{path}: {what}")
    };
    located(sources, &segs, &text)
}

/// docker/cli's warning for a secret or config named by `external: {name: N}` in format
/// 3.5 and later (a missing version or "3" is the newest format).
fn deprecated_external_names(file: &ComposeFile) -> Vec<String> {
    let version = file.version.as_ref().map(|v| v.text()).unwrap_or_default();
    let recent = match version.split_once('.') {
        None => true,
        Some((major, minor)) => major != "3" || minor.parse::<u32>().map_or(true, |m| m >= 5),
    };
    if !recent {
        return vec![];
    }
    let named = |e: &Option<External>| matches!(e, Some(External::Named { .. }));
    let secrets = file
        .secrets
        .iter()
        .filter(|(_, d)| d.as_ref().is_some_and(|d| named(&d.external)))
        .map(|(k, _)| ("secret", k));
    let configs = file
        .configs
        .iter()
        .filter(|(_, d)| d.as_ref().is_some_and(|d| named(&d.external)))
        .map(|(k, _)| ("config", k));
    secrets
        .chain(configs)
        .map(|(kind, key)| {
            format!(
                "WARN: {kind} {key}: {kind}.external.name is deprecated in favor of {kind}.name"
            )
        })
        .collect()
}

/// Loads the files in order, merged, checked and with variables substituted.
pub fn load(sources: &[Source], lookup: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, String> {
    if sources.is_empty() {
        return Err("give at least one Compose file with -c".into());
    }
    let mut warnings = Vec::new();
    let mut ignored: BTreeSet<String> = BTreeSet::new();
    let mut merged: Option<Value> = None;
    let mut walk = Walk {
        lookup,
        unset: BTreeSet::new(),
    };
    for src in sources {
        let mut root = read_one(src)?;
        if let Some(v) = root.get("version") {
            let v = key_text(v);
            if !v.starts_with('3') {
                return Err(located(
                    std::slice::from_ref(src),
                    &["version".into()],
                    &format!(
                        "version {v:?}: stacks take Compose file format 3 (version: \"3.8\") or no version"
                    ),
                ));
            }
        }
        for (_, svc) in services_mut(&mut root) {
            for key in IGNORED {
                if svc.remove(key).is_some() {
                    ignored.insert(key.to_string());
                }
            }
            if svc.contains_key(RESTART) {
                ignored.insert(RESTART.to_string());
            }
        }
        let mut v = Value::Mapping(root);
        walk.values(&mut v, &mut Vec::new())
            .map_err(|e| format!("{}: {e}", src.name))?;
        match &mut merged {
            None => merged = Some(v),
            Some(m) => merge(m, v, vec![]),
        }
    }
    for var in &walk.unset {
        warnings.push(format!(
            "WARN: The \"{var}\" variable is not set. Defaulting to a blank string."
        ));
    }
    if !ignored.is_empty() {
        let list: Vec<&str> = ignored.iter().map(String::as_str).collect();
        warnings.push(format!("Ignoring unsupported options: {}", list.join(", ")));
    }
    let merged = merged.unwrap_or(Value::Mapping(Mapping::new()));
    // Read strictly from text, so that errors carry the key path; `explain` then finds the
    // key in the original files.
    let text = serde_norway::to_string(&merged).map_err(|e| e.to_string())?;
    let file: ComposeFile = serde_norway::from_str(&text).map_err(|e| explain(sources, &e))?;
    warnings.extend(deprecated_external_names(&file));
    Ok(Loaded { file, warnings })
}

#[cfg(test)]
mod tests;
