//! Golden tests: every case under `tests/golden/<case>/input` runs through the
//! real plugin entry point ([`protoc_gen_router::execute`]) and must produce
//! exactly `tests/golden/<case>/expected`.
//!
//! `UPDATE_GOLDEN=1 cargo test -p protoc-gen-router` rewrites the expectations.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use prost_types::compiler::CodeGeneratorResponse;
use protoc_gen_router::{GeneratedFile, Params, compile_pool, execute};

const UPDATE_HINT: &str = "run `UPDATE_GOLDEN=1 cargo test -p protoc-gen-router` to update";

#[test]
fn golden() {
    let golden = common::golden();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty());
    let mut cases: Vec<_> = std::fs::read_dir(&golden)
        .expect("tests/golden exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("input").is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "expected the golden cases under {}",
        golden.display()
    );

    let mut failures = Vec::new();
    for case in &cases {
        if let Err(failure) = run_case(case, update) {
            failures.push(format!(
                "=== golden case {} ===\n{failure}",
                case.file_name().and_then(|n| n.to_str()).unwrap_or("?")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{UPDATE_HINT}",
        failures.join("\n")
    );
}

fn run_case(case: &Path, update: bool) -> Result<(), String> {
    let input = case.join("input");
    let read_opt = |name: &str| std::fs::read_to_string(input.join(name)).ok();
    // `$INPUT` in params.txt stands for the input directory (sidecar files).
    let parameter =
        read_opt("params.txt").map(|s| s.trim().replace("$INPUT", &input.display().to_string()));
    let files: Vec<String> = match read_opt("files.txt") {
        Some(list) => list.split_whitespace().map(str::to_owned).collect(),
        None => common::proto_files(&input),
    };
    let (pool, names) = compile_pool(
        &[&input],
        &files.iter().map(|f| input.join(f)).collect::<Vec<_>>(),
    )
    .map_err(|e| format!("input does not compile: {e}"))?;
    assert_eq!(names, files, "compiled file names");

    let request = protoc_gen_router::encode_request(&pool, &files, parameter.as_deref());
    let response = CodeGeneratorResponse::decode(execute(&request).as_slice())
        .map_err(|e| format!("response does not decode: {e}"))?;
    if response.supported_features != Some(1) {
        return Err("response does not declare FEATURE_PROTO3_OPTIONAL".into());
    }

    let mut actual = BTreeMap::new();
    let mut generated = Vec::new();
    match &response.error {
        Some(error) => {
            // Paths under the input directory read as `$INPUT`, as in params.txt.
            let error = error.replace(&input.display().to_string(), "$INPUT");
            actual.insert("error.txt".to_owned(), format!("{error}\n"));
        }
        None => {
            for f in &response.file {
                let name = f.name.clone().unwrap_or_default();
                let content = f.content.clone().unwrap_or_default();
                generated.push(GeneratedFile {
                    name: name.clone(),
                    content: content.clone(),
                });
                actual.insert(name, content);
            }
        }
    }

    let expected_dir = case.join("expected");
    if update {
        let _ = std::fs::remove_dir_all(&expected_dir);
        std::fs::create_dir_all(&expected_dir).map_err(|e| e.to_string())?;
        if actual.is_empty() {
            std::fs::write(expected_dir.join(".gitkeep"), "").map_err(|e| e.to_string())?;
        }
        for (name, content) in &actual {
            let path = expected_dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&path, content).map_err(|e| e.to_string())?;
        }
    } else {
        let expected = common::read_tree(&expected_dir);
        let mut diffs = String::new();
        let names: std::collections::BTreeSet<_> = expected.keys().chain(actual.keys()).collect();
        for name in names {
            let old = expected.get(name).map(String::as_str).unwrap_or("");
            let new = actual.get(name).map(String::as_str).unwrap_or("");
            if old != new || expected.contains_key(name) != actual.contains_key(name) {
                let diff = similar::TextDiff::from_lines(old, new);
                diffs.push_str(
                    &diff
                        .unified_diff()
                        .header(&format!("expected/{name}"), &format!("actual/{name}"))
                        .to_string(),
                );
                if !expected.contains_key(name) {
                    diffs.push_str(&format!("(unexpected output file {name})\n"));
                }
                if !actual.contains_key(name) {
                    diffs.push_str(&format!("(missing output file {name})\n"));
                }
            }
        }
        if !diffs.is_empty() {
            return Err(diffs);
        }
    }

    // The generated protos compile and agree with the model.
    if response.error.is_none() {
        let params: Params = parameter
            .as_deref()
            .unwrap_or("")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let model = protoc_gen_router::model(&pool, &files, &params).map_err(|e| e.to_string())?;
        if params.writes_router_proto() {
            common::check_generated(&[&input], &generated, &model)?;
        }
        // The library API gives the same bytes as the plugin.
        let direct =
            protoc_gen_router::generate(&pool, &files, &params).map_err(|e| e.to_string())?;
        if direct != generated {
            return Err("generate() differs from execute()".into());
        }
    }
    Ok(())
}
