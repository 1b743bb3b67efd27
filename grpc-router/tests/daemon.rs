//! End to end: the `grpc-router` binary, with no service compiled in, routes
//! services whose bridges register with it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Daemon, config_with, raw_register, within};
use myservice::inventory::start_inventory_instance;
use myservice::inventory_pb::inventory_client::InventoryClient;
use myservice::inventory_pb::{GetItemRequest, ListItemsRequest};
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{ChatMessage, GreeterSpec, HelloReply, HelloRequest};
use router_runtime::bridge::BridgeConfig;
use router_runtime::codec::FrameCodec;
use router_runtime::codegen::ServiceSpec;
use router_runtime::pb;
use router_runtime::wire::{BridgeFrame, Payload, RouterFrame};
use rustix::process::Signal;
use tokio_stream::StreamExt;

const GREETER: &str = "myservice.v1.Greeter";
const INVENTORY: &str = "inventory.v1.Inventory";

fn greeter_instance(daemon: &Daemon, id: &str) -> router_runtime::bridge::BridgeHandle {
    myservice::demo::start_instance(BridgeConfig::new(daemon.registrations_url()).instance_id(id))
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

#[tokio::test]
async fn a_daemon_with_no_compiled_service_routes_two_services_registered_by_bridges() {
    let daemon = Daemon::start(&config_with(""));
    let _g1 = greeter_instance(&daemon, "greeter-1");
    let _g2 = greeter_instance(&daemon, "greeter-2");
    let _i1 = start_inventory_instance(vec![daemon.registrations_url()], "inventory-1");
    daemon.wait_for_instances(GREETER, 2).await;
    daemon.wait_for_instances(INVENTORY, 1).await;

    let mut greeter = GreeterClient::new(daemon.channel().await);
    let mut served = std::collections::BTreeSet::new();
    for i in 0..20 {
        let reply = within(
            5,
            "SayHello",
            greeter.say_hello(hello(&format!("user-{i}"))),
        )
        .await
        .expect("routed");
        served.insert(reply.into_inner().instance_id);
    }
    assert_eq!(served.len(), 2, "both Greeter instances served: {served:?}");

    let mut inventory = InventoryClient::new(daemon.channel().await);
    let item = within(
        5,
        "GetItem",
        inventory.get_item(GetItemRequest {
            sku: "sku-002".into(),
        }),
    )
    .await
    .expect("routed")
    .into_inner();
    assert_eq!(
        (item.sku.as_str(), item.served_by.as_str()),
        ("sku-002", "inventory-1")
    );
    let items: Vec<_> = within(5, "ListItems", async {
        inventory
            .list_items(ListItemsRequest { limit: 3 })
            .await
            .expect("stream")
            .into_inner()
            .collect::<Vec<_>>()
            .await
    })
    .await;
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(Result::is_ok));
}

#[tokio::test]
async fn reflection_lists_and_describes_every_registered_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let daemon = Daemon::start(&config_with(""));
    let _g = greeter_instance(&daemon, "greeter-1");
    let _i = start_inventory_instance(vec![daemon.registrations_url()], "inventory-1");
    daemon.wait_for_instances(GREETER, 1).await;
    daemon.wait_for_instances(INVENTORY, 1).await;

    let mut client = ServerReflectionClient::new(daemon.channel().await);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let requests = tokio_stream::iter(vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(GREETER.into())),
        ask(MessageRequest::FileContainingSymbol(format!(
            "{INVENTORY}.AdjustStock"
        ))),
    ]);
    let mut answers = within(5, "reflection", client.server_reflection_info(requests))
        .await
        .expect("reflection answers")
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) = within(5, "list", answers.message())
        .await
        .expect("ok")
        .and_then(|r| r.message_response)
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [GREETER, INVENTORY, "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} listed in {names:?}"
        );
    }
    // The admin service is on the admin listener, not the clients'.
    assert!(
        !names.iter().any(|n| n == "router.v1.RouterAdmin"),
        "{names:?}"
    );
    for (service, method) in [(GREETER, "Chat"), (INVENTORY, "AdjustStock")] {
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            within(5, "describe", answers.message())
                .await
                .expect("ok")
                .and_then(|r| r.message_response)
        else {
            panic!("expected the files of {service}");
        };
        let described = files.file_descriptor_proto.iter().any(|bytes| {
            let file: prost_types::FileDescriptorProto =
                prost::Message::decode(bytes.as_slice()).expect("a file descriptor");
            file.service.iter().any(|s| {
                format!("{}.{}", file.package(), s.name()) == service
                    && s.method.iter().any(|m| m.name() == method)
            })
        });
        assert!(described, "{service} and its method {method} are described");
    }
}

/// The Greeter's Hello, with its description changed by `edit`.
fn greeter_hello(id: &str, edit: impl FnOnce(&mut pb::ServiceDescription)) -> pb::Hello {
    let mut description = GreeterSpec::DESCRIPTOR.describe(GreeterSpec::FILE_DESCRIPTOR_SET);
    edit(&mut description);
    pb::Hello {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        instance_id: id.into(),
        service: GREETER.into(),
        weight: 1,
        initial_window: 64 * 1024,
        max_frame_size: 64 * 1024,
        description: Some(description),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_incompatible_registration_is_refused_naming_the_first_difference() {
    let daemon = Daemon::start(&config_with(""));
    let _g = greeter_instance(&daemon, "greeter-1");
    daemon.wait_for_instances(GREETER, 1).await;

    let changed_kind = greeter_hello("v2", |d| {
        let say_hello = d
            .methods
            .iter_mut()
            .find(|m| m.name == "SayHello")
            .expect("SayHello");
        say_hello.kind = pb::MethodKind::ServerStreaming as i32;
    });
    let refused = raw_register(&daemon, changed_kind)
        .await
        .expect_err("refused");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("`SayHello` is server streaming here but unary"),
        "{}",
        refused.message()
    );

    let changed_tag = greeter_hello("v3", |d| {
        let chat = d
            .methods
            .iter_mut()
            .find(|m| m.name == "Chat")
            .expect("Chat");
        chat.tag = 40;
    });
    let refused = raw_register(&daemon, changed_tag)
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("`Chat` has tag 40 here but 13"),
        "{}",
        refused.message()
    );
    // The registered instance keeps serving.
    let mut greeter = GreeterClient::new(daemon.channel().await);
    within(5, "SayHello", greeter.say_hello(hello("still")))
        .await
        .expect("served");
}

#[tokio::test]
async fn a_compatible_registration_adds_a_method_that_routes_only_to_it() {
    let daemon = Daemon::start(&config_with("[defaults]\nstrategy = \"round-robin\"\n"));
    let _g = greeter_instance(&daemon, "greeter-old");
    daemon.wait_for_instances(GREETER, 1).await;

    let with_goodbye = greeter_hello("greeter-new", |d| {
        d.methods.push(pb::MethodDescription {
            name: "SayGoodbye".into(),
            path: format!("/{GREETER}/SayGoodbye"),
            tag: 99,
            kind: pb::MethodKind::Unary as i32,
            route_key: vec![],
            idempotent: false,
        });
    });
    let ((out, mut frames), _) = raw_register(&daemon, with_goodbye).await.expect("accepted");
    daemon.wait_for_instances(GREETER, 2).await;

    // The new instance answers every call it gets, by hand.
    let answered = Arc::new(AtomicU64::new(0));
    let counter = answered.clone();
    tokio::spawn(async move {
        while let Ok(Some(frame)) = frames.message().await {
            let RouterFrame::Start(start) = frame else {
                continue;
            };
            let reply = HelloReply {
                message: format!("Goodbye via {}", start.path),
                instance_id: "greeter-new".into(),
                payload: Default::default(),
            };
            let _ = out.send(BridgeFrame::Headers(pb::Headers {
                call_id: start.call_id,
                metadata: None,
            }));
            let _ = out.send(BridgeFrame::Reply(Payload {
                call_id: start.call_id,
                tag: start.method_tag,
                message: prost::Message::encode_to_vec(&reply).into(),
            }));
            let _ = out.send(BridgeFrame::Trailers(pb::Trailers {
                call_id: start.call_id,
                code: 0,
                ..Default::default()
            }));
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let mut grpc = tonic::client::Grpc::new(daemon.channel().await);
    for _ in 0..10 {
        within(5, "ready", grpc.ready()).await.expect("ready");
        let reply: HelloReply = within(
            5,
            "SayGoodbye",
            grpc.unary(
                tonic::Request::new(hello("bye")),
                http::uri::PathAndQuery::from_static("/myservice.v1.Greeter/SayGoodbye"),
                tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default(),
            ),
        )
        .await
        .expect("the new method is routed")
        .into_inner();
        assert_eq!(
            reply.instance_id, "greeter-new",
            "only the instance that has it"
        );
    }
    assert_eq!(answered.load(Ordering::Relaxed), 10);
    let status = daemon.service_status(GREETER).await.expect("known");
    assert_eq!(status.instances.len(), 2, "both stay registered");
}

#[tokio::test]
async fn a_known_service_with_no_instance_answers_unavailable_naming_it() {
    let daemon = Daemon::start(&config_with(&format!(
        "[services.\"{INVENTORY}\"]\nstrategy = \"round-robin\"\n"
    )));
    // Named in the config, never registered.
    let mut inventory = InventoryClient::new(daemon.channel().await);
    let status = within(
        5,
        "GetItem",
        inventory.get_item(GetItemRequest { sku: "x".into() }),
    )
    .await
    .expect_err("no instance");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains(INVENTORY), "{}", status.message());

    // Learnt, then left: still UNAVAILABLE, not UNIMPLEMENTED.
    let greeter = greeter_instance(&daemon, "greeter-1");
    daemon.wait_for_instances(GREETER, 1).await;
    within(10, "the bridge to stop", greeter.shutdown()).await;
    daemon.wait_for_instances(GREETER, 0).await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let status = within(5, "SayHello", client.say_hello(hello("x")))
        .await
        .expect_err("no instance");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains(GREETER), "{}", status.message());

    // A service nobody registered or named is unknown.
    let mut grpc = tonic::client::Grpc::new(daemon.channel().await);
    within(5, "ready", grpc.ready()).await.expect("ready");
    let status = within(
        5,
        "unknown",
        grpc.unary(
            tonic::Request::new(hello("x")),
            http::uri::PathAndQuery::from_static("/nobody.v1.Nothing/Call"),
            tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default(),
        ),
    )
    .await
    .expect_err("unknown");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn registrations_are_refused_on_the_clients_listener_when_they_have_their_own() {
    let daemon = Daemon::start(&config_with(""));
    let handle = myservice::demo::start_instance(
        BridgeConfig::new(daemon.clients_url()).instance_id("lost"),
    );
    let mut state = handle.registrations();
    let reached = within(
        10,
        "the bridge's first attempt",
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("state")
    .clone();
    assert!(
        reached
            .last_error
            .as_ref()
            .is_some_and(|e| e.to_string().contains("serves clients, not registrations")),
        "{reached:?}"
    );
    assert!(daemon.service_status(GREETER).await.is_none());
}

/// Calls SayHello in a loop from `tasks` tasks until `stop`, counting
/// failures.
fn load(
    daemon: &Daemon,
    channel: tonic::transport::Channel,
    tasks: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64)>> {
    let _ = daemon;
    (0..tasks)
        .map(|t| {
            let mut client = GreeterClient::new(channel.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match client.say_hello(hello(&format!("load-{t}-{i}"))).await {
                        Ok(_) => ok += 1,
                        Err(status) => {
                            eprintln!("failed call: {status:?}");
                            failed += 1;
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

#[tokio::test]
async fn sighup_changes_the_strategy_with_no_failed_call_under_load() {
    let daemon = Daemon::start(&config_with("[defaults]\nstrategy = \"round-robin\"\n"));
    let _g1 = greeter_instance(&daemon, "greeter-1");
    let _g2 = greeter_instance(&daemon, "greeter-2");
    daemon.wait_for_instances(GREETER, 2).await;
    assert_eq!(
        daemon
            .service_status(GREETER)
            .await
            .expect("known")
            .strategy,
        "STRATEGY_ROUND_ROBIN"
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = load(&daemon, daemon.channel().await, 4, stop.clone());
    within(10, "load to run", async {
        while daemon
            .service_status(GREETER)
            .await
            .is_some_and(|s| s.calls_started < 200)
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    daemon.reload(&config_with("[defaults]\nstrategy = \"consistent-hash\"\n"));
    within(10, "the new strategy", async {
        while daemon
            .service_status(GREETER)
            .await
            .expect("known")
            .strategy
            != "STRATEGY_CONSISTENT_HASH"
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // An invalid file is refused (the daemon says so: the check below runs
    // after the reload was read) and the running config stays.
    let mark = daemon.log.mark();
    daemon.reload("[defaults]\nstrategy = \"fastest\"\n");
    daemon
        .log
        .wait_for_after(mark, &["configuration reload refused", "fastest"], 10)
        .await;
    let before = daemon
        .service_status(GREETER)
        .await
        .expect("known")
        .calls_started;
    within(10, "more load after the reloads", async {
        while daemon
            .service_status(GREETER)
            .await
            .expect("known")
            .calls_started
            < before + 200
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let status = daemon.service_status(GREETER).await.expect("known");
    assert_eq!(
        status.strategy, "STRATEGY_CONSISTENT_HASH",
        "the invalid file changed nothing"
    );
    assert_eq!(status.instances.len(), 2, "no registration dropped");
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let (o, f) = task.await.expect("load task");
        ok += o;
        failed += f;
    }
    assert!(ok > 400, "{ok} calls");
    assert_eq!(
        failed, 0,
        "no call failed across the reloads ({ok} succeeded)"
    );
}

#[tokio::test]
async fn sigterm_lets_calls_in_flight_finish_then_sends_instances_away() {
    let daemon = Daemon::start(&config_with(""));
    let instance = greeter_instance(&daemon, "greeter-1");
    daemon.wait_for_instances(GREETER, 1).await;

    // Ten bidirectional calls in flight, each answered once already.
    let mut chats = Vec::new();
    for c in 0..10 {
        let mut client = GreeterClient::new(daemon.channel().await);
        let (tx, rx) = tokio::sync::mpsc::channel::<ChatMessage>(4);
        tx.send(ChatMessage {
            text: format!("chat-{c}-0"),
            seq: 0,
        })
        .await
        .expect("send");
        let mut replies = within(
            5,
            "chat",
            client.chat(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .expect("chat starts")
        .into_inner();
        within(5, "first echo", replies.message())
            .await
            .expect("echo")
            .expect("a reply");
        chats.push((tx, replies));
    }

    daemon.signal(Signal::TERM);
    // The daemon drains: the calls in flight go on to the end.
    let mut state = instance.registrations();
    for (c, (tx, mut replies)) in chats.into_iter().enumerate() {
        tx.send(ChatMessage {
            text: format!("chat-{c}-1"),
            seq: 1,
        })
        .await
        .expect("send");
        within(5, "second echo", replies.message())
            .await
            .expect("the call goes on while draining")
            .expect("a reply");
        drop(tx);
        let end = within(5, "the call's end", replies.message()).await;
        assert!(matches!(end, Ok(None)), "call {c} ends OK: {end:?}");
    }
    let exit = daemon.wait_exit(15).await;
    assert!(
        exit.success(),
        "the daemon exits 0 after draining: {exit:?}"
    );
    let told = within(
        10,
        "the bridge to hear GoAway",
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("state")
    .clone();
    assert!(
        told.last_error
            .as_ref()
            .is_some_and(|e| e.to_string().contains("shutting down")),
        "{told:?}"
    );
}

#[tokio::test]
async fn status_shows_services_and_instances_as_a_table_and_as_json() {
    let daemon = Daemon::start(&config_with(""));
    let _g = greeter_instance(&daemon, "greeter-1");
    let _i = start_inventory_instance(vec![daemon.registrations_url()], "inventory-1");
    daemon.wait_for_instances(GREETER, 1).await;
    daemon.wait_for_instances(INVENTORY, 1).await;
    let run = |json: bool| {
        let mut command = std::process::Command::new(common::binary());
        command.args(["status", "--router", &daemon.admin_url()]);
        if json {
            command.arg("--json");
        }
        command.output().expect("grpc-router status runs")
    };
    let table = run(false);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8_lossy(&table.stdout);
    for expected in [
        "router test-router",
        GREETER,
        INVENTORY,
        "greeter-1",
        "inventory-1",
        "serving",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
    let json = run(true);
    assert!(json.status.success(), "{json:?}");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let services = value["services"].as_array().expect("services");
    assert_eq!(services.len(), 2);
    assert_eq!(services[0]["instances"][0]["state"], "serving");
    let _ = Duration::ZERO;
}

/// Registers at `path` with `hello`, returning the refusal.
async fn refused_at(daemon: &Daemon, path: &'static str, hello: pb::Hello) -> tonic::Status {
    let (out, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = out.send(BridgeFrame::Hello(hello));
    let mut grpc = tonic::client::Grpc::new(daemon.registration_channel().await);
    within(5, "ready", grpc.ready()).await.expect("ready");
    let answer = within(
        5,
        "the register call",
        grpc.streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(path),
            FrameCodec::<BridgeFrame, RouterFrame>::default(),
        ),
    )
    .await;
    match answer {
        Err(status) => status,
        Ok(response) => match within(5, "the first frame", response.into_inner().message()).await {
            Err(status) => status,
            other => panic!("expected a refusal, got {other:?}"),
        },
    }
}

#[tokio::test]
async fn registrations_that_lie_about_their_service_leave_nothing_behind() {
    let daemon = Daemon::start(&config_with(""));
    // Names one service in the path and another in its Hello.
    let mut liar = greeter_hello("liar", |_| {});
    liar.service = "other.v1.Thing".into();
    let status = refused_at(&daemon, "/bogus.v1.ThingRouter/Register", liar).await;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    // Describes methods under another service's paths.
    let mut forged = greeter_hello("forger", |d| {
        d.name = "bogus.v1.Thing".into();
    });
    forged.service = "bogus.v1.Thing".into();
    let status = refused_at(&daemon, "/bogus.v1.ThingRouter/Register", forged).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("expected `/bogus.v1.Thing/"),
        "{}",
        status.message()
    );
    // Neither left a service behind: the daemon still knows none.
    let mut admin = router_runtime::pb::router_admin_client::RouterAdminClient::new(
        daemon.admin_channel().await,
    );
    let listed = within(
        5,
        "admin",
        admin.list_services(pb::ListServicesRequest::default()),
    )
    .await
    .expect("admin")
    .into_inner();
    assert!(listed.services.is_empty(), "{:?}", listed.services);
}

#[tokio::test]
async fn the_number_of_learnt_services_is_bounded() {
    let daemon = Daemon::start(&config_with("[limits]\nmax_services = 1\n"));
    let _g = greeter_instance(&daemon, "greeter-1");
    daemon.wait_for_instances(GREETER, 1).await;
    let inventory = start_inventory_instance(vec![daemon.registrations_url()], "inventory-1");
    let mut state = inventory.registrations();
    let refused = within(
        10,
        "the refusal",
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("state")
    .clone();
    let error = refused.last_error.expect("an error").to_string();
    assert!(error.contains("at most 1 services"), "{error}");
    assert!(daemon.service_status(INVENTORY).await.is_none());
    // The known service keeps routing.
    let mut greeter = GreeterClient::new(daemon.channel().await);
    within(5, "SayHello", greeter.say_hello(hello("bounded")))
        .await
        .expect("served");
}

#[tokio::test]
async fn a_chat_message_over_the_services_request_limit_fails_at_once_naming_the_daemon_setting() {
    let daemon = Daemon::start(&config_with(&format!(
        "[services.\"{GREETER}\"]\nmax_request_message_bytes = 1048576\n"
    )));
    let _g = greeter_instance(&daemon, "greeter-1");
    daemon.wait_for_instances(GREETER, 1).await;
    let mut client = GreeterClient::new(daemon.channel().await);
    // One 2 MiB message, and the request stream left open: a client still
    // sending.
    let (tx, rx) = tokio::sync::mpsc::channel::<ChatMessage>(1);
    tx.send(ChatMessage {
        text: "x".repeat(2 * 1024 * 1024),
        seq: 1,
    })
    .await
    .expect("queued");
    let status = within(10, "the oversized chat to fail", async {
        match client
            .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Err(status) => status,
            Ok(response) => {
                let mut replies = response.into_inner();
                loop {
                    match replies.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => panic!("the chat ended OK"),
                        Err(status) => break status,
                    }
                }
            }
        }
    })
    .await;
    drop(tx);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    for word in ["1048576", "max_request_message_bytes", GREETER] {
        assert!(
            status.message().contains(word),
            "names `{word}`: {status:?}"
        );
    }
}
