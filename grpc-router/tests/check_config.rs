//! `grpc-router check-config`: a valid file prints the effective
//! configuration; each kind of mistake exits non-zero naming the file, line
//! and setting.

mod common;

use std::process::Command;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(common::binary())
        .arg("check-config")
        .arg(&path)
        .env_remove("GRPC_ROUTER_LOG__LEVEL")
        .output()
        .expect("grpc-router runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The file the container image and the Helm chart ship. Here, not in
/// `src/config.rs`: the packaged crate holds no `deploy/`, and its unit tests
/// must compile from the package alone.
#[test]
fn the_shipped_default_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/router.toml");
    let text = std::fs::read_to_string(&path).expect("deploy/router.toml");
    let config = grpc_router::config::Config::parse(&path, &text, Vec::new())
        .expect("deploy/router.toml is valid");
    assert_eq!(config.registrations.address.map(|a| a.port()), Some(50052));
    assert_eq!(config.admin.address.map(|a| a.port()), Some(9090));
}

/// The router.toml heredocs of the README's quick start and of the daemon
/// chapter are valid, with an admin listener (metrics, status page, admin
/// service) as the docs promise.
#[test]
fn the_documented_run_a_router_configs_are_valid_with_an_admin_listener() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for doc in ["README.md", "docs/src/daemon.md"] {
        let path = root.join(doc);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
        let toml = text
            .split("<<'TOML'\n")
            .nth(1)
            .and_then(|rest| rest.split("\nTOML\n").next())
            .unwrap_or_else(|| panic!("{doc} has a router.toml heredoc"));
        let config = grpc_router::config::Config::parse(&path, toml, Vec::new())
            .unwrap_or_else(|e| panic!("{doc}'s router.toml is valid: {e}"));
        assert!(
            config.admin.address.is_some(),
            "{doc}'s router.toml has an admin listener"
        );
    }
}

#[test]
fn a_valid_file_prints_the_effective_configuration() {
    let (code, stdout, stderr) = check("[defaults]\nstrategy = \"round-robin\"\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("strategy = \"round-robin\""), "{stdout}");
    assert!(
        stdout.contains("heartbeat_timeout = \"30s\""),
        "defaults written out: {stdout}"
    );
    assert!(stdout.contains("[clients]"), "{stdout}");
}

#[test]
fn every_kind_of_mistake_is_refused_with_its_line_and_setting() {
    let cases = [
        (
            "unknown key",
            "[log]\nlevel = \"info\"\nformt = \"json\"\n",
            ":3:",
            "`log.formt`",
        ),
        (
            "unknown strategy",
            "\n[defaults]\nstrategy = \"fastest\"\n",
            ":3:",
            "`defaults.strategy`",
        ),
        (
            "bad address",
            "[clients]\naddress = \"nowhere\"\n",
            ":2:",
            "`clients.address`",
        ),
        (
            "bad duration",
            "[shutdown]\ngrace = \"a while\"\n",
            ":2:",
            "`shutdown.grace`",
        ),
        (
            "timeout not above interval",
            "[services.\"a.B\"]\nheartbeat_interval = \"5s\"\nheartbeat_timeout = \"2s\"\n",
            ":3:",
            "heartbeat_timeout",
        ),
        (
            "wrong type",
            "[limits]\nmax_services = \"lots\"\n",
            ":2:",
            "`limits.max_services`",
        ),
        (
            "bad token hash",
            "[registrations]\ntokens_sha256 = [\"x\"]\n",
            ":2:",
            "tokens_sha256",
        ),
        (
            "bad log filter",
            "[log]\nlevel = \"info,=[\"\n",
            ":2:",
            "`log.level`",
        ),
        ("syntax error", "[clients\n", ":1:", "router.toml"),
        (
            "not an origin",
            "[clients.cors]\nallowed_origins = [\"app.example.com/path\"]\n",
            ":2:",
            "`clients.cors.allowed_origins`",
        ),
        (
            "no origin",
            "[clients.cors]\nallowed_origins = []\n",
            ":2:",
            "`clients.cors.allowed_origins`",
        ),
        (
            "missing TLS file",
            "[clients.tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
            ":2:",
            "`clients.tls.cert`",
        ),
    ];
    for (what, text, line, field) in cases {
        let (code, stdout, stderr) = check(text);
        assert_eq!(code, 2, "{what}: exits 2 ({stdout}{stderr})");
        assert!(
            stderr.contains(&format!("router.toml{line}")),
            "{what}: names the line: {stderr}"
        );
        assert!(stderr.contains(field), "{what}: names {field}: {stderr}");
    }
}

#[test]
fn an_unquoted_dotted_service_name_gets_the_hint_to_quote_it() {
    let (code, _, stderr) = check(
        "[clients]\naddress = \"127.0.0.1:0\"\n\
         [services.myservice.v1.Greeter]\nstrategy = \"round-robin\"\n",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("router.toml:3:"),
        "names the line: {stderr}"
    );
    assert!(
        stderr.contains("a service name with dots must be quoted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`[services.\"myservice.v1.Greeter\"]`"),
        "shows the fix: {stderr}"
    );
}

#[test]
fn settings_for_methods_a_descriptor_set_lacks_are_warnings() {
    use router_runtime::codegen::ServiceSpec;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("router.toml");
    std::fs::write(
        &config,
        "[services.\"myservice.v1.Greeter\".methods.sayHello]\nmax_deadline = \"1s\"\n\
         [services.\"myservice.v1.Greeter\".methods.StreamGreetings]\nmax_deadline = \"1s\"\n",
    )
    .expect("write");
    let set = dir.path().join("greeter.binpb");
    std::fs::write(&set, myservice::pb::GreeterSpec::FILE_DESCRIPTOR_SET).expect("write");
    let out = Command::new(common::binary())
        .arg("check-config")
        .arg(&config)
        .arg("--descriptor-set")
        .arg(&set)
        .output()
        .expect("grpc-router runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "still valid: {stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains(
            "`services.\"myservice.v1.Greeter\".methods.sayHello`: `myservice.v1.Greeter` has no method `sayHello`"
        ),
        "{stderr}"
    );
    assert!(
        warnings[0].contains("did you mean `SayHello`? (method names are case-sensitive)"),
        "{stderr}"
    );
}
