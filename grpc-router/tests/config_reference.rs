//! The configuration reference, `docs/src/configuration.md`, against the
//! configuration types: every key `Config` accepts is in the reference's key
//! tables, every key the tables name is accepted, the reference's complete
//! example parses and sets every key, and every table of the configuration
//! refuses a key it does not know.
//!
//! The keys come from the types themselves, not from a list kept by hand: a
//! recording [`Deserializer`] walks `Config`'s `Deserialize` implementation
//! and notes the field names each struct passes to `deserialize_struct`
//! (serde's derive hands over the whole list), descending through options,
//! sequences (arrays of tables) and maps (`<name>` for the keys the user
//! chooses: a service, a method). A field whose type asks for anything else
//! (a string, number, bool, enum; also a `deserialize_with` function that
//! reads a string) is a key. `serde-reflection` was not used: its tracer
//! answers every string with one sample value, which the validating
//! deserializers here (durations, token hashes, SAN patterns, strategy
//! names, addresses) refuse, and it reports types by name, not paths.
//!
//! Here, not in `src/config.rs`: the packaged crate holds no `docs/`, and its
//! unit tests must compile from the package alone.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use grpc_router::config::Config;
use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// The path component standing for a key the configuration chooses (a
/// service name, a method name, a label).
const NAME: &str = "<name>";

/// The reference, relative to the workspace root.
const REFERENCE: &str = "docs/src/configuration.md";

/// What the types put at one path.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// A struct: a TOML table with these keys.
    Table(Vec<&'static str>),
    /// A map: a table whose keys the configuration chooses.
    Map,
    /// A value (string, number, bool, enum, array of those).
    Value,
}

/// The shape at a path, and whether it is an array of them.
#[derive(Debug, Clone, PartialEq)]
struct Node {
    shape: Shape,
    array: bool,
}

/// Why the recorder stopped: always, once it reached its path (or could not).
#[derive(Debug)]
struct Stop(String);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Stop(msg.to_string())
    }
}

/// A deserializer that follows `rest` down the type (one struct field or map
/// entry per component) and records the shape it finds at the end.
struct Recorder<'a> {
    rest: &'a [String],
    found: &'a RefCell<Option<Shape>>,
    array: &'a Cell<bool>,
}

impl<'a> Recorder<'a> {
    fn here(&self) -> bool {
        self.rest.is_empty()
    }

    fn record(&self, shape: Shape) -> Stop {
        *self.found.borrow_mut() = Some(shape);
        Stop("recorded".to_owned())
    }

    fn deeper(&self) -> Recorder<'a> {
        Recorder {
            rest: &self.rest[1..],
            found: self.found,
            array: self.array,
        }
    }

    fn same(&self) -> Recorder<'a> {
        Recorder {
            rest: self.rest,
            found: self.found,
            array: self.array,
        }
    }
}

/// A map of one entry: `key` and the recorder one level down.
struct OneEntry<'a> {
    key: Option<String>,
    value: Option<Recorder<'a>>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let value = self
            .value
            .take()
            .ok_or_else(|| Stop("a value asked for twice".to_owned()))?;
        seed.deserialize(value)
    }
}

/// A sequence of one element, at the same path.
struct OneElement<'a>(Option<Recorder<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(element) => seed.deserialize(element).map(Some),
            None => Ok(None),
        }
    }
}

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        if self.here() {
            Err(self.record(Shape::Value))
        } else {
            Err(Stop(format!("a value has no key `{}`", self.rest[0])))
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        if self.here() {
            return Err(self.record(Shape::Table(fields.to_vec())));
        }
        visitor.visit_map(OneEntry {
            key: Some(self.rest[0].clone()),
            value: Some(self.deeper()),
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        if self.here() {
            return Err(self.record(Shape::Map));
        }
        visitor.visit_map(OneEntry {
            key: Some(self.rest[0].clone()),
            value: Some(self.deeper()),
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        if self.here() {
            self.array.set(true);
        }
        visitor.visit_seq(OneElement(Some(self.same())))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct enum identifier
        ignored_any
    }
}

/// The shape `Config`'s deserializer asks for at `path`.
fn node_at(path: &[String]) -> Node {
    let found = RefCell::new(None);
    let array = Cell::new(false);
    let outcome = Config::deserialize(Recorder {
        rest: path,
        found: &found,
        array: &array,
    });
    let shape = found.into_inner().unwrap_or_else(|| {
        panic!(
            "the recorder did not reach `{}`: {:?}",
            path.join("."),
            outcome.err()
        )
    });
    Node {
        shape,
        array: array.get(),
    }
}

/// Every path of the configuration (`""` is the top level), with its shape.
fn schema() -> BTreeMap<Vec<String>, Node> {
    let mut nodes = BTreeMap::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let node = node_at(&path);
        match &node.shape {
            Shape::Table(fields) => {
                for field in fields {
                    todo.push(child(&path, field));
                }
            }
            Shape::Map => todo.push(child(&path, NAME)),
            Shape::Value => {}
        }
        nodes.insert(path, node);
    }
    nodes
}

fn child(path: &[String], key: &str) -> Vec<String> {
    let mut child = path.to_vec();
    child.push(key.to_owned());
    child
}

/// The keys: the paths of values, a map of values (`labels`, `claims`)
/// counting as one key.
fn keys(schema: &BTreeMap<Vec<String>, Node>) -> BTreeSet<String> {
    schema
        .iter()
        .filter(|(path, node)| {
            let value = node.shape == Shape::Value;
            let in_value_map = path.last().is_some_and(|k| k == NAME);
            let map_of_values = node.shape == Shape::Map
                && schema
                    .get(&child(path, NAME))
                    .is_some_and(|n| n.shape == Shape::Value);
            (value && !in_value_map) || map_of_values
        })
        .map(|(path, _)| path.join("."))
        .collect()
}

/// `a."b.c".<method>` as components, every `<...>` as [`NAME`].
fn components(dotted: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in dotted.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| {
            if p.starts_with('<') && p.ends_with('>') {
                NAME.to_owned()
            } else {
                p
            }
        })
        .collect()
}

/// The spans between backticks in `line`.
fn backticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// One row of a key table: the tables its section heading names, the key,
/// and the line.
#[derive(Debug)]
struct Row {
    tables: Vec<Vec<String>>,
    key: Vec<String>,
    line: usize,
}

impl Row {
    /// The full paths the row documents, one per table of its heading.
    fn paths(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|t| {
                t.iter()
                    .chain(&self.key)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect()
    }
}

/// The reference's key tables: under a heading naming tables (`` `[log]` ``,
/// `` `[defaults]`, `[services."<name>"]` ``; none: the top level), each
/// table row whose first cell is a backticked key.
fn rows(reference: &str) -> Vec<Row> {
    let mut tables = vec![Vec::new()];
    let mut rows = Vec::new();
    let mut in_code = false;
    for (i, line) in reference.lines().enumerate() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if line.starts_with('#') {
            tables = backticked(line)
                .into_iter()
                .filter_map(|span| {
                    let inner = span.trim_start_matches('[').trim_end_matches(']');
                    (span.starts_with('[') && span.ends_with(']')).then(|| components(inner))
                })
                .collect();
            if tables.is_empty() {
                tables = vec![Vec::new()];
            }
            continue;
        }
        let Some(first) = line
            .strip_prefix('|')
            .and_then(|rest| rest.split('|').next())
        else {
            continue;
        };
        let first = first.trim();
        if first.len() > 2 && first.starts_with('`') && first.ends_with('`') {
            rows.push(Row {
                tables: tables.clone(),
                key: components(&first[1..first.len() - 1]),
                line: i + 1,
            });
        }
    }
    rows
}

/// The TOML blocks of the section `Complete example` (up to the next
/// section): the example, then the alternatives to parts of it (keys that
/// exclude each other, such as the three sources of JWT keys).
fn complete_example(reference: &str) -> Vec<&str> {
    let section = reference
        .split_once("## Complete example")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .unwrap_or_else(|| panic!("{REFERENCE} has a `## Complete example` section"));
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .collect();
    assert!(
        !blocks.is_empty(),
        "{REFERENCE}'s complete example is a ```toml block"
    );
    blocks
}

/// The keys a parsed TOML document sets, in the schema's terms.
fn keys_set(
    value: &toml::Value,
    path: &mut Vec<String>,
    schema: &BTreeMap<Vec<String>, Node>,
    keys: &BTreeSet<String>,
    out: &mut BTreeSet<String>,
) {
    if keys.contains(&path.join(".")) {
        out.insert(path.join("."));
        return;
    }
    match value {
        toml::Value::Table(table) => {
            let map = schema.get(path.as_slice()).map(|n| &n.shape) == Some(&Shape::Map);
            for (key, value) in table {
                path.push(if map { NAME.to_owned() } else { key.clone() });
                keys_set(value, path, schema, keys, out);
                path.pop();
            }
        }
        toml::Value::Array(values) => {
            for value in values {
                keys_set(value, path, schema, keys, out);
            }
        }
        _ => {}
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference() -> String {
    std::fs::read_to_string(root().join(REFERENCE)).unwrap_or_else(|e| panic!("{REFERENCE}: {e}"))
}

#[test]
fn the_recorder_finds_keys_of_every_kind() {
    let keys = keys(&schema());
    for key in [
        "router_id",
        "clients.address",
        "clients.tls.cert",
        "defaults.max_request_message_bytes",
        "defaults.strategy",
        "services.<name>.strategy",
        "services.<name>.methods.<name>.rate_limit.burst",
        "services.<name>.split.labels",
        "services.<name>.allow.claims",
        "auth.jwt.issuer",
        "log.format",
        "runtime.worker_threads",
    ] {
        assert!(keys.contains(key), "`{key}` is not among {keys:#?}");
    }
    assert!(
        !keys.iter().any(|k| k.ends_with(".<name>")),
        "a map of values is one key: {keys:#?}"
    );
}

#[test]
fn every_key_the_types_accept_is_in_the_reference() {
    let keys = keys(&schema());
    let documented: BTreeSet<String> = rows(&reference()).iter().flat_map(Row::paths).collect();
    let missing: Vec<&String> = keys.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "{REFERENCE} does not document {} key(s) the configuration accepts; add a row \
         for each to the key table under the heading that names its table (`[defaults]`, \
         `[services.\"<name>\"]` ...), and set it in the complete example:\n  {}",
        missing.len(),
        missing
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

#[test]
fn every_key_the_reference_documents_is_accepted() {
    let keys = keys(&schema());
    let unknown: Vec<String> = rows(&reference())
        .iter()
        .flat_map(|row| {
            row.paths()
                .into_iter()
                .filter(|p| !keys.contains(p))
                .map(move |p| format!("{REFERENCE}:{}: `{p}`", row.line))
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "the reference documents keys the configuration does not accept (a typo, a \
         removed key, or a row under the wrong heading):\n  {}",
        unknown.join("\n  ")
    );
}

#[test]
fn the_complete_example_parses_and_sets_every_documented_key() {
    let reference = reference();
    let schema = schema();
    let keys = keys(&schema);
    let mut set = BTreeSet::new();
    for (i, example) in complete_example(&reference).into_iter().enumerate() {
        let block = i + 1;
        let deserializer = toml::de::Deserializer::parse(example).unwrap_or_else(|e| {
            panic!("{REFERENCE}'s complete example (block {block}) is not TOML: {e}")
        });
        if let Err(e) = serde_path_to_error::deserialize::<_, Config>(deserializer) {
            panic!(
                "{REFERENCE}'s complete example (block {block}) is refused at `{}`: {}",
                e.path(),
                e.inner()
            );
        }
        let value: toml::Value = toml::from_str(example).expect("parsed above");
        keys_set(&value, &mut Vec::new(), &schema, &keys, &mut set);
    }
    let unset: Vec<String> = rows(&reference)
        .iter()
        .filter(|row| !row.paths().iter().any(|p| set.contains(p)))
        .map(|row| format!("{REFERENCE}:{}: `{}`", row.line, row.paths().join("` or `")))
        .collect();
    assert!(
        unset.is_empty(),
        "the complete example sets no value for these documented keys; set each in it \
         (or, where keys exclude each other, in a ```toml block after it):\n  {}",
        unset.join("\n  ")
    );
}

/// The example is also a configuration the daemon would run with (the
/// checks past parsing: deadlines in order, retry ranges, what TLS and
/// `[auth.jwt]` settings need), once the files it names exist: here
/// placeholders in a temporary directory (the TLS files are only opened when
/// the listeners start; the JWKS is read at load).
#[test]
fn the_complete_example_passes_check_config_given_its_files() {
    let reference = reference();
    let example = complete_example(&reference)[0];
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, content) in [
        ("tls/tls.crt", ""),
        ("tls/tls.key", ""),
        ("tls/ca.crt", ""),
        ("jwks.json", r#"{"keys": []}"#),
    ] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
    let base = format!("{}/", dir.path().display());
    let mut text = example
        .replace("/etc/grpc-router/", &base)
        .replace("/var/lib/grpc-router/", &base);
    if !cfg!(feature = "otel") {
        text = text
            .lines()
            .filter(|l| !l.starts_with("otlp_endpoint"))
            .collect::<Vec<_>>()
            .join("\n");
    }
    if let Err(e) = Config::parse(Path::new("router.toml"), &text, Vec::new()) {
        panic!("{REFERENCE}'s complete example is refused: {e}\n{text}");
    }
}

/// The tables' `deny_unknown_fields`, which makes the checks above mean
/// something: a key the reference names but the types lack would fail the
/// example, not be ignored.
#[test]
fn every_table_of_the_configuration_refuses_an_unknown_key() {
    let schema = schema();
    let tables: Vec<&Vec<String>> = schema
        .iter()
        .filter(|(_, node)| matches!(node.shape, Shape::Table(_)))
        .map(|(path, _)| path)
        .collect();
    assert!(tables.len() > 10, "{tables:?}");
    for path in tables {
        let mut value = toml::Value::Table(toml::Table::from_iter([(
            "not_a_key".to_owned(),
            toml::Value::Integer(1),
        )]));
        for depth in (0..path.len()).rev() {
            if schema[&path[..=depth]].array {
                value = toml::Value::Array(vec![value]);
            }
            value = toml::Value::Table(toml::Table::from_iter([(path[depth].clone(), value)]));
        }
        let text = toml::to_string(&value).expect("a TOML document");
        let at = if path.is_empty() {
            "not_a_key".to_owned()
        } else {
            format!("{}.not_a_key", path.join("."))
        };
        match Config::parse(Path::new("router.toml"), &text, Vec::new()) {
            Ok(_) => panic!("`{at}` is accepted:\n{text}"),
            Err(e) => assert!(
                e.to_string().contains("unknown field `not_a_key`"),
                "`{at}` is refused for another reason: {e}\n{text}"
            ),
        }
    }
}

/// `cargo package` ships `src/` and the README only (`include` in
/// Cargo.toml): a unit test (or the
/// daemon) that includes a file from elsewhere (`../docs`, `../deploy`) does
/// not build from the package. Such checks belong here, reading the files at
/// run time.
#[test]
fn the_sources_include_no_file_from_outside_the_package() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = crate_dir.join("src").canonicalize().expect("src/");
    let mut stack = vec![src.clone()];
    let mut outside = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            for (i, line) in text.lines().enumerate() {
                for macro_name in ["include_str!(", "include_bytes!("] {
                    for rest in line.split(macro_name).skip(1) {
                        let included = rest.split('"').nth(1).unwrap_or_default();
                        let resolved = dir.join(included);
                        let inside = resolved.canonicalize().is_ok_and(|p| {
                            p.starts_with(&src)
                                || p == crate_dir
                                    .join("README.md")
                                    .canonicalize()
                                    .unwrap_or_default()
                        });
                        if !inside {
                            outside.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    assert!(
        outside.is_empty(),
        "these include files the package does not hold (move the check to an \
         integration test in grpc-router/tests/ that reads the file at run time \
         from CARGO_MANIFEST_DIR/..):\n  {}",
        outside.join("\n  ")
    );
}
