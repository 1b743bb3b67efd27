//! Reading the file: its errors placed at their line and column, with a
//! hint for an unquoted service name.

use std::path::Path;

use super::{Config, ConfigError};

pub(super) fn from_file(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let deserializer = toml::de::Deserializer::parse(text)
        .map_err(|e| file_error(path, text, String::new(), &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        file_error(path, text, field, e.inner())
    })
}

pub(super) fn file_error(
    path: &Path,
    text: &str,
    field: String,
    e: &toml::de::Error,
) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => line_column(text, span.start),
        None => locate(text, &field),
    };
    let mut message = e.message().trim().to_owned();
    if let Some(hint) = unquoted_service_hint(text, &field) {
        message.push_str(&hint);
    }
    ConfigError::File {
        path: path.to_owned(),
        line,
        column,
        field: if field.is_empty() || field == "." {
            "(document)".to_owned()
        } else {
            field
        },
        message,
    }
}

/// The keys of a service's settings that are tables, which can follow the
/// service's name in a table header.
const SERVICE_TABLES: [&str; 9] = [
    "methods",
    "split",
    "allow",
    "rate_limit",
    "client_rate_limit",
    "instance_rate_limit",
    "retry_policy",
    "retry_throttling",
    "outlier_detection",
];

/// For an error inside `services.<x>` caused by a header like
/// `[services.myservice.v1.Greeter]` (TOML reads each dot as a level), the
/// hint to quote the service's name.
fn unquoted_service_hint(text: &str, field: &str) -> Option<String> {
    let first = field.strip_prefix("services.")?.split('.').next()?;
    if first.starts_with('"') {
        return None;
    }
    text.lines().find_map(|line| {
        let header = line.trim();
        let (open, close) = if header.starts_with("[[") {
            ("[[", "]]")
        } else {
            ("[", "]")
        };
        let inner = header.strip_prefix(open)?.split(close).next()?.trim();
        let parts: Vec<&str> = inner.split('.').map(str::trim).collect();
        if parts.first() != Some(&"services")
            || parts.get(1) != Some(&first)
            || parts.len() < 3
            || parts.iter().any(|p| p.starts_with('"'))
        {
            return None;
        }
        let end = parts[1..]
            .iter()
            .position(|p| SERVICE_TABLES.contains(p))
            .map_or(parts.len(), |i| i + 1);
        if end <= 2 {
            return None;
        }
        let name = parts[1..end].join(".");
        let rest: String = parts[end..].iter().map(|p| format!(".{p}")).collect();
        Some(format!(
            " (`{header}` reads as nested tables: a service name with dots must be quoted, \
             `{open}services.\"{name}\"{rest}{close}`)"
        ))
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The line of the setting at `field` (`defaults.heartbeat_timeout`): the
/// last key's line inside its table, else the table's header, else 1.
pub(super) fn locate(text: &str, field: &str) -> (usize, usize) {
    let parts: Vec<&str> = field.split('.').collect();
    let Some((key, tables)) = parts.split_last() else {
        return (1, 1);
    };
    let header = tables.join(".");
    let mut in_table = header.is_empty();
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let name = trimmed.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = name == header;
            if in_table {
                header_line = Some(i + 1);
            }
            if name == format!("{header}.{key}").trim_start_matches('.') {
                return (i + 1, 1);
            }
            continue;
        }
        if in_table
            && let Some((k, _)) = trimmed.split_once('=')
            && k.trim().trim_matches('"') == key.trim_matches('"')
        {
            return (i + 1, line.len() - line.trim_start().len() + 1);
        }
    }
    (header_line.unwrap_or(1), 1)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::error;

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = error("[defaults]\nstrategy = \"p2c\"\nstratgy = \"p2c\"\n");
        assert!(e.starts_with("router.toml:3:1: `defaults.stratgy`"), "{e}");
        assert!(e.contains("unknown field `stratgy`"), "{e}");
    }

    #[test]
    fn an_unknown_strategy_is_named_with_its_line_and_field() {
        let e =
            error("[clients]\naddress = \"127.0.0.1:1\"\n\n[defaults]\nstrategy = \"fastest\"\n");
        assert!(e.starts_with("router.toml:5:"), "{e}");
        assert!(e.contains("`defaults.strategy`"), "{e}");
        assert!(e.contains("unknown strategy `fastest`"), "{e}");
    }

    #[test]
    fn a_toml_syntax_error_names_its_line() {
        let e = error("[clients\naddress = 1\n");
        assert!(e.starts_with("router.toml:1:"), "{e}");
    }

    #[test]
    fn an_unquoted_service_name_is_hinted_with_its_quoted_form() {
        let e = error("[services.myservice.v1.Greeter]\nstrategy = \"p2c\"\n");
        assert!(e.starts_with("router.toml:1:"), "{e}");
        assert!(e.contains("`[services.\"myservice.v1.Greeter\"]`"), "{e}");
        let e = error("[services.a.B.methods.Get]\nmax_deadline = \"1s\"\n");
        assert!(e.contains("`[services.\"a.B\".methods.Get]`"), "{e}");
        let e = error("[[services.a.B.split]]\nlabels = { v = \"1\" }\nweight = 1\n");
        assert!(e.contains("`[[services.\"a.B\".split]]`"), "{e}");
        let e = error("[services.\"a.B\"]\nstratgy = \"p2c\"\n");
        assert!(!e.contains("must be quoted"), "quoted already: {e}");
    }
}
