//! `--with-registry-auth`: the CLI's credentials for an image's registry, found as the Docker
//! CLI finds them (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`: `credHelpers`,
//! then `credsStore`, then `auths`) and encoded as Docker's X-Registry-Auth. The lookups are
//! pure functions over the parsed config and a helper runner, so they test without a
//! keychain.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use shoal_api::registry_auth::{Credentials, RegistryAuth};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Docker Hub's key in config.json and its server address in credentials.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Docker config file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: auths.{registry}.auth is not base64 of user:password")]
    BadAuth { path: PathBuf, registry: String },
    #[error(
        "credential helper docker-credential-{helper} for {registry}: {reason}; check it with 'docker login {registry}'"
    )]
    Helper {
        helper: String,
        registry: String,
        reason: String,
    },
}

/// The parts of Docker's config.json that hold credentials.
#[derive(Deserialize, Debug, Default)]
pub struct DockerConfig {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    pub creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    pub cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
pub struct AuthEntry {
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub identitytoken: String,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry(..)")
    }
}

/// What a credential helper's `get` prints.
#[derive(Deserialize)]
pub struct HelperAnswer {
    #[serde(rename = "Username", default)]
    pub username: String,
    #[serde(rename = "Secret", default)]
    pub secret: String,
}

impl std::fmt::Debug for HelperAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HelperAnswer(..)")
    }
}

/// The registry host an image is pulled from, by Docker's rule: the first path component
/// when it has a '.' or ':', is `localhost` or has upper case; Docker Hub otherwise. Docker
/// Hub comes back as its config key, [`DOCKER_HUB`].
pub fn registry_of(image: &str) -> String {
    let Some((first, _)) = image.split_once('/') else {
        return DOCKER_HUB.to_string();
    };
    let is_host = first.contains(['.', ':'])
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase());
    match first {
        _ if !is_host => DOCKER_HUB.to_string(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        host => host.to_string(),
    }
}

/// A config.json key reduced to its host, as the Docker CLI compares them
/// (`https://127.0.0.1:5000/v2/` matches `127.0.0.1:5000`).
fn hostname(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn config_path(docker_config: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    match (docker_config.filter(|d| !d.is_empty()), home) {
        (Some(dir), _) => Some(Path::new(dir).join("config.json")),
        (None, Some(home)) => Some(Path::new(home).join(".docker").join("config.json")),
        (None, None) => None,
    }
}

/// Reads a config file; a missing one is an empty config, as for the Docker CLI.
pub fn read_config(path: &Path) -> Result<DockerConfig, AuthError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DockerConfig::default()),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|source| AuthError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs a credential helper: `(helper name, server address)` to its answer, `None` when it
/// has no credentials for that server.
pub type HelperRunner<'a> = dyn Fn(&str, &str) -> Result<Option<HelperAnswer>, String> + 'a;

/// The credentials `config` holds for `registry` (a value of [`registry_of`]).
pub fn credentials_for(
    config: &DockerConfig,
    path: &Path,
    registry: &str,
    run_helper: &HelperRunner<'_>,
) -> Result<Option<Credentials>, AuthError> {
    let helper = config
        .cred_helpers
        .get(registry)
        .or_else(|| {
            config
                .cred_helpers
                .iter()
                .find(|(k, _)| hostname(k) == hostname(registry))
                .map(|(_, v)| v)
        })
        .or(config.creds_store.as_ref())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        let answer = run_helper(helper, registry).map_err(|reason| AuthError::Helper {
            helper: helper.clone(),
            registry: registry.to_string(),
            reason,
        })?;
        return Ok(answer.map(|a| from_helper(a, registry)));
    }
    let entry = config.auths.get(registry).or_else(|| {
        config
            .auths
            .iter()
            .find(|(k, _)| hostname(k) == hostname(registry))
            .map(|(_, v)| v)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    let mut creds = Credentials {
        username: entry.username.clone(),
        password: entry.password.clone(),
        identitytoken: entry.identitytoken.clone(),
        serveraddress: registry.to_string(),
    };
    if !entry.auth.is_empty() {
        let bad = || AuthError::BadAuth {
            path: path.to_path_buf(),
            registry: registry.to_string(),
        };
        let decoded = STANDARD.decode(entry.auth.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, password) = text.split_once(':').ok_or_else(bad)?;
        creds.username = user.to_string();
        creds.password = password.to_string();
    }
    if !creds.identitytoken.is_empty() {
        // A token stands for the password; Docker sends it alone.
        creds.password.clear();
    }
    if creds.username.is_empty() && creds.password.is_empty() && creds.identitytoken.is_empty() {
        return Ok(None);
    }
    Ok(Some(creds))
}

fn from_helper(a: HelperAnswer, registry: &str) -> Credentials {
    if a.username == "<token>" {
        Credentials {
            identitytoken: a.secret,
            serveraddress: registry.to_string(),
            ..Default::default()
        }
    } else {
        Credentials {
            username: a.username,
            password: a.secret,
            serveraddress: registry.to_string(),
            ..Default::default()
        }
    }
}

/// Runs `docker-credential-<helper> get` with the server address on stdin, found on PATH,
/// as the Docker CLI does.
pub fn run_helper(helper: &str, server: &str) -> Result<Option<HelperAnswer>, String> {
    run_helper_on(None, helper, server)
}

/// [`run_helper`], the helper looked up on `path` instead of this process's PATH.
fn run_helper_on(
    path: Option<&std::ffi::OsStr>,
    helper: &str,
    server: &str,
) -> Result<Option<HelperAnswer>, String> {
    let program = format!("docker-credential-{helper}");
    let mut command = Command::new(&program);
    if let Some(path) = path {
        // Setting PATH on the command makes std look the program up there.
        command.env("PATH", path);
    }
    let mut child = command
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| format!("writing to {program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The helpers' protocol: this message on stdout means "none stored".
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{program} get exited with {}: {}",
            out.status,
            format!("{} {}", stdout.trim(), stderr.trim()).trim()
        ));
    }
    serde_json::from_str(stdout.trim())
        .map(Some)
        .map_err(|e| format!("{program} get answered something other than credentials: {e}"))
}

/// The X-Registry-Auth for `image` from the user's Docker config, or `None` (said on
/// stderr: the nodes then pull anonymously).
pub fn for_image(image: &str) -> Result<Option<RegistryAuth>, AuthError> {
    let registry = registry_of(image);
    let home = std::env::var("HOME").ok();
    let docker_config = std::env::var("DOCKER_CONFIG").ok();
    let Some(path) = config_path(docker_config.as_deref(), home.as_deref()) else {
        eprintln!("no credentials for {registry} (no Docker config file); nodes pull anonymously");
        return Ok(None);
    };
    let config = read_config(&path)?;
    match credentials_for(&config, &path, &registry, &run_helper)? {
        Some(creds) => Ok(Some(RegistryAuth::encode(&creds))),
        None => {
            eprintln!(
                "no credentials for {registry} in {}; nodes pull anonymously",
                path.display()
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_of_reference_follows_dockers_rule() {
        for (image, registry) in [
            ("busybox", DOCKER_HUB),
            ("busybox:1.36", DOCKER_HUB),
            ("library/busybox", DOCKER_HUB),
            ("alice/app:v1", DOCKER_HUB),
            ("docker.io/alice/app", DOCKER_HUB),
            ("index.docker.io/library/busybox", DOCKER_HUB),
            ("ghcr.io/owner/app:v1", "ghcr.io"),
            ("127.0.0.1:5000/shoal-test:latest", "127.0.0.1:5000"),
            ("localhost/app", "localhost"),
            ("localhost:5000/app@sha256:abc", "localhost:5000"),
            (
                "registry.example.com:443/team/app",
                "registry.example.com:443",
            ),
            ("MyRegistry/app", "MyRegistry"),
        ] {
            assert_eq!(registry_of(image), registry, "{image}");
        }
    }

    #[test]
    fn config_path_prefers_docker_config() {
        assert_eq!(
            config_path(Some("/tmp/dc"), Some("/root")),
            Some(PathBuf::from("/tmp/dc/config.json"))
        );
        assert_eq!(
            config_path(None, Some("/root")),
            Some(PathBuf::from("/root/.docker/config.json"))
        );
        assert_eq!(
            config_path(Some(""), Some("/h")),
            Some(PathBuf::from("/h/.docker/config.json"))
        );
        assert_eq!(config_path(None, None), None);
    }

    fn parse(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    fn no_helper(_: &str, _: &str) -> Result<Option<HelperAnswer>, String> {
        panic!("no helper should run")
    }

    #[test]
    fn auths_entries_give_user_and_password_or_a_token() {
        let auth = STANDARD.encode("alice:pa:ss");
        let config = parse(&format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{auth}"}},
                "https://ghcr.io/v2/": {{"auth": "{auth}"}},
                "https://index.docker.io/v1/": {{"identitytoken": "tok"}},
                "empty.example": {{}}
            }}}}"#
        ));
        let p = Path::new("config.json");
        let creds = credentials_for(&config, p, "127.0.0.1:5000", &no_helper)
            .unwrap()
            .unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("alice", "pa:ss"),
            "the password may hold ':'"
        );
        assert_eq!(creds.serveraddress, "127.0.0.1:5000");
        let by_host = credentials_for(&config, p, "ghcr.io", &no_helper).unwrap();
        assert_eq!(
            by_host.unwrap().username,
            "alice",
            "key matched by hostname"
        );
        let hub = credentials_for(&config, p, DOCKER_HUB, &no_helper)
            .unwrap()
            .unwrap();
        assert_eq!(hub.identitytoken, "tok");
        assert!(hub.username.is_empty() && hub.password.is_empty());
        assert!(
            credentials_for(&config, p, "empty.example", &no_helper)
                .unwrap()
                .is_none()
        );
        assert!(
            credentials_for(&config, p, "quay.io", &no_helper)
                .unwrap()
                .is_none()
        );
        let bad = parse(r#"{"auths": {"r.example": {"auth": "not base64!"}}}"#);
        let err = credentials_for(&bad, p, "r.example", &no_helper).unwrap_err();
        assert!(err.to_string().contains("auths.r.example.auth"), "{err}");
    }

    #[test]
    fn cred_helpers_win_over_creds_store_which_wins_over_auths() {
        let config = parse(
            r#"{"auths": {"a.example": {"auth": "dTpw"}, "b.example": {"auth": "dTpw"}},
                "credsStore": "store",
                "credHelpers": {"a.example": "ecr"}}"#,
        );
        let calls = std::cell::RefCell::new(Vec::new());
        let helper = |name: &str, server: &str| {
            calls.borrow_mut().push(format!("{name} {server}"));
            Ok(Some(HelperAnswer {
                username: if name == "ecr" { "AWS" } else { "<token>" }.into(),
                secret: "s".into(),
            }))
        };
        let p = Path::new("config.json");
        let a = credentials_for(&config, p, "a.example", &helper)
            .unwrap()
            .unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("AWS", "s"));
        let b = credentials_for(&config, p, "b.example", &helper)
            .unwrap()
            .unwrap();
        assert_eq!(b.identitytoken, "s", "<token> means an identity token");
        assert!(b.username.is_empty());
        assert_eq!(*calls.borrow(), ["ecr a.example", "store b.example"]);
        let failing = |_: &str, _: &str| Err("exit status 1".to_string());
        let err = credentials_for(&config, p, "b.example", &failing).unwrap_err();
        assert!(err.to_string().contains("docker-credential-store"), "{err}");
    }

    #[test]
    fn a_real_helper_is_run_with_the_server_on_stdin() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("docker-credential-x");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\ncase \"$server\" in\n  127.0.0.1:5000) printf '{\"ServerURL\":\"%s\",\"Username\":\"bob\",\"Secret\":\"pw\"}' \"$server\" ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            config_dir.path().join("config.json"),
            r#"{"credsStore": "x"}"#,
        )
        .unwrap();
        let config = read_config(&config_dir.path().join("config.json")).unwrap();
        // Found by name on a temp PATH (the command's own, not this process's, which other
        // test threads share).
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let by_path = |name: &str, server: &str| {
            assert_eq!(name, "x");
            run_helper_on(Some(path.as_ref()), name, server)
        };
        let p = Path::new("config.json");
        let creds = credentials_for(&config, p, "127.0.0.1:5000", &by_path)
            .unwrap()
            .unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("bob", "pw")
        );
        assert!(
            credentials_for(&config, p, "other.example", &by_path)
                .unwrap()
                .is_none(),
            "'credentials not found' is no credentials, not an error"
        );
        let err = run_helper_on(Some(path.as_ref()), "absent", "r").unwrap_err();
        assert!(err.contains("cannot run docker-credential-absent"), "{err}");
    }

    #[test]
    fn missing_config_file_is_empty_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let empty = read_config(&path).unwrap();
        assert!(empty.auths.is_empty() && empty.creds_store.is_none());
        std::fs::write(&path, "{not json").unwrap();
        let err = read_config(&path).unwrap_err();
        assert!(
            err.to_string().contains("is not a Docker config file"),
            "{err}"
        );
    }
}
