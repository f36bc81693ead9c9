//! `redis-dsg config`: the effective configuration as TOML, each value
//! followed by its source, secrets redacted.

use super::Config;

/// The configuration could not be rendered. Validation bounds every number
/// to what TOML holds (i64), so this means a bug, and `redis-dsg config`
/// exits 1 rather than print half a configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the configuration: {0}")]
pub struct RenderError(String);

/// Renders `config` as TOML, one `key = value  # source` line per setting.
pub(super) fn render_with_sources(
    config: &Config,
    source_of: impl Fn(&str) -> String,
) -> Result<String, RenderError> {
    let table = toml::Table::try_from(config).map_err(|e| RenderError(e.to_string()))?;
    let mut out = String::from(
        "# Effective redis-dsg configuration; secrets are shown as ***.\n\
         # Each value is followed by the source it came from.\n",
    );
    let mut sections = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(t) => sections.push((key, t)),
            v => out.push_str(&format!("{key} = {v}  # {}\n", source_of(key))),
        }
    }
    for (section, t) in sections {
        out.push_str(&format!("\n[{section}]\n"));
        for (key, value) in t {
            let path = format!("{section}.{key}");
            out.push_str(&format!("{key} = {value}  # {}\n", source_of(&path)));
        }
    }
    // Unset optional settings (no password) are absent from TOML; say so.
    if config.redis.password.is_none() {
        out = out.replace("\n[redis]\n", "\n[redis]\n# password: not set\n");
    }
    Ok(out)
}
