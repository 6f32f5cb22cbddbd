//! Load behaviour of one service: keepstore's request limiter, and the
//! in-flight count that the queue latency grows with.
//!
//! keepstore runs behind `httpserver.RequestLimiter` (Arvados
//! `sdk/go/httpserver/request_limiter.go`, set up for every service by
//! `lib/service/cmd.go`): at most `API.MaxConcurrentRequests` requests are
//! handled at once; beyond that up to `API.MaxQueuedRequests` wait in a queue
//! (FIFO among equal priorities), the newest arrival is answered 503 when the
//! queue is full (at once if the queue size is 0), and a queued request whose
//! deadline passes (`API.RequestTimeout`) is answered 503 too. A request holds
//! its slot until its handler returns, that is until its answer's body has
//! been written.
//!
//! [`Limiter`] is the same with `Faults::max_concurrent`, `max_queued` and
//! `queue_timeout_ms`: a [`Permit`] is a slot, released when dropped (the
//! server ties it to the answer's body, see [`hold`]). With
//! `max_concurrent == 0` nothing is limited, but requests in flight are still
//! counted (for `Faults::queue_latency_us` and the counters).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use tokio::sync::oneshot;

use super::server::{lock, Body};

#[derive(Default)]
struct State {
    /// 0 = unlimited.
    max_concurrent: usize,
    max_queued: usize,
    /// Requests holding a slot (in flight).
    handling: usize,
    /// Highest `handling` since the last `reset_peak`.
    peak: usize,
    /// Waiting requests, oldest first.
    queue: VecDeque<(u64, oneshot::Sender<Permit>)>,
    next_id: u64,
}

/// The request limiter of one service.
#[derive(Default)]
pub(crate) struct Limiter {
    state: Mutex<State>,
}

/// A slot: the request holding it is in flight until it is dropped.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    /// Requests in flight at this service when this one was admitted,
    /// itself included.
    in_flight: usize,
    armed: bool,
}

impl Permit {
    /// Requests in flight when this one was admitted, itself included.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed {
            self.limiter.release();
        }
    }
}

/// What became of a request at the limiter.
pub(crate) enum Admission {
    /// Handle it; `queued` if it had to wait for its slot.
    Admitted { permit: Permit, queued: bool },
    /// Answer 503: at the limit with a full queue, or waited too long.
    Refused,
}

/// A place in the queue; leaving it (the request is answered or abandoned)
/// removes the entry if it is still waiting.
struct Ticket<'a> {
    limiter: &'a Limiter,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        lock(&self.limiter.state)
            .queue
            .retain(|(id, _)| *id != self.id);
    }
}

impl Limiter {
    /// Set the limits (0 = unlimited, 0 = no queue). Raising the limit
    /// admits waiting requests; shrinking the queue refuses its newest.
    pub fn configure(self: &Arc<Self>, max_concurrent: usize, max_queued: usize) {
        let mut s = lock(&self.state);
        s.max_concurrent = max_concurrent;
        s.max_queued = max_queued;
        self.run_queue(&mut s);
        // Dropping a waiter's sender answers it "refused".
        let keep = s.max_queued;
        s.queue.truncate(keep);
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        lock(&self.state).handling
    }

    /// Requests waiting in the queue now.
    pub fn waiting(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// Most requests in flight at once since the last `reset_peak`.
    pub fn peak(&self) -> usize {
        lock(&self.state).peak
    }

    /// Start the peak again from the requests in flight now.
    pub fn reset_peak(&self) {
        let mut s = lock(&self.state);
        s.peak = s.handling;
    }

    /// Take a slot now, or wait in the queue for one (at most
    /// `queue_timeout`, zero = no limit), or be refused.
    pub async fn admit(self: &Arc<Self>, queue_timeout: Duration) -> Admission {
        let (id, mut rx) = {
            let mut s = lock(&self.state);
            if s.max_concurrent == 0 || s.handling < s.max_concurrent {
                return Admission::Admitted {
                    permit: self.grant(&mut s),
                    queued: false,
                };
            }
            // keepstore queues the newcomer, then refuses the lowest
            // priority, latest arrival: with equal priorities, the newcomer.
            if s.queue.len() >= s.max_queued {
                return Admission::Refused;
            }
            let id = s.next_id;
            s.next_id += 1;
            let (tx, rx) = oneshot::channel();
            s.queue.push_back((id, tx));
            (id, rx)
        };
        let _ticket = Ticket { limiter: self, id };
        let got = if queue_timeout.is_zero() {
            (&mut rx).await.ok()
        } else {
            match tokio::time::timeout(queue_timeout, &mut rx).await {
                Ok(r) => r.ok(),
                // Timed out; a slot may have been granted meanwhile.
                Err(_) => {
                    lock(&self.state).queue.retain(|(i, _)| *i != id);
                    rx.try_recv().ok()
                }
            }
        };
        match got {
            Some(permit) => Admission::Admitted {
                permit,
                queued: true,
            },
            None => Admission::Refused,
        }
    }

    fn grant(self: &Arc<Self>, s: &mut State) -> Permit {
        s.handling += 1;
        s.peak = s.peak.max(s.handling);
        Permit {
            limiter: self.clone(),
            in_flight: s.handling,
            armed: true,
        }
    }

    fn release(self: &Arc<Self>) {
        let mut s = lock(&self.state);
        s.handling = s.handling.saturating_sub(1);
        self.run_queue(&mut s);
    }

    /// Hand free slots to the oldest waiters.
    fn run_queue(self: &Arc<Self>, s: &mut State) {
        while s.max_concurrent == 0 || s.handling < s.max_concurrent {
            let Some((_, tx)) = s.queue.pop_front() else {
                break;
            };
            let permit = self.grant(s);
            if let Err(mut p) = tx.send(permit) {
                // The waiter is gone: take the slot back (without locking
                // again, as dropping an armed permit would).
                p.armed = false;
                s.handling -= 1;
            }
        }
    }
}

/// A response body that holds its request's slot until it is sent (or
/// dropped), as keepstore's handler holds it until the body is written.
struct Held {
    body: Body,
    _permit: Permit,
}

/// `body`, holding `permit` until it is sent or dropped.
pub(crate) fn hold(body: Body, permit: Permit) -> Body {
    Held {
        body,
        _permit: permit,
    }
    .boxed_unsync()
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: Admission) -> Permit {
        match a {
            Admission::Admitted { permit, .. } => permit,
            Admission::Refused => panic!("refused"),
        }
    }

    #[tokio::test]
    async fn unlimited_counts_in_flight() {
        let l = Arc::new(Limiter::default());
        let a = admitted(l.admit(Duration::ZERO).await);
        let b = admitted(l.admit(Duration::ZERO).await);
        assert_eq!((a.in_flight(), b.in_flight(), l.in_flight()), (1, 2, 2));
        drop(a);
        assert_eq!((l.in_flight(), l.peak()), (1, 2));
        l.reset_peak();
        assert_eq!(l.peak(), 1);
    }

    #[tokio::test]
    async fn limit_queue_fifo_and_refusal() {
        let l = Arc::new(Limiter::default());
        l.configure(1, 1);
        let a = admitted(l.admit(Duration::ZERO).await);
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.admit(Duration::ZERO).await });
        while lock(&l.state).queue.is_empty() {
            tokio::task::yield_now().await;
        }
        // The queue (size 1) is full: the newcomer is refused at once.
        assert!(matches!(l.admit(Duration::ZERO).await, Admission::Refused));
        drop(a);
        match waiter.await.unwrap() {
            Admission::Admitted { permit, queued } => {
                assert!(queued);
                assert_eq!(permit.in_flight(), 1);
            }
            Admission::Refused => panic!("the waiter was refused"),
        }
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_timeout_refuses_and_abandoned_waiters_leave() {
        let l = Arc::new(Limiter::default());
        l.configure(1, 4);
        let a = admitted(l.admit(Duration::ZERO).await);
        assert!(matches!(
            l.admit(Duration::from_millis(100)).await,
            Admission::Refused
        ));
        assert!(lock(&l.state).queue.is_empty());
        // An abandoned wait leaves the queue; the slot goes to nobody.
        let fut = l.admit(Duration::ZERO);
        let _ = tokio::time::timeout(Duration::from_millis(10), fut).await;
        assert!(lock(&l.state).queue.is_empty());
        drop(a);
        assert_eq!(l.in_flight(), 0);
        // Lifting the limit admits waiters.
        let a = admitted(l.admit(Duration::ZERO).await);
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.admit(Duration::ZERO).await });
        while lock(&l.state).queue.is_empty() {
            tokio::task::yield_now().await;
        }
        l.configure(0, 0);
        assert!(matches!(
            waiter.await.unwrap(),
            Admission::Admitted { queued: true, .. }
        ));
        drop(a);
        assert_eq!(l.in_flight(), 0);
    }
}
