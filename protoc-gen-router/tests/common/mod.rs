//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost_reflect::DescriptorPool;
use protoc_gen_router::{EmbeddedFileResolver, GeneratedFile, ir};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The golden cases (`tests/golden` of this crate).
pub fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every `.proto` under `dir`, as import names relative to `dir`, sorted.
pub fn proto_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, dir, &mut |rel| {
        if rel.ends_with(".proto") {
            out.push(rel.to_owned());
        }
    });
    out.sort();
    out
}

/// Every file under `dir` (names starting with `.` skipped), relative, with contents.
pub fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut |rel| {
        let text = std::fs::read_to_string(dir.join(rel))
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.join(rel).display()));
        out.insert(rel.to_owned(), text);
    });
    out
}

fn walk(base: &Path, dir: &Path, f: &mut dyn FnMut(&str)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            walk(base, &path, f);
        } else if let Ok(rel) = path.strip_prefix(base) {
            let rel: Vec<_> = rel.iter().filter_map(|c| c.to_str()).collect();
            f(&rel.join("/"));
        }
    }
}

/// Compiles every generated `.proto` again with protox (together with the
/// inputs under `includes`) and checks the result against the model: every
/// method's arm in `<S>Call`/`<S>Reply` has its tag, name and type, and the
/// frames have their fixed numbers.
pub fn check_generated(
    includes: &[impl AsRef<Path>],
    generated: &[GeneratedFile],
    model: &[ir::File],
) -> Result<(), String> {
    let mut resolver = EmbeddedFileResolver::new();
    let mut names = Vec::new();
    for file in generated.iter().filter(|f| f.name.ends_with(".proto")) {
        resolver = resolver.with_file(file.name.clone(), file.content.clone());
        names.push(file.name.clone());
    }
    let mut compiler = protox::Compiler::with_file_resolver(resolver.chain(includes));
    compiler.include_imports(true);
    for name in &names {
        compiler
            .open_file(name)
            .map_err(|e| format!("generated {name} does not compile: {e:?}"))?;
    }
    check_pool(&compiler.descriptor_pool(), model)
}

/// Checks a pool holding compiled router protos against the model.
pub fn check_pool(pool: &DescriptorPool, model: &[ir::File]) -> Result<(), String> {
    for service in model.iter().flat_map(|f| &f.services) {
        for (suffix, request) in [("Call", true), ("Reply", false)] {
            let name = service.qualified(suffix);
            let message = pool
                .get_message_by_name(&name)
                .ok_or_else(|| format!("{name} missing"))?;
            let call_id = message
                .get_field(1)
                .ok_or_else(|| format!("{name}.call_id missing"))?;
            if call_id.name() != "call_id" {
                return Err(format!("{name}: field 1 is {}", call_id.name()));
            }
            if message.fields().len() != service.methods.len() + 1 {
                return Err(format!("{name}: unexpected field count"));
            }
            for method in &service.methods {
                let field = message
                    .get_field_by_name(&method.snake_name)
                    .ok_or_else(|| format!("{name}.{} missing", method.snake_name))?;
                if field.number() != method.tag {
                    return Err(format!(
                        "{name}.{}: number {} but tag {}",
                        method.snake_name,
                        field.number(),
                        method.tag
                    ));
                }
                let expected = if request {
                    &method.input_type
                } else {
                    &method.output_type
                };
                let actual = match field.kind() {
                    prost_reflect::Kind::Message(m) => format!(".{}", m.full_name()),
                    other => format!("{other:?}"),
                };
                if &actual != expected {
                    return Err(format!(
                        "{name}.{}: type {actual}, expected {expected}",
                        method.snake_name
                    ));
                }
                if field
                    .containing_oneof()
                    .map(|o| o.name().to_owned())
                    .as_deref()
                    != Some("method")
                {
                    return Err(format!(
                        "{name}.{}: not in oneof `method`",
                        method.snake_name
                    ));
                }
            }
        }
        let frames: [(&str, [&str; 9]); 2] = [
            (
                "RouterFrame",
                [
                    "welcome",
                    "start",
                    "call",
                    "half_close",
                    "cancel",
                    "window_update",
                    "ping",
                    "go_away",
                    "chunk",
                ],
            ),
            (
                "BridgeFrame",
                [
                    "hello",
                    "headers",
                    "reply",
                    "trailers",
                    "window_update",
                    "heartbeat",
                    "drain",
                    "chunk",
                    "pong",
                ],
            ),
        ];
        for (suffix, fields) in frames {
            let name = service.qualified(suffix);
            let message = pool
                .get_message_by_name(&name)
                .ok_or_else(|| format!("{name} missing"))?;
            for (number, field) in (1u32..).zip(fields) {
                let actual = message.get_field(number).map(|f| f.name().to_owned());
                if actual.as_deref() != Some(field) {
                    return Err(format!(
                        "{name}: field {number} is {actual:?}, expected {field}"
                    ));
                }
            }
        }
        let register = service.qualified("Router");
        let svc = pool
            .services()
            .find(|s| s.full_name() == register)
            .ok_or_else(|| format!("service {register} missing"))?;
        let method = svc
            .methods()
            .find(|m| m.name() == "Register")
            .ok_or_else(|| format!("{register}/Register missing"))?;
        if !(method.is_client_streaming() && method.is_server_streaming()) {
            return Err(format!("{register}/Register is not bidi streaming"));
        }
    }
    Ok(())
}
