//! Runs the generator over a large corpus of real protos (see `.ci/corpus.sh`).
//!
//! `ROUTER_CORPUS_DIR=<dir> cargo test -p protoc-gen-router --test corpus -- --ignored --nocapture`
//!
//! Every `.proto` under the directory (also the include root) that compiles
//! and has services is generated with `rust=true`; every emitted router proto
//! is compiled again with protox and checked against the model. Panics and
//! emitted protos that do not compile fail the test; validation errors (for
//! example generated-name collisions) are counted and printed.

mod common;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use protoc_gen_router::{EmbeddedFileResolver, Error, Params, generate, ir};
use protox::file::{ChainFileResolver, GoogleFileResolver, IncludeFileResolver};

/// Embedded router protos, then protox's well-known types (the corpus ships
/// newer copies of `google/protobuf/*.proto` that protox may not parse), then
/// the corpus.
fn resolver(embedded: EmbeddedFileResolver, dir: &std::path::Path) -> ChainFileResolver {
    let mut chain = ChainFileResolver::new();
    chain.add(embedded);
    chain.add(GoogleFileResolver::new());
    chain.add(IncludeFileResolver::new(dir.to_owned()));
    chain
}

#[test]
#[ignore = "needs a corpus: set ROUTER_CORPUS_DIR and pass --ignored (see .ci/corpus.sh)"]
fn corpus() {
    let dir = PathBuf::from(std::env::var_os("ROUTER_CORPUS_DIR").expect("set ROUTER_CORPUS_DIR"));
    let files = common::proto_files(&dir);
    let params = Params {
        rust: true,
        ..Params::default()
    };

    let mut compiler =
        protox::Compiler::with_file_resolver(resolver(EmbeddedFileResolver::new(), &dir));
    compiler.include_source_info(true).include_imports(true);
    let started = std::time::Instant::now();
    let mut input_failures = Vec::new();
    let mut compiled = Vec::new();
    for name in &files {
        match compiler.open_file(name) {
            Ok(_) => compiled.push(name.clone()),
            Err(e) => input_failures.push(format!("{name}: {e}")),
        }
    }
    let pool = compiler.descriptor_pool();
    let compile_time = started.elapsed();

    // Generation is most of the run: spread the files over the cores, then
    // fold the outcomes in the corpus's order.
    let with_service: Vec<&String> = compiled
        .iter()
        .filter(|name| {
            pool.get_file_by_name(name)
                .is_some_and(|file| file.services().len() > 0)
        })
        .collect();
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = with_service.len().div_ceil(workers).max(1);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = with_service
            .chunks(chunk)
            .map(|names| {
                let (pool, params) = (&pool, &params);
                scope.spawn(move || {
                    names
                        .iter()
                        .map(|name| generate_one(pool, name, params))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("a generating thread"))
            .collect()
    });

    let with_services = with_service.len();
    let (mut services, mut methods) = (0usize, 0usize);
    let mut validation: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut generated = Vec::new();
    let mut models = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Panicked(name) => failures.push(format!("{name}: the generator panicked")),
            Outcome::Refused(kind, error) => validation.entry(kind).or_default().push(error),
            Outcome::Generated(out, model) => {
                for file in &model {
                    services += file.services.len();
                    methods += file.services.iter().map(|s| s.methods.len()).sum::<usize>();
                }
                generated.extend(out);
                models.extend(model);
            }
        }
    }

    let generate_time = started.elapsed() - compile_time;
    // Compile every emitted router proto again, in one compiler.
    let mut resolver = EmbeddedFileResolver::new();
    for file in generated.iter().filter(|f| f.name.ends_with(".proto")) {
        resolver = resolver.with_file(file.name.clone(), file.content.clone());
    }
    let mut compiler = protox::Compiler::with_file_resolver(self::resolver(resolver, &dir));
    compiler.include_imports(true);
    let mut recompiled = 0usize;
    let mut ok_models = Vec::new();
    for (file, model) in generated
        .iter()
        .filter(|f| f.name.ends_with(".proto"))
        .zip(&models)
    {
        match compiler.open_file(&file.name) {
            Ok(_) => {
                recompiled += 1;
                ok_models.push(model.clone());
            }
            Err(e) => failures.push(format!(
                "{}: emitted proto does not compile: {e:?}",
                file.name
            )),
        }
    }
    if let Err(e) = common::check_pool(&compiler.descriptor_pool(), &ok_models) {
        failures.push(format!("emitted protos disagree with the model: {e}"));
    }

    println!("corpus: {}", dir.display());
    println!(
        "  time: {:.1} s compiling the corpus, {:.1} s generating, {:.1} s recompiling",
        compile_time.as_secs_f64(),
        generate_time.as_secs_f64(),
        (started.elapsed() - compile_time - generate_time).as_secs_f64()
    );
    println!("  .proto files:              {}", files.len());
    println!(
        "  input compile failures:    {} (not the generator's)",
        input_failures.len()
    );
    let mut kinds: BTreeMap<String, (usize, &str)> = BTreeMap::new();
    for f in &input_failures {
        let line = f.lines().next().unwrap_or_default();
        let why = line
            .split_once(": ")
            .map_or(line, |(_, why)| why)
            .to_owned();
        kinds.entry(why).or_insert((0, line)).0 += 1;
    }
    for (count, example) in kinds.values().take(10) {
        println!("    {count} x {example}");
    }
    println!("  files with services:       {with_services}");
    println!(
        "  generated files:           {} ({} router protos recompiled)",
        generated.len(),
        recompiled
    );
    println!("  services / methods:        {services} / {methods}");
    let total: usize = validation.values().map(Vec::len).sum();
    println!("  validation errors:         {total}");
    for (kind, errors) in &validation {
        println!("    {kind}: {}", errors.len());
        for e in errors.iter().take(3) {
            println!("      {e}");
        }
    }
    println!("  failures:                  {}", failures.len());
    for f in &failures {
        println!("    {f}");
    }
    assert!(failures.is_empty(), "{} corpus failures", failures.len());
    assert!(
        with_services > 0,
        "no file with services under {}",
        dir.display()
    );
}

/// What generating one corpus file gave.
enum Outcome {
    /// The generator panicked on the file (a failure).
    Panicked(String),
    /// The generator refused the file: the kind of validation error, and it.
    Refused(&'static str, String),
    /// The generated files and the file's model.
    Generated(Vec<protoc_gen_router::GeneratedFile>, Vec<ir::File>),
}

/// Generates one file of the corpus with `params`.
fn generate_one(pool: &prost_reflect::DescriptorPool, name: &String, params: &Params) -> Outcome {
    let one = std::slice::from_ref(name);
    match std::panic::catch_unwind(AssertUnwindSafe(|| generate(pool, one, params))) {
        Err(_) => Outcome::Panicked(name.clone()),
        Ok(Err(e)) => {
            let kind = match &e {
                Error::NameCollision { .. } => "generated name collision",
                Error::MethodNameCollision { .. } => "method name collision",
                Error::DuplicateTag { .. } => "duplicate tag",
                Error::InvalidTag { .. } => "invalid tag",
                Error::RouteKey { .. } => "route key",
                Error::RustCodegen { .. } => "rust codegen",
                _ => "other",
            };
            Outcome::Refused(kind, e.to_string())
        }
        Ok(Ok(out)) => {
            let model = ir::build(pool, one, true).expect("the model built once already");
            Outcome::Generated(out, model)
        }
    }
}
