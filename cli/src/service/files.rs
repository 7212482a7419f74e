//! `--secret` and `--config` of `service create|update`, as docker/cli parses them
//! (`opts/secret.go`, `opts/config.go`): the short form `NAME`, or the CSV form
//! `source=NAME,target=T,uid=U,gid=G,mode=0440`. References carry the name only; the
//! manager fills in the id, and refuses a name it does not know.
//!
//! [`FileRef`] is the reference before Docker's defaults are filled in, so the Compose
//! converter can build one from a service's `secrets:`/`configs:` entry the same way.

use super::options::csv_fields;
use super::spec::SpecError;
use shoal_api::secrets::{ConfigReference, FileTarget, Kind, SecretReference, check_name};

/// A secret or config reference as the user wrote it; `None` takes Docker's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRef {
    pub source: String,
    /// Default: the source's name (under `/run/secrets` for a secret, `/` for a config).
    pub target: Option<String>,
    /// Default "0".
    pub uid: Option<String>,
    /// Default "0".
    pub gid: Option<String>,
    /// Default 0444.
    pub mode: Option<u32>,
}

impl FileRef {
    fn file(&self) -> FileTarget {
        let defaults = FileTarget::new(self.target.as_deref().unwrap_or(&self.source));
        FileTarget {
            uid: self.uid.clone().unwrap_or(defaults.uid.clone()),
            gid: self.gid.clone().unwrap_or(defaults.gid.clone()),
            mode: self.mode.unwrap_or(defaults.mode),
            ..defaults
        }
    }

    pub fn secret(&self) -> SecretReference {
        SecretReference {
            file: Some(self.file()),
            secret_id: String::new(),
            secret_name: self.source.clone(),
        }
    }

    pub fn config(&self) -> ConfigReference {
        ConfigReference {
            file: Some(self.file()),
            config_id: String::new(),
            config_name: self.source.clone(),
        }
    }
}

fn bad(flag: &'static str, value: &str, reason: &'static str) -> SpecError {
    SpecError::BadValue {
        flag,
        value: value.to_string(),
        reason,
    }
}

/// One `--secret`/`--config` value (or its `-add` twin on update).
pub fn parse_file_ref(kind: Kind, flag: &'static str, value: &str) -> Result<FileRef, SpecError> {
    let b = |reason| bad(flag, value, reason);
    let fields = csv_fields(value).map_err(b)?;
    let mut r = FileRef::default();
    if let [only] = fields.as_slice()
        && !only.contains('=')
    {
        r.source = only.trim().to_string();
    } else {
        for field in &fields {
            let Some((k, v)) = field.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
                return Err(b(match kind {
                    Kind::Secret => "use NAME or source=NAME,target=T,uid=U,gid=G,mode=0440",
                    Kind::Config => "use NAME or source=NAME,target=/T,uid=U,gid=G,mode=0440",
                }));
            };
            let v = v.trim();
            // docker/cli matches the keys without regard to case.
            match k.trim().to_ascii_lowercase().as_str() {
                "source" | "src" => r.source = v.to_string(),
                "target" => r.target = Some(v.to_string()),
                "uid" => {
                    r.uid = Some(numeric_id(v).ok_or_else(|| b("uid takes a numeric user id"))?)
                }
                "gid" => {
                    r.gid = Some(numeric_id(v).ok_or_else(|| b("gid takes a numeric group id"))?)
                }
                "mode" => r.mode = Some(parse_file_mode(v).map_err(b)?),
                _ => return Err(b("unknown key; use source, target, uid, gid or mode")),
            }
        }
    }
    if r.source.is_empty() {
        return Err(b("missing source=NAME"));
    }
    check_name(kind, &r.source).map_err(SpecError::Files)?;
    Ok(r)
}

pub fn parse_secret(flag: &'static str, value: &str) -> Result<SecretReference, SpecError> {
    parse_file_ref(Kind::Secret, flag, value).map(|r| r.secret())
}

pub fn parse_config(flag: &'static str, value: &str) -> Result<ConfigReference, SpecError> {
    parse_file_ref(Kind::Config, flag, value).map(|r| r.config())
}

/// The task sets the file's owner from these, so they must be numbers (Docker's daemon
/// fails the task later when they are not).
fn numeric_id(v: &str) -> Option<String> {
    v.parse::<u32>().ok().map(|n| n.to_string())
}

/// `mode=`: Go's `strconv.ParseUint(v, 0, 32)`, as docker/cli reads it (`0440` and
/// `0o440` octal, `0x120` hex, `292` decimal), up to 07777.
///
/// One refusal Docker does not make: a number of two or more octal digits without a
/// leading 0 (`mode=440`). Docker reads it as decimal and gives the file mode 0670, which
/// is never what was meant for a secret.
pub fn parse_file_mode(v: &str) -> Result<u32, &'static str> {
    let digits = v.replace('_', "");
    let lower = digits.to_ascii_lowercase();
    let (radix, rest) = if let Some(r) = lower.strip_prefix("0x") {
        (16, r)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (8, r)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (2, r)
    } else if lower.len() > 1
        && let Some(r) = lower.strip_prefix('0')
    {
        (8, r)
    } else {
        if lower.len() > 1 && lower.chars().all(|c| ('0'..='7').contains(&c)) {
            return Err(
                "write the mode in octal with a leading 0, e.g. mode=0440 (Docker would read it as a decimal number)",
            );
        }
        (10, lower.as_str())
    };
    let mode = u32::from_str_radix(rest, radix)
        .map_err(|_| "mode takes octal permission bits, e.g. 0440")?;
    if mode > 0o7777 {
        return Err("mode takes permission bits up to 07777, e.g. 0440");
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(v: &str) -> SecretReference {
        parse_secret("--secret", v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn err(v: &str) -> String {
        parse_secret("--secret", v).unwrap_err().to_string()
    }

    #[test]
    fn short_form_takes_dockers_defaults() {
        let r = secret("db_password");
        assert_eq!(r.secret_name, "db_password");
        assert_eq!(r.secret_id, "");
        assert_eq!(r.file, Some(FileTarget::new("db_password")));
        let f = r.file.unwrap();
        assert_eq!((f.uid.as_str(), f.gid.as_str(), f.mode), ("0", "0", 0o444));
        let c = parse_config("--config", "nginx.conf").unwrap();
        assert_eq!(c.config_name, "nginx.conf");
        assert_eq!(c.file.unwrap().name, "nginx.conf");
    }

    #[test]
    fn long_form_sets_every_field() {
        let r = secret("source=db,target=app/db.pw,uid=1000,gid=1001,mode=0440");
        assert_eq!(r.secret_name, "db");
        assert_eq!(
            r.file,
            Some(FileTarget {
                name: "app/db.pw".into(),
                uid: "1000".into(),
                gid: "1001".into(),
                mode: 0o440,
            })
        );
        // src is source's short name, keys ignore case, and the target defaults to the name.
        let r = secret("SRC=db,Mode=0400");
        assert_eq!(r.secret_name, "db");
        assert_eq!(r.file.as_ref().unwrap().name, "db");
        assert_eq!(r.file.unwrap().mode, 0o400);
        let c = parse_config("--config", "source=site,target=/etc/nginx/site.conf").unwrap();
        assert_eq!(c.file.unwrap().name, "/etc/nginx/site.conf");
        // Quoted CSV, as Go's encoding/csv reads it.
        assert_eq!(secret("\"source=db\",target=x").secret_name, "db");
    }

    #[test]
    fn modes_read_as_go_parseuint_base_0() {
        for (v, want) in [
            ("0440", 0o440),
            ("0o600", 0o600),
            ("0x124", 0o444),
            ("292", 0o444),
            ("0", 0),
            ("4", 4),
            ("0b100100100", 0o444),
        ] {
            assert_eq!(parse_file_mode(v).unwrap(), want, "{v}");
        }
        assert_eq!(
            err("source=db,mode=440"),
            r#"invalid --secret "source=db,mode=440": write the mode in octal with a leading 0, e.g. mode=0440 (Docker would read it as a decimal number)"#
        );
        for v in ["rw", "0999", "", "010000", "0x"] {
            assert!(parse_file_mode(v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn bad_values_say_what_to_write() {
        assert_eq!(
            err("source=db,foo=1"),
            r#"invalid --secret "source=db,foo=1": unknown key; use source, target, uid, gid or mode"#
        );
        assert_eq!(
            err("target=x"),
            r#"invalid --secret "target=x": missing source=NAME"#
        );
        assert!(err("db,target=x").contains("use NAME or source=NAME"));
        assert!(err("source=db,uid=root").contains("uid takes a numeric user id"));
        assert!(err("source=db,gid=").contains("gid takes a numeric group id"));
        assert!(err("source=db,mode=abc").contains("octal permission bits"));
        assert!(err("\"source=db").contains("unbalanced quotes"));
        assert!(err("no/slash").contains("invalid secret name \"no/slash\""));
    }

    fn cli(args: &[&str]) -> crate::Command {
        use clap::Parser;
        let mut argv = vec!["shoal", "service"];
        argv.extend_from_slice(args);
        crate::Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    fn create(args: &[&str]) -> Result<shoal_api::objects::ServiceSpec, String> {
        let mut argv = vec!["create", "--name", "web"];
        argv.extend_from_slice(args);
        argv.push("nginx");
        let crate::Command::Service(crate::service::ServiceCommand::Create(c)) = cli(&argv) else {
            panic!("not service create");
        };
        crate::service::create_options(&c)
            .map_err(|e| e.to_string())
            .and_then(|o| {
                crate::service::spec::create_plan(&o, &|_| None).map_err(|e| e.to_string())
            })
            .map(|p| p.spec)
    }

    #[test]
    fn service_create_takes_secrets_and_configs() {
        let spec = create(&[
            "--secret",
            "db_password",
            "--secret",
            "source=tls_key,target=/etc/ssl/key.pem,uid=101,mode=0400",
            "--config",
            "source=site,target=/etc/nginx/conf.d/site.conf",
        ])
        .unwrap();
        let cs = &spec.task_template.container_spec;
        assert_eq!(
            cs.secrets,
            vec![
                secret("db_password"),
                secret("source=tls_key,target=/etc/ssl/key.pem,uid=101,mode=0400")
            ]
        );
        assert_eq!(cs.configs.len(), 1);
        assert_eq!(cs.configs[0].config_name, "site");
        // Docker's field names, with the id left for the manager to fill in.
        let json = serde_json::to_value(cs).unwrap();
        assert_eq!(
            json["Secrets"][1],
            serde_json::json!({
                "File": {"Name": "/etc/ssl/key.pem", "UID": "101", "GID": "0", "Mode": 256},
                "SecretID": "",
                "SecretName": "tls_key"
            })
        );
        assert_eq!(json["Configs"][0]["ConfigName"], "site");
    }

    #[test]
    fn service_create_refuses_clashing_or_escaping_targets() {
        let e = create(&["--secret", "a", "--secret", "source=b,target=a"]).unwrap_err();
        assert!(e.contains("both target /run/secrets/a"), "{e}");
        let e = create(&[
            "--secret",
            "source=a,target=/app.conf",
            "--config",
            "app.conf",
        ])
        .unwrap_err();
        assert!(e.contains("both target /app.conf"), "{e}");
        let e = create(&["--secret", "source=a,target=../../etc/shadow"]).unwrap_err();
        assert!(e.contains("climbs out of /run/secrets"), "{e}");
        let e = create(&["--secret", "source=a,mode=0440,color=red"]).unwrap_err();
        assert!(e.contains("unknown key"), "{e}");
    }

    fn update(
        current: &shoal_api::control::ServiceView,
        args: &[&str],
    ) -> Result<shoal_api::objects::ServiceSpec, String> {
        let mut argv = vec!["update"];
        argv.extend_from_slice(args);
        argv.push("web");
        let crate::Command::Service(crate::service::ServiceCommand::Update(u)) = cli(&argv) else {
            panic!("not service update");
        };
        let ops = crate::service::update_ops(&u).map_err(|e| e.to_string())?;
        crate::service::spec::apply_update(current, &ops, &Default::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn service_update_rotates_a_secret_by_name() {
        let mut view = crate::fixtures::service(
            "svc",
            "web",
            shoal_api::objects::ServiceMode::Replicated { replicas: 1 },
            &[],
        );
        let cs = &mut view.service.spec.task_template.container_spec;
        cs.secrets = vec![secret("source=db_v1,target=db")];
        cs.secrets[0].secret_id = "id1".into();
        cs.configs = vec![parse_config("--config", "site").unwrap()];
        // Docker's rotation: the old one out by name, the new one in at the same target.
        let spec = update(
            &view,
            &[
                "--secret-rm",
                "db_v1",
                "--secret-add",
                "source=db_v2,target=db",
            ],
        )
        .unwrap();
        let secrets = &spec.task_template.container_spec.secrets;
        assert_eq!(secrets, &vec![secret("source=db_v2,target=db")]);
        let spec = update(&view, &["--config-rm", "site", "--config-add", "other"]).unwrap();
        assert_eq!(
            spec.task_template.container_spec.configs[0].config_name,
            "other"
        );
        // Adding at a taken target without removing the old one is refused, as Docker's
        // daemon refuses it; so is removing what the service does not have.
        let e = update(&view, &["--secret-add", "source=db_v2,target=db"]).unwrap_err();
        assert!(
            e.contains("db_v2 and db_v1 both target /run/secrets/db"),
            "{e}"
        );
        let e = update(&view, &["--secret-rm", "db"]).unwrap_err();
        assert_eq!(e, "--secret-rm db: the service has no secret db");
        let e = update(&view, &["--config-rm", "nope"]).unwrap_err();
        assert_eq!(e, "--config-rm nope: the service has no config nope");
        // Other updates keep the references as they are, ids included.
        let spec = update(&view, &["--env-add", "A=1"]).unwrap();
        assert_eq!(
            spec.task_template.container_spec.secrets[0].secret_id,
            "id1"
        );
    }
}
