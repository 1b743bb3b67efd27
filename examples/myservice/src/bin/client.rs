//! Calls every method kind of `myservice.v1.Greeter` through a router and
//! prints which instance served each call.

use std::process::ExitCode;

use clap::Parser;
use myservice::demo;

/// Calls the Greeter through a router.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The router to call.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    router: String,
    /// How many SayHello calls to make.
    #[arg(long, default_value_t = 1)]
    unary_calls: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    demo::init_tracing("warn");
    let args = Args::parse();
    let result = async {
        let mut client = demo::connect(&args.router).await?;
        demo::run_client(&mut client, args.unary_calls).await
    }
    .await;
    match result {
        Ok(records) => {
            print!("{}", demo::format_report(&records));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("client: {e}");
            ExitCode::FAILURE
        }
    }
}
