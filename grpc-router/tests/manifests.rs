//! The committed Kubernetes manifests, `deploy/manifests/grpc-router.yaml`
//! (the Helm chart in `deploy/helm/grpc-router` rendered with its defaults),
//! hang together: the objects are there, selectors select the pods, Services
//! target the listeners' ports, probes ask the daemon's gRPC health service,
//! the pod runs as non-root, router.toml is valid and agrees with the ports,
//! the pod outlives the daemon's shutdown grace, and scrapers find
//! `/metrics` on the admin port. The Grafana dashboard queries only metrics
//! the daemon exports.
//!
//! These read the rendering only; `.ci/deploy-check.sh` checks that it is
//! what the chart renders (regenerate with `bash .ci/deploy-check.sh --update`).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

/// The clients' listener: calls and grpc.health.v1.
const CLIENTS_PORT: i64 = 50051;
/// The registrations' listener.
const REGISTRATIONS_PORT: i64 = 50052;
/// The admin HTTP listener: `/metrics` and `/healthz`.
const ADMIN_PORT: i64 = 9090;
/// Where the image's CMD reads the configuration.
const CONFIG_PATH: &str = "/etc/grpc-router/router.toml";

fn manifests_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/manifests/grpc-router.yaml")
}

/// Every object of the manifests, parsed once.
fn objects() -> &'static [Yaml] {
    static OBJECTS: OnceLock<Vec<Yaml>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        let path = manifests_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
        docs.into_iter()
            .filter(|doc| !matches!(doc, Yaml::Null | Yaml::BadValue))
            .collect()
    })
}

fn kind(object: &Yaml) -> &str {
    object["kind"].as_str().unwrap_or("<no kind>")
}

fn name(object: &Yaml) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("<no name>")
}

fn all_of(wanted: &str) -> Vec<&'static Yaml> {
    objects().iter().filter(|o| kind(o) == wanted).collect()
}

fn only(wanted: &str) -> &'static Yaml {
    match all_of(wanted).as_slice() {
        [one] => one,
        found => panic!("expected one {wanted}, found {}", found.len()),
    }
}

fn deployment() -> &'static Yaml {
    only("Deployment")
}

fn pod_spec() -> &'static Yaml {
    &deployment()["spec"]["template"]["spec"]
}

/// The daemon's container: the only one, or the one named grpc-router.
fn container() -> &'static Yaml {
    let containers = pod_spec()["containers"]
        .as_vec()
        .expect("the Deployment's pod template has no containers list");
    match containers.as_slice() {
        [one] => one,
        many => many
            .iter()
            .find(|c| c["name"].as_str() == Some("grpc-router"))
            .expect("several containers and none is named grpc-router"),
    }
}

fn headless_service() -> &'static Yaml {
    let headless: Vec<_> = all_of("Service")
        .into_iter()
        .filter(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .collect();
    match headless.as_slice() {
        [one] => one,
        found => panic!("expected one headless Service, found {}", found.len()),
    }
}

fn clients_service() -> &'static Yaml {
    let others: Vec<_> = all_of("Service")
        .into_iter()
        .filter(|s| s["spec"]["clusterIP"].as_str() != Some("None"))
        .collect();
    match others.as_slice() {
        [one] => one,
        found => panic!("expected one non-headless Service, found {}", found.len()),
    }
}

/// The string pairs of a YAML map such as a label set, e.g. `metadata.labels`.
fn string_map(value: &Yaml, what: &str) -> Vec<(String, String)> {
    let hash = value
        .as_hash()
        .unwrap_or_else(|| panic!("{what} is not a map: {value:?}"));
    hash.iter()
        .map(|(k, v)| {
            let k = k
                .as_str()
                .unwrap_or_else(|| panic!("{what}: key {k:?} is not a string"));
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("{what}.{k}: {v:?} is not a string"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn pod_labels() -> Vec<(String, String)> {
    string_map(
        &deployment()["spec"]["template"]["metadata"]["labels"],
        "Deployment spec.template.metadata.labels",
    )
}

/// Asserts that every label of `selector` is on the Deployment's pods.
fn assert_selects_pods(selector: &Yaml, what: &str) {
    let labels = pod_labels();
    let selector = string_map(selector, what);
    assert!(
        !selector.is_empty(),
        "{what} is empty: it would select every pod"
    );
    for pair in &selector {
        assert!(
            labels.contains(pair),
            "{what} has {}={} but the pod template's labels are {labels:?}",
            pair.0,
            pair.1
        );
    }
}

/// The container port a Service's `targetPort` (a number or a port name) means.
fn container_port_for(target: &Yaml, service: &str) -> i64 {
    if let Some(number) = target.as_i64() {
        return number;
    }
    let target_name = target.as_str().unwrap_or_else(|| {
        panic!("Service {service}: targetPort {target:?} is neither a number nor a name")
    });
    container_ports()
        .into_iter()
        .find(|(name, _)| name.as_deref() == Some(target_name))
        .map(|(_, port)| port)
        .unwrap_or_else(|| {
            panic!("Service {service}: targetPort {target_name} names no container port")
        })
}

/// (name, containerPort) of the daemon's container.
fn container_ports() -> Vec<(Option<String>, i64)> {
    container()["ports"]
        .as_vec()
        .expect("the container declares no ports")
        .iter()
        .map(|p| {
            let port = p["containerPort"]
                .as_i64()
                .unwrap_or_else(|| panic!("container port {p:?} has no containerPort number"));
            (p["name"].as_str().map(str::to_owned), port)
        })
        .collect()
}

/// The target ports (as container ports) of a Service.
fn service_target_ports(service: &Yaml) -> Vec<i64> {
    let service_name = name(service);
    service["spec"]["ports"]
        .as_vec()
        .unwrap_or_else(|| panic!("Service {service_name} has no ports"))
        .iter()
        .map(|p| {
            // targetPort defaults to port.
            let target = match &p["targetPort"] {
                Yaml::BadValue => &p["port"],
                target => target,
            };
            container_port_for(target, service_name)
        })
        .collect()
}

/// router.toml from the ConfigMap.
fn router_toml() -> toml::Table {
    let config_map = only("ConfigMap");
    let text = config_map["data"]["router.toml"]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {} has no data.router.toml", name(config_map)));
    text.parse::<toml::Table>().unwrap_or_else(|e| {
        panic!(
            "router.toml of ConfigMap {} is not valid TOML: {e}",
            name(config_map)
        )
    })
}

/// The port of `[section] address` in router.toml.
fn listen_port(config: &toml::Table, section: &str) -> i64 {
    let address = config
        .get(section)
        .and_then(|s| s.get("address"))
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("router.toml has no {section}.address string"));
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("router.toml {section}.address {address:?} has no port"))
}

/// Parses a duration such as "30s", "1m30s" or "500ms".
fn parse_duration(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    assert!(!rest.is_empty(), "empty duration");
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("duration {text:?}: expected a number at {rest:?}"));
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += match rest[..unit].trim() {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number * 60),
            "h" => Duration::from_secs(number * 3600),
            other => panic!("duration {text:?}: unknown unit {other:?}"),
        };
        rest = &rest[unit..];
    }
    total
}

#[test]
fn manifests_hold_the_expected_objects() {
    let count = |wanted: &str| all_of(wanted).len();
    assert_eq!(count("ConfigMap"), 1, "ConfigMaps");
    assert_eq!(count("Deployment"), 1, "Deployments");
    assert_eq!(count("Service"), 2, "Services");
    assert_eq!(count("PodDisruptionBudget"), 1, "PodDisruptionBudgets");
    let kinds: Vec<_> = objects().iter().map(kind).collect();
    for kind in &kinds {
        assert!(
            [
                "ConfigMap",
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "ServiceAccount"
            ]
            .contains(kind),
            "unexpected object kind {kind} (all: {kinds:?})"
        );
    }
}

#[test]
fn one_service_is_headless_and_publishes_unready_pods() {
    let headless = headless_service();
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "Service {}: bridges must find replicas that are not ready yet",
        name(headless)
    );
    let clients = clients_service();
    let service_type = clients["spec"]["type"].as_str().unwrap_or("ClusterIP");
    assert_eq!(service_type, "ClusterIP", "Service {}", name(clients));
}

#[test]
fn deployment_selector_matches_pod_template_labels() {
    assert_selects_pods(
        &deployment()["spec"]["selector"]["matchLabels"],
        "Deployment spec.selector.matchLabels",
    );
}

#[test]
fn services_and_pdb_select_the_deployments_pods() {
    for service in all_of("Service") {
        assert_selects_pods(
            &service["spec"]["selector"],
            &format!("Service {} spec.selector", name(service)),
        );
    }
    let pdb = only("PodDisruptionBudget");
    assert_selects_pods(
        &pdb["spec"]["selector"]["matchLabels"],
        &format!(
            "PodDisruptionBudget {} spec.selector.matchLabels",
            name(pdb)
        ),
    );
}

#[test]
fn services_target_the_listener_container_ports() {
    let ports: Vec<i64> = container_ports().into_iter().map(|(_, p)| p).collect();
    assert!(
        ports.contains(&CLIENTS_PORT),
        "container ports {ports:?} lack {CLIENTS_PORT}"
    );
    assert!(
        ports.contains(&REGISTRATIONS_PORT),
        "container ports {ports:?} lack {REGISTRATIONS_PORT}"
    );
    assert_eq!(
        service_target_ports(clients_service()),
        vec![CLIENTS_PORT],
        "the clients' Service must target the clients port"
    );
    assert_eq!(
        service_target_ports(headless_service()),
        vec![REGISTRATIONS_PORT, ADMIN_PORT],
        "the headless Service must target the registrations port and, for scrapers, the admin port"
    );
}

#[test]
fn the_admin_port_is_named_for_scrapers_and_only_on_the_headless_service() {
    let admin = container_ports()
        .into_iter()
        .find(|(_, port)| *port == ADMIN_PORT)
        .and_then(|(name, _)| name);
    assert_eq!(
        admin.as_deref(),
        Some("admin"),
        "the container port {ADMIN_PORT}"
    );
    let metrics = headless_service()["spec"]["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .find(|p| p["port"].as_i64() == Some(ADMIN_PORT))
        .expect("the headless Service publishes the admin port");
    assert_eq!(metrics["name"].as_str(), Some("metrics"));
    // The admin listener has no credentials: clients' Service never reaches it.
    assert!(!service_target_ports(clients_service()).contains(&ADMIN_PORT));
}

#[test]
fn pods_are_annotated_for_prometheus_scraping_of_the_admin_port() {
    let annotations = string_map(
        &deployment()["spec"]["template"]["metadata"]["annotations"],
        "the pod template's annotations",
    );
    let get = |key: &str| {
        annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("prometheus.io/scrape"), Some("true"));
    assert_eq!(
        get("prometheus.io/port"),
        Some(ADMIN_PORT.to_string().as_str())
    );
    assert_eq!(get("prometheus.io/path"), Some("/metrics"));
}

#[test]
fn liveness_asks_healthz_on_the_admin_port() {
    let http = &container()["livenessProbe"]["httpGet"];
    assert_eq!(
        http["path"].as_str(),
        Some("/healthz"),
        "{:?}",
        container()["livenessProbe"]
    );
    let port = match http["port"].as_i64() {
        Some(number) => number,
        None => container_port_for(&http["port"], "livenessProbe"),
    };
    assert_eq!(port, ADMIN_PORT);
}

#[test]
fn readiness_is_a_grpc_health_probe_on_the_clients_port() {
    let probe = &container()["readinessProbe"];
    let grpc = &probe["grpc"];
    assert_eq!(
        grpc["port"].as_i64(),
        Some(CLIENTS_PORT),
        "readinessProbe must be a grpc probe on port {CLIENTS_PORT}: {probe:?}"
    );
    // Absent means "" too: the server-wide status.
    let service = grpc["service"].as_str().unwrap_or("");
    assert_eq!(
        service, "",
        "readinessProbe must ask the server-wide health status"
    );
}

#[test]
fn pod_runs_as_non_root_with_a_read_only_root_filesystem() {
    let pod = &pod_spec()["securityContext"];
    let own = &container()["securityContext"];
    let non_root = own["runAsNonRoot"]
        .as_bool()
        .or_else(|| pod["runAsNonRoot"].as_bool());
    assert_eq!(non_root, Some(true), "runAsNonRoot must be true");
    let user = own["runAsUser"]
        .as_i64()
        .or_else(|| pod["runAsUser"].as_i64());
    assert!(user.is_none_or(|uid| uid != 0), "runAsUser is 0");
    assert_eq!(
        own["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "readOnlyRootFilesystem"
    );
    assert_eq!(
        own["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "allowPrivilegeEscalation"
    );
}

#[test]
fn router_toml_parses_and_listens_on_the_two_ports() {
    let config = router_toml();
    assert_eq!(
        listen_port(&config, "clients"),
        CLIENTS_PORT,
        "clients.address"
    );
    assert_eq!(
        listen_port(&config, "registrations"),
        REGISTRATIONS_PORT,
        "registrations.address"
    );
    assert_eq!(listen_port(&config, "admin"), ADMIN_PORT, "admin.address");
}

#[test]
fn deployment_mounts_the_configmap_where_the_daemon_reads_it() {
    let args: Vec<_> = container()["args"]
        .as_vec()
        .map(|a| a.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default();
    assert!(
        args.contains(&CONFIG_PATH),
        "container args {args:?} do not name {CONFIG_PATH}"
    );
    let (dir, file) = CONFIG_PATH
        .rsplit_once('/')
        .expect("CONFIG_PATH has a directory");
    let mounts = container()["volumeMounts"]
        .as_vec()
        .expect("the container has no volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(dir))
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}"));
    let volume_name = mount["name"]
        .as_str()
        .expect("the mount has no volume name");
    let volume = pod_spec()["volumes"]
        .as_vec()
        .and_then(|vs| vs.iter().find(|v| v["name"].as_str() == Some(volume_name)))
        .unwrap_or_else(|| panic!("no volume {volume_name}"));
    // A configMap volume, or a projected one with a configMap source.
    let config_map_sources: Vec<&Yaml> = match volume["projected"]["sources"].as_vec() {
        Some(sources) => sources.iter().map(|s| &s["configMap"]).collect(),
        None => vec![&volume["configMap"]],
    };
    let config_map_name = name(only("ConfigMap"));
    let source = config_map_sources
        .into_iter()
        .find(|s| s["name"].as_str() == Some(config_map_name))
        .unwrap_or_else(|| {
            panic!("volume {volume_name} does not hold ConfigMap {config_map_name}")
        });
    if let Some(items) = source["items"].as_vec() {
        assert!(
            items
                .iter()
                .any(|i| i["key"].as_str() == Some("router.toml")
                    && i["path"].as_str() == Some(file)),
            "volume {volume_name} does not put router.toml at {file}"
        );
    }
}

#[test]
fn termination_grace_covers_the_shutdown_delay_and_grace() {
    let config = router_toml();
    let shutdown = |key: &str, default: Duration| {
        config
            .get("shutdown")
            .and_then(|s| s.get(key))
            .map(|g| {
                g.as_str()
                    .unwrap_or_else(|| panic!("shutdown.{key} is not a string"))
            })
            .map_or(default, parse_duration)
    };
    let grace = shutdown("grace", Duration::from_secs(30));
    let delay = shutdown("delay", Duration::ZERO);
    let pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .map_or(Duration::ZERO, |s| Duration::from_secs(s.unsigned_abs()));
    let termination = pod_spec()["terminationGracePeriodSeconds"]
        .as_i64()
        .map_or(Duration::from_secs(30), |s| {
            Duration::from_secs(s.unsigned_abs())
        });
    // The daemon exits within delay + grace + 1 s of SIGTERM.
    let needed = pre_stop + delay + grace + Duration::from_secs(1);
    assert!(
        termination >= needed,
        "terminationGracePeriodSeconds ({termination:?}) must cover the preStop sleep ({pre_stop:?}) + shutdown.delay ({delay:?}) + shutdown.grace ({grace:?}) + 1 s"
    );
}

fn dashboard() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana/grpc-router-dashboard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Every `expr` string in a dashboard (panels, rows' panels, targets).
fn exprs(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => found.push(expr.clone()),
                    _ => exprs(v, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, found)),
        _ => {}
    }
}

/// The `grpc_...` words of a PromQL expression.
fn grpc_words(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("grpc_"))
        .collect()
}

/// The labels the router's metrics carry (they are not metric names).
const LABELS: [&str; 4] = ["grpc_service", "grpc_method", "grpc_type", "grpc_code"];

#[test]
fn the_dashboard_queries_only_metrics_the_daemon_exports() {
    let dashboard = dashboard();
    let mut found = Vec::new();
    exprs(&dashboard, &mut found);
    assert!(
        found.len() >= 10,
        "the dashboard has {} queries",
        found.len()
    );
    let mut used = std::collections::BTreeSet::new();
    for expr in &found {
        for word in grpc_words(expr) {
            if LABELS.contains(&word) {
                continue;
            }
            assert!(
                router_runtime::metrics::is_exported(word),
                "the dashboard queries `{word}`, which the daemon does not export: {expr}"
            );
            used.insert(word.to_owned());
        }
    }
    for wanted in [
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_router_registrations",
        "grpc_router_calls_in_flight",
        "grpc_router_calls_no_instance_total",
        "grpc_router_call_retries_total",
        "grpc_router_credit_wait_seconds_bucket",
        "grpc_router_instances_ejected",
        "grpc_router_ejections_total",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard has no panel on {wanted}"
        );
    }
}

#[test]
fn the_dashboard_asks_for_its_prometheus_data_source() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a ${{datasource}} variable of type datasource"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} uses the ${{datasource}} variable",
            panel["title"]
        );
    }
}

#[test]
fn promql_words_are_split_as_prometheus_reads_them() {
    assert_eq!(
        grpc_words(
            r#"sum by (grpc_code) (rate(grpc_server_handled_total{grpc_service=~"$service"}[5m]))"#
        ),
        ["grpc_code", "grpc_server_handled_total", "grpc_service"]
    );
}

#[test]
fn durations_parse_as_the_daemon_writes_them() {
    assert_eq!(parse_duration("30s"), Duration::from_secs(30));
    assert_eq!(parse_duration("1m30s"), Duration::from_secs(90));
    assert_eq!(parse_duration("500ms"), Duration::from_millis(500));
    assert_eq!(parse_duration("2h"), Duration::from_secs(7200));
}
