//! Body wrappers that observe what passes without standing in its way: every frame is
//! passed on as it came, when it came; the observation is a copy on the side.
//!
//! - [`RequestTee`]: a `POST`'s body, fed to the [`ModelScan`] frame by frame.
//! - [`AnswerTee`]: the upstream's answer, its first [`MAX_KEPT`] bytes kept when it is
//!   JSON. When the answer ends (or is dropped before its end: the client went away, the
//!   upstream broke off), one [`Observation`] goes to the [`Observer`], which never waits.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::observe::{Observation, Observer};
use super::scan::ModelScan;
use super::upstream::Answer;

/// The most of an answer kept for observation; a longer answer is passed on whole but
/// not observed (and counted).
pub const MAX_KEPT: usize = 64 * 1024;

/// What the request's scan found, once its body has ended: `Some(None)` is a body that
/// ended without a model.
pub type ModelSlot = Arc<OnceLock<Option<String>>>;

/// A request body passed on unchanged and scanned for its `model`.
#[derive(Debug)]
pub struct RequestTee {
    inner: Incoming,
    scan: Option<Box<ModelScan>>,
    found: ModelSlot,
}

impl RequestTee {
    /// `inner` passed on; scanned when `scan`, the model then set in `found`.
    pub fn new(inner: Incoming, scan: bool, found: ModelSlot) -> RequestTee {
        RequestTee {
            inner,
            scan: scan.then(Box::default),
            found,
        }
    }

    fn finish(&mut self) {
        if let Some(scan) = self.scan.take() {
            let _ = self.found.set(scan.model().map(str::to_owned));
        }
    }
}

impl Body for RequestTee {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(scan), Some(data)) = (self.scan.as_mut(), frame.data_ref()) {
                    scan.feed(data);
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => self.scan = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream's answer passed on unchanged, observed on the side.
#[derive(Debug)]
pub struct AnswerTee {
    inner: Answer<RequestTee>,
    /// The answer so far, while it is JSON and within [`MAX_KEPT`].
    kept: Option<BytesMut>,
    /// Sent once, at the end or on drop.
    pending: Option<(Observation, ModelSlot)>,
    observer: Arc<Observer>,
}

impl AnswerTee {
    /// `keep`: the answer is JSON, worth keeping.
    pub fn new(
        inner: Answer<RequestTee>,
        keep: bool,
        observation: Observation,
        model: ModelSlot,
        observer: Arc<Observer>,
    ) -> AnswerTee {
        let kept = keep.then(BytesMut::new);
        let mut tee = AnswerTee {
            inner,
            kept,
            pending: Some((observation, model)),
            observer,
        };
        // An empty body may never be polled: observed now.
        if tee.inner.is_end_stream() {
            tee.finish(true);
        }
        tee
    }

    fn keep(&mut self, data: &Bytes) {
        let Some(kept) = self.kept.as_mut() else {
            return;
        };
        if kept.len() + data.len() > MAX_KEPT {
            self.kept = None;
            self.observer.too_large();
        } else {
            kept.extend_from_slice(data);
        }
    }

    /// Sends the observation (once), with the answer when it came whole.
    fn finish(&mut self, whole: bool) {
        let Some((mut observation, model)) = self.pending.take() else {
            return;
        };
        observation.model = model.get().cloned().flatten();
        observation.answer = self.kept.take().filter(|_| whole).map(BytesMut::freeze);
        self.observer.send(observation);
    }
}

impl Body for AnswerTee {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.keep(data);
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AnswerTee {
    fn drop(&mut self) {
        // Dropped before its end: counted, its body not observed.
        self.finish(false);
    }
}
