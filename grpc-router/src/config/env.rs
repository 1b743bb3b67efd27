//! The environment overlay: `GRPC_ROUTER_<SECTION>__<KEY>` variables set
//! settings over the file's.

use std::path::Path;

use super::file::file_error;
use super::validate::Invalid;
use super::{Config, ConfigError, ENV_PREFIX};

/// `config`, read from `text` at `path`, with the settings of `overrides`
/// (`GRPC_ROUTER_*` variables) set over the file's, and checked again;
/// errors name the variable.
pub(super) fn overlay(
    path: &Path,
    text: &str,
    config: &Config,
    overrides: &[(String, String)],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(path, text, String::new(), &e))?;
    let mut origins = Vec::new();
    let file_services: Vec<String> = config.services.keys().cloned().collect();
    for (variable, value) in overrides {
        let keys = env_keys(variable, &file_services).map_err(|message| ConfigError::Env {
            variable: variable.clone(),
            field: "services".to_owned(),
            message,
        })?;
        if keys.is_empty() {
            continue;
        }
        set_path(&mut table, &keys, env_value(value)).map_err(|message| ConfigError::Env {
            variable: variable.clone(),
            field: keys.join("."),
            message,
        })?;
        origins.push((keys.join("."), variable.clone()));
    }
    let mut config: Config = serde_path_to_error::deserialize(table).map_err(|e| {
        let field = e.path().to_string();
        let variable = origins
            .iter()
            .find(|(path, _)| field.starts_with(path.as_str()) || path.starts_with(&field))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("{ENV_PREFIX}*"));
        ConfigError::Env {
            variable,
            field,
            message: e.into_inner().message().to_owned(),
        }
    })?;
    config.jwt_verifier = config.check(lookup).map_err(
        |Invalid {
             key: field,
             message,
         }| ConfigError::Env {
            variable: origins
                .iter()
                .find(|(path, _)| field.starts_with(path.as_str()))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| format!("{ENV_PREFIX}*")),
            field,
            message,
        },
    )?;
    Ok(config)
}

/// The setting path of a `GRPC_ROUTER_*` variable: levels split at `__`;
/// setting names are lowercased (`RATE_LIMIT` is `rate_limit`), while the
/// names a configuration chooses keep their case: a service name (the
/// level after `SERVICES`) and a method name (the level after `METHODS`).
///
/// A POSIX shell exports only names of letters, digits and `_`, so a
/// service name may be written with `_` for each `.`
/// (`myservice_v1_Greeter`); when the file names a service that reads the
/// same with its dots written as `_`, that service is meant (so
/// `my_pkg.v1.Svc` in the file is reached by `my_pkg_v1_Svc`), else each
/// `_` is a dot. A name with a dot is taken as written.
fn env_keys(variable: &str, file_services: &[String]) -> Result<Vec<String>, String> {
    let rest = &variable[ENV_PREFIX.len()..];
    let mut keys: Vec<String> = Vec::new();
    // What the next level names: a setting, a service or a method.
    let mut next = Level::Setting;
    for part in rest.split("__") {
        if part.is_empty() {
            continue;
        }
        let key = match next {
            Level::Service => env_service_name(part, file_services)?,
            Level::Method => part.to_owned(),
            Level::Setting => part.to_ascii_lowercase(),
        };
        next = match (next, key.as_str()) {
            (Level::Setting, "services") if keys.is_empty() => Level::Service,
            (Level::Setting, "methods") if in_service_settings(&keys) => Level::Method,
            _ => Level::Setting,
        };
        keys.push(key);
    }
    Ok(keys)
}

/// Whether `keys` lead to a service's settings: `defaults` or
/// `services.<name>`.
fn in_service_settings(keys: &[String]) -> bool {
    match keys {
        [section] => section == "defaults",
        [section, _] => section == "services",
        _ => false,
    }
}

/// What a level of a variable's name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// A setting's name (lowercased).
    Setting,
    /// A service's name (after `SERVICES`).
    Service,
    /// A method's name (after `METHODS`).
    Method,
}

/// The service a variable's service level names (see [`env_keys`]).
fn env_service_name(part: &str, file_services: &[String]) -> Result<String, String> {
    if part.contains('.') {
        return Ok(part.to_owned());
    }
    let same: Vec<&String> = file_services
        .iter()
        .filter(|s| s.replace('.', "_") == part)
        .collect();
    match same.as_slice() {
        [] => Ok(part.replace('_', ".")),
        [one] => Ok((*one).clone()),
        several => Err(format!(
            "`{part}` could be any of {}; name the service with its dots \
             (`env 'GRPC_ROUTER_SERVICES__<name>__...=...'`)",
            several
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A variable's value as TOML: a TOML literal when it reads as one (numbers,
/// booleans, arrays), else a string.
fn env_value(value: &str) -> toml::Value {
    let probe = format!("v = {value}");
    match probe.parse::<toml::Table>() {
        Ok(mut table) if !value.trim().is_empty() => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        _ => toml::Value::String(value.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a table"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use router_runtime::router::Strategy;

    use crate::config::Config;
    use crate::config::testing::env;

    #[test]
    fn environment_variables_override_the_file() {
        let env = vec![
            ("GRPC_ROUTER_LOG__LEVEL".to_owned(), "debug".to_owned()),
            (
                "GRPC_ROUTER_DEFAULTS__STRATEGY".to_owned(),
                "round-robin".to_owned(),
            ),
            ("GRPC_ROUTER_SHUTDOWN__GRACE".to_owned(), "5s".to_owned()),
            (
                "GRPC_ROUTER_SERVICES__myservice.v1.Greeter__MAX_REQUEST_MESSAGE_BYTES".to_owned(),
                "1024".to_owned(),
            ),
            (
                "GRPC_ROUTER_CLIENTS__ADDRESS".to_owned(),
                "127.0.0.1:7000".to_owned(),
            ),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ];
        let config =
            Config::parse(Path::new("r.toml"), "[log]\nlevel = \"info\"\n", env).expect("valid");
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.defaults.strategy, Some(Strategy::RoundRobin));
        assert_eq!(config.shutdown.grace, Duration::from_secs(5));
        assert_eq!(
            config.services["myservice.v1.Greeter"].max_request_message_bytes,
            Some(1024)
        );
        assert_eq!(config.clients.address.port(), 7000);
    }

    #[test]
    fn a_variable_keeps_the_case_of_service_and_method_names() {
        let config = Config::parse(
            Path::new("r.toml"),
            "",
            env(&[
                (
                    "GRPC_ROUTER_SERVICES__myservice.v1.Greeter__METHODS__SayHello__RATE_LIMIT__PER_SECOND",
                    "1",
                ),
                (
                    "GRPC_ROUTER_DEFAULTS__METHODS__Export__MAX_DEADLINE",
                    "10m",
                ),
            ]),
        )
        .expect("valid");
        let greeter = &config.services["myservice.v1.Greeter"];
        assert_eq!(
            greeter.methods["SayHello"].rate_limit.map(|l| l.per_second),
            Some(1)
        );
        assert_eq!(
            config.defaults.methods["Export"].max_deadline,
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn a_service_name_can_be_written_with_underscores_for_its_dots() {
        let config = Config::parse(
            Path::new("r.toml"),
            "[services.\"my_pkg.v1.Svc\"]\nstrategy = \"p2c\"\n",
            env(&[
                (
                    "GRPC_ROUTER_SERVICES__myservice_v1_Greeter__STRATEGY",
                    "round-robin",
                ),
                ("GRPC_ROUTER_SERVICES__my_pkg_v1_Svc__STRATEGY", "weighted"),
            ]),
        )
        .expect("valid");
        assert_eq!(
            config.services["myservice.v1.Greeter"].strategy,
            Some(Strategy::RoundRobin),
            "each `_` is a dot"
        );
        assert_eq!(
            config.services["my_pkg.v1.Svc"].strategy,
            Some(Strategy::Weighted),
            "the service the file names, whose own `_` stays"
        );
        assert_eq!(config.services.len(), 2, "{:?}", config.services.keys());
    }

    #[test]
    fn an_ambiguous_underscored_service_name_is_refused() {
        let e = Config::parse(
            Path::new("r.toml"),
            "[services.\"a.b_c\"]\n[services.\"a_b.c\"]\n",
            env(&[("GRPC_ROUTER_SERVICES__a_b_c__STRATEGY", "p2c")]),
        )
        .expect_err("ambiguous")
        .to_string();
        assert!(
            e.starts_with("environment variable GRPC_ROUTER_SERVICES__a_b_c__STRATEGY"),
            "{e}"
        );
        assert!(e.contains("`a.b_c`, `a_b.c`"), "{e}");
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let env = vec![(
            "GRPC_ROUTER_DEFAULTS__STRATEGY".to_owned(),
            "fastest".to_owned(),
        )];
        let e = Config::parse(Path::new("r.toml"), "", env)
            .expect_err("invalid")
            .to_string();
        assert!(
            e.starts_with(
                "environment variable GRPC_ROUTER_DEFAULTS__STRATEGY: `defaults.strategy`"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_sample_ratio_can_come_from_the_environment() {
        for (value, expected) in [("0.5", 0.5), ("1", 1.0), ("0", 0.0)] {
            let env = vec![(
                "GRPC_ROUTER_TRACING__SAMPLE_RATIO".to_owned(),
                value.to_owned(),
            )];
            let config = Config::parse(Path::new("r.toml"), "", env).expect("valid");
            assert_eq!(config.tracing.sample_ratio, expected, "{value}");
        }
        let env = vec![(
            "GRPC_ROUTER_TRACING__SAMPLE_RATIO".to_owned(),
            "2".to_owned(),
        )];
        let e = Config::parse(Path::new("r.toml"), "", env)
            .expect_err("invalid")
            .to_string();
        assert!(
            e.starts_with(
                "environment variable GRPC_ROUTER_TRACING__SAMPLE_RATIO: `tracing.sample_ratio`"
            ),
            "{e}"
        );
    }
}
