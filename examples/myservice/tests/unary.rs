//! Unary calls through a router.

mod common;

use common::{TestRouter, start_instance, within};
use myservice_example::greeter::GreeterImpl;
use myservice_example::pb::HelloRequest;
use router_runtime::router::RouterConfig;

#[tokio::test]
async fn unary_call_reaches_the_instance_and_returns_its_answer() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let _instance = start_instance(&router, "a", GreeterImpl::new("a")).await;
    let mut client = router.client().await;
    let reply = within(
        5,
        "unary reply",
        client.say_hello(HelloRequest {
            name: "Ada".into(),
            payload: vec![],
        }),
    )
    .await
    .expect("call succeeds")
    .into_inner();
    assert_eq!(reply.message, "Hello, Ada!");
    assert_eq!(reply.instance_id, "a");
    assert_eq!(router.router.stats().calls_started(), 1);
}
