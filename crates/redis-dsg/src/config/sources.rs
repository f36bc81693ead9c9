//! Where each value came from: a figment provider for values that each
//! come from a named environment variable or flag, and the description of a
//! value's source (`environment variable REDIS_URL`, `command-line flag
//! --port`, `TOML file /etc/dsg.toml`, `default`) used in every message.

use std::collections::BTreeMap;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

/// Kubernetes injects `<SERVICE>_PORT…` and `<SERVICE>_SERVICE_…` variables
/// for every Service; a Service named `dsg` must not break start-up.
pub(super) fn is_service_link(rest: &str) -> bool {
    rest == "PORT" || rest.starts_with("PORT_") || rest.starts_with("SERVICE_")
}

/// One value from a named source (an environment variable or a flag).
pub(super) struct Var {
    name: String,
    path: String,
    value: String,
}

impl Var {
    pub(super) fn new(name: &str, path: &str, value: &str) -> Var {
        Var {
            name: name.to_string(),
            path: path.to_string(),
            value: value.to_string(),
        }
    }
}

/// A figment provider for values that each come from a named variable or
/// flag, so errors and `redis-dsg config` can name it exactly.
pub(super) struct NamedValues {
    kind: SourceKind,
    vars: Vec<Var>,
}

impl NamedValues {
    pub(super) fn new(kind: SourceKind, vars: Vec<Var>) -> NamedValues {
        NamedValues { kind, vars }
    }
}

impl Provider for NamedValues {
    fn metadata(&self) -> Metadata {
        let names: BTreeMap<String, String> = self
            .vars
            .iter()
            .map(|v| (v.path.clone(), v.name.clone()))
            .collect();
        Metadata::named(self.kind.name()).interpolater(move |_: &Profile, path: &[&str]| {
            let path = path.join(".");
            if let Some(name) = names.get(&path) {
                return name.clone();
            }
            // A section no setting has (`DSG_FOO__BAR` is reported as
            // `foo`): named by the variables under it.
            let section = format!("{path}.");
            let under: Vec<&str> = names
                .iter()
                .filter(|(p, _)| p.starts_with(&section))
                .map(|(_, name)| name.as_str())
                .collect();
            if under.is_empty() {
                path
            } else {
                under.join(", ")
            }
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for var in &self.vars {
            let nested = figment::util::nest(&var.path, Value::from(var.value.clone()))
                .into_dict()
                .unwrap_or_default();
            merge_into(&mut dict, nested);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Deep-merges `from` into `into` (later values win).
fn merge_into(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => {
                merge_into(existing, incoming)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Where a value came from. Figment identifies a provider by the name in
/// its metadata, so each kind has exactly one name, and the names are only
/// ever produced and read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SourceKind {
    /// A named environment variable (an original one or `DSG_*`).
    Environment,
    /// A command-line flag.
    Flag,
}

impl SourceKind {
    fn name(self) -> &'static str {
        match self {
            SourceKind::Environment => "environment variable",
            SourceKind::Flag => "command-line flag",
        }
    }

    fn of(md: &Metadata) -> Option<SourceKind> {
        [SourceKind::Environment, SourceKind::Flag]
            .into_iter()
            .find(|k| md.name == k.name())
    }
}

/// `environment variable REDIS_URL`, `command-line flag --port`, `TOML file
/// /etc/dsg.toml`, or `default`, for the value at `keys`.
pub(super) fn describe(md: &Metadata, keys: &[&str]) -> String {
    match (SourceKind::of(md), &md.source) {
        (Some(kind), _) => format!(
            "{} {}",
            kind.name(),
            md.interpolate(&Profile::Default, keys)
        ),
        // Only the built-in defaults are provided from code.
        (None, Some(figment::Source::Code(_))) => "default".to_string(),
        (None, Some(source)) => format!("{} {source}", md.name),
        (None, None) => md.name.to_string(),
    }
}

pub(super) fn describe_source(figment: &Figment, path: &str) -> String {
    match figment.find_metadata(path) {
        Some(md) => describe(md, &path.split('.').collect::<Vec<_>>()),
        None => "default".to_string(),
    }
}
