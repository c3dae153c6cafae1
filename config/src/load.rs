//! Layering: built-in defaults < `--config` file < `VERDICT_*` environment, and turning
//! figment's errors into [`Problem`]s that name the key and the layer it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;

use crate::error::{ConfigError, Problem};
use crate::settings::Settings;
use crate::validate::validate;

/// The defaults layer, also the config reference (`config/default.toml`).
pub(crate) const DEFAULTS_TOML: &str = include_str!("../default.toml");

/// Environment variables with this prefix (any case) are config.
const ENV_PREFIX: &str = "VERDICT_";
/// ...except these, which belong to the test harness.
const TEST_ENV_PREFIX: &str = "VERDICT_TEST_";
/// Names the `--config` file itself (read by the CLI), not a setting.
const CONFIG_FILE_ENV: &str = "VERDICT_CONFIG";
/// Separates a section from a key in a variable name.
const ENV_NESTING: &str = "__";

/// Keys whose values must never appear in messages.
const SECRET_KEYS: [&str; 7] = [
    "mongodb.uri",
    "redis.url",
    "auth.bootstrap_admin_key",
    "auth.jwt.hs256_secret",
    "publish.s3_access_key_id",
    "publish.s3_secret_access_key",
    "console.session_secret",
];

/// Where a layer came from, for error messages.
enum Source {
    Defaults,
    File(PathBuf),
    /// Dotted key -> the variable name that set it.
    Env(BTreeMap<String, String>),
}

struct Layer {
    source: Source,
    figment: Figment,
}

impl Layer {
    fn describe(&self, key: &str) -> String {
        match &self.source {
            Source::Defaults => "built-in defaults".to_owned(),
            Source::File(path) => format!("file {}", path.display()),
            Source::Env(vars) => {
                let nested = format!("{key}.");
                vars.get(key)
                    .or_else(|| {
                        vars.iter()
                            .find(|(k, _)| k.starts_with(&nested))
                            .map(|(_, var)| var)
                    })
                    .map_or_else(|| "environment".to_owned(), |var| format!("env {var}"))
            }
        }
    }
}

/// The `VERDICT_*` variables as a figment provider. Values stay strings; numbers are
/// parsed by the lossy extraction, so a string key such as `auth.bootstrap_admin_key`
/// keeps an all-digit value as written.
#[derive(Debug, Clone)]
struct EnvProvider {
    dict: Dict,
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named("VERDICT_* environment variables")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

pub(crate) fn load(
    config_file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let mut layers = vec![Layer {
        source: Source::Defaults,
        figment: Figment::from(Toml::string(DEFAULTS_TOML)),
    }];

    if let Some(path) = config_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let provider = Toml::string(&text);
                match provider.data() {
                    Ok(_) => layers.push(Layer {
                        source: Source::File(path.to_owned()),
                        figment: Figment::from(provider),
                    }),
                    Err(err) => problems.push(Problem::new(
                        "--config",
                        format!("{} is not valid TOML: {}", path.display(), toml_error(&err)),
                    )),
                }
            }
            Err(err) => problems.push(Problem::new(
                "--config",
                format!("cannot read {}: {err}", path.display()),
            )),
        }
    }

    let env: Vec<(String, String)> = env.into_iter().collect();
    let hostname = env
        .iter()
        .find(|(name, _)| name == "HOSTNAME")
        .map(|(_, value)| value.clone())
        .filter(|h| !h.is_empty());
    let (env_layer, env_problems) = env_layer(env);
    problems.extend(env_problems);
    layers.push(env_layer);

    // Unknown keys are found by comparing every layer with the defaults, which hold every
    // key: this reports all of them (serde stops at the first) and names the right layer.
    let schema = layer_dict(&layers[0].figment);
    for layer in &layers[1..] {
        check_keys(
            &schema,
            &layer_dict(&layer.figment),
            "",
            layer,
            &mut problems,
        );
    }

    let figment = layers.iter().fold(Figment::new(), |acc, layer| {
        acc.merge(layer.figment.clone())
    });

    match extract(&figment) {
        Ok(mut settings) if problems.is_empty() => {
            if settings.jobs.instance.is_empty() {
                settings.jobs.instance = hostname.unwrap_or_else(|| "verdict".to_owned());
            }
            let invalid = validate(&settings);
            if invalid.is_empty() {
                Ok(settings)
            } else {
                Err(ConfigError::Invalid(invalid))
            }
        }
        Ok(_) => Err(ConfigError::Load(problems)),
        Err(errors) => {
            let structural_found = !problems.is_empty();
            let reported: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
            let rendered: Vec<Problem> = errors
                .iter()
                .filter(|err| {
                    // Unknown keys are `check_keys`'s job; a section given as a value also
                    // shows up as missing fields or a type error under the same key.
                    let follows_structural =
                        structural_found && matches!(err.kind, Kind::MissingField(..));
                    !matches!(err.kind, Kind::UnknownField(..)) && !follows_structural
                })
                .map(|err| figment_problem(err, &layers))
                .filter(|problem| !reported.contains(&problem.key))
                .collect();
            if rendered.is_empty() && !structural_found {
                // Never fail without saying why.
                problems.extend(errors.iter().map(|err| figment_problem(err, &layers)));
            }
            problems.extend(rendered);
            Err(ConfigError::Load(problems))
        }
    }
}

/// The top-level table a single-layer figment provides (empty if it provides none).
fn layer_dict(figment: &Figment) -> Dict {
    figment
        .data()
        .ok()
        .and_then(|mut profiles| profiles.remove(&Profile::Default))
        .unwrap_or_default()
}

/// Sections whose keys are names the user chooses (checked by validation instead).
const OPEN_SECTIONS: &[&str] = &["auth.roles"];

/// Reports keys of `data` that `schema` (the defaults) does not have, and sections given
/// as plain values.
fn check_keys(schema: &Dict, data: &Dict, prefix: &str, layer: &Layer, out: &mut Vec<Problem>) {
    for (name, value) in data {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let source = layer.describe(&key);
        match (schema.get(name), value) {
            (None, _) => {
                let expected: Vec<&str> = schema.keys().map(String::as_str).collect();
                out.push(Problem::new(
                    &key,
                    format!(
                        "unknown key; expected one of: {} (from {source})",
                        expected.join(", ")
                    ),
                ));
            }
            // A section whose keys are the user's own names (custom roles).
            (Some(Value::Dict(..)), Value::Dict(..)) if OPEN_SECTIONS.contains(&key.as_str()) => {}
            (Some(Value::Dict(_, inner_schema)), Value::Dict(_, inner)) => {
                check_keys(inner_schema, inner, &key, layer, out);
            }
            (Some(Value::Dict(..)), _) => out.push(Problem::new(
                &key,
                format!("is a section; set its keys, not a value (from {source})"),
            )),
            (Some(_), _) => {}
        }
    }
}

/// Deserializes each top-level key on its own so that one bad section does not hide
/// problems in the others.
fn extract(figment: &Figment) -> Result<Settings, Vec<figment::Error>> {
    let mut errors = Vec::new();
    macro_rules! settings_from_parts {
        ($($field:ident),+ $(,)?) => {{
            $(let $field = part(figment, stringify!($field), &mut errors);)+
            match ($($field,)+) {
                ($(Some($field),)+) if errors.is_empty() => Ok(Settings { $($field,)+ }),
                _ => Err(errors),
            }
        }};
    }
    settings_from_parts!(
        data_dir, store, cache, server, log, sqlite, mongodb, redis, auth, ingest, jobs, retention,
        webhooks, publish, console
    )
}

/// Deserializes the value at top-level `key`; on failure records errors whose paths start
/// with `key`.
fn part<T: DeserializeOwned>(
    figment: &Figment,
    key: &str,
    errors: &mut Vec<figment::Error>,
) -> Option<T> {
    let is_section = matches!(figment.find_value(key), Ok(Value::Dict(..)));
    let result = if is_section {
        figment.focus(key).extract_lossy::<T>()
    } else {
        // A scalar (or a missing key): the error path is just `key`.
        return figment
            .extract_inner_lossy::<T>(key)
            .map_err(|err| errors.extend(err))
            .ok();
    };
    result
        .map_err(|err| {
            errors.extend(err.into_iter().map(|mut e| {
                e.path.insert(0, key.to_owned());
                e
            }));
        })
        .ok()
}

/// Builds the environment layer from `VERDICT_*` variables (minus `VERDICT_TEST_*` and
/// `VERDICT_CONFIG`, the path of the `--config` file).
fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> (Layer, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut dict = Dict::new();
    let mut vars = BTreeMap::new();

    for (name, value) in env {
        let upper = name.to_ascii_uppercase();
        if !upper.starts_with(ENV_PREFIX)
            || upper.starts_with(TEST_ENV_PREFIX)
            || upper == CONFIG_FILE_ENV
        {
            continue;
        }
        // The prefix is ASCII, so its byte length is the same in `name`.
        let segments: Vec<String> = name[ENV_PREFIX.len()..]
            .split(ENV_NESTING)
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(|s| s.is_empty() || s.contains('.')) {
            problems.push(Problem::new(
                name,
                "not a setting name; use VERDICT_<KEY> or VERDICT_<SECTION>__<KEY>",
            ));
            continue;
        }
        let key = segments.join(".");
        if let Err(message) = insert(&mut dict, &segments, value) {
            problems.push(Problem::new(key, format!("{message} (from env {name})")));
            continue;
        }
        vars.insert(key, name);
    }

    let layer = Layer {
        source: Source::Env(vars),
        figment: Figment::from(EnvProvider { dict }),
    };
    (layer, problems)
}

/// Puts `value` at `segments` inside `dict`, creating tables on the way.
fn insert(dict: &mut Dict, segments: &[String], value: String) -> Result<(), &'static str> {
    match segments {
        [] => Err("empty key"),
        [last] => {
            if matches!(dict.get(last), Some(Value::Dict(..))) {
                return Err("is a section; set its keys with VERDICT_<SECTION>__<KEY>");
            }
            dict.insert(last.clone(), Value::from(value));
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            match entry {
                Value::Dict(_, inner) => insert(inner, rest, value),
                _ => Err("is set both as a value and as a section"),
            }
        }
    }
}

/// One figment error as a problem: `<key>: <what> (from <layer>)`.
fn figment_problem(err: &figment::Error, layers: &[Layer]) -> Problem {
    let mut path = err.path.clone();
    let message = match &err.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            path.push(field.to_string());
            "missing".to_owned()
        }
        _ if SECRET_KEYS.contains(&path.join(".").as_str()) => {
            "invalid value (not shown: secret); expected a string".to_owned()
        }
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value `{found}`; expected one of: {}",
                expected.join(", ")
            )
        }
        kind => one_line(&kind.to_string()),
    };

    let key = path.join(".");
    let source = if key.is_empty() {
        err.metadata.as_ref().map(|md| md.name.to_string())
    } else {
        layers
            .iter()
            .rev()
            .find(|layer| layer.figment.contains(&key))
            .map(|layer| layer.describe(&key))
    };
    let key = if key.is_empty() {
        "(config)".to_owned()
    } else {
        key
    };
    match source {
        Some(source) => Problem::new(key, format!("{message} (from {source})")),
        None => Problem::new(key, message),
    }
}

/// A TOML parse error on one line, without the source excerpt (which could hold a secret).
fn toml_error(err: &figment::Error) -> String {
    let text = err.kind.to_string();
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with('|')
                && !line
                    .split_once('|')
                    .is_some_and(|(gutter, _)| gutter.trim().chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    kept.join("; ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
