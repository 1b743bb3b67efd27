//! What the configuration's unit tests share.

use std::path::Path;

use super::{Config, ConfigError};

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("router.toml"), text, Vec::new())
}

pub(super) fn error(text: &str) -> String {
    parse(text).expect_err("invalid").to_string()
}

pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `[clients.tls]` (and, with `registrations`, a registrations
/// listener with TLS) whose files exist, with a `client_ca` where asked.
pub(super) fn tls_sections(dir: &Path, clients_ca: bool, registrations: Option<bool>) -> String {
    let file = |name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, "").expect("write");
        path.display().to_string()
    };
    let (cert, key, ca) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
    let section = |with_ca: bool| {
        let ca = if with_ca {
            format!("client_ca = \"{ca}\"\n")
        } else {
            String::new()
        };
        format!("cert = \"{cert}\"\nkey = \"{key}\"\n{ca}")
    };
    let mut text = format!("[clients.tls]\n{}", section(clients_ca));
    if let Some(with_ca) = registrations {
        text.push_str(&format!(
            "[registrations]\naddress = \"127.0.0.1:0\"\n[registrations.tls]\n{}",
            section(with_ca)
        ));
    }
    text
}
