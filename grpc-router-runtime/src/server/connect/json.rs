//! JSON ⇄ protobuf for Connect's `json` codec, from the descriptors the
//! router holds (compiled services' and those registrations sent), with
//! the proto3 JSON mapping (prost-reflect): well-known types, enums by
//! name, 64-bit integers as strings, bytes as base64. Unknown fields are
//! refused, naming the field. The instance always receives protobuf.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor,
    SerializeOptions, ServiceDescriptor,
};

use super::error::ConnectError;
use crate::reflection::DescriptorCatalog;

/// The method descriptors of the routed services, built from the catalog's
/// files when first needed and again when they change.
#[derive(Debug)]
pub(crate) struct Descriptors {
    catalog: DescriptorCatalog,
    /// Service name -> (catalog generation, its descriptor if the catalog
    /// declares it).
    cache: Mutex<HashMap<String, (u64, Option<ServiceDescriptor>)>>,
}

/// Services whose descriptors are cached at most; past it the cache is
/// emptied (a client naming made-up services cannot grow it).
const MAX_CACHED: usize = 1024;

impl Descriptors {
    pub(crate) fn new(catalog: DescriptorCatalog) -> Self {
        Descriptors {
            catalog,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The descriptor of the method at `path` (`/pkg.Svc/Method`): `None`
    /// when the router holds no descriptor of the service, an error
    /// (UNIMPLEMENTED) when the service has no such method.
    pub(crate) fn method(&self, path: &str) -> Result<Option<MethodDescriptor>, ConnectError> {
        let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
            return Err(ConnectError::new(
                tonic::Code::Unimplemented,
                format!("`{path}` is not a method path (/package.Service/Method)"),
            ));
        };
        let Some(descriptor) = self.service(service) else {
            return Ok(None);
        };
        descriptor
            .methods()
            .find(|m| m.name() == method)
            .map(Some)
            .ok_or_else(|| {
                ConnectError::new(
                    tonic::Code::Unimplemented,
                    format!("service `{service}` has no method `{method}`"),
                )
            })
    }

    fn service(&self, name: &str) -> Option<ServiceDescriptor> {
        let generation = self.catalog.generation();
        let lock = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((built, descriptor)) = lock().get(name)
            && *built == generation
        {
            return descriptor.clone();
        }
        // Built without the lock: other calls go on meanwhile.
        let (generation, descriptor) = match self.catalog.set_declaring(name) {
            Some((generation, set)) => (generation, build(name, &set)),
            None => (generation, None),
        };
        let mut cache = lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(name.to_owned(), (generation, descriptor.clone()));
        descriptor
    }
}

/// The service `name` from an encoded set of its file and imports, over
/// the well-known types.
fn build(name: &str, set: &[u8]) -> Option<ServiceDescriptor> {
    let mut pool = DescriptorPool::global();
    match pool.decode_file_descriptor_set(set) {
        Ok(()) => pool.get_service_by_name(name),
        Err(e) => {
            tracing::warn!(
                service = name,
                error = %e,
                "the service's descriptors do not build; Connect JSON calls to it fail"
            );
            None
        }
    }
}

/// A JSON request message as protobuf bytes.
pub(crate) fn to_proto(descriptor: &MessageDescriptor, json: &[u8]) -> Result<Bytes, ConnectError> {
    let json = if json.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        json
    };
    let mut reader = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize_with_options(
        descriptor.clone(),
        &mut reader,
        &DeserializeOptions::new(),
    )
    .and_then(|message| reader.end().map(|()| message))
    .map_err(|e| {
        ConnectError::invalid(format!(
            "the JSON message is not a valid `{}`: {e}",
            descriptor.full_name()
        ))
    })?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// A protobuf response message as JSON.
pub(crate) fn to_json(descriptor: &MessageDescriptor, proto: Bytes) -> Result<Bytes, ConnectError> {
    let internal = |what: String| ConnectError::new(tonic::Code::Internal, what);
    let message = DynamicMessage::decode(descriptor.clone(), proto).map_err(|e| {
        internal(format!(
            "the instance's response is not a valid `{}`: {e}",
            descriptor.full_name()
        ))
    })?;
    let mut out = Vec::new();
    let mut writer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut writer, &SerializeOptions::new())
        .map_err(|e| {
            internal(format!(
                "the response `{}` has no JSON form: {e}",
                descriptor.full_name()
            ))
        })?;
    Ok(Bytes::from(out))
}

/// Whether the method declares `idempotency_level = NO_SIDE_EFFECTS` (the
/// methods Connect lets clients call with GET).
pub(crate) fn has_no_side_effects(method: &MethodDescriptor) -> bool {
    method
        .method_descriptor_proto()
        .options
        .as_ref()
        .is_some_and(|options| {
            options.idempotency_level()
                == prost_types::method_options::IdempotencyLevel::NoSideEffects
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptors() -> Descriptors {
        let catalog = DescriptorCatalog::new();
        catalog
            .add_encoded_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .expect("health's set");
        Descriptors::new(catalog)
    }

    #[test]
    fn a_known_methods_json_request_becomes_protobuf_and_back() {
        let descriptors = descriptors();
        let method = descriptors
            .method("/grpc.health.v1.Health/Check")
            .expect("a method")
            .expect("described");
        let proto = to_proto(&method.input(), br#"{"service":"a.B"}"#).expect("valid");
        assert_eq!(&proto[..], b"\x0a\x03a.B");
        let reply = to_json(&method.output(), Bytes::from_static(b"\x08\x01")).expect("valid");
        assert_eq!(&reply[..], br#"{"status":"SERVING"}"#);
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let descriptors = descriptors();
        let method = descriptors
            .method("/grpc.health.v1.Health/Check")
            .expect("a method")
            .expect("described");
        let error = to_proto(&method.input(), br#"{"servic":"a"}"#).expect_err("unknown");
        assert_eq!(error.code, tonic::Code::InvalidArgument);
        assert!(error.message.contains("servic"), "{}", error.message);
    }

    #[test]
    fn deeply_nested_json_is_refused_not_a_stack_overflow() {
        let descriptors = descriptors();
        let method = descriptors
            .method("/grpc.health.v1.Health/Check")
            .expect("a method")
            .expect("described");
        let deep = format!(
            r#"{{"service":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let error = to_proto(&method.input(), deep.as_bytes()).expect_err("refused");
        assert_eq!(error.code, tonic::Code::InvalidArgument);
        // google.protobuf.Value nests: serde_json's depth limit stops it.
        let value = DescriptorPool::global()
            .get_message_by_name("google.protobuf.Value")
            .expect("a well-known type");
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let error = to_proto(&value, nested.as_bytes()).expect_err("too deep");
        assert!(error.message.contains("recursion"), "{}", error.message);
        let wrong = to_proto(&method.input(), b"[1,2]").expect_err("not an object");
        assert!(
            wrong.message.contains("grpc.health.v1.HealthCheckRequest"),
            "{}",
            wrong.message
        );
    }

    #[test]
    fn unknown_services_and_methods_are_told_apart() {
        let descriptors = descriptors();
        assert!(matches!(descriptors.method("/x.Y/Z"), Ok(None)));
        let error = descriptors
            .method("/grpc.health.v1.Health/Nope")
            .expect_err("no such method");
        assert_eq!(error.code, tonic::Code::Unimplemented);
    }
}
