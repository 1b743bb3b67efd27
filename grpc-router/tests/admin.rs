//! End to end: the daemon's admin HTTP listener (`[admin] address`).

mod common;

use common::{Daemon, config_with};

#[tokio::test]
async fn the_admin_listener_answers_liveness_and_names_unknown_paths_not_found() {
    let daemon = Daemon::start(&config_with(""));
    let (code, body) = daemon.http_get("/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _) = daemon.http_get("/no-such-page").await;
    assert_eq!(code, 404);
}
