//! Golden frame vectors: `tests/frames/<direction>_<kind>[_<variant>].txtpb`
//! (protobuf text format of one generated `<Service>RouterFrame` (`router_`)
//! or `<Service>BridgeFrame` (`bridge_`), named by the file's
//! `# proto-message:` line: the example's Greeter, or for method tags of two
//! to five key bytes the generator's `pinned_tags` golden output) and next to
//! each its exact encoding, `.bin`.
//!
//! The Python bridge's tests (`bridges/python/tests/test_frame_vectors.py`)
//! read the same files, so both hand codecs (`router_runtime::wire` and
//! `grpc_router_bridge.wire`) are held to the same bytes, and those bytes are
//! protobuf's own (prost-reflect here, Python protobuf there).
//!
//! For every vector: the text encodes (prost-reflect, map entries sorted by
//! key as protobuf's deterministic serialisation writes them) to the `.bin`;
//! the hand codec decodes the `.bin` to what the text says and re-encodes it
//! to the same bytes. Every case of both frames' `frame` oneof needs at least
//! one vector, so a new frame kind cannot come without one.
//!
//! `UPDATE_GOLDEN=1 cargo test -p grpc-router-runtime --test frame_vectors`
//! rewrites the `.bin` files from the `.txtpb` files.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value,
};
use router_runtime::wire::{self, BridgeFrame, DecodeFrame, EncodeFrame, Payload, RouterFrame};

/// The router frame whose oneof cases every vector set must cover.
const ROUTER_FRAME: &str = "myservice.v1.GreeterRouterFrame";
/// The bridge frame whose oneof cases every vector set must cover.
const BRIDGE_FRAME: &str = "myservice.v1.GreeterBridgeFrame";
/// The generated router protos the vectors' messages come from, relative to
/// the workspace: (include directories, file).
const PROTOS: &[(&[&str], &str)] = &[
    (
        &["examples/myservice/gen", "examples/myservice/proto"],
        "myservice/v1/myservice_router.proto",
    ),
    (
        &[
            "protoc-gen-router/tests/golden/pinned_tags/expected",
            "protoc-gen-router/tests/golden/pinned_tags/input",
        ],
        "pinned/v1/pinned_router.proto",
    ),
];
/// The line of a `.txtpb` naming its message.
const PROTO_MESSAGE: &str = "# proto-message:";
/// How to rewrite the `.bin` files.
const REGENERATE: &str =
    "regenerate with UPDATE_GOLDEN=1 cargo test -p grpc-router-runtime --test frame_vectors";

/// Which way a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Router to bridge: `<Service>RouterFrame`.
    Router,
    /// Bridge to router: `<Service>BridgeFrame`.
    Bridge,
}

impl Direction {
    /// The file name prefix, and the frame message's name suffix.
    fn prefix(self) -> &'static str {
        match self {
            Direction::Router => "router",
            Direction::Bridge => "bridge",
        }
    }

    /// The frame message checked for coverage.
    fn message(self) -> &'static str {
        match self {
            Direction::Router => ROUTER_FRAME,
            Direction::Bridge => BRIDGE_FRAME,
        }
    }
}

/// One `.txtpb`, parsed.
struct Vector {
    /// `tests/frames/<stem>.txtpb`.
    txtpb: PathBuf,
    /// `tests/frames/<stem>.bin`.
    bin: PathBuf,
    direction: Direction,
    /// The frame the text describes.
    frame: DynamicMessage,
    /// The name of the `frame` oneof case the text sets.
    case: String,
}

fn frames_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/frames")
}

/// The generated router protos ([`PROTOS`]) and their imports, compiled with
/// protox.
fn pool() -> DescriptorPool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("grpc-router-runtime lives in the workspace");
    let mut includes: Vec<PathBuf> = PROTOS
        .iter()
        .flat_map(|(dirs, _)| dirs.iter().map(|dir| root.join(dir)))
        .collect();
    includes.push(root.join("protoc-gen-router/proto"));
    let mut compiler = protox::Compiler::new(&includes)
        .unwrap_or_else(|e| panic!("protox include paths {includes:?}: {e}"));
    compiler.include_imports(true);
    for (_, file) in PROTOS {
        compiler
            .open_file(file)
            .unwrap_or_else(|e| panic!("compiling {file}: {e}"));
    }
    compiler.descriptor_pool()
}

fn message(pool: &DescriptorPool, name: &str) -> MessageDescriptor {
    pool.get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is not in the compiled protos"))
}

/// The `frame` oneof's cases of a frame message, as (name, number).
fn frame_cases(desc: &MessageDescriptor) -> Vec<(String, u32)> {
    let oneof = desc
        .oneofs()
        .find(|o| o.name() == "frame")
        .unwrap_or_else(|| panic!("{} has no `frame` oneof", desc.full_name()));
    oneof
        .fields()
        .map(|f| (f.name().to_owned(), f.number()))
        .collect()
}

/// Reads every `.txtpb` of `tests/frames`; fails on files that are not a
/// vector (a `.bin` without its `.txtpb`, a text without its `#` comment, a
/// name that does not say the frame it holds).
fn vectors(pool: &DescriptorPool) -> Result<Vec<Vector>, Vec<String>> {
    let dir = frames_dir();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    entries.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for path in entries {
        let shown = path.display();
        match path.extension().and_then(|e| e.to_str()) {
            Some("txtpb") => {}
            Some("bin") => {
                if !path.with_extension("txtpb").exists() {
                    errors.push(format!(
                        "{shown} has no .txtpb next to it: delete it or write its text"
                    ));
                }
                continue;
            }
            _ => {
                errors.push(format!(
                    "{shown} is neither a .txtpb vector nor its .bin encoding"
                ));
                continue;
            }
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let direction = if stem.starts_with("router_") {
            Direction::Router
        } else if stem.starts_with("bridge_") {
            Direction::Bridge
        } else {
            errors.push(format!(
                "{shown}: the name must start with router_ or bridge_"
            ));
            continue;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                errors.push(format!("reading {shown}: {e}"));
                continue;
            }
        };
        if !text.starts_with('#') {
            errors.push(format!(
                "{shown} must start with a `#` comment saying what the vector shows"
            ));
        }
        let Some(name) = text
            .lines()
            .find_map(|line| line.strip_prefix(PROTO_MESSAGE))
            .map(str::trim)
        else {
            errors.push(format!(
                "{shown} has no `{PROTO_MESSAGE} <package>.<Service>{}Frame` line",
                if direction == Direction::Router {
                    "Router"
                } else {
                    "Bridge"
                }
            ));
            continue;
        };
        let Some(desc) = pool.get_message_by_name(name) else {
            errors.push(format!(
                "{shown}: {name} is not a message of the protos the test compiles ({PROTOS:?})"
            ));
            continue;
        };
        let suffix = if direction == Direction::Router {
            "RouterFrame"
        } else {
            "BridgeFrame"
        };
        if !name.ends_with(suffix) {
            errors.push(format!(
                "{shown}: a {} vector must be a <Service>{suffix}, not {name}",
                direction.prefix()
            ));
            continue;
        }
        let frame = match DynamicMessage::parse_text_format(desc.clone(), &text) {
            Ok(frame) => frame,
            Err(e) => {
                errors.push(format!("{shown} is not a {name}: {e}"));
                continue;
            }
        };
        let set: Vec<String> = frame_cases(&desc)
            .into_iter()
            .filter(|(_, number)| frame.has_field_by_number(*number))
            .map(|(name, _)| name)
            .collect();
        let [case] = set.as_slice() else {
            errors.push(format!(
                "{shown} must set exactly one case of the `frame` oneof, not {set:?}"
            ));
            continue;
        };
        let kind = format!("{}_{case}", direction.prefix());
        if stem != kind && !stem.starts_with(&format!("{kind}_")) {
            errors.push(format!(
                "{shown} holds a `{case}` frame: name it {kind}.txtpb or {kind}_<variant>.txtpb"
            ));
        }
        out.push(Vector {
            bin: path.with_extension("bin"),
            txtpb: path,
            direction,
            frame,
            case: case.clone(),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `bytes` (an encoded `desc`) with the entries of every map sorted by key,
/// as protobuf's deterministic serialisation (and Python's bridge) writes
/// them; everything else is copied as it is. prost's and prost-reflect's maps
/// are hash maps, so their order of several entries changes from run to run;
/// protobuf leaves a map's order to the writer.
fn sort_map_entries(mut buf: &[u8], desc: &MessageDescriptor) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(buf.len());
    // The entries of the map being read: its field number and each entry's
    // key and encoded field.
    type Run = Option<(u32, Vec<(Vec<u8>, Vec<u8>)>)>;
    let mut run: Run = None;
    let flush = |run: &mut Run, out: &mut Vec<u8>| {
        if let Some((_, mut entries)) = run.take() {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, encoded) in entries {
                out.extend(encoded);
            }
        }
    };
    let what = desc.full_name();
    while !buf.is_empty() {
        let start = buf;
        let (number, wire_type) =
            decode_key(&mut buf).map_err(|e| format!("{what}: bad key: {e}"))?;
        let field = desc.get_field(number);
        match (wire_type, field.as_ref().map(|f| f.kind())) {
            (WireType::LengthDelimited, Some(Kind::Message(inner))) => {
                let len = decode_varint(&mut buf).map_err(|e| format!("{what}.{number}: {e}"))?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= buf.len())
                    .ok_or_else(|| format!("{what}.{number} runs past the end"))?;
                let (body, rest) = buf.split_at(len);
                buf = rest;
                let body = sort_map_entries(body, &inner)?;
                let mut encoded = Vec::with_capacity(body.len() + 6);
                encode_key(number, WireType::LengthDelimited, &mut encoded);
                encode_varint(body.len() as u64, &mut encoded);
                if field.as_ref().is_some_and(|f| f.is_map()) {
                    let key = map_key(&body)?;
                    encoded.extend(body);
                    if run.as_ref().is_some_and(|(n, _)| *n != number) {
                        flush(&mut run, &mut out);
                    }
                    run.get_or_insert_with(|| (number, Vec::new()))
                        .1
                        .push((key, encoded));
                    continue;
                }
                flush(&mut run, &mut out);
                encoded.extend(body);
                out.extend(encoded);
            }
            _ => {
                flush(&mut run, &mut out);
                match wire_type {
                    WireType::Varint => {
                        decode_varint(&mut buf).map_err(|e| format!("{what}.{number}: {e}"))?;
                    }
                    WireType::LengthDelimited => {
                        let len =
                            decode_varint(&mut buf).map_err(|e| format!("{what}.{number}: {e}"))?;
                        let len = usize::try_from(len)
                            .ok()
                            .filter(|len| *len <= buf.len())
                            .ok_or_else(|| format!("{what}.{number} runs past the end"))?;
                        buf = &buf[len..];
                    }
                    WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                        let width = if wire_type == WireType::SixtyFourBit {
                            8
                        } else {
                            4
                        };
                        if buf.len() < width {
                            return Err(format!("{what}.{number} runs past the end"));
                        }
                        buf = &buf[width..];
                    }
                    WireType::StartGroup | WireType::EndGroup => {
                        return Err(format!("{what}.{number}: groups are not used in frames"));
                    }
                }
                out.extend_from_slice(&start[..start.len() - buf.len()]);
            }
        }
    }
    flush(&mut run, &mut out);
    Ok(out)
}

/// The sort key of a map entry: its key field (1) as written. Frames' maps
/// have string keys, whose bytes sort as protobuf sorts them.
fn map_key(mut entry: &[u8]) -> Result<Vec<u8>, String> {
    let mut key = Vec::new();
    while !entry.is_empty() {
        let (number, wire_type) = decode_key(&mut entry).map_err(|e| e.to_string())?;
        let value = match wire_type {
            WireType::Varint => decode_varint(&mut entry)
                .map_err(|e| e.to_string())?
                .to_be_bytes()
                .to_vec(),
            WireType::LengthDelimited => {
                let len = decode_varint(&mut entry).map_err(|e| e.to_string())?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= entry.len())
                    .ok_or("a map entry runs past the end")?;
                let (value, rest) = entry.split_at(len);
                entry = rest;
                value.to_vec()
            }
            // Not a map entry (nor a frame's message); its order is kept.
            _ => return Ok(Vec::new()),
        };
        if number == 1 {
            key = value;
        }
    }
    Ok(key)
}

/// The arm `number` of the frame `frame_desc`, decoded from `encoded` with
/// prost-reflect.
fn arm(
    frame_desc: &MessageDescriptor,
    number: u32,
    encoded: &[u8],
) -> Result<(u32, DynamicMessage), String> {
    let field = frame_desc
        .get_field(number)
        .ok_or_else(|| format!("{} has no field {number}", frame_desc.full_name()))?;
    let Kind::Message(desc) = field.kind() else {
        return Err(format!(
            "{}.{} is not a message",
            frame_desc.full_name(),
            field.name()
        ));
    };
    let value = DynamicMessage::decode(desc, encoded)
        .map_err(|e| format!("{}.{}: {e}", frame_desc.full_name(), field.name()))?;
    Ok((number, value))
}

/// A payload arm (`GreeterCall` / `GreeterReply`) holding `p`: its method
/// field `p.tag` decoded as the method's message type.
fn payload_arm(
    frame_desc: &MessageDescriptor,
    number: u32,
    p: &Payload,
) -> Result<(u32, DynamicMessage), String> {
    let (_, mut value) = arm(frame_desc, number, &[])?;
    let desc = value.descriptor();
    value.set_field_by_number(wire::field::CALL_ID, Value::U64(p.call_id));
    let method = desc
        .get_field(p.tag)
        .ok_or_else(|| format!("{} has no method arm {}", desc.full_name(), p.tag))?;
    let Kind::Message(message) = method.kind() else {
        return Err(format!(
            "{}.{} is not a message",
            desc.full_name(),
            method.name()
        ));
    };
    let decoded = DynamicMessage::decode(message, p.message.as_ref())
        .map_err(|e| format!("{}.{}: {e}", desc.full_name(), method.name()))?;
    value.set_field(&method, Value::Message(decoded));
    Ok((number, value))
}

/// The frame `wire.rs` decoded, as (oneof number, arm), through prost and
/// prost-reflect rather than the hand codec.
fn router_frame_arm(
    frame: &RouterFrame,
    desc: &MessageDescriptor,
) -> Result<(u32, DynamicMessage), String> {
    use wire::field::router as f;
    match frame {
        RouterFrame::Welcome(m) => arm(desc, f::WELCOME, &m.encode_to_vec()),
        RouterFrame::Start(m) => arm(desc, f::START, &m.encode_to_vec()),
        RouterFrame::Call(p) => payload_arm(desc, f::CALL, p),
        RouterFrame::HalfClose(m) => arm(desc, f::HALF_CLOSE, &m.encode_to_vec()),
        RouterFrame::Cancel(m) => arm(desc, f::CANCEL, &m.encode_to_vec()),
        RouterFrame::WindowUpdate(m) => arm(desc, f::WINDOW_UPDATE, &m.encode_to_vec()),
        RouterFrame::Ping(m) => arm(desc, f::PING, &m.encode_to_vec()),
        RouterFrame::GoAway(m) => arm(desc, f::GO_AWAY, &m.encode_to_vec()),
        RouterFrame::Chunk(m) => arm(desc, f::CHUNK, &m.encode_to_vec()),
        RouterFrame::Peers(m) => arm(desc, f::PEERS, &m.encode_to_vec()),
    }
}

/// As [`router_frame_arm`], for bridge frames.
fn bridge_frame_arm(
    frame: &BridgeFrame,
    desc: &MessageDescriptor,
) -> Result<(u32, DynamicMessage), String> {
    use wire::field::bridge as f;
    match frame {
        BridgeFrame::Hello(m) => arm(desc, f::HELLO, &m.encode_to_vec()),
        BridgeFrame::Headers(m) => arm(desc, f::HEADERS, &m.encode_to_vec()),
        BridgeFrame::Reply(p) => payload_arm(desc, f::REPLY, p),
        BridgeFrame::Trailers(m) => arm(desc, f::TRAILERS, &m.encode_to_vec()),
        BridgeFrame::WindowUpdate(m) => arm(desc, f::WINDOW_UPDATE, &m.encode_to_vec()),
        BridgeFrame::Heartbeat(m) => arm(desc, f::HEARTBEAT, &m.encode_to_vec()),
        BridgeFrame::Drain(m) => arm(desc, f::DRAIN, &m.encode_to_vec()),
        BridgeFrame::Chunk(m) => arm(desc, f::CHUNK, &m.encode_to_vec()),
        BridgeFrame::Pong(m) => arm(desc, f::PONG, &m.encode_to_vec()),
    }
}

/// Decodes `bytes` with `wire.rs`, re-encodes the frame with it, and returns
/// the re-encoding and the decoded frame's arm.
fn hand_codec(
    direction: Direction,
    bytes: &[u8],
    desc: &MessageDescriptor,
) -> Result<(Vec<u8>, (u32, DynamicMessage)), String> {
    fn encode(frame: &impl EncodeFrame) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        if out.len() != frame.encoded_len() {
            return Err(format!(
                "encoded_len() says {} bytes, encode() wrote {}",
                frame.encoded_len(),
                out.len()
            ));
        }
        Ok(out)
    }
    let bytes = Bytes::copy_from_slice(bytes);
    match direction {
        Direction::Router => {
            let frame = RouterFrame::decode(bytes).map_err(|e| format!("decode: {e}"))?;
            Ok((encode(&frame)?, router_frame_arm(&frame, desc)?))
        }
        Direction::Bridge => {
            let frame = BridgeFrame::decode(bytes).map_err(|e| format!("decode: {e}"))?;
            Ok((encode(&frame)?, bridge_frame_arm(&frame, desc)?))
        }
    }
}

/// Checks one vector; with `update`, first writes its `.bin` from its text.
fn check(vector: &Vector, update: bool) -> Result<(), String> {
    let (txtpb, bin) = (vector.txtpb.display(), vector.bin.display());
    let desc = vector.frame.descriptor();
    let expected = sort_map_entries(&vector.frame.encode_to_vec(), &desc)?;
    let golden = std::fs::read(&vector.bin).ok();
    if update && golden.as_deref() != Some(expected.as_slice()) {
        std::fs::write(&vector.bin, &expected).map_err(|e| format!("writing {bin}: {e}"))?;
    } else if golden.is_none() {
        return Err(format!("golden frame {bin} is missing; {REGENERATE}"));
    } else if golden.as_deref() != Some(expected.as_slice()) {
        return Err(format!(
            "golden frame {bin} differs from protobuf's encoding of {txtpb}; {REGENERATE}\n  \
             protobuf: {}\n  {bin}: {}",
            hex(&expected),
            hex(golden.as_deref().unwrap_or_default()),
        ));
    }
    let (reencoded, (number, value)) = hand_codec(vector.direction, &expected, &desc)
        .map_err(|e| format!("wire.rs on golden frame {bin}: {e}"))?;
    let reencoded = sort_map_entries(&reencoded, &desc)?;
    if reencoded != expected {
        return Err(format!(
            "wire.rs decodes and re-encodes golden frame {bin} differently (a codec bug, \
             not a stale vector)\n  golden:  {}\n  wire.rs: {}",
            hex(&expected),
            hex(&reencoded),
        ));
    }
    let field = desc
        .get_field(number)
        .ok_or_else(|| format!("{} has no field {number}", desc.full_name()))?;
    if field.name() != vector.case {
        return Err(format!(
            "wire.rs decodes golden frame {bin} as `{}` (field {number}), {txtpb} holds `{}`",
            field.name(),
            vector.case
        ));
    }
    let wanted = vector.frame.get_field(&field);
    if wanted.as_message() != Some(&value) {
        return Err(format!(
            "wire.rs decodes golden frame {bin} to\n  {value}\nbut {txtpb} says\n  {wanted}"
        ));
    }
    Ok(())
}

fn load(pool: &DescriptorPool) -> Vec<Vector> {
    vectors(pool).unwrap_or_else(|errors| {
        panic!("tests/frames holds bad vectors:\n  {}", errors.join("\n  "))
    })
}

#[test]
fn golden_frames_are_protobufs_encoding_and_the_hand_codec_round_trips_them() {
    let pool = pool();
    let vectors = load(&pool);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0");
    let failures: Vec<String> = vectors
        .iter()
        .filter_map(|vector| check(vector, update).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} golden frames fail:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn every_frame_kind_in_both_directions_has_a_golden_vector() {
    let pool = pool();
    let vectors = load(&pool);
    let mut missing = Vec::new();
    for direction in [Direction::Router, Direction::Bridge] {
        let covered: BTreeSet<&str> = vectors
            .iter()
            .filter(|v| v.direction == direction)
            .map(|v| v.case.as_str())
            .collect();
        for (case, number) in frame_cases(&message(&pool, direction.message())) {
            if !covered.contains(case.as_str()) {
                missing.push(format!(
                    "{} `{case}` (field {number}): add tests/frames/{}_{case}.txtpb and {REGENERATE}",
                    direction.message(),
                    direction.prefix()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "frame kinds without a golden vector:\n  {}",
        missing.join("\n  ")
    );
}
