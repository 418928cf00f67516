//! Transparent retry of calls the server never saw: a refused connection, a
//! draining server's GOAWAY, a refused stream or a connection closed before
//! dispatch turns a call away unseen, and it is sent again (to another
//! instance of a discovered service) whatever its method.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use http_body::Frame;
use http_body_util::BodyExt;
use tonic::body::Body;

use super::call::attempt;
use super::{BoxError, Shared, Target};

/// The most request body kept to send a call again that the server
/// refused unseen.
const REPLAY_LIMIT: usize = 64 * 1024;

/// Sends a call — and again, to another instance when there is one, if
/// the server turned it away unseen: the connection was refused, or was
/// going away (GOAWAY, REFUSED_STREAM), which any method may, as gRPC's
/// transparent retry does. Such refusals come with deploys and crashes: an
/// instance that starts draining sends GOAWAY while clients still hold its
/// connection; a dead one refuses connections. One target gets the call
/// twice at most, a discovered service three instances. A request body
/// that is all there when the call starts (up to [`REPLAY_LIMIT`]: every
/// unary and server-streaming call's) is kept for that, as shared frames;
/// a client stream is sent once.
pub(super) async fn once(
    inner: &Target,
    shared: &Arc<Shared>,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, BoxError> {
    let (parts, body) = req.into_parts();
    let (body, kept) = prefetch(body).await?;
    let mut tried = Vec::new();
    let mut result = attempt(
        inner,
        shared,
        http::Request::from_parts(parts.clone(), body),
        &mut tried,
    )
    .await;
    let Some(frames) = kept else { return result };
    for _ in 1..inner.tries() {
        let Err(e) = &result else { return result };
        if !unseen(e.as_ref()) {
            return result;
        }
        tracing::debug!(path = %parts.uri.path(), "the server turned the call away unseen; sending it again");
        let req = http::Request::from_parts(parts.clone(), replayable(Arc::clone(&frames)));
        result = attempt(inner, shared, req, &mut tried).await;
    }
    result
}

/// Takes the request body's frames that are ready now, up to
/// [`REPLAY_LIMIT`]: a unary or server-streaming call's whole request is
/// (one message). The body to send, and its frames when that was all of it.
async fn prefetch(mut body: Body) -> Result<(Body, Option<Arc<[Bytes]>>), BoxError> {
    let mut frames = Vec::new();
    let mut size = 0;
    loop {
        match body.frame().now_or_never() {
            Some(None) => {
                let frames: Arc<[Bytes]> = frames.into();
                return Ok((replayable(Arc::clone(&frames)), Some(frames)));
            }
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    size += data.len();
                    frames.push(data);
                    if size > REPLAY_LIMIT {
                        break;
                    }
                }
                // Trailers in a request (no gRPC client sends them): sent
                // after what came before, not kept.
                Err(trailers) => {
                    let head = frames.into_iter().map(Frame::data).chain([trailers]);
                    return Ok((chained(head, body), None));
                }
            },
            Some(Some(Err(status))) => return Err(Box::new(status)),
            // A stream still producing: sent as it comes, not kept.
            None => break,
        }
    }
    Ok((chained(frames.into_iter().map(Frame::data), body), None))
}

/// A body of `frames`, sent again as often as needed: each send shares
/// them (no copy, no allocation).
fn replayable(frames: Arc<[Bytes]>) -> Body {
    Body::new(Replay { frames, next: 0 })
}

/// The kept request frames, yielded in order.
struct Replay {
    frames: Arc<[Bytes]>,
    next: usize,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let frame = self
            .frames
            .get(self.next)
            .cloned()
            .map(|b| Ok(Frame::data(b)));
        self.next += 1;
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let left = self.frames.get(self.next..).unwrap_or_default();
        http_body::SizeHint::with_exact(left.iter().map(|b| b.len() as u64).sum())
    }
}

/// `head`, then the rest of `rest`.
fn chained(head: impl Iterator<Item = Frame<Bytes>> + Send + 'static, rest: Body) -> Body {
    let head: Vec<Result<Frame<Bytes>, tonic::Status>> = head.map(Ok).collect();
    Body::new(http_body_util::StreamBody::new(
        futures_util::stream::iter(head).chain(http_body_util::BodyStream::new(rest)),
    ))
}

/// Whether `error` is a refused connection: nothing was sent, and the
/// instance is not there.
pub(super) fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Whether `error` says the server never saw the call: the connection was
/// refused, or going away (GOAWAY, also when the client refused to open a
/// stream on it), the stream was refused, or the connection closed before
/// the call was dispatched.
pub(super) fn unseen(error: &(dyn std::error::Error + 'static)) -> bool {
    if refused(error) {
        return true;
    }
    let mut cause = Some(error);
    while let Some(e) = cause {
        // hyper's "canceled": the connection closed before the request
        // was dispatched (what hyper-util's client retries itself).
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
                || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cause = e.source();
    }
    false
}
