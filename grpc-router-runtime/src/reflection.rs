//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) over the
//! descriptors a router learns at run time.
//!
//! A router knows its services only from registrations, each carrying the
//! encoded `FileDescriptorSet` of its service's files and all their imports.
//! [`DescriptorCatalog`] collects those files and serves them to reflection
//! clients (grpcurl, `buf curl`, Postman ...), so they can list, describe and
//! call the routed services without proto files. `tonic_reflection`'s own
//! server is built once from static sets; this one follows the catalog as it
//! changes, even on a reflection stream that is already open.
//!
//! Behaviour follows grpc-go's reflection server (`reflection/internal`):
//!
//! - symbols are what grpc-go's `protoregistry.Files.FindDescriptorByName`
//!   finds: messages (nested too), enums, enum values (scoped as siblings of
//!   their enum, C++ style: `pkg.VALUE`, `pkg.Msg.VALUE`), fields, oneofs,
//!   extensions, services and methods (`pkg.Svc.Method`); packages are not;
//! - a file answer holds the file and its transitive imports; on one stream an
//!   import already sent is not sent again, the requested file always is;
//!   imports the catalog does not know are skipped;
//! - an unknown file, symbol or extension is an `ErrorResponse` with
//!   `NOT_FOUND` in the stream, which goes on; a request with no
//!   `message_request` ends the stream with `INVALID_ARGUMENT`.
//!
//! Files are kept as the bytes they were registered with (when added encoded),
//! so custom options such as `router.v1` options or `google.api.http`, which
//! prost's `FileDescriptorProto` drops on decoding, reach the client.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures_util::{Stream, StreamExt};
use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet,
};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_reflection::pb::{v1, v1alpha};
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

/// Why a descriptor set was not added to a [`DescriptorCatalog`]. Nothing of
/// the set is added then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The bytes are not an encoded `FileDescriptorSet`.
    #[error("descriptor set does not decode as a google.protobuf.FileDescriptorSet: {0}")]
    Set(prost::DecodeError),
    /// One file of the set is not an encoded `FileDescriptorProto`.
    #[error(
        "file #{index} of the descriptor set does not decode as a FileDescriptorProto: {source}"
    )]
    File {
        /// The file's position in the set, from 0.
        index: usize,
        /// What the decoder found.
        source: prost::DecodeError,
    },
    /// One file of the set has no name, so it cannot be looked up or imported.
    #[error("file #{index} of the descriptor set has no name")]
    Unnamed {
        /// The file's position in the set, from 0.
        index: usize,
    },
}

/// Descriptor files a router knows, served by gRPC server reflection (v1 and
/// v1alpha). Cheap to clone; clones share state.
#[derive(Clone, Default, Debug)]
pub struct DescriptorCatalog {
    inner: Arc<RwLock<Catalog>>,
}

impl DescriptorCatalog {
    /// An empty catalog: no files, no listed services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes and adds every file of an encoded `FileDescriptorSet`. A file
    /// already known under the same name is replaced by the new version (the
    /// newest registration wins). Each file is served as the bytes it has in
    /// the set, custom options included.
    pub fn add_encoded_set(&self, bytes: &[u8]) -> Result<(), CatalogError> {
        let set = EncodedSet::decode(bytes).map_err(CatalogError::Set)?;
        let mut files = Vec::with_capacity(set.file.len());
        for (index, raw) in set.file.into_iter().enumerate() {
            // Instances of one service register the same files again and
            // again: recognise those by name and bytes, without decoding them.
            let name = FileName::decode(raw.as_slice())
                .map_err(|source| CatalogError::File { index, source })?
                .name;
            if self.read().is_known(name.as_deref(), &raw) {
                continue;
            }
            let proto = FileDescriptorProto::decode(raw.as_slice())
                .map_err(|source| CatalogError::File { index, source })?;
            files.push(FileEntry::new(index, &proto, Arc::from(raw))?);
        }
        if !files.is_empty() {
            self.write().add(files);
        }
        Ok(())
    }

    /// Adds every file of a decoded `FileDescriptorSet`, as
    /// [`add_encoded_set`](Self::add_encoded_set) does. The files are served
    /// re-encoded: custom options prost dropped on decoding are not in them.
    pub fn add_set(&self, set: FileDescriptorSet) -> Result<(), CatalogError> {
        let files = set
            .file
            .iter()
            .enumerate()
            .map(|(index, proto)| FileEntry::new(index, proto, Arc::from(proto.encode_to_vec())))
            .collect::<Result<Vec<_>, _>>()?;
        self.write().add(files);
        Ok(())
    }

    /// Adds the descriptors of the reflection services themselves and lists
    /// both, as grpc-go's server does (its reflection service is one of the
    /// server's services).
    pub fn include_reflection_services(&self) -> Result<(), CatalogError> {
        self.add_encoded_set(v1::FILE_DESCRIPTOR_SET)?;
        self.add_encoded_set(v1alpha::FILE_DESCRIPTOR_SET)?;
        self.list_service(v1::server_reflection_server::SERVICE_NAME);
        self.list_service(v1alpha::server_reflection_server::SERVICE_NAME);
        Ok(())
    }

    /// Lists `name` (a fully qualified service name) in ListServices. Only
    /// listed names are listed; symbol and file lookups cover every file.
    pub fn list_service(&self, name: &str) {
        let mut catalog = self.write();
        if !catalog.listed.contains(name) {
            catalog.listed.insert(name.to_owned());
        }
    }

    /// Stops listing `name` in ListServices. Its descriptors stay known.
    pub fn unlist_service(&self, name: &str) {
        self.write().listed.remove(name);
    }

    /// The listed service names, sorted.
    pub fn services(&self) -> Vec<String> {
        self.read().listed.iter().cloned().collect()
    }

    /// The names of the files known, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().files.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The tonic service for `grpc.reflection.v1.ServerReflection`.
    pub fn v1_service(&self) -> v1::server_reflection_server::ServerReflectionServer<ReflectionV1> {
        v1::server_reflection_server::ServerReflectionServer::new(ReflectionV1 {
            catalog: self.clone(),
        })
    }

    /// The tonic service for `grpc.reflection.v1alpha.ServerReflection`.
    pub fn v1alpha_service(
        &self,
    ) -> v1alpha::server_reflection_server::ServerReflectionServer<ReflectionV1Alpha> {
        v1alpha::server_reflection_server::ServerReflectionServer::new(ReflectionV1Alpha {
            catalog: self.clone(),
        })
    }

    /// A number that changes whenever the catalog's files change.
    pub(crate) fn generation(&self) -> u64 {
        self.read().generation
    }

    /// The encoded `FileDescriptorSet` of the file declaring `symbol` (a
    /// service's full name, say) and its transitive imports the catalog
    /// knows, with the catalog's generation; `None` when no file declares
    /// it.
    pub(crate) fn set_declaring(&self, symbol: &str) -> Option<(u64, Vec<u8>)> {
        let catalog = self.read();
        let file = catalog.file_of_symbol(symbol)?;
        let set = EncodedSet {
            file: catalog.with_imports(file, &mut HashSet::new()),
        };
        Some((catalog.generation, set.encode_to_vec()))
    }

    fn read(&self) -> RwLockReadGuard<'_, Catalog> {
        // Every update leaves the catalog consistent before it can panic
        // (allocation aside), so a poisoned lock still holds usable state.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The files, their index and the listed services.
#[derive(Default)]
struct Catalog {
    files: HashMap<String, FileEntry>,
    /// Symbol -> the files declaring it, oldest first; the last one answers.
    /// Almost always one file; more only when files conflict.
    symbols: HashMap<String, Vec<Arc<str>>>,
    /// Extended message -> extension number -> declaring files, as `symbols`.
    extensions: HashMap<String, BTreeMap<i32, Vec<Arc<str>>>>,
    listed: BTreeSet<String>,
    /// Bumped by every change of the files, so that what was built from
    /// them (the Connect layer's descriptor pools) is built again.
    generation: u64,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("files", &self.files.len())
            .field("symbols", &self.symbols.len())
            .field("listed", &self.listed)
            .finish()
    }
}

impl Catalog {
    fn add(&mut self, files: Vec<FileEntry>) {
        self.generation += 1;
        for file in files {
            // The same file again (another instance of a service): keep it.
            if self.is_known(Some(&file.name), &file.raw) {
                continue;
            }
            self.remove(&file.name);
            for symbol in &file.symbols {
                self.symbols
                    .entry(symbol.clone())
                    .or_default()
                    .push(file.name.clone());
            }
            for (extendee, number) in &file.extensions {
                self.extensions
                    .entry(extendee.clone())
                    .or_default()
                    .entry(*number)
                    .or_default()
                    .push(file.name.clone());
            }
            self.files.insert(file.name.to_string(), file);
        }
    }

    /// Removes a file and its entries from the index.
    fn remove(&mut self, name: &str) {
        let Some(file) = self.files.remove(name) else {
            return;
        };
        for symbol in &file.symbols {
            if let Some(owners) = self.symbols.get_mut(symbol) {
                owners.retain(|owner| **owner != *name);
                if owners.is_empty() {
                    self.symbols.remove(symbol);
                }
            }
        }
        for (extendee, number) in &file.extensions {
            let Some(numbers) = self.extensions.get_mut(extendee) else {
                continue;
            };
            if let Some(owners) = numbers.get_mut(number) {
                owners.retain(|owner| **owner != *name);
                if owners.is_empty() {
                    numbers.remove(number);
                }
            }
            if numbers.is_empty() {
                self.extensions.remove(extendee);
            }
        }
    }

    /// Whether the file `name` is known with exactly these bytes.
    fn is_known(&self, name: Option<&str>, raw: &[u8]) -> bool {
        name.and_then(|name| self.files.get(name))
            .is_some_and(|known| *known.raw == *raw)
    }

    /// The file declaring `symbol`.
    fn file_of_symbol(&self, symbol: &str) -> Option<&FileEntry> {
        let owner = self.symbols.get(symbol)?.last()?;
        self.files.get(&**owner)
    }

    /// The file declaring extension `number` of message `extendee`.
    fn file_of_extension(&self, extendee: &str, number: i32) -> Option<&FileEntry> {
        let owner = self.extensions.get(extendee)?.get(&number)?.last()?;
        self.files.get(&**owner)
    }

    /// `root` and its transitive imports not in `sent`, breadth first, as
    /// grpc-go's `FileDescWithDependencies`: `root` is always in the answer,
    /// imports the catalog does not know are skipped, and everything answered
    /// is added to `sent`.
    fn with_imports(&self, root: &FileEntry, sent: &mut HashSet<String>) -> Vec<Vec<u8>> {
        let mut answer = vec![root.raw.to_vec()];
        sent.insert(root.name.to_string());
        let mut visited: HashSet<&str> = HashSet::from([&*root.name]);
        let mut queue: VecDeque<&FileEntry> = VecDeque::from([root]);
        while let Some(file) = queue.pop_front() {
            for import in &file.imports {
                if !visited.insert(import.as_str()) {
                    continue;
                }
                let Some(imported) = self.files.get(import) else {
                    continue;
                };
                if sent.insert(import.clone()) {
                    answer.push(imported.raw.to_vec());
                }
                queue.push_back(imported);
            }
        }
        answer
    }
}

/// One known file: its bytes and what the index holds for it.
struct FileEntry {
    name: Arc<str>,
    raw: Arc<[u8]>,
    imports: Vec<String>,
    /// The fully qualified names it declares.
    symbols: Vec<String>,
    /// The (extended message, number) of each extension it declares.
    extensions: Vec<(String, i32)>,
}

impl FileEntry {
    fn new(
        index: usize,
        proto: &FileDescriptorProto,
        raw: Arc<[u8]>,
    ) -> Result<Self, CatalogError> {
        let name = match proto.name.as_deref() {
            Some(name) if !name.is_empty() => name,
            _ => return Err(CatalogError::Unnamed { index }),
        };
        let mut declared = Declarations::default();
        declared.file(proto);
        Ok(Self {
            name: Arc::from(name),
            raw,
            imports: proto.dependency.clone(),
            symbols: declared.symbols,
            extensions: declared.extensions,
        })
    }
}

/// Collects the names a file declares, with the scoping of protobuf full
/// names (and of grpc-go's registry, for what it finds).
#[derive(Default)]
struct Declarations {
    symbols: Vec<String>,
    extensions: Vec<(String, i32)>,
}

impl Declarations {
    fn file(&mut self, file: &FileDescriptorProto) {
        let package = file.package.as_deref().unwrap_or_default();
        for message in &file.message_type {
            self.message(package, message);
        }
        for enumeration in &file.enum_type {
            self.enumeration(package, enumeration);
        }
        for extension in &file.extension {
            self.extension(package, extension);
        }
        for service in &file.service {
            let Some(service_name) = self.declare(package, service.name.as_deref()) else {
                continue;
            };
            for method in &service.method {
                self.declare(&service_name, method.name.as_deref());
            }
        }
    }

    fn message(&mut self, scope: &str, message: &DescriptorProto) {
        let Some(name) = self.declare(scope, message.name.as_deref()) else {
            return;
        };
        for field in &message.field {
            self.declare(&name, field.name.as_deref());
        }
        for oneof in &message.oneof_decl {
            self.declare(&name, oneof.name.as_deref());
        }
        for extension in &message.extension {
            self.extension(&name, extension);
        }
        for enumeration in &message.enum_type {
            self.enumeration(&name, enumeration);
        }
        for nested in &message.nested_type {
            self.message(&name, nested);
        }
    }

    /// An enum and its values; values are siblings of the enum.
    fn enumeration(&mut self, scope: &str, enumeration: &EnumDescriptorProto) {
        if self.declare(scope, enumeration.name.as_deref()).is_none() {
            return;
        }
        for value in &enumeration.value {
            self.declare(scope, value.name.as_deref());
        }
    }

    fn extension(&mut self, scope: &str, extension: &FieldDescriptorProto) {
        self.declare(scope, extension.name.as_deref());
        if let (Some(extendee), Some(number)) = (extension.extendee.as_deref(), extension.number) {
            let extendee = extendee.strip_prefix('.').unwrap_or(extendee);
            self.extensions.push((extendee.to_owned(), number));
        }
    }

    /// Records `scope.name` and returns it; nothing for an unnamed element,
    /// which cannot be looked up.
    fn declare(&mut self, scope: &str, name: Option<&str>) -> Option<String> {
        let name = name.filter(|name| !name.is_empty())?;
        let full = if scope.is_empty() {
            name.to_owned()
        } else {
            format!("{scope}.{name}")
        };
        self.symbols.push(full.clone());
        Some(full)
    }
}

/// A `FileDescriptorSet` whose files are left encoded, so what prost's
/// `FileDescriptorProto` would drop (custom options) is kept.
#[derive(Clone, PartialEq, Message)]
struct EncodedSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// Only the name of an encoded `FileDescriptorProto`: decoding it skips
/// the rest without parsing it.
#[derive(Clone, PartialEq, Message)]
struct FileName {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
}

/// One reflection stream: the catalog and the files it has sent.
struct Session {
    catalog: DescriptorCatalog,
    /// Names of the files sent on this stream (grpc-go's
    /// `sentFileDescriptors`); at most every file of the catalog.
    sent: HashSet<String>,
}

impl Session {
    /// The answer to one request, as grpc-go's `ServerReflectionInfo` gives it.
    fn answer(
        &mut self,
        request: v1::ServerReflectionRequest,
    ) -> Result<v1::ServerReflectionResponse, Status> {
        let Some(message) = request.message_request.as_ref() else {
            return Err(Status::invalid_argument(
                "ServerReflectionRequest has no message_request",
            ));
        };
        let catalog = self.catalog.read();
        let sent = &mut self.sent;
        let files =
            |file: Option<&FileEntry>, sent: &mut HashSet<String>, missing: String| match file {
                Some(file) => MessageResponse::FileDescriptorResponse(v1::FileDescriptorResponse {
                    file_descriptor_proto: catalog.with_imports(file, sent),
                }),
                None => not_found(missing),
            };
        let response = match message {
            MessageRequest::FileByFilename(name) => files(
                catalog.files.get(name),
                sent,
                format!("file `{name}` not found"),
            ),
            MessageRequest::FileContainingSymbol(symbol) => files(
                catalog.file_of_symbol(symbol),
                sent,
                format!("symbol `{symbol}` not found"),
            ),
            MessageRequest::FileContainingExtension(request) => files(
                catalog.file_of_extension(&request.containing_type, request.extension_number),
                sent,
                format!(
                    "extension {} of `{}` not found",
                    request.extension_number, request.containing_type
                ),
            ),
            MessageRequest::AllExtensionNumbersOfType(extendee) => {
                let numbers: Vec<i32> = catalog
                    .extensions
                    .get(extendee)
                    .map(|numbers| numbers.keys().copied().collect())
                    .unwrap_or_default();
                if numbers.is_empty() && !catalog.symbols.contains_key(extendee) {
                    not_found(format!("type `{extendee}` not found"))
                } else {
                    MessageResponse::AllExtensionNumbersResponse(v1::ExtensionNumberResponse {
                        base_type_name: extendee.clone(),
                        extension_number: numbers,
                    })
                }
            }
            MessageRequest::ListServices(_) => {
                MessageResponse::ListServicesResponse(v1::ListServiceResponse {
                    service: catalog
                        .listed
                        .iter()
                        .map(|name| v1::ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
        };
        drop(catalog);
        Ok(v1::ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(response),
        })
    }
}

fn not_found(message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(v1::ErrorResponse {
        error_code: Code::NotFound as i32,
        error_message: message,
    })
}

/// The responses of one reflection stream.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Answers the requests of one stream one at a time: the next request is read
/// only when the client has taken the previous answer, so nothing queues up.
/// Both versions share it; `to_v1` and `from_v1` translate their messages.
fn respond<Req, Resp>(
    catalog: DescriptorCatalog,
    requests: Streaming<Req>,
    to_v1: fn(Req) -> Result<v1::ServerReflectionRequest, Status>,
    from_v1: fn(v1::ServerReflectionResponse) -> Result<Resp, Status>,
) -> ResponseStream<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let session = Session {
        catalog,
        sent: HashSet::new(),
    };
    let stream = futures_util::stream::unfold(Some((session, requests)), move |state| async move {
        let (mut session, mut requests) = state?;
        let answer = match requests.next().await? {
            Ok(request) => to_v1(request)
                .and_then(|request| session.answer(request))
                .and_then(from_v1),
            Err(status) => Err(status),
        };
        // A failure ends the stream with its status, as in grpc-go.
        let next = answer.is_ok().then_some((session, requests));
        Some((answer, next))
    });
    Box::pin(stream)
}

/// Re-encodes a message as another with the same wire form (v1 and v1alpha
/// reflection messages are the same but for their package).
fn transcode<From: Message, To: Message + Default>(message: From) -> Result<To, Status> {
    To::decode(message.encode_to_vec().as_slice()).map_err(|error| {
        Status::internal(format!("reflection message does not re-encode: {error}"))
    })
}

/// `grpc.reflection.v1.ServerReflection` over a [`DescriptorCatalog`]; see
/// [`DescriptorCatalog::v1_service`].
#[derive(Clone, Debug)]
pub struct ReflectionV1 {
    catalog: DescriptorCatalog,
}

#[tonic::async_trait]
impl v1::server_reflection_server::ServerReflection for ReflectionV1 {
    type ServerReflectionInfoStream = ResponseStream<v1::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(respond(
            self.catalog.clone(),
            request.into_inner(),
            Ok,
            Ok,
        )))
    }
}

/// `grpc.reflection.v1alpha.ServerReflection` over a [`DescriptorCatalog`];
/// see [`DescriptorCatalog::v1alpha_service`].
#[derive(Clone, Debug)]
pub struct ReflectionV1Alpha {
    catalog: DescriptorCatalog,
}

#[tonic::async_trait]
impl v1alpha::server_reflection_server::ServerReflection for ReflectionV1Alpha {
    type ServerReflectionInfoStream = ResponseStream<v1alpha::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(respond(
            self.catalog.clone(),
            request.into_inner(),
            transcode::<_, v1::ServerReflectionRequest>,
            transcode::<_, v1alpha::ServerReflectionResponse>,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: Vec<FileDescriptorProto>) -> FileDescriptorSet {
        FileDescriptorSet { file: files }
    }

    fn file(name: &str, imports: &[&str], message: &str) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.to_owned()),
            package: Some("t".to_owned()),
            dependency: imports.iter().map(|import| (*import).to_owned()).collect(),
            message_type: vec![DescriptorProto {
                name: Some(message.to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn symbol_file(catalog: &DescriptorCatalog, symbol: &str) -> Option<String> {
        catalog
            .read()
            .file_of_symbol(symbol)
            .map(|file| file.name.to_string())
    }

    #[test]
    fn a_replaced_file_loses_the_symbols_it_no_longer_declares() -> Result<(), CatalogError> {
        let catalog = DescriptorCatalog::new();
        catalog.add_set(set(vec![file("a.proto", &[], "Old")]))?;
        catalog.add_set(set(vec![file("a.proto", &[], "New")]))?;
        assert_eq!(symbol_file(&catalog, "t.Old"), None);
        assert_eq!(symbol_file(&catalog, "t.New").as_deref(), Some("a.proto"));
        Ok(())
    }

    #[test]
    fn a_symbol_declared_twice_falls_back_to_the_older_file_when_the_newer_drops_it()
    -> Result<(), CatalogError> {
        let catalog = DescriptorCatalog::new();
        catalog.add_set(set(vec![file("a.proto", &[], "Shared")]))?;
        catalog.add_set(set(vec![file("b.proto", &[], "Shared")]))?;
        assert_eq!(
            symbol_file(&catalog, "t.Shared").as_deref(),
            Some("b.proto")
        );
        catalog.add_set(set(vec![file("b.proto", &[], "Other")]))?;
        assert_eq!(
            symbol_file(&catalog, "t.Shared").as_deref(),
            Some("a.proto")
        );
        Ok(())
    }

    #[test]
    fn an_encoded_file_is_replaced_only_when_its_bytes_change() -> Result<(), CatalogError> {
        let catalog = DescriptorCatalog::new();
        let old = set(vec![file("a.proto", &[], "Old")]).encode_to_vec();
        catalog.add_encoded_set(&old)?;
        catalog.add_encoded_set(&old)?;
        assert_eq!(symbol_file(&catalog, "t.Old").as_deref(), Some("a.proto"));
        catalog.add_encoded_set(&set(vec![file("a.proto", &[], "New")]).encode_to_vec())?;
        assert_eq!(symbol_file(&catalog, "t.Old"), None);
        assert_eq!(symbol_file(&catalog, "t.New").as_deref(), Some("a.proto"));
        assert_eq!(catalog.files(), ["a.proto"]);
        Ok(())
    }

    #[test]
    fn an_unnamed_file_rejects_the_whole_set() {
        let catalog = DescriptorCatalog::new();
        let mut unnamed = file("x.proto", &[], "X");
        unnamed.name = None;
        let result = catalog.add_set(set(vec![file("a.proto", &[], "A"), unnamed]));
        assert!(matches!(result, Err(CatalogError::Unnamed { index: 1 })));
        assert!(catalog.files().is_empty());
    }

    #[test]
    fn bytes_that_are_not_a_set_are_rejected() {
        let catalog = DescriptorCatalog::new();
        // Field 1, length 5, but only 1 byte follows.
        let result = catalog.add_encoded_set(&[0x0a, 0x05, 0x01]);
        assert!(matches!(result, Err(CatalogError::Set(_))), "{result:?}");
    }

    #[test]
    fn imports_in_a_diamond_are_answered_once_and_the_root_always() -> Result<(), CatalogError> {
        let catalog = DescriptorCatalog::new();
        catalog.add_set(set(vec![
            file("base.proto", &[], "Base"),
            file("left.proto", &["base.proto"], "Left"),
            file("right.proto", &["base.proto", "missing.proto"], "Right"),
            file("top.proto", &["left.proto", "right.proto"], "Top"),
        ]))?;
        let inner = catalog.read();
        let mut sent = HashSet::new();
        let names = |answer: Vec<Vec<u8>>| -> Vec<String> {
            answer
                .iter()
                .filter_map(|raw| FileDescriptorProto::decode(raw.as_slice()).ok())
                .filter_map(|proto| proto.name)
                .collect()
        };
        let top = inner.files.get("top.proto").expect("top.proto known");
        assert_eq!(
            names(inner.with_imports(top, &mut sent)),
            ["top.proto", "left.proto", "right.proto", "base.proto"]
        );
        let left = inner.files.get("left.proto").expect("left.proto known");
        assert_eq!(names(inner.with_imports(left, &mut sent)), ["left.proto"]);
        Ok(())
    }

    #[test]
    fn enum_values_are_siblings_of_their_enum_and_packages_are_not_symbols() {
        let proto = FileDescriptorProto {
            name: Some("e.proto".to_owned()),
            package: Some("p.q".to_owned()),
            enum_type: vec![EnumDescriptorProto {
                name: Some("Color".to_owned()),
                value: vec![prost_types::EnumValueDescriptorProto {
                    name: Some("RED".to_owned()),
                    number: Some(0),
                    options: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut declared = Declarations::default();
        declared.file(&proto);
        assert_eq!(declared.symbols, ["p.q.Color", "p.q.RED"]);
    }
}
