//! gRPC server reflection of a `DescriptorCatalog`: a real tonic server on
//! 127.0.0.1 serving v1 and v1alpha, asked by tonic-reflection's clients.
//! Descriptor sets are compiled with protox from small files in a tempdir.

use std::net::SocketAddr;
use std::time::Duration;

use prost::Message;
use router_runtime::reflection::DescriptorCatalog;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Streaming;
use tonic::transport::{Channel, Server};
use tonic_reflection::pb::{v1, v1alpha};
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

/// How long one answer may take before the test fails.
const ANSWER: Duration = Duration::from_secs(10);

const MONEY: &str = r#"
syntax = "proto3";
package shop.v1;
import "google/protobuf/timestamp.proto";
message Money {
  string currency = 1;
  int64 units = 2;
  google.protobuf.Timestamp at = 3;
}
enum Currency {
  CURRENCY_UNSPECIFIED = 0;
  CURRENCY_EUR = 1;
}
"#;

const NOTES: &str = r#"
syntax = "proto3";
package shop.v1;
import "google/protobuf/descriptor.proto";
extend google.protobuf.MessageOptions {
  string note = 50001;
  int32 weight = 50002;
}
"#;

const SHOP: &str = r#"
syntax = "proto3";
package shop.v1;
import "shop/v1/money.proto";
import "google/protobuf/timestamp.proto";
import "shop/v1/notes.proto";
service Shop {
  rpc Buy(BuyRequest) returns (BuyReply);
  rpc Watch(BuyRequest) returns (stream BuyReply);
}
message BuyRequest {
  option (shop.v1.note) = "hand-packed";
  message Line {
    string sku = 1;
    enum Kind {
      KIND_UNSPECIFIED = 0;
      KIND_GIFT = 1;
    }
    Kind kind = 2;
  }
  repeated Line lines = 1;
  Money total = 2;
  oneof payment {
    string card = 3;
    string voucher = 4;
  }
}
message BuyReply {
  google.protobuf.Timestamp at = 1;
}
"#;

const LATE: &str = r#"
syntax = "proto3";
package late.v1;
service Late {
  rpc Ping(PingRequest) returns (PingReply);
}
message PingRequest {}
message PingReply {}
"#;

/// Compiles `root` (and whatever it imports) from `files` written in a
/// tempdir into an encoded `FileDescriptorSet` with imports, custom options
/// included.
fn compile(files: &[(&str, &str)], root: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("proto dir");
        std::fs::write(path, text).expect("proto written");
    }
    let mut compiler = protox::Compiler::new([dir.path()]).expect("compiler");
    compiler.include_imports(true);
    compiler.open_file(root).expect("protos compile");
    compiler.encode_file_descriptor_set()
}

fn shop_set() -> Vec<u8> {
    compile(
        &[
            ("shop/v1/money.proto", MONEY),
            ("shop/v1/notes.proto", NOTES),
            ("shop/v1/shop.proto", SHOP),
        ],
        "shop/v1/shop.proto",
    )
}

fn late_set() -> Vec<u8> {
    compile(&[("late/v1/late.proto", LATE)], "late/v1/late.proto")
}

/// A catalog with the shop files, listing `shop.v1.Shop`.
fn shop_catalog() -> DescriptorCatalog {
    let catalog = DescriptorCatalog::new();
    catalog
        .add_encoded_set(&shop_set())
        .expect("shop set added");
    catalog.list_service("shop.v1.Shop");
    catalog
}

/// Serves both reflection versions of `catalog` on 127.0.0.1 and connects.
async fn serve(catalog: &DescriptorCatalog) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let addr: SocketAddr = listener.local_addr().expect("address");
    let server = Server::builder()
        .add_service(catalog.v1_service())
        .add_service(catalog.v1alpha_service())
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connected")
}

/// One open v1 reflection stream.
struct Reflector {
    requests: mpsc::Sender<v1::ServerReflectionRequest>,
    responses: Streaming<v1::ServerReflectionResponse>,
}

impl Reflector {
    async fn open(channel: &Channel) -> Self {
        let (requests, outgoing) = mpsc::channel(1);
        let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let responses = tokio::time::timeout(
            ANSWER,
            client.server_reflection_info(ReceiverStream::new(outgoing)),
        )
        .await
        .expect("stream opened in time")
        .expect("stream opened")
        .into_inner();
        Self {
            requests,
            responses,
        }
    }

    /// Sends one request and waits for its answer.
    async fn ask(&mut self, request: MessageRequest) -> v1::ServerReflectionResponse {
        self.ask_raw(v1::ServerReflectionRequest {
            host: "shop.example".to_owned(),
            message_request: Some(request),
        })
        .await
        .expect("stream still open")
    }

    async fn ask_raw(
        &mut self,
        request: v1::ServerReflectionRequest,
    ) -> Result<v1::ServerReflectionResponse, tonic::Status> {
        self.requests.send(request).await.expect("request sent");
        tokio::time::timeout(ANSWER, self.responses.message())
            .await
            .expect("answer in time")?
            .ok_or_else(|| tonic::Status::unknown("stream ended without an answer"))
    }

    /// The names of the files answered to `request`, in the order sent.
    async fn files(&mut self, request: MessageRequest) -> Vec<String> {
        match self.ask(request.clone()).await.message_response {
            Some(MessageResponse::FileDescriptorResponse(files)) => {
                file_names(&files.file_descriptor_proto)
            }
            other => panic!("{request:?} answered {other:?}"),
        }
    }

    /// The `(code, message)` of the error answered to `request`.
    async fn error(&mut self, request: MessageRequest) -> (i32, String) {
        match self.ask(request.clone()).await.message_response {
            Some(MessageResponse::ErrorResponse(error)) => (error.error_code, error.error_message),
            other => panic!("{request:?} answered {other:?}"),
        }
    }

    async fn services(&mut self) -> Vec<String> {
        match self
            .ask(MessageRequest::ListServices(String::new()))
            .await
            .message_response
        {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect(),
            other => panic!("ListServices answered {other:?}"),
        }
    }
}

fn file_names(files: &[Vec<u8>]) -> Vec<String> {
    files
        .iter()
        .map(|raw| {
            prost_types::FileDescriptorProto::decode(raw.as_slice())
                .expect("a FileDescriptorProto")
                .name
                .unwrap_or_default()
        })
        .collect()
}

fn symbol(name: &str) -> MessageRequest {
    MessageRequest::FileContainingSymbol(name.to_owned())
}

const NOT_FOUND: i32 = tonic::Code::NotFound as i32;

#[tokio::test]
async fn list_services_answers_the_listed_names_sorted() {
    let catalog = shop_catalog();
    catalog
        .add_encoded_set(&late_set())
        .expect("late set added");
    catalog.list_service("late.v1.Late");
    catalog
        .include_reflection_services()
        .expect("reflection set");
    catalog.unlist_service("grpc.reflection.v1alpha.ServerReflection");
    let mut reflector = Reflector::open(&serve(&catalog).await).await;
    assert_eq!(
        reflector.services().await,
        [
            "grpc.reflection.v1.ServerReflection",
            "late.v1.Late",
            "shop.v1.Shop"
        ]
    );
}

#[tokio::test]
async fn file_by_filename_answers_the_file_and_its_imports_once_per_stream() {
    let catalog = shop_catalog();
    let mut reflector = Reflector::open(&serve(&catalog).await).await;
    assert_eq!(
        reflector
            .files(MessageRequest::FileByFilename("shop/v1/shop.proto".into()))
            .await,
        [
            "shop/v1/shop.proto",
            "shop/v1/money.proto",
            "google/protobuf/timestamp.proto",
            "shop/v1/notes.proto",
            "google/protobuf/descriptor.proto",
        ]
    );
    // Asked again: the file itself, none of its imports (already sent).
    assert_eq!(
        reflector
            .files(MessageRequest::FileByFilename("shop/v1/money.proto".into()))
            .await,
        ["shop/v1/money.proto"]
    );
    // A new stream starts over.
    let mut fresh = Reflector::open(&serve(&catalog).await).await;
    assert_eq!(
        fresh
            .files(MessageRequest::FileByFilename("shop/v1/money.proto".into()))
            .await,
        ["shop/v1/money.proto", "google/protobuf/timestamp.proto"]
    );
}

#[tokio::test]
async fn symbols_are_found_in_the_file_declaring_them() {
    let catalog = shop_catalog();
    let mut reflector = Reflector::open(&serve(&catalog).await).await;
    for (name, file) in [
        ("shop.v1.Shop", "shop/v1/shop.proto"),
        ("shop.v1.Shop.Buy", "shop/v1/shop.proto"),
        ("shop.v1.Shop.Watch", "shop/v1/shop.proto"),
        ("shop.v1.BuyRequest", "shop/v1/shop.proto"),
        ("shop.v1.BuyRequest.Line", "shop/v1/shop.proto"),
        ("shop.v1.BuyRequest.Line.Kind", "shop/v1/shop.proto"),
        ("shop.v1.BuyRequest.total", "shop/v1/shop.proto"),
        ("shop.v1.BuyRequest.payment", "shop/v1/shop.proto"),
        ("shop.v1.Currency", "shop/v1/money.proto"),
        ("shop.v1.Money", "shop/v1/money.proto"),
        ("shop.v1.note", "shop/v1/notes.proto"),
        (
            "google.protobuf.Timestamp",
            "google/protobuf/timestamp.proto",
        ),
    ] {
        let answered = reflector.files(symbol(name)).await;
        assert_eq!(answered.first().map(String::as_str), Some(file), "{name}");
    }
}

#[tokio::test]
async fn enum_values_are_scoped_beside_their_enum_as_in_grpc_go() {
    let catalog = shop_catalog();
    let mut reflector = Reflector::open(&serve(&catalog).await).await;
    assert_eq!(
        reflector.files(symbol("shop.v1.CURRENCY_EUR")).await[0],
        "shop/v1/money.proto"
    );
    assert_eq!(
        reflector
            .files(symbol("shop.v1.BuyRequest.Line.KIND_GIFT"))
            .await[0],
        "shop/v1/shop.proto"
    );
    let (code, _) = reflector
        .error(symbol("shop.v1.Currency.CURRENCY_EUR"))
        .await;
    assert_eq!(code, NOT_FOUND);
    let (code, _) = reflector.error(symbol("shop.v1")).await;
    assert_eq!(code, NOT_FOUND, "a package is not a symbol");
}

#[tokio::test]
async fn unknown_symbol_is_a_not_found_response_and_the_stream_goes_on() {
    let catalog = shop_catalog();
    let mut reflector = Reflector::open(&serve(&catalog).await).await;
    let answer = reflector.ask(symbol("shop.v1.Nope")).await;
    assert_eq!(answer.valid_host, "shop.example");
    assert_eq!(
        answer
            .original_request
            .and_then(|request| request.message_request),
        Some(symbol("shop.v1.Nope"))
    );
    match answer.message_response {
        Some(MessageResponse::ErrorResponse(error)) => {
            assert_eq!(error.error_code, NOT_FOUND);
            assert!(
                error.error_message.contains("shop.v1.Nope"),
                "{}",
                error.error_message
            );
        }
        other => panic!("unknown symbol answered {other:?}"),
    }
    let (code, _) = reflector
        .error(MessageRequest::FileByFilename("nope.proto".into()))
        .await;
    assert_eq!(code, NOT_FOUND);
    assert_eq!(
        reflector.files(symbol("shop.v1.Shop")).await[0],
        "shop/v1/shop.proto"
    );
}

#[tokio::test]
async fn a_set_added_after_the_stream_opened_is_answered_on_it() {
    let catalog = shop_catalog();
    let mut reflector = Reflector::open(&serve(&catalog).await).await;
    let (code, _) = reflector.error(symbol("late.v1.Late")).await;
    assert_eq!(code, NOT_FOUND);

    catalog
        .add_encoded_set(&late_set())
        .expect("late set added");
    catalog.list_service("late.v1.Late");

    assert_eq!(
        reflector.files(symbol("late.v1.Late.Ping")).await,
        ["late/v1/late.proto"]
    );
    assert_eq!(reflector.services().await, ["late.v1.Late", "shop.v1.Shop"]);
}

#[tokio::test]
async fn extensions_are_found_by_extended_type_and_number() {
    let catalog = shop_catalog();
    let mut reflector = Reflector::open(&serve(&catalog).await).await;
    let by_number = MessageRequest::FileContainingExtension(v1::ExtensionRequest {
        containing_type: "google.protobuf.MessageOptions".into(),
        extension_number: 50002,
    });
    assert_eq!(reflector.files(by_number).await[0], "shop/v1/notes.proto");
    let unknown = MessageRequest::FileContainingExtension(v1::ExtensionRequest {
        containing_type: "google.protobuf.MessageOptions".into(),
        extension_number: 49999,
    });
    assert_eq!(reflector.error(unknown).await.0, NOT_FOUND);

    let numbers = |base: &str| MessageRequest::AllExtensionNumbersOfType(base.to_owned());
    match reflector
        .ask(numbers("google.protobuf.MessageOptions"))
        .await
        .message_response
    {
        Some(MessageResponse::AllExtensionNumbersResponse(answer)) => {
            assert_eq!(answer.base_type_name, "google.protobuf.MessageOptions");
            assert_eq!(answer.extension_number, [50001, 50002]);
        }
        other => panic!("AllExtensionNumbersOfType answered {other:?}"),
    }
    match reflector
        .ask(numbers("shop.v1.Money"))
        .await
        .message_response
    {
        Some(MessageResponse::AllExtensionNumbersResponse(answer)) => {
            assert!(answer.extension_number.is_empty());
        }
        other => panic!("AllExtensionNumbersOfType answered {other:?}"),
    }
    assert_eq!(reflector.error(numbers("shop.v1.Nope")).await.0, NOT_FOUND);
}

#[tokio::test]
async fn custom_options_of_an_encoded_set_reach_the_client() {
    let catalog = shop_catalog();
    let mut reflector = Reflector::open(&serve(&catalog).await).await;
    let answer = reflector
        .ask(MessageRequest::FileByFilename("shop/v1/shop.proto".into()))
        .await;
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("shop.proto not answered: {answer:?}");
    };
    let shop = &files.file_descriptor_proto[0];
    assert!(
        shop.windows(b"hand-packed".len())
            .any(|window| window == b"hand-packed"),
        "the (shop.v1.note) option of BuyRequest is missing"
    );
}

#[tokio::test]
async fn a_request_without_a_message_ends_the_stream_with_invalid_argument() {
    let catalog = shop_catalog();
    let mut reflector = Reflector::open(&serve(&catalog).await).await;
    let answer = reflector
        .ask_raw(v1::ServerReflectionRequest {
            host: String::new(),
            message_request: None,
        })
        .await;
    assert_eq!(
        answer.map_err(|status| status.code()).err(),
        Some(tonic::Code::InvalidArgument)
    );
}

#[tokio::test]
async fn v1alpha_answers_as_v1() {
    use v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use v1alpha::server_reflection_response::MessageResponse as AlphaResponse;

    let catalog = shop_catalog();
    let channel = serve(&catalog).await;
    let (requests, outgoing) = mpsc::channel(1);
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut responses = client
        .server_reflection_info(ReceiverStream::new(outgoing))
        .await
        .expect("v1alpha stream opened")
        .into_inner();
    let mut ask = async |request: AlphaRequest| {
        requests
            .send(v1alpha::ServerReflectionRequest {
                host: "shop.example".into(),
                message_request: Some(request),
            })
            .await
            .expect("request sent");
        let answer = tokio::time::timeout(ANSWER, responses.message())
            .await
            .expect("answer in time")
            .expect("stream open")
            .expect("an answer");
        assert_eq!(answer.valid_host, "shop.example");
        answer.message_response
    };

    match ask(AlphaRequest::ListServices(String::new())).await {
        Some(AlphaResponse::ListServicesResponse(list)) => {
            let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            assert_eq!(names, ["shop.v1.Shop"]);
        }
        other => panic!("ListServices answered {other:?}"),
    }
    match ask(AlphaRequest::FileContainingSymbol("shop.v1.Money".into())).await {
        Some(AlphaResponse::FileDescriptorResponse(files)) => assert_eq!(
            file_names(&files.file_descriptor_proto),
            ["shop/v1/money.proto", "google/protobuf/timestamp.proto"]
        ),
        other => panic!("FileContainingSymbol answered {other:?}"),
    }
    match ask(AlphaRequest::FileContainingSymbol("shop.v1.Nope".into())).await {
        Some(AlphaResponse::ErrorResponse(error)) => assert_eq!(error.error_code, NOT_FOUND),
        other => panic!("an unknown symbol answered {other:?}"),
    }
    match ask(AlphaRequest::FileContainingSymbol("shop.v1.Shop".into())).await {
        Some(AlphaResponse::FileDescriptorResponse(files)) => assert_eq!(
            file_names(&files.file_descriptor_proto),
            [
                "shop/v1/shop.proto",
                "shop/v1/notes.proto",
                "google/protobuf/descriptor.proto"
            ]
        ),
        other => panic!("FileContainingSymbol answered {other:?}"),
    }
}
