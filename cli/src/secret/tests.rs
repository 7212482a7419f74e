use super::*;
use crate::listing::ListFlags;
use crate::{Cli, Command};
use clap::Parser;
use shoal_api::objects::Version;

const CREATED: &str = "2024-05-01T12:00:00.5Z";
const UPDATED: &str = "2024-05-01T12:30:00Z";

/// Two hours after CREATED.
fn now() -> i128 {
    shoal_api::parse_rfc3339(CREATED).unwrap() + 2 * 3600 * 1_000_000_000
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    crate::fixtures::labels(pairs)
}

fn secret(id: &str, name: &str, l: &[(&str, &str)]) -> Secret {
    Secret {
        id: id.into(),
        version: Version { index: 11 },
        created_at: CREATED.into(),
        updated_at: UPDATED.into(),
        spec: SecretSpec {
            name: name.into(),
            labels: labels(l),
            ..Default::default()
        },
    }
}

fn config(id: &str, name: &str, data: &str) -> Config {
    Config {
        id: id.into(),
        version: Version { index: 12 },
        created_at: CREATED.into(),
        updated_at: UPDATED.into(),
        spec: ConfigSpec {
            name: name.into(),
            labels: labels(&[("env", "dev"), ("tier", "")]),
            data: data.as_bytes().to_vec(),
            templating: None,
        },
    }
}

fn secrets() -> Vec<Secret> {
    vec![
        secret("mhv17xfe3gh6xc4rij5orpfds", "site.key10", &[]),
        secret("eo7jnzguqgtpdah3cm5srfb97", "site.key2", &[("env", "prod")]),
        secret(
            "l10gzp4mh2xjgt6tv4vmbyfhr",
            "db_password",
            &[("env", "dev")],
        ),
    ]
}

fn secret_ls(quiet: bool, filter: &[&str], format: Option<&str>) -> String {
    let flags = ListFlags {
        filter: filter.iter().map(|s| s.to_string()).collect(),
        format: format.map(str::to_string),
    };
    FileLs::new(Kind::Secret, quiet, &flags)
        .unwrap()
        .render(&secrets(), now())
        .unwrap()
}

#[test]
fn secret_ls_is_dockers_table_in_natural_order() {
    let want = "\
ID                          NAME          DRIVER    CREATED       UPDATED
l10gzp4mh2xjgt6tv4vmbyfhr   db_password             2 hours ago   2 hours ago
eo7jnzguqgtpdah3cm5srfb97   site.key2               2 hours ago   2 hours ago
mhv17xfe3gh6xc4rij5orpfds   site.key10              2 hours ago   2 hours ago
";
    assert_eq!(secret_ls(false, &[], None), want);
    assert_eq!(secret_ls(false, &[], Some("table")), want);
    // -q prints whole ids, as Docker does.
    assert_eq!(
        secret_ls(true, &[], None),
        "l10gzp4mh2xjgt6tv4vmbyfhr\neo7jnzguqgtpdah3cm5srfb97\nmhv17xfe3gh6xc4rij5orpfds\n"
    );
}

#[test]
fn secret_ls_filters_and_formats_from_docker_docs() {
    // docs/reference/commandline/secret_ls.md
    assert_eq!(
        secret_ls(true, &["id=eo7j"], None),
        "eo7jnzguqgtpdah3cm5srfb97\n"
    );
    assert_eq!(
        secret_ls(false, &["label=env"], Some("{{.Name}}")),
        "db_password\nsite.key2\n"
    );
    assert_eq!(
        secret_ls(false, &["label=env=prod"], Some("{{.Name}}")),
        "site.key2\n"
    );
    assert_eq!(
        secret_ls(false, &["name=site"], Some("{{.Name}}")),
        "site.key2\nsite.key10\n"
    );
    // names= is exact.
    assert_eq!(
        secret_ls(false, &["names=site.key2"], Some("{{.Name}}")),
        "site.key2\n"
    );
    assert_eq!(secret_ls(false, &["names=site"], Some("{{.Name}}")), "");
    assert_eq!(
        secret_ls(
            false,
            &["name=db"],
            Some("{{.ID}}: {{.Name}} {{.Label \"env\"}} {{.CreatedAt}}")
        ),
        "l10gzp4mh2xjgt6tv4vmbyfhr: db_password dev 2 hours ago\n"
    );
    assert_eq!(
        secret_ls(
            false,
            &["name=db"],
            Some("table {{.ID}}\t{{.Name}}\t{{.Labels}}")
        ),
        "ID                          NAME          LABELS\nl10gzp4mh2xjgt6tv4vmbyfhr   db_password   env=dev\n"
    );
    assert_eq!(
        secret_ls(true, &["name=db"], Some("json")),
        "{\"CreatedAt\":\"2 hours ago\",\"Driver\":\"\",\"ID\":\"l10gzp4mh2xjgt6tv4vmbyfhr\",\"Labels\":\"env=dev\",\"Name\":\"db_password\",\"UpdatedAt\":\"2 hours ago\"}\n"
    );
}

#[test]
fn list_flags_are_checked_before_asking() {
    let bad = |kind: Kind, filter: &str, format: Option<&str>| {
        let flags = ListFlags {
            filter: vec![filter.to_string()],
            format: format.map(str::to_string),
        };
        FileLs::new(kind, false, &flags).err().unwrap().to_string()
    };
    assert_eq!(
        bad(Kind::Secret, "driver=x", None),
        "invalid filter 'driver'"
    );
    // Configs have no `names` filter, as the daemon's.
    assert_eq!(bad(Kind::Config, "names=x", None), "invalid filter 'names'");
    assert!(bad(Kind::Config, "", Some("{{.Name")).starts_with("template parsing error"));
    let flags = ListFlags {
        filter: vec![],
        format: Some("{{.Driver}}".into()),
    };
    let err = FileLs::new(Kind::Config, false, &flags)
        .unwrap()
        .render(&[config("c1", "app", "x")], now())
        .unwrap_err()
        .to_string();
    assert_eq!(err, "template parsing error: can't evaluate field Driver");
}

#[test]
fn config_ls_has_no_driver_column() {
    let configs = vec![config("c2", "web.conf", "a"), config("c1", "app.conf", "b")];
    let ls = FileLs::new(Kind::Config, false, &ListFlags::default()).unwrap();
    assert_eq!(
        ls.render(&configs, now()).unwrap(),
        "\
ID        NAME       CREATED       UPDATED
c1        app.conf   2 hours ago   2 hours ago
c2        web.conf   2 hours ago   2 hours ago
"
    );
}

#[test]
fn secret_pretty_is_dockers_template() {
    let mut s = secret(
        "eo7jnzguqgtpdah3cm5srfb97",
        "my_secret",
        &[("env", "dev"), ("rev", "")],
    );
    assert_eq!(
        render::secret_pretty(&s),
        "\
ID:              eo7jnzguqgtpdah3cm5srfb97
Name:              my_secret
Labels:
 - env=dev
 - rev
Driver:            
Created at:        2024-05-01 12:00:00.5 +0000 UTC
Updated at:        2024-05-01 12:30:00 +0000 UTC
"
    );
    s.spec.labels.clear();
    assert!(
        render::secret_pretty(&s).contains("Name:              my_secret\nDriver:"),
        "no Labels block without labels"
    );
}

#[test]
fn config_pretty_shows_the_data_as_text() {
    assert_eq!(
        render::config_pretty(&config("c1", "app.conf", "port=80\n")),
        "ID:\t\t\tc1\nName:\t\t\tapp.conf\nLabels:\n - env=dev\n - tier\nCreated at:            \t2024-05-01 12:00:00.5 +0000 UTC\nUpdated at:            \t2024-05-01 12:30:00 +0000 UTC\nData:\nport=80\n\n"
    );
}

#[test]
fn inspect_is_json_without_secret_data_and_with_config_data_base64() {
    let inspect = inspect_format(false, None).unwrap().unwrap();
    let text = inspect.render(&secrets()[..1]).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json[0]["ID"], "mhv17xfe3gh6xc4rij5orpfds");
    assert_eq!(json[0]["Version"]["Index"], 11);
    assert_eq!(json[0]["Spec"]["Name"], "site.key10");
    assert!(json[0]["Spec"].get("Data").is_none(), "{text}");
    let text = inspect
        .render(&[config("c1", "app.conf", "port=80\n")])
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json[0]["Spec"]["Data"], "cG9ydD04MAo=");
    let t = inspect_format(false, Some("{{.Spec.Name}} {{index .Spec.Labels \"env\"}}"))
        .unwrap()
        .unwrap();
    assert_eq!(
        t.render(&secrets()).unwrap(),
        "site.key10 <no value>\nsite.key2 prod\ndb_password dev\n"
    );
}

#[test]
fn pretty_wins_over_format_as_in_docker() {
    assert!(inspect_format(true, None).unwrap().is_none());
    assert!(inspect_format(true, Some("{{.ID}}")).unwrap().is_none());
    assert!(inspect_format(false, Some("pretty")).unwrap().is_none());
    assert_eq!(
        inspect_format(false, Some("pretty {{.ID}}"))
            .err()
            .unwrap()
            .to_string(),
        "cannot supply extra formatting options to the pretty template"
    );
    assert!(inspect_format(false, Some("json")).unwrap().is_some());
}

fn parse(args: &[&str]) -> Command {
    let mut argv = vec!["shoal"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .command
}

fn secret_create(args: &[&str]) -> SecretCreateArgs {
    let mut argv = vec!["secret", "create"];
    argv.extend_from_slice(args);
    match parse(&argv) {
        Command::Secret(SecretCommand::Create(a)) => a,
        other => panic!("{other:?}"),
    }
}

fn config_create(args: &[&str]) -> ConfigCreateArgs {
    let mut argv = vec!["config", "create"];
    argv.extend_from_slice(args);
    match parse(&argv) {
        Command::Config(ConfigCommand::Create(a)) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn dockers_spellings_parse() {
    let a = secret_create(&["-l", "env=prod", "--label", "team", "db_pw", "-"]);
    let (spec, file) = secret_spec(&a).unwrap();
    assert_eq!(file, "-");
    assert_eq!(spec.name, "db_pw");
    assert_eq!(spec.labels, labels(&[("env", "prod"), ("team", "")]));
    assert_eq!(spec.driver, None);
    let a = secret_create(&["--template-driver", "golang", "tpl", "f.txt"]);
    assert_eq!(
        secret_spec(&a).unwrap().0.templating.unwrap().name,
        "golang"
    );
    let c = config_create(&[
        "--template-driver",
        "golang",
        "-l",
        "a=b",
        "site",
        "site.conf",
    ]);
    let spec = config_spec(&c).unwrap();
    assert_eq!(spec.templating.unwrap().name, "golang");
    assert_eq!(spec.labels, labels(&[("a", "b")]));
    assert_eq!(c.file, "site.conf");
    assert!(matches!(
        parse(&[
            "secret", "list", "-q", "-f", "name=x", "--format", "{{.ID}}"
        ]),
        Command::Secret(SecretCommand::Ls { quiet: true, .. })
    ));
    assert!(matches!(
        parse(&["config", "remove", "a", "b"]),
        Command::Config(ConfigCommand::Rm { configs }) if configs == ["a", "b"]
    ));
    assert!(matches!(
        parse(&["secret", "inspect", "--pretty", "a"]),
        Command::Secret(SecretCommand::Inspect { pretty: true, .. })
    ));
    assert!(matches!(
        parse(&["config", "inspect", "-f", "{{json .Spec}}", "a"]),
        Command::Config(ConfigCommand::Inspect {
            format: Some(_),
            ..
        })
    ));
    // A config needs its file; rm and inspect need a name.
    let mut argv = vec!["shoal", "config", "create", "only-a-name"];
    assert!(Cli::try_parse_from(&argv).is_err());
    argv = vec!["shoal", "secret", "rm"];
    assert!(Cli::try_parse_from(&argv).is_err());
}

#[test]
fn bad_create_flags_are_refused_before_reading_or_sending() {
    let err = |a: &[&str]| secret_spec(&secret_create(a)).unwrap_err().to_string();
    assert!(err(&["bad/name", "f"]).contains("invalid secret name \"bad/name\""));
    assert!(
        err(&["-d", "vault", "s"]).contains("secret driver \"vault\" is not available"),
        "a driver is refused before the missing file"
    );
    assert!(
        err(&["--template-driver", "jinja", "s", "f"])
            .contains("template driver \"jinja\" is unknown")
    );
    assert_eq!(
        err(&["-l", "=x", "s", "f"]),
        "invalid --label \"=x\": missing label key (use KEY=VALUE)"
    );
    assert_eq!(
        err(&["s"]),
        "secret s: no data; give a file with the secret's data, or - to read it from stdin"
    );
    let e = config_spec(&config_create(&["x y", "f"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid config name \"x y\""), "{e}");
}

#[test]
fn data_comes_from_the_file_or_stdin_within_dockers_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let no_stdin = &mut std::io::empty();
    std::fs::write(path("pw"), b"hunter2\n").unwrap();
    let data = read_data(Kind::Secret, "db", &path("pw"), no_stdin).unwrap();
    assert_eq!(data.as_slice(), b"hunter2\n");
    let data = read_data(Kind::Config, "c", "-", &mut &b"port=80"[..]).unwrap();
    assert_eq!(data.as_slice(), b"port=80");

    let missing = path("nope");
    assert_eq!(
        read_data(Kind::Secret, "db", &missing, no_stdin)
            .unwrap_err()
            .to_string(),
        format!(
            "secret db: cannot read {missing}: No such file or directory (os error 2); give the path of a file with the secret's data, or - to read it from stdin"
        )
    );
    let e = read_data(Kind::Secret, "db", &path(""), no_stdin)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Is a directory"), "{e}");
    std::fs::write(path("empty"), b"").unwrap();
    assert_eq!(
        read_data(Kind::Config, "c", &path("empty"), no_stdin)
            .unwrap_err()
            .to_string(),
        format!(
            "config c: {} is empty; give a file with content, or - to read stdin",
            path("empty")
        )
    );
    assert_eq!(
        read_data(Kind::Secret, "s", "-", no_stdin)
            .unwrap_err()
            .to_string(),
        "secret s: stdin is empty; give a file with content, or - to read stdin"
    );
    // Less than 500 KiB passes; 500 KiB is refused, as Docker refuses it.
    let just_under = vec![b'x'; MAX_DATA_SIZE - 1];
    assert_eq!(
        read_data(Kind::Secret, "s", "-", &mut just_under.as_slice())
            .unwrap()
            .len(),
        MAX_DATA_SIZE - 1
    );
    std::fs::write(path("big"), vec![0u8; MAX_DATA_SIZE]).unwrap();
    assert_eq!(
        read_data(Kind::Secret, "s", &path("big"), no_stdin)
            .unwrap_err()
            .to_string(),
        format!(
            "secret s: {} is too large; a secret must be less than 512000 bytes (500 KiB)",
            path("big")
        )
    );
    // An endless stream stops at the limit.
    let e = read_data(Kind::Config, "c", "-", &mut std::io::repeat(b'y')).unwrap_err();
    assert!(e.to_string().contains("stdin is too large"), "{e}");
}
