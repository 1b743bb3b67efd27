//! Outlier detection: an instance whose calls keep failing is ejected for a
//! while, its calls go to the others, and it comes back after the ejection.

use test_kit as common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::test_greeter::TestGreeter;
use common::{TestRouter, eventually, hello, start_instance, within};
use router_runtime::admin::AdminService;
use router_runtime::pb;
use router_runtime::router::{OutlierDetection, PIN_HEADER, RouterConfig, Strategy};
use tonic::{Code, Request};

#[tokio::test]
async fn an_instance_failing_n_times_in_a_row_is_ejected_and_returns_after_the_base_time() {
    let base = Duration::from_millis(600);
    let router = TestRouter::start(RouterConfig {
        strategy: Some(Strategy::RoundRobin),
        outlier_detection: Some(OutlierDetection {
            consecutive_failures: 3,
            base_ejection: base,
            max_ejected_percent: 50,
            ..OutlierDetection::default()
        }),
        ..RouterConfig::default()
    })
    .await;
    let (bad, _events) = TestGreeter::new("bad");
    bad.flaky.store(u32::MAX, Ordering::SeqCst);
    let _bad = start_instance(&router, "bad", bad).await;
    let _good = start_instance(&router, "good", TestGreeter::new("good").0).await;
    let mut client = router.client().await;

    let mut failures = 0;
    while router.router.stats().ejections() == 0 {
        assert!(failures < 10, "not ejected after {failures} failures");
        if let Err(status) = within(5, "call", client.say_hello(Request::new(hello("flaky")))).await
        {
            assert_eq!(status.code(), Code::Unavailable);
            failures += 1;
        }
    }
    let ejected_at = Instant::now();
    assert_eq!(failures, 3, "ejected at the third failure in a row");
    let bad = router
        .router
        .registry()
        .snapshot()
        .by_id("bad")
        .cloned()
        .expect("bad");
    assert!(bad.is_ejected());
    // The admin service says so, and for how long.
    let admin = AdminService::new("test").with_router(&router.router);
    let status = greeter_status(&admin);
    assert_eq!((status.ejections, status.instances_ejected), (1, 1));
    let reported = instance_status(&status, "bad");
    assert!(reported.ejected);
    assert_eq!(reported.times_ejected, 1);
    assert!(
        reported.ejection_remaining_millis > 0
            && reported.ejection_remaining_millis <= base.as_millis() as u64,
        "{reported:?}"
    );
    let until = reported.ejected_until.expect("ejected_until");
    let until = std::time::SystemTime::try_from(until).expect("a time");
    assert!(until > std::time::SystemTime::now() - Duration::from_millis(50));
    let healthy = instance_status(&status, "good");
    assert!(!healthy.ejected && healthy.times_ejected == 0);
    assert_eq!(
        (healthy.ejected_until, healthy.ejection_remaining_millis),
        (None, 0)
    );
    // While it is out every call goes to the healthy instance.
    for _ in 0..20 {
        if ejected_at.elapsed() >= base - Duration::from_millis(150) {
            break;
        }
        let reply = within(5, "call", client.say_hello(Request::new(hello("flaky"))))
            .await
            .expect("the healthy instance answers");
        assert_eq!(reply.into_inner().instance_id, "good");
    }
    // It comes back when its ejection ends: no sooner than the end the admin
    // service reported (how long each ejection lasts is tested on injected
    // time in `router::policy::outlier`).
    eventually(5, "the ejection to end", || !bad.is_ejected()).await;
    assert!(
        std::time::SystemTime::now() + Duration::from_millis(50) >= until,
        "back before the reported end of its ejection"
    );
    let mut pinned = Request::new(hello("flaky"));
    pinned
        .metadata_mut()
        .insert(PIN_HEADER, "bad".parse().expect("ascii"));
    let status = within(5, "call", client.say_hello(pinned))
        .await
        .expect_err("back, and still failing");
    assert!(
        status.message().contains("flaky"),
        "it reached the instance: {status:?}"
    );
    assert_eq!(bad.times_ejected(), 1);
    let status = greeter_status(&admin);
    assert_eq!((status.ejections, status.instances_ejected), (1, 0));
    let reported = instance_status(&status, "bad");
    assert!(!reported.ejected, "{reported:?}");
    assert_eq!(reported.times_ejected, 1, "the count stays");
    assert_eq!(reported.ejected_until, None);
}

fn greeter_status(admin: &AdminService) -> pb::ServiceStatus {
    admin
        .list("myservice.v1.Greeter")
        .services
        .pop()
        .expect("the Greeter's status")
}

fn instance_status<'a>(status: &'a pb::ServiceStatus, id: &str) -> &'a pb::InstanceStatus {
    status
        .instances
        .iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("{id} in {status:?}"))
}

#[tokio::test]
async fn no_more_than_the_share_of_instances_is_ejected() {
    let router = TestRouter::start(RouterConfig {
        outlier_detection: Some(OutlierDetection {
            consecutive_failures: 2,
            max_ejected_percent: 10,
            ..OutlierDetection::default()
        }),
        ..RouterConfig::default()
    })
    .await;
    let mut instances = Vec::new();
    for id in ["a", "b", "c"] {
        let (greeter, _) = TestGreeter::new(id);
        greeter.flaky.store(u32::MAX, Ordering::SeqCst);
        instances.push(start_instance(&router, id, greeter).await);
    }
    let mut client = router.client().await;
    for _ in 0..30 {
        let _ = within(5, "call", client.say_hello(Request::new(hello("flaky")))).await;
    }
    // 10 % of three is below one: one instance may be out, never more, so
    // the service keeps instances to call.
    assert_eq!(router.router.stats().ejections(), 1);
    let ejected = router
        .router
        .registry()
        .snapshot()
        .iter()
        .filter(|i| i.is_ejected())
        .count();
    assert_eq!(ejected, 1);
}
