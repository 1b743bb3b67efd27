//! `[state] file`: the services the router learnt, kept across restarts.
//!
//! The daemon learns a service from its first registration's description
//! (methods, kinds, tags, routing keys, descriptor set). Without a state
//! file a restarted router knows none of them until their instances
//! register again, and answers UNIMPLEMENTED (which clients do not retry)
//! meanwhile. With one, every description the router learns is written to
//! the file, and at start the router takes the descriptions back: each
//! service is known with no instance, so its calls answer UNAVAILABLE
//! (retryable) and reflection describes it until an instance registers and
//! defines it afresh.
//!
//! The file is JSON (`{"version": 1, "services": [{"name", "description"}]}`,
//! `description` being the base64 of the encoded
//! `router.v1.ServiceDescription`), written whole to a temporary file in the
//! same directory and renamed over the old one, so a crash leaves the old
//! file or the new one, never half of one.
//!
//! It is a cache of what registrations teach again: a file that cannot be
//! read or parsed (or a description in it the router refuses) is a warning,
//! and the router starts without what it could not read; the bad file is
//! kept next to it as `<file>.bad` for inspection. A file that cannot be
//! written is an error at start (the setting cannot do its job, and the
//! operator learns it at deploy time, not at the next restart), and an
//! error log at run time (the serving goes on; the next change tries again).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use router_runtime::codegen::prost::Message as _;
use router_runtime::pb;
use router_runtime::router::{DynamicRouter, ServiceChange};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

/// The version of the file's format this daemon writes and reads.
const VERSION: u32 = 1;

/// The state file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("state.file: cannot write {path}: {source}")]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The file's contents.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    services: Vec<StoredService>,
}

/// One learnt service.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredService {
    /// The service's full name (for people reading the file).
    name: String,
    /// The base64 of the encoded `router.v1.ServiceDescription`.
    description: String,
}

/// What [`read`] found.
#[derive(Debug, Default)]
struct Read {
    descriptions: Vec<pb::ServiceDescription>,
    /// What could not be read, for the warning.
    problems: Vec<String>,
    /// Whether the file exists but is unusable as a whole.
    unusable: bool,
}

/// Reads the descriptions kept in `path` (none if it does not exist yet).
fn read(path: &Path) -> Read {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::default(),
        Err(e) => {
            return Read {
                problems: vec![format!("cannot read it: {e}")],
                unusable: true,
                ..Read::default()
            };
        }
    };
    let stored: Stored = match serde_json::from_str(&text) {
        Ok(stored) => stored,
        Err(e) => {
            return Read {
                problems: vec![format!("it is not a grpc-router state file: {e}")],
                unusable: true,
                ..Read::default()
            };
        }
    };
    if stored.version != VERSION {
        return Read {
            problems: vec![format!(
                "it has version {}, this router reads version {VERSION}",
                stored.version
            )],
            unusable: true,
            ..Read::default()
        };
    }
    let mut read = Read::default();
    for service in stored.services {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&service.description)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                pb::ServiceDescription::decode(bytes.as_slice()).map_err(|e| e.to_string())
            });
        match decoded {
            Ok(description) if description.name == service.name => {
                read.descriptions.push(description)
            }
            Ok(description) => read.problems.push(format!(
                "`{}`: its description is of `{}`",
                service.name, description.name
            )),
            Err(e) => read
                .problems
                .push(format!("`{}`: undecodable description: {e}", service.name)),
        }
    }
    read
}

/// The file's text for `descriptions`.
fn encode(descriptions: &[pb::ServiceDescription]) -> String {
    let stored = Stored {
        version: VERSION,
        services: descriptions
            .iter()
            .map(|d| StoredService {
                name: d.name.clone(),
                description: base64::engine::general_purpose::STANDARD.encode(d.encode_to_vec()),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&stored).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes `text` to `path` atomically: a temporary file in the same
/// directory, flushed to disk, then renamed over `path`.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let mut temporary = name.to_owned();
    temporary.push(".tmp");
    let temporary = path.with_file_name(temporary);
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// The descriptions of every service `router` learnt, by name.
fn learnt(router: &DynamicRouter) -> Vec<pb::ServiceDescription> {
    router
        .services()
        .iter()
        .filter_map(|service| service.description())
        .collect()
}

/// Takes back the services kept in `path` into `router`, checks that the
/// file can be written, and keeps it up to date from now on (a task on the
/// current runtime). Problems reading it are warnings (see the module docs);
/// a file that cannot be written is the error.
pub fn start(router: &DynamicRouter, path: &Path) -> Result<(), StateError> {
    let read = read(path);
    if !read.problems.is_empty() {
        let kept = if read.unusable {
            let mut bad = path.as_os_str().to_owned();
            bad.push(".bad");
            let bad = PathBuf::from(bad);
            match std::fs::rename(path, &bad) {
                Ok(()) => format!("; the file is kept as {}", bad.display()),
                Err(e) => format!("; it could not be kept aside ({e})"),
            }
        } else {
            String::new()
        };
        warn!(
            file = %path.display(),
            problems = ?read.problems,
            "state.file: starting without what it could not read{kept}"
        );
    }
    let mut remembered = Vec::new();
    for description in &read.descriptions {
        match router.remember(description) {
            Ok(_) => remembered.push(description.name.clone()),
            Err(status) => warn!(
                file = %path.display(),
                service = %description.name,
                error = %status.message(),
                "state.file: a kept service is not taken back"
            ),
        }
    }
    if !remembered.is_empty() {
        info!(
            file = %path.display(),
            services = ?remembered,
            "services known from the state file: UNAVAILABLE until an instance registers"
        );
    }
    // Rewrites what was taken back: the file is writable, and what it holds
    // is what the router knows.
    let mut last = encode(&learnt(router));
    write_atomically(path, &last).map_err(|source| StateError {
        path: path.to_owned(),
        source,
    })?;

    let changed = Arc::new(tokio::sync::Notify::new());
    let notify = changed.clone();
    router.subscribe(move |_, change| {
        if matches!(change, ServiceChange::Defined | ServiceChange::Extended) {
            notify.notify_one();
        }
    });
    let router = router.clone();
    let path = path.to_owned();
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            let text = encode(&learnt(&router));
            if text == last {
                continue;
            }
            let (file, contents) = (path.clone(), text.clone());
            let written = tokio::task::spawn_blocking(move || write_atomically(&file, &contents))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match written {
                Ok(()) => last = text,
                Err(e) => error!(
                    file = %path.display(),
                    error = %e,
                    "state.file: cannot write the learnt services; a restart before the next \
                     successful write forgets the newest"
                ),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description(name: &str) -> pb::ServiceDescription {
        pb::ServiceDescription {
            name: name.to_owned(),
            methods: vec![pb::MethodDescription {
                name: "Call".to_owned(),
                path: format!("/{name}/Call"),
                tag: 10,
                kind: pb::MethodKind::Unary as i32,
                route_key: vec![1],
                idempotent: true,
            }],
            default_strategy: "round-robin".to_owned(),
            file_descriptor_set: bytes::Bytes::from_static(b"\x0a\x00"),
        }
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let kept = vec![description("a.v1.A"), description("b.v1.B")];
        write_atomically(&path, &encode(&kept)).expect("written");
        let read = read(&path);
        assert!(read.problems.is_empty(), "{:?}", read.problems);
        assert_eq!(read.descriptions, kept);
    }

    #[test]
    fn a_missing_file_is_an_empty_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let read = read(&dir.path().join("none.json"));
        assert!(read.descriptions.is_empty() && read.problems.is_empty());
    }

    #[test]
    fn a_corrupt_file_is_unusable_and_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\"version\": 1, \"services\": [").expect("write");
        let read = read(&path);
        assert!(read.unusable);
        assert!(
            read.problems[0].contains("not a grpc-router state file"),
            "{:?}",
            read.problems
        );
    }

    #[test]
    fn one_bad_entry_is_skipped_and_the_others_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let mut text = encode(&[description("a.v1.A")]);
        text = text.replace(
            "\"services\": [",
            "\"services\": [\n    {\"name\": \"x.v1.X\", \"description\": \"!!\"},",
        );
        std::fs::write(&path, text).expect("write");
        let read = read(&path);
        assert!(!read.unusable);
        assert_eq!(read.descriptions, vec![description("a.v1.A")]);
        assert!(read.problems[0].contains("`x.v1.X`"), "{:?}", read.problems);
    }
}
