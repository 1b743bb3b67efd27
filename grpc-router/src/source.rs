//! Where the running configuration comes from: the file, the
//! `GRPC_ROUTER_*` variables over it, and the command line's flags over
//! both. `serve` and every SIGHUP reload read it the same way, so a flag
//! (`--access-log`, `--log-format`) keeps its effect across reloads.

use std::path::PathBuf;

use crate::config::{Config, ConfigError, LogFormat};

/// The settings `grpc-router serve`'s flags decide over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--log-format`: over `log.format`.
    pub log_format: Option<LogFormat>,
    /// `--access-log`: the access log on, whatever `log.access` says.
    pub access_log: bool,
}

impl Overrides {
    /// Applies the flags to `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        config.log.access |= self.access_log;
    }
}

/// The configuration file and the flags over it.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file (re-read on SIGHUP).
    pub path: PathBuf,
    /// The command line's flags.
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Reads the file, the process's `GRPC_ROUTER_*` variables and the
    /// flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.load_with(std::env::vars())
    }

    /// Like [`ConfigSource::load`], with the variables of `env`.
    pub fn load_with(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.path, env)?;
        self.overrides.apply(&mut config);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_each_time_it_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("router.toml");
        std::fs::write(&path, "[log]\nformat = \"text\"\naccess = false\n").expect("write");
        let source = ConfigSource {
            path: path.clone(),
            overrides: Overrides {
                log_format: Some(LogFormat::Json),
                access_log: true,
            },
        };
        for _ in 0..2 {
            let config = source.load_with(Vec::new()).expect("valid");
            assert_eq!(config.log.format, LogFormat::Json);
            assert!(config.log.access);
        }
        let plain = ConfigSource {
            path,
            overrides: Overrides::default(),
        };
        let config = plain.load_with(Vec::new()).expect("valid");
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(!config.log.access);
    }
}
