//! Where settings come from, lowest priority first: built-in defaults → an
//! optional TOML file (`--config` / `DSG_CONFIG`) → the original program's
//! environment variables (an explicit list of exact names, see
//! [`LEGACY_ENV`]) → `DSG_*` environment variables (nested with `__`) →
//! command-line flags. Every value keeps its source, so errors and
//! `redis-dsg config` can name it.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

use super::Config;
use super::extract::{cap_problems, extract};
use super::render::{RenderError, render_with_sources};
use super::sources::{NamedValues, SourceKind, Var, describe_source, is_service_link};
use super::validate::validate;

/// The original program's environment variables, accepted by exact name
/// only: a blanket unprefixed scan would pick up what Kubernetes injects for
/// Services (`REDIS_PORT=tcp://…` for a Service named `redis`).
pub const LEGACY_ENV: &[(&str, &str)] = &[
    ("MODE", "mode"),
    ("MPORT", "http.port"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_QUEUE", "redis.queue"),
    ("REDIS_ERROR_QUEUE", "redis.error_queue"),
    ("REDIS_POOL_SIZE", "redis.pool_size"),
    ("GENERATOR_INTERVAL", "generator.interval_ms"),
    ("GENERATOR_PING_INTERVAL", "lease.ping_interval_seconds"),
    ("CONSUMER_MAX_GOROUTINES", "consumer.max_concurrency"),
];

/// Prefix of the service's own environment variables.
pub const ENV_PREFIX: &str = "DSG_";

/// The variable naming the TOML file (not a setting itself).
pub const CONFIG_FILE_ENV: &str = "DSG_CONFIG";

/// Settings given on the command line; each `Some` overrides every other
/// source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`: TOML file path (beats `DSG_CONFIG`).
    pub config_file: Option<PathBuf>,
    /// The settings the flags set, in the order given.
    values: Vec<FlagValue>,
}

/// One setting a command-line flag sets.
#[derive(Debug, Clone)]
struct FlagValue {
    /// The setting's path (`redis.url`).
    path: &'static str,
    /// The flag, as errors name it (`--redis-url`).
    flag: &'static str,
    value: String,
}

impl Overrides {
    /// Overrides naming the TOML file `config_file` (`--config`), if any.
    pub fn with_config_file(config_file: Option<PathBuf>) -> Overrides {
        Overrides {
            config_file,
            values: Vec::new(),
        }
    }

    /// Records `flag` setting `path` to `value` when present.
    pub fn set(&mut self, path: &'static str, flag: &'static str, value: Option<impl ToString>) {
        if let Some(v) = value {
            self.values.push(FlagValue {
                path,
                flag,
                value: v.to_string(),
            });
        }
    }
}

/// Everything wrong with a configuration, each problem on its own line.
/// Long input is never echoed whole: each line is capped, and the whole
/// message too ([`ConfigError::new`]).
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per problem, each naming setting, source and rule.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// The problems, each line cut to a readable length and all of them
    /// to a few KiB.
    pub fn new(problems: Vec<String>) -> ConfigError {
        ConfigError {
            problems: cap_problems(problems),
        }
    }
}

/// A loaded configuration with the provenance of every value.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    figment: Figment,
}

impl Loaded {
    /// Where the value of `path` (`redis.url`) came from, e.g.
    /// `environment variable REDIS_URL` or `default`.
    pub fn source_of(&self, path: &str) -> String {
        describe_source(&self.figment, path)
    }

    /// The effective configuration as TOML, secrets redacted, each value
    /// followed by a comment naming its source.
    pub fn render_toml(&self) -> Result<String, RenderError> {
        render_with_sources(&self.config, |path| self.source_of(path))
    }
}

/// Loads configuration from the process environment and `overrides`.
pub fn load(overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(&env, overrides)
}

/// Loads configuration from the given environment (for tests and the demo),
/// in three phases that each report every problem they find: gather the
/// sources, extract the settings, check the rules.
pub fn load_from(env: &[(String, String)], overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let (figment, mut problems) = sources(env, overrides)?;
    let config = match extract(&figment) {
        Ok(config) if problems.is_empty() => config,
        Ok(_) => return Err(ConfigError::new(problems)),
        Err(more) => {
            problems.extend(more);
            return Err(ConfigError::new(problems));
        }
    };
    let problems: Vec<String> = validate(&config)
        .into_iter()
        .map(|(path, rule)| format!("{path} (from {}): {rule}", describe_source(&figment, path)))
        .collect();
    if !problems.is_empty() {
        return Err(ConfigError::new(problems));
    }
    Ok(Loaded { config, figment })
}

/// Every source merged in order of priority, and the environment variables
/// that name no setting. Fails only when the configuration file is missing.
fn sources(
    env: &[(String, String)],
    overrides: &Overrides,
) -> Result<(Figment, Vec<String>), ConfigError> {
    let mut figment = Figment::new().merge(Serialized::defaults(Config::default()));
    let file = overrides.config_file.clone().or_else(|| {
        env.iter()
            .find(|(k, _)| k == CONFIG_FILE_ENV)
            .map(|(_, v)| PathBuf::from(v))
    });
    if let Some(path) = &file {
        if !path.is_file() {
            return Err(ConfigError::new(vec![format!(
                "config file {} (from {}) does not exist or is not a file",
                path.display(),
                if overrides.config_file.is_some() {
                    "--config".to_string()
                } else {
                    format!("environment variable {CONFIG_FILE_ENV}")
                }
            )]));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let legacy: Vec<Var> = env
        .iter()
        .filter_map(|(name, value)| {
            LEGACY_ENV
                .iter()
                .find(|(legacy, _)| legacy == name)
                .map(|(_, path)| Var::new(name, path, value))
        })
        .collect();
    figment = figment.merge(NamedValues::new(SourceKind::Environment, legacy));
    let mut own = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == CONFIG_FILE_ENV || is_service_link(rest) {
            continue;
        }
        let path = rest.to_ascii_lowercase().replace("__", ".");
        if path.is_empty() || path.split('.').any(str::is_empty) {
            problems.push(format!(
                "environment variable {name}: not a setting name (use DSG_SECTION__KEY)"
            ));
            continue;
        }
        own.push(Var::new(name, &path, value));
    }
    figment = figment.merge(NamedValues::new(SourceKind::Environment, own));
    let flags = overrides
        .values
        .iter()
        .map(|v| Var::new(v.flag, v.path, &v.value))
        .collect();
    figment = figment.merge(NamedValues::new(SourceKind::Flag, flags));
    Ok((figment, problems))
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
