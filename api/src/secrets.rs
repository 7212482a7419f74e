//! Secrets and configs (`docker secret`, `docker config`): the objects, the references a
//! container spec holds to them, and the checks Docker applies to both, shared by the CLI
//! (before anything is sent) and the manager's store (before anything is applied).
//!
//! A secret's data never appears in these objects: the manager keeps it sealed beside the
//! secret and hands it, opened, only to the nodes that run a task using it
//! ([`SecretPayload`] in their view). A config's data is part of its spec and shown by
//! inspect (base64), as Docker does.

use crate::objects::{Driver, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::{Component, Path};
use zeroize::Zeroizing;

/// Docker's limit for a secret's or a config's data (swarmkit `MaxSecretSize`,
/// `MaxConfigSize`): 500 KiB.
pub const MAX_DATA_SIZE: usize = 500 * 1024;

/// Where secrets appear inside a task when their target is relative.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The only template driver Docker knows.
pub const GOLANG_TEMPLATE_DRIVER: &str = "golang";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct SecretSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An external secret driver (`--driver`); shoal has none, so a driver is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    /// `--template-driver golang`: the data is a service template, rendered per task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templating: Option<Driver>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Secret {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub created_at: String,
    pub updated_at: String,
    pub spec: SecretSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The config's content, base64 in JSON as Docker's `[]byte`.
    #[serde(with = "base64_bytes", default)]
    pub data: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templating: Option<Driver>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Config {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub created_at: String,
    pub updated_at: String,
    pub spec: ConfigSpec,
}

/// Where a secret or config appears in the task, and as whom.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "PascalCase")]
pub struct FileTarget {
    /// For secrets, relative to `/run/secrets` unless absolute; for configs, relative to `/`.
    pub name: String,
    #[serde(rename = "UID")]
    pub uid: String,
    #[serde(rename = "GID")]
    pub gid: String,
    /// Permission bits, as Docker's `os.FileMode` in JSON (a number; 0444 = 292).
    pub mode: u32,
}

impl FileTarget {
    /// Docker's defaults: root-owned, mode 0444.
    pub fn new(name: impl Into<String>) -> FileTarget {
        FileTarget {
            name: name.into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "PascalCase")]
pub struct SecretReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    /// Filled by the manager from the name when a spec is created or updated.
    #[serde(rename = "SecretID", default)]
    pub secret_id: String,
    pub secret_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    #[serde(rename = "ConfigID", default)]
    pub config_id: String,
    pub config_name: String,
}

/// Bytes that must not end up in logs: `Debug` shows only their length, memory is wiped on
/// drop, JSON carries them as base64.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SensitiveBytes(pub Zeroizing<Vec<u8>>);

impl SensitiveBytes {
    pub fn new(bytes: Vec<u8>) -> SensitiveBytes {
        SensitiveBytes(Zeroizing::new(bytes))
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SensitiveBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SensitiveBytes({} bytes)", self.0.len())
    }
}

impl Serialize for SensitiveBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(B64.encode(self.0.as_slice())))
    }
}

impl<'de> Deserialize<'de> for SensitiveBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        B64.decode(text.as_bytes())
            .map(SensitiveBytes::new)
            .map_err(serde::de::Error::custom)
    }
}

/// A secret with its data, opened by the leader for one node's view.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretPayload {
    pub id: String,
    pub spec: SecretSpec,
    pub data: SensitiveBytes,
}

mod base64_bytes {
    use super::B64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Which of the two objects a check is about; the word Docker uses in its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

/// Docker's rule for secret and config names (swarmkit `validateConfigOrSecretAnnotations`):
/// 1 to 64 characters, letters and digits, with `-`, `_` and `.` inside.
pub fn check_name(kind: Kind, name: &str) -> Result<(), String> {
    let word = kind.word();
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(ok_inner)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {word} name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// Docker's size rule: more than 0 bytes and less than 500 KiB.
pub fn check_data(kind: Kind, name: &str, len: usize) -> Result<(), String> {
    let word = kind.word();
    if len == 0 {
        return Err(format!(
            "{word} {name}: data is empty; give a file with content or - for stdin"
        ));
    }
    if len >= MAX_DATA_SIZE {
        return Err(format!(
            "{word} {name}: data is {len} bytes; a {word} must be less than {MAX_DATA_SIZE} bytes (500 KiB)"
        ));
    }
    Ok(())
}

/// `--driver` and `--template-driver` as shoal can honour them: no external secret
/// drivers, and only Docker's `golang` templates.
pub fn check_drivers(
    kind: Kind,
    name: &str,
    driver: Option<&Driver>,
    templating: Option<&Driver>,
) -> Result<(), String> {
    let word = kind.word();
    if let Some(d) = driver.filter(|d| !d.name.is_empty()) {
        return Err(format!(
            "{word} {name}: secret driver {:?} is not available; shoal keeps secrets in its own encrypted store, so leave out --driver",
            d.name
        ));
    }
    if let Some(t) = templating.filter(|t| !t.name.is_empty())
        && t.name != GOLANG_TEMPLATE_DRIVER
    {
        return Err(format!(
            "{word} {name}: template driver {:?} is unknown; the only one is {GOLANG_TEMPLATE_DRIVER:?}",
            t.name
        ));
    }
    Ok(())
}

/// A templated object's data must be text that parses as a service template (the agent
/// renders it per task, with `secret`, `config` and `env` besides the usual fields).
pub fn check_template(
    kind: Kind,
    name: &str,
    templating: Option<&Driver>,
    data: &[u8],
) -> Result<(), String> {
    if templating.is_none_or(|t| t.name.is_empty()) {
        return Ok(());
    }
    let word = kind.word();
    let text = std::str::from_utf8(data).map_err(|_| {
        format!("{word} {name}: a templated {word} must be UTF-8 text; leave out --template-driver for binary data")
    })?;
    crate::template::check_payload(text).map_err(|e| {
        let e = match kind {
            Kind::Secret => e.withheld(),
            Kind::Config => e,
        };
        format!("{word} {name}: {e}")
    })
}

/// Every check of a new secret or config, in the order a user meets them: name, size,
/// drivers, template.
pub fn check_new(
    kind: Kind,
    name: &str,
    driver: Option<&Driver>,
    templating: Option<&Driver>,
    data: &[u8],
) -> Result<(), String> {
    check_name(kind, name)?;
    check_data(kind, name, data.len())?;
    check_drivers(kind, name, driver, templating)?;
    check_template(kind, name, templating, data)
}

/// The path a reference's file takes inside the task.
pub fn target_path(kind: Kind, target: &str) -> String {
    if target.starts_with('/') {
        return target.to_string();
    }
    match kind {
        Kind::Secret => format!("{SECRETS_DIR}/{target}"),
        Kind::Config => format!("/{target}"),
    }
}

/// A target must be a file name that stays where it is put: no `..` that climbs out of
/// `/run/secrets` (or `/`), not empty, not a directory.
pub fn check_target(kind: Kind, source: &str, target: &str) -> Result<(), String> {
    let word = kind.word();
    let bad = |why: &str| Err(format!("{word} {source}: target {target:?} {why}"));
    if target.is_empty() || target.ends_with('/') {
        return bad("is not a file name; give a file name such as target=app.conf");
    }
    if target.contains('\0') {
        return bad("holds a NUL byte");
    }
    // `.` and empty segments (`a//b`, `a/./b`) would make one file reachable under two
    // spellings and slip past the duplicate check; refuse them outright.
    let segments: Vec<&str> = target.trim_start_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == ".") {
        return bad(
            "has an empty or '.' path segment; write the path plainly, such as app/db.conf",
        );
    }
    if Path::new(target)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        let base = match kind {
            Kind::Secret => SECRETS_DIR,
            Kind::Config => "/",
        };
        return bad(&format!(
            "climbs out of {base} with '..'; use a plain name or an absolute path"
        ));
    }
    if target_path(kind, target) == SECRETS_DIR || target == "/" {
        return bad("is a directory; give a file name");
    }
    Ok(())
}

/// The checks swarmkit's control API makes on a container spec's references: each names a
/// secret or config and a valid file target, and no two share a target.
pub fn check_references(
    secrets: &[SecretReference],
    configs: &[ConfigReference],
) -> Result<(), String> {
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |kind: Kind, source: &str, file: &Option<FileTarget>| {
        let Some(file) = file else {
            return Err(format!(
                "{} {source}: reference has no file target",
                kind.word()
            ));
        };
        check_target(kind, source, &file.name)?;
        if file.mode > 0o7777 {
            return Err(format!(
                "{} {source}: mode {:o} is not a file mode; use octal such as 0440",
                kind.word(),
                file.mode
            ));
        }
        let path = target_path(kind, &file.name);
        if let Some(other) = targets.insert(path.clone(), source.to_string()) {
            return Err(format!(
                "{} {source} and {other} both target {path}; give one of them another target",
                kind.word()
            ));
        }
        // A file can't also be a directory of another target.
        let clash = targets.iter().find(|(p, _)| {
            p.as_str() != path
                && (p.starts_with(&format!("{path}/")) || path.starts_with(&format!("{p}/")))
        });
        if let Some((p, other)) = clash {
            return Err(format!(
                "{} {source} targets {path} and {other} targets {p}: one is inside the other; give one of them another target",
                kind.word()
            ));
        }
        Ok(())
    };
    for r in secrets {
        if r.secret_name.is_empty() {
            return Err("secret reference has no source; use --secret source=NAME".into());
        }
        claim(Kind::Secret, &r.secret_name, &r.file)?;
    }
    for r in configs {
        if r.config_name.is_empty() {
            return Err("config reference has no source; use --config source=NAME".into());
        }
        claim(Kind::Config, &r.config_name, &r.file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["a", "db_password", "site.conf", "a-b.c_d9", &"x".repeat(64)] {
            assert!(check_name(Kind::Secret, ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", ".a", "a b", "a/b", &"x".repeat(65), "é"] {
            let err = check_name(Kind::Config, bad).unwrap_err();
            assert!(err.contains("invalid config name"), "{err}");
        }
    }

    #[test]
    fn data_must_be_present_and_under_500_kib() {
        assert!(check_data(Kind::Secret, "s", 1).is_ok());
        assert!(check_data(Kind::Secret, "s", MAX_DATA_SIZE - 1).is_ok());
        assert!(
            check_data(Kind::Secret, "s", 0)
                .unwrap_err()
                .contains("empty")
        );
        let err = check_data(Kind::Config, "c", MAX_DATA_SIZE).unwrap_err();
        assert!(err.contains("config c") && err.contains("500 KiB"), "{err}");
    }

    #[test]
    fn targets_stay_inside_their_directory() {
        assert_eq!(target_path(Kind::Secret, "db"), "/run/secrets/db");
        assert_eq!(target_path(Kind::Secret, "/etc/db"), "/etc/db");
        assert_eq!(target_path(Kind::Config, "app.conf"), "/app.conf");
        assert!(check_target(Kind::Secret, "s", "sub/db").is_ok());
        assert!(check_target(Kind::Secret, "s", "/etc/ssl/key.pem").is_ok());
        for bad in [
            "../../etc/passwd",
            "a/../../b",
            "",
            "dir/",
            "/run/secrets",
            ".",
            "x/.",
            "/.",
            "a//b",
            "a/./b",
        ] {
            assert!(check_target(Kind::Secret, "s", bad).is_err(), "{bad:?}");
        }
        let err = check_target(Kind::Secret, "s", "../x").unwrap_err();
        assert!(err.contains("climbs out of /run/secrets"), "{err}");
    }

    #[test]
    fn references_need_distinct_targets() {
        let s = |name: &str, target: &str| SecretReference {
            file: Some(FileTarget::new(target)),
            secret_id: String::new(),
            secret_name: name.into(),
        };
        let c = |name: &str, target: &str| ConfigReference {
            file: Some(FileTarget::new(target)),
            config_id: String::new(),
            config_name: name.into(),
        };
        assert!(check_references(&[s("a", "a"), s("b", "b")], &[c("c", "/c")]).is_ok());
        let err = check_references(&[s("a", "x"), s("b", "x")], &[]).unwrap_err();
        assert!(err.contains("both target /run/secrets/x"), "{err}");
        let err = check_references(&[s("a", "/app.conf")], &[c("c", "app.conf")]).unwrap_err();
        assert!(err.contains("both target /app.conf"), "{err}");
        let err = check_references(&[s("a", "x"), s("b", "x/y")], &[]).unwrap_err();
        assert!(err.contains("one is inside the other"), "{err}");
        let mut no_file = s("a", "a");
        no_file.file = None;
        assert!(check_references(&[no_file], &[]).is_err());
        let mut bad_mode = s("a", "a");
        bad_mode.file.as_mut().unwrap().mode = 0o10000;
        assert!(check_references(&[bad_mode], &[]).is_err());
    }

    #[test]
    fn templated_data_must_parse() {
        let golang = Driver {
            name: "golang".into(),
            options: Default::default(),
        };
        let ok = b"db={{ secret \"db_pw\" }} on {{.Node.Hostname}} {{env \"X\"}}";
        assert!(check_template(Kind::Config, "c", Some(&golang), ok).is_ok());
        assert!(
            check_template(Kind::Config, "c", None, b"{{ broken").is_ok(),
            "not templated"
        );
        let err = check_template(Kind::Config, "c", Some(&golang), b"{{.Task.Nope}}").unwrap_err();
        assert!(err.starts_with("config c:"), "{err}");
        assert!(check_template(Kind::Secret, "s", Some(&golang), &[0xff, 0xfe]).is_err());
        // A secret's failing template is never quoted back.
        let err = check_template(Kind::Secret, "s", Some(&golang), b"hunter2 {{.Nope hunter2")
            .unwrap_err();
        assert!(
            err.starts_with("secret s:") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn drivers_are_refused_except_golang_templates() {
        let d = |n: &str| Driver {
            name: n.into(),
            options: Default::default(),
        };
        assert!(check_drivers(Kind::Secret, "s", None, Some(&d("golang"))).is_ok());
        assert!(check_drivers(Kind::Secret, "s", Some(&d("vault")), None).is_err());
        assert!(check_drivers(Kind::Config, "c", None, Some(&d("jinja"))).is_err());
    }

    #[test]
    fn sensitive_bytes_hide_in_debug_and_travel_as_base64() {
        let b = SensitiveBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{b:?}"), "SensitiveBytes(7 bytes)");
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, "\"aHVudGVyMg==\"");
        let back: SensitiveBytes = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_slice(), b"hunter2");
    }

    #[test]
    fn config_data_is_base64_in_json() {
        let spec = ConfigSpec {
            name: "c".into(),
            data: b"port=80\n".to_vec(),
            ..Default::default()
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["Data"], "cG9ydD04MAo=");
        assert_eq!(serde_json::from_value::<ConfigSpec>(json).unwrap(), spec);
    }
}
