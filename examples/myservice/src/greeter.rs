//! An ordinary tonic implementation of `myservice.v1.Greeter`. Nothing here
//! knows about routers: the generated `GreeterBridge` runs it as is.

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::greeter_server::Greeter;
use crate::pb::{
    ChatMessage, HelloReply, HelloRequest, InstanceInfo, Number, StreamRequest, SumReply,
};

/// Answers every method and says which instance it is.
#[derive(Debug, Clone)]
pub struct GreeterImpl {
    instance_id: String,
}

impl GreeterImpl {
    /// A greeter that reports itself as `instance_id`.
    pub fn new(instance_id: impl Into<String>) -> Self {
        GreeterImpl {
            instance_id: instance_id.into(),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Greeter for GreeterImpl {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let request = request.into_inner();
        Ok(Response::new(HelloReply {
            message: format!("Hello, {}!", request.name),
            instance_id: self.instance_id.clone(),
            payload: request.payload,
        }))
    }

    type StreamGreetingsStream = BoxStream<HelloReply>;

    async fn stream_greetings(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamGreetingsStream>, Status> {
        let request = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let instance_id = self.instance_id.clone();
        tokio::spawn(async move {
            for i in 0..request.count {
                let reply = HelloReply {
                    message: format!("Hello #{i}, {}!", request.name),
                    instance_id: instance_id.clone(),
                    payload: vec![0; request.payload_size as usize],
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn sum(&self, request: Request<Streaming<Number>>) -> Result<Response<SumReply>, Status> {
        let mut numbers = request.into_inner();
        let (mut total, mut count) = (0i64, 0u64);
        while let Some(number) = numbers.next().await {
            total = total.saturating_add(number?.value);
            count += 1;
        }
        Ok(Response::new(SumReply {
            total,
            count,
            instance_id: self.instance_id.clone(),
        }))
    }

    type ChatStream = BoxStream<ChatMessage>;

    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let instance_id = self.instance_id.clone();
        let replies = request.into_inner().map(move |message| {
            message.map(|m| ChatMessage {
                text: format!("{} (from {instance_id})", m.text),
                seq: m.seq,
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn who_am_i(&self, _request: Request<()>) -> Result<Response<InstanceInfo>, Status> {
        Ok(Response::new(InstanceInfo {
            instance_id: self.instance_id.clone(),
        }))
    }
}
