//! Turning the merged sources into a [`Config`] with every problem found at
//! once: every unknown setting (serde stops at the first), every value of
//! the wrong type (serde stops at the first), each with its source, and no
//! message longer than the operator can read (a 3 MB line in a file is not
//! echoed back).

use figment::Figment;
use figment::providers::Serialized;
use figment::value::{Dict, Value};

use super::Config;
use super::sources::{describe, describe_source};

/// The longest line of a problem that is printed; longer ones are cut.
pub(super) const MAX_LINE_CHARS: usize = 300;
/// The most of all problems together that is printed.
pub(super) const MAX_MESSAGE_BYTES: usize = 4096;

/// The configuration, or every problem with the sources' values.
pub(super) fn extract(figment: &Figment) -> Result<Config, Vec<String>> {
    // A file that is not valid TOML: nothing else can be read from it.
    if let Err(e) = figment.extract::<Dict>() {
        return Err(vec![describe_figment_error(&e, None)]);
    }
    let known = known_settings();
    let mut problems = unknown_settings(figment, &known);
    match figment.extract_lossy::<Config>() {
        Ok(config) if problems.is_empty() => return Ok(config),
        Ok(_) => {}
        Err(_) => problems.extend(wrong_types(figment, &known)),
    }
    Err(problems)
}

/// Every setting's path (`consumer.fetch_batch`), from the defaults (an
/// unset optional setting is there too, as an empty value).
fn known_settings() -> Vec<String> {
    let defaults = Figment::from(Serialized::defaults(Config::default()));
    let mut out = Vec::new();
    if let Ok(dict) = defaults.extract::<Dict>() {
        leaves(&dict, "", &mut out);
    }
    out
}

fn leaves(dict: &Dict, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in dict {
        let path = format!("{prefix}{key}");
        match value {
            Value::Dict(_, inner) => leaves(inner, &format!("{path}."), out),
            _ => out.push(path),
        }
    }
}

/// Every key of the sources that names no setting (a section name that is
/// unknown is reported once, not each key under it).
fn unknown_settings(figment: &Figment, known: &[String]) -> Vec<String> {
    let Ok(dict) = figment.extract::<Dict>() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut walk = vec![(String::new(), dict)];
    while let Some((prefix, dict)) = walk.pop() {
        for (key, value) in dict {
            let path = format!("{prefix}{key}");
            let section = format!("{path}.");
            if known.contains(&path) {
                continue;
            }
            match value {
                Value::Dict(_, inner) if known.iter().any(|k| k.starts_with(&section)) => {
                    walk.push((section, inner));
                }
                _ => found.push(path),
            }
        }
    }
    found.sort();
    found
        .into_iter()
        .map(|path| {
            format!(
                "{} (from {}): unknown setting (check its spelling)",
                cap_line(&path),
                describe_source(figment, &path)
            )
        })
        .collect()
}

/// Every setting whose value does not fit its type: each is extracted on
/// its own over the defaults, so one bad value cannot hide another.
fn wrong_types(figment: &Figment, known: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for path in known {
        let Ok(value) = figment.find_value(path) else {
            continue;
        };
        let alone = Figment::from(Serialized::defaults(Config::default()))
            .merge(Serialized::default(path, value));
        if let Err(e) = alone.extract_lossy::<Config>() {
            problems.push(describe_figment_error(&e, Some((figment, path))));
        }
    }
    problems
}

/// One figment error as `path (from source): rule`; `at` names the setting
/// and the figment whose sources to name when the error came from a
/// stand-in.
pub(super) fn describe_figment_error(e: &figment::Error, at: Option<(&Figment, &str)>) -> String {
    let (path, source) = match at {
        Some((figment, path)) => (path.to_string(), describe_source(figment, path)),
        None => (
            e.path.join("."),
            match &e.metadata {
                Some(md) => describe(md, &e.path.iter().map(String::as_str).collect::<Vec<_>>()),
                None => "configuration".to_string(),
            },
        ),
    };
    let rule = match &e.kind {
        figment::error::Kind::UnknownField(field, _) => {
            format!("unknown setting `{}` (check its spelling)", cap_line(field))
        }
        kind => kind.to_string(),
    };
    if path.is_empty() {
        format!("{source}: {rule}")
    } else {
        format!("{path} (from {source}): {rule}")
    }
}

/// `line` cut to [`MAX_LINE_CHARS`] characters, saying how long it was.
pub(super) fn cap_line(line: &str) -> String {
    if line.chars().count() <= MAX_LINE_CHARS {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX_LINE_CHARS).collect();
    format!("{cut}… ({} bytes in all)", line.len())
}

/// Every problem with each line capped, and all of them together within
/// [`MAX_MESSAGE_BYTES`] (the rest counted).
pub(super) fn cap_problems(problems: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut bytes = 0;
    let total = problems.len();
    for (i, p) in problems.into_iter().enumerate() {
        let mut p = p.lines().map(cap_line).collect::<Vec<_>>().join("\n");
        if p.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !p.is_char_boundary(end) {
                end -= 1;
            }
            p.truncate(end);
            p.push('…');
        }
        if bytes + p.len() > MAX_MESSAGE_BYTES && !out.is_empty() {
            out.push(format!("… and {} more problems", total - i));
            break;
        }
        bytes += p.len();
        out.push(p);
    }
    out
}
