//! Transparent retry of calls the server never saw: a draining server's
//! GOAWAY (or a refused stream, or a connection closed before dispatch)
//! turns a call away unseen, and it is sent once more whatever its method.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::body::Body;

use super::{BoxError, Shared, attempt};

/// The most request body kept to send a call again that the server
/// refused unseen.
const REPLAY_LIMIT: usize = 64 * 1024;

/// Sends a call once — and once more if the server turned its stream away
/// unseen (the connection was going away: GOAWAY, REFUSED_STREAM), which
/// any method may, as gRPC's transparent retry does. Such refusals come
/// with deploys: an instance that starts draining sends GOAWAY while
/// clients still hold its connection. The request body is kept for that
/// up to [`REPLAY_LIMIT`], as shared frames (no copy).
pub(super) async fn once(
    inner: &tonic::transport::Channel,
    shared: &Arc<Shared>,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, BoxError> {
    let (parts, body) = req.into_parts();
    let kept = Arc::new(std::sync::Mutex::new(Kept::default()));
    let teed = Body::new(Teed {
        inner: body,
        kept: Arc::clone(&kept),
    });
    let first = attempt(
        inner,
        shared,
        http::Request::from_parts(parts.clone(), teed),
    )
    .await;
    let Err(e) = &first else { return first };
    if !unseen(e.as_ref()) {
        return first;
    }
    let replay = {
        let kept = kept.lock().unwrap_or_else(|p| p.into_inner());
        (kept.complete && !kept.overflow).then(|| kept.frames.clone())
    };
    let Some(frames) = replay else { return first };
    tracing::debug!(path = %parts.uri.path(), "the server turned the call away unseen; sending it again");
    let body = futures_util::stream::iter(
        frames
            .into_iter()
            .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b))),
    );
    let req = http::Request::from_parts(parts, Body::new(http_body_util::StreamBody::new(body)));
    attempt(inner, shared, req).await
}

/// Whether `error` says the server never saw the call: the connection was
/// going away (GOAWAY, also when the client refused to open a stream on
/// it), the stream was refused, or the connection closed before the call
/// was dispatched.
fn unseen(error: &(dyn std::error::Error + 'static)) -> bool {
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

/// The request frames sent so far, to send again.
#[derive(Default)]
struct Kept {
    frames: Vec<Bytes>,
    size: usize,
    complete: bool,
    overflow: bool,
}

/// A request body that keeps (shares) the data frames it yields.
struct Teed {
    inner: Body,
    kept: Arc<std::sync::Mutex<Kept>>,
}

impl http_body::Body for Teed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) if !kept.overflow => {
                    kept.size += data.len();
                    if kept.size > REPLAY_LIMIT {
                        kept.overflow = true;
                        kept.frames = Vec::new();
                    } else {
                        kept.frames.push(data.clone());
                    }
                }
                Some(_) => {}
                // Trailers in a request: not replayed.
                None => kept.overflow = true,
            },
            Poll::Ready(None) => kept.complete = true,
            _ => {}
        }
        drop(kept);
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            // hyper may stop polling once the body says it has ended.
            self.kept.lock().unwrap_or_else(|p| p.into_inner()).complete = true;
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
