//! The smallest useful router, as shown in the README: serves
//! `myservice.v1.Greeter` to ordinary clients and the register endpoint to
//! instances, on one port.
//!
//! `cargo run -p myservice-example --example minimal_router`

use myservice_example::pb::GreeterRouter;
use router_runtime::router::RouterConfig;
use tonic::transport::Server;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = GreeterRouter::new(RouterConfig::default());
    router
        .add_to(Server::builder())
        .serve("127.0.0.1:50051".parse()?)
        .await?;
    Ok(())
}
