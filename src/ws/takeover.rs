//! actix-http's upgrade service: every HTTP/1 request that asks for `Upgrade: websocket` comes
//! here with its connection instead of staying in the HTTP/1 dispatcher. The application answers
//! it as any other request (routes, middleware, the credential check before the upgrade); a 101
//! that carries a [`Handoff`] is written and the connection becomes that socket's [`Pump`],
//! and any other answer (a refusal, mostly) is written and the connection closed.
//!
//! The point is what the dispatcher would otherwise keep for the socket's whole life (see
//! [`super::pump`]): two 8 KiB buffers, and a second of lingering after the socket closes.

use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_codec::{AsyncRead, AsyncWrite, Encoder, Framed, FramedParts};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, HttpMessage, Request, Response, StatusCode};
use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::dev::{AppConfig, ServiceResponse};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::pump::{Handoff, Pump};
use crate::registry::admission::Place;

/// How long writing a refusal may take before the connection is dropped (a client that sends
/// a handshake and reads nothing holds nothing for long; an accepted socket's pump has the
/// heartbeat and the close deadline for that).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The upgrade path's marker in the request's extensions: a handshake that arrives without it
/// did not come through [`Takeover`] (actix-http keeps a request with a chunked body in the
/// dispatcher, upgrade header or not), and is refused.
#[derive(Debug, Clone, Copy)]
pub struct UpgradePath;

/// The factory actix-http calls on each worker: `make_app` builds the application, as for the
/// dispatcher, and this path runs its own instance of it.
pub struct Takeover<F, S> {
    make_app: F,
    /// The application's service factory, which `make_app`'s result turns into.
    app: PhantomData<fn() -> S>,
}

impl<F, S> Takeover<F, S> {
    pub fn new(make_app: F) -> Self {
        Self { make_app, app: PhantomData }
    }
}

impl<T, F, I, S, B> ServiceFactory<(Request, Framed<T, Codec>)> for Takeover<F, S>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    F: Fn() -> I,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = actix_web::Error;
    type Config = ();
    type Service = TakeoverService<S::Service>;
    type InitError = ();
    type Future = Pin<Box<dyn Future<Output = Result<Self::Service, ()>>>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let app = (self.make_app)().into_factory();
        Box::pin(async move {
            let app = app.new_service(AppConfig::default()).await?;
            Ok(TakeoverService { app: Rc::new(app) })
        })
    }
}

/// One worker's upgrade service.
pub struct TakeoverService<A> {
    app: Rc<A>,
}

impl<T, A, B> Service<(Request, Framed<T, Codec>)> for TakeoverService<A>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    A: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), actix_web::Error>>>>;

    actix_service::always_ready!();

    fn call(&self, (req, framed): (Request, Framed<T, Codec>)) -> Self::Future {
        let app = self.app.clone();
        req.extensions_mut().insert(UpgradePath);
        Box::pin(async move {
            let response = match app.call(req).await {
                Ok(response) => Response::from(response).map_into_boxed_body(),
                Err(error) => Response::from(error),
            };
            drop(app);
            // Only the pump lives on: the request, the response and actix-http's buffers are
            // gone before it starts, and the answer's state (boxed) does not size this future.
            if let Some(pump) = Box::pin(answer(response, framed)).await {
                pump.await;
            }
            Ok(())
        })
    }
}

/// Writes the application's answer: a 101 with a handoff gives the socket's pump; any other
/// answer is written, and the connection shut down.
async fn answer<T: AsyncRead + AsyncWrite + Unpin>(
    response: Response<BoxBody>,
    framed: Framed<T, Codec>,
) -> Option<Pump<T, Place>> {
    let (mut head, body) = response.into_parts();
    let handoff = head.extensions_mut().remove::<Handoff<Place>>();
    // actix-http's write buffer (8 KiB) goes now; its read buffer holds what the client sent
    // behind its handshake, if anything.
    let FramedParts { mut io, mut codec, read_buf, write_buf, .. } = framed.into_parts();
    drop(write_buf);
    let mut out = BytesMut::new();
    match handoff {
        Some(handoff) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            codec.encode(Message::Item((head, BodySize::None)), &mut out).ok()?;
            // The registry hears of the socket before its client does.
            handoff.guard().sent().await;
            // The pump writes the 101 with the socket's first frames (the welcome), in one go.
            Some(handoff.pump(io, out.freeze(), read_buf.freeze()))
        }
        _ => {
            // A refusal ends the connection: whatever the client sent behind its handshake was
            // meant for a WebSocket.
            head.head_mut().set_connection_type(ConnectionType::Close);
            let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                codec.encode(Message::Item((head, body.size())), &mut out)?;
                let mut body = std::pin::pin!(body);
                while let Some(chunk) = poll_fn(|cx| body.as_mut().poll_next(cx)).await {
                    let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
                    codec.encode(Message::Chunk(Some(chunk)), &mut out)?;
                    write(&mut io, &out).await?;
                    out.clear();
                }
                codec.encode(Message::Chunk(None), &mut out)?;
                write(&mut io, &out).await?;
                io.shutdown().await
            });
            if let Ok(Err(e)) = written.await {
                tracing::debug!(error = %e, "an answer to an upgrade request could not be written");
            }
            None
        }
    }
}

async fn write<T: AsyncWrite + Unpin>(io: &mut T, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}
