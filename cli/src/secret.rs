//! `shoal secret ...` and `shoal config ...`: named data that services' tasks see as
//! files. The two command groups have one shape (docker/cli `cli/command/secret`,
//! `cli/command/config`), so one module serves both, `Kind` saying which.
//!
//! A secret's data goes to the manager once and never comes back: no answer carries it,
//! so no output can show it. A config's data is part of its spec: `inspect` shows it
//! base64, `inspect --pretty` as text, as Docker does.

pub mod render;

use crate::daemon::Daemon;
use crate::format::now_nanos;
use crate::listing::{FileLs, Inspect, ListFlags};
use crate::service::spec::{SpecError, parse_label};
use crate::{Output, print};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use shoal_api::control::ControlRequest;
use shoal_api::objects::Driver;
use shoal_api::secrets::{
    Config, ConfigSpec, Kind, MAX_DATA_SIZE, Secret, SecretSpec, SensitiveBytes, check_drivers,
    check_name,
};
use std::collections::BTreeMap;
use std::io::Read;

/// What the list commands read of a secret or a config.
pub trait FileObject {
    fn id(&self) -> &str;
    fn name(&self) -> &str;
    fn labels(&self) -> &BTreeMap<String, String>;
    /// A secret's external driver (none on shoal); configs have no driver.
    fn driver(&self) -> &str;
    fn created_at(&self) -> &str;
    fn updated_at(&self) -> &str;
}

impl FileObject for Secret {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.spec.name
    }
    fn labels(&self) -> &BTreeMap<String, String> {
        &self.spec.labels
    }
    fn driver(&self) -> &str {
        self.spec.driver.as_ref().map_or("", |d| d.name.as_str())
    }
    fn created_at(&self) -> &str {
        &self.created_at
    }
    fn updated_at(&self) -> &str {
        &self.updated_at
    }
}

impl FileObject for Config {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.spec.name
    }
    fn labels(&self) -> &BTreeMap<String, String> {
        &self.spec.labels
    }
    fn driver(&self) -> &str {
        ""
    }
    fn created_at(&self) -> &str {
        &self.created_at
    }
    fn updated_at(&self) -> &str {
        &self.updated_at
    }
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret from a file or STDIN as content
    Create(SecretCreateArgs),
    /// List secrets
    #[command(visible_alias = "list")]
    Ls {
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        list: ListFlags,
    },
    /// Display detailed information on one or more secrets (never their data)
    Inspect {
        /// Print the information in a human friendly format
        #[arg(long)]
        pretty: bool,
        /// Format output using a Go template (or "json")
        #[arg(short, long, value_name = "FORMAT")]
        format: Option<String>,
        #[arg(required = true, value_name = "SECRET")]
        secrets: Vec<String>,
    },
    /// Remove one or more secrets
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "SECRET")]
        secrets: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Create a config from a file or STDIN
    Create(ConfigCreateArgs),
    /// List configs
    #[command(visible_alias = "list")]
    Ls {
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        list: ListFlags,
    },
    /// Display detailed information on one or more configs
    Inspect {
        /// Print the information in a human friendly format
        #[arg(long)]
        pretty: bool,
        /// Format output using a Go template (or "json")
        #[arg(short, long, value_name = "FORMAT")]
        format: Option<String>,
        #[arg(required = true, value_name = "CONFIG")]
        configs: Vec<String>,
    },
    /// Remove one or more configs
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "CONFIG")]
        configs: Vec<String>,
    },
}

#[derive(Args, Debug, Default)]
pub struct SecretCreateArgs {
    /// Secret labels
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Secret driver (shoal keeps secrets in its own encrypted store and has none)
    #[arg(short, long)]
    pub driver: Option<String>,
    /// Template driver: golang renders the data as a service template for each task
    #[arg(long, value_name = "DRIVER")]
    pub template_driver: Option<String>,
    #[arg(value_name = "SECRET")]
    pub name: String,
    /// The file with the secret's data, or - to read it from stdin
    #[arg(value_name = "FILE|-")]
    pub file: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct ConfigCreateArgs {
    /// Config labels
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Template driver: golang renders the data as a service template for each task
    #[arg(long, value_name = "DRIVER")]
    pub template_driver: Option<String>,
    #[arg(value_name = "CONFIG")]
    pub name: String,
    /// The file with the config's data, or - to read it from stdin
    #[arg(value_name = "FILE|-")]
    pub file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// One of Docker's rules (`shoal_api::secrets`), with its own message.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Label(#[from] SpecError),
    #[error(
        "{word} {name}: no data; give a file with the {word}'s data, or - to read it from stdin"
    )]
    NoFile { word: &'static str, name: String },
    #[error(
        "{word} {name}: cannot read {path}: {source}; give the path of a file with the {word}'s data, or - to read it from stdin"
    )]
    Read {
        word: &'static str,
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{word} {name}: {from} is empty; give a file with content, or - to read stdin")]
    Empty {
        word: &'static str,
        name: String,
        from: String,
    },
    #[error(
        "{word} {name}: {from} is too large; a {word} must be less than {MAX_DATA_SIZE} bytes (500 KiB)"
    )]
    TooLarge {
        word: &'static str,
        name: String,
        from: String,
    },
}

/// Labels as `network create` and `service create` take them.
fn labels(values: &[String]) -> Result<BTreeMap<String, String>, SpecError> {
    values.iter().map(|l| parse_label("--label", l)).collect()
}

fn driver(name: &Option<String>) -> Option<Driver> {
    name.as_ref().filter(|n| !n.is_empty()).map(|n| Driver {
        name: n.clone(),
        options: BTreeMap::new(),
    })
}

/// The checked spec of `secret create`, before its data is read, and where to read it.
pub fn secret_spec(args: &SecretCreateArgs) -> Result<(SecretSpec, &str), CreateError> {
    check_name(Kind::Secret, &args.name).map_err(CreateError::Invalid)?;
    let spec = SecretSpec {
        name: args.name.clone(),
        labels: labels(&args.label)?,
        driver: driver(&args.driver),
        templating: driver(&args.template_driver),
    };
    check_drivers(
        Kind::Secret,
        &spec.name,
        spec.driver.as_ref(),
        spec.templating.as_ref(),
    )
    .map_err(CreateError::Invalid)?;
    // Docker makes the file optional only for an external driver's secret.
    match args.file.as_deref() {
        Some(file) => Ok((spec, file)),
        None => Err(CreateError::NoFile {
            word: Kind::Secret.word(),
            name: spec.name,
        }),
    }
}

/// The checked spec of `config create`, without its data.
pub fn config_spec(args: &ConfigCreateArgs) -> Result<ConfigSpec, CreateError> {
    check_name(Kind::Config, &args.name).map_err(CreateError::Invalid)?;
    let spec = ConfigSpec {
        name: args.name.clone(),
        labels: labels(&args.label)?,
        data: Vec::new(),
        templating: driver(&args.template_driver),
    };
    check_drivers(Kind::Config, &spec.name, None, spec.templating.as_ref())
        .map_err(CreateError::Invalid)?;
    Ok(spec)
}

/// The data of `create NAME FILE|-`: the file's content, or stdin's for `-`, more than 0
/// and less than 500 KiB (Docker's limits). At most the limit is read, so a wrong path
/// (`/dev/zero`, a disk image) fails at once.
pub fn read_data(
    kind: Kind,
    name: &str,
    file: &str,
    stdin: &mut dyn Read,
) -> Result<SensitiveBytes, CreateError> {
    let word = kind.word();
    let from = if file == "-" {
        "stdin".to_string()
    } else {
        file.to_string()
    };
    // Wiped when dropped, on every path, and with room for all of it up front: a growing
    // buffer would leave copies of a secret's bytes behind in freed memory.
    let mut data = SensitiveBytes::new(Vec::with_capacity(MAX_DATA_SIZE));
    let buf: &mut Vec<u8> = &mut data.0;
    let limit = MAX_DATA_SIZE as u64;
    let read = if file == "-" {
        stdin.take(limit).read_to_end(buf)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(buf))
    };
    read.map_err(|source| CreateError::Read {
        word,
        name: name.to_string(),
        path: from.clone(),
        source,
    })?;
    if data.is_empty() {
        return Err(CreateError::Empty {
            word,
            name: name.to_string(),
            from,
        });
    }
    // Docker's rule is "less than 500 KiB", so a read that filled the limit is too much.
    if data.len() >= MAX_DATA_SIZE {
        return Err(CreateError::TooLarge {
            word,
            name: name.to_string(),
            from,
        });
    }
    Ok(data)
}

/// Docker's `inspect --pretty` and `-f pretty` (a format that only starts with "pretty"
/// is refused as Docker refuses it); `Some` for JSON or a template.
fn inspect_format(pretty: bool, format: Option<&str>) -> Result<Option<Inspect>> {
    // docker/cli: --pretty replaces any --format.
    let format = if pretty { Some("pretty") } else { format };
    match format {
        Some("pretty") => Ok(None),
        Some(f) if f.starts_with("pretty") => {
            bail!("cannot supply extra formatting options to the pretty template")
        }
        f => Ok(Some(Inspect::new(f)?)),
    }
}

/// `rm`: every name is looked up first, so a typo removes nothing; then each is removed,
/// going on past one the manager refuses (in use), as Docker does, and failing at the end
/// with every refusal.
async fn remove(kind: Kind, names: &[String], daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let mut ids = Vec::new();
    for n in names {
        ids.push(match kind {
            Kind::Secret => daemon.secret(n).await?.id,
            Kind::Config => daemon.config(n).await?.id,
        });
    }
    let mut refused = Vec::new();
    for (name, id) in names.iter().zip(ids) {
        let req = match kind {
            Kind::Secret => ControlRequest::SecretRemove { secret: id },
            Kind::Config => ControlRequest::ConfigRemove { config: id },
        };
        match daemon.done(req).await {
            Ok(()) => print(out, &format!("{name}\n"))?,
            Err(e) => refused.push(e.to_string()),
        }
    }
    if !refused.is_empty() {
        bail!("{}", refused.join("; "));
    }
    Ok(())
}

pub async fn run_secret(cmd: SecretCommand, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    match cmd {
        SecretCommand::Create(args) => {
            let (spec, file) = secret_spec(&args)?;
            let data = read_data(Kind::Secret, &spec.name, file, &mut std::io::stdin())?;
            shoal_api::secrets::check_template(
                Kind::Secret,
                &spec.name,
                spec.templating.as_ref(),
                data.as_slice(),
            )
            .map_err(anyhow::Error::msg)?;
            let id = daemon
                .created(ControlRequest::SecretCreate { spec, data })
                .await?;
            print(out, &format!("{id}\n"))
        }
        SecretCommand::Ls { quiet, list } => {
            let ls = FileLs::new(Kind::Secret, quiet, &list)?;
            let secrets = daemon.secrets().await?;
            print(out, &ls.render(&secrets, now_nanos())?)
        }
        SecretCommand::Inspect {
            pretty,
            format,
            secrets,
        } => {
            let inspect = inspect_format(pretty, format.as_deref())?;
            let mut found: Vec<Secret> = Vec::new();
            for s in &secrets {
                found.push(daemon.secret(s).await?);
            }
            match inspect {
                None => print(
                    out,
                    &found.iter().map(render::secret_pretty).collect::<String>(),
                ),
                Some(inspect) => print(out, &inspect.render(&found)?),
            }
        }
        SecretCommand::Rm { secrets } => remove(Kind::Secret, &secrets, daemon, out).await,
    }
}

pub async fn run_config(cmd: ConfigCommand, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    match cmd {
        ConfigCommand::Create(args) => {
            let mut spec = config_spec(&args)?;
            spec.data = read_data(Kind::Config, &spec.name, &args.file, &mut std::io::stdin())?
                .as_slice()
                .to_vec();
            shoal_api::secrets::check_template(
                Kind::Config,
                &spec.name,
                spec.templating.as_ref(),
                &spec.data,
            )
            .map_err(anyhow::Error::msg)?;
            let id = daemon
                .created(ControlRequest::ConfigCreate { spec })
                .await?;
            print(out, &format!("{id}\n"))
        }
        ConfigCommand::Ls { quiet, list } => {
            let ls = FileLs::new(Kind::Config, quiet, &list)?;
            let configs = daemon.configs().await?;
            print(out, &ls.render(&configs, now_nanos())?)
        }
        ConfigCommand::Inspect {
            pretty,
            format,
            configs,
        } => {
            let inspect = inspect_format(pretty, format.as_deref())?;
            let mut found: Vec<Config> = Vec::new();
            for c in &configs {
                found.push(daemon.config(c).await?);
            }
            match inspect {
                None => print(
                    out,
                    &found.iter().map(render::config_pretty).collect::<String>(),
                ),
                Some(inspect) => print(out, &inspect.render(&found)?),
            }
        }
        ConfigCommand::Rm { configs } => remove(Kind::Config, &configs, daemon, out).await,
    }
}

#[cfg(test)]
mod tests;
