//! Work queues: where `plan` puts the pending work and `work` processes claim it.
//!
//! One small blocking trait, [`Queue`], called from plain worker threads, with the
//! semantics of SQS standard queues: a received message becomes invisible to other
//! receivers for a visibility timeout, reappears (its receive count one higher) unless
//! it is deleted or its timeout extended in time, and may be delivered more than once.
//! [`SqsQueue`] is the real one; [`MemQueue`] keeps the same rules in memory for unit
//! tests of the logic above it. [`VisibilityKeeper`] extends a message's timeout from
//! a background thread while a worker holds it.
//!
//! Not here: what the messages say (the callers), command-line options.

mod mem;
mod sqs;

pub use mem::MemQueue;
pub use sqs::SqsQueue;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Most messages one receive returns (SQS's limit per call; [`MemQueue`] keeps it).
pub const MAX_RECEIVE: usize = 10;
/// Longest long-poll wait SQS allows, in seconds.
pub const MAX_WAIT_SECS: u32 = 20;
/// Longest visibility timeout SQS allows, in seconds (12 hours).
pub const MAX_VISIBILITY_SECS: u32 = 43_200;

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The queue's id of the message, the same on every delivery.
    pub id: String,
    /// The handle of this delivery: what [`Queue::extend`] and [`Queue::delete`]
    /// need. Each delivery gets a new one; only the latest is sure to work.
    pub receipt: String,
    /// The body, as sent.
    pub body: String,
    /// How many times the message has been delivered, this time included (1 on the
    /// first delivery).
    pub receive_count: u32,
}

/// A queue of text messages with visibility timeouts, used from plain threads.
pub trait Queue: Send + Sync {
    /// The queue's URL (or a name for one in memory), without credentials.
    fn describe(&self) -> String;
    /// Sends one message.
    fn send(&self, body: &str) -> io::Result<()>;
    /// Sends many messages (SQS: up to 10 per request, so in chunks); an error means
    /// some may have been sent and others not.
    fn send_batch(&self, bodies: &[String]) -> io::Result<()>;
    /// Receives up to `max` messages (at most [`MAX_RECEIVE`]), waiting up to
    /// `wait_secs` (at most [`MAX_WAIT_SECS`]) for the first one; each is invisible to
    /// other receivers for `visibility_secs`. An empty answer means none was visible.
    fn receive(&self, max: usize, wait_secs: u32, visibility_secs: u32)
        -> io::Result<Vec<Message>>;
    /// Makes a received message invisible for `visibility_secs` from now (SQS:
    /// ChangeMessageVisibility). Fails when the receipt is no longer current (the
    /// message was deleted, or its timeout ran out and it was delivered again).
    fn extend(&self, m: &Message, visibility_secs: u32) -> io::Result<()>;
    /// Deletes a received message. With a receipt that is no longer current the
    /// message may stay (SQS does not promise either way).
    fn delete(&self, m: &Message) -> io::Result<()>;
    /// Messages visible now and messages received but not deleted (in flight), as
    /// the queue estimates them (SQS: approximate, and late by up to a minute).
    fn approximate_counts(&self) -> io::Result<(u64, u64)>;
}

/// The checks every receive makes, so both queues answer alike: the limits (see
/// [`check_limits`]), and how many messages to take at most (`None`: none asked for).
fn receivable(max: usize, wait_secs: u32, visibility_secs: u32) -> io::Result<Option<usize>> {
    check_limits(wait_secs, visibility_secs)?;
    Ok(Some(max.min(MAX_RECEIVE)).filter(|&m| m > 0))
}

/// Checks the limits SQS puts on a receive or an extension, so both queues refuse
/// the same values with the same words.
fn check_limits(wait_secs: u32, visibility_secs: u32) -> io::Result<()> {
    if wait_secs > MAX_WAIT_SECS || visibility_secs > MAX_VISIBILITY_SECS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "wait {wait_secs} s / visibility timeout {visibility_secs} s: SQS allows at \
                 most {MAX_WAIT_SECS} s and {MAX_VISIBILITY_SECS} s"
            ),
        ));
    }
    Ok(())
}

/// Keeps one received message invisible while a worker works on it: a background
/// thread extends its visibility timeout to `visibility_secs` every third of it.
/// Dropping the keeper stops the thread (waiting for an extension in flight), after
/// which the message reappears one timeout after the last extension unless deleted.
///
/// A failed extension is logged and counted ([`VisibilityKeeper::failures`]), not
/// fatal: the work is redone harmlessly if the message reappears, and the next
/// extension may still succeed.
pub struct VisibilityKeeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    failures: Arc<AtomicU32>,
}

impl VisibilityKeeper {
    /// Starts extending `m` on `queue` (which the thread keeps a reference to).
    pub fn start<Q: Queue + ?Sized + 'static>(
        queue: Arc<Q>,
        m: Message,
        visibility_secs: u32,
    ) -> io::Result<VisibilityKeeper> {
        check_limits(0, visibility_secs)?;
        if visibility_secs == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a visibility timeout of 0 s cannot be kept",
            ));
        }
        let period = Duration::from_millis(u64::from(visibility_secs) * 1000 / 3);
        let (stop, stopped) = mpsc::channel::<()>();
        let failures = Arc::new(AtomicU32::new(0));
        let count = Arc::clone(&failures);
        let thread = std::thread::Builder::new()
            .name("backfill-keeper".into())
            .spawn(move || {
                // A message on the channel or its sender dropped: stop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    if let Err(e) = queue.extend(&m, visibility_secs) {
                        count.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(queue = %queue.describe(), message = %m.id, error = %e,
                            "could not extend the visibility of a message being worked on; \
                             it may be delivered again (harmless: the work is redone)");
                    }
                }
            })?;
        Ok(VisibilityKeeper {
            stop: Some(stop),
            thread: Some(thread),
            failures,
        })
    }

    /// How many extensions have failed so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Drop for VisibilityKeeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeper_holds_a_message_while_alive_and_lets_go_when_dropped() {
        let q = Arc::new(MemQueue::new("keeper"));
        q.send("x").unwrap();
        let m = q.receive(1, 0, 1).unwrap().pop().unwrap();
        let keeper = VisibilityKeeper::start(Arc::clone(&q), m.clone(), 1).unwrap();
        // Three timeouts of real time: without the keeper it would have come back.
        std::thread::sleep(Duration::from_millis(3000));
        assert!(q.receive(1, 0, 1).unwrap().is_empty());
        assert_eq!(keeper.failures(), 0);
        drop(keeper);
        let again = q.receive(1, 2, 1).unwrap();
        assert_eq!(
            again.len(),
            1,
            "the message reappears after the keeper stops"
        );
        assert_eq!(again[0].receive_count, 2);
    }

    #[test]
    fn keeper_counts_failed_extensions_without_stopping() {
        let q = Arc::new(MemQueue::new("keeper-fail"));
        q.send("x").unwrap();
        let m = q.receive(1, 0, 1).unwrap().pop().unwrap();
        q.delete(&m).unwrap();
        let keeper = VisibilityKeeper::start(Arc::clone(&q), m, 1).unwrap();
        // It keeps trying after a failure: wait for the second, however slow the
        // machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while keeper.failures() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                keeper.failures()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn keeper_refuses_timeouts_sqs_refuses() {
        let q = Arc::new(MemQueue::new("k"));
        let m = Message {
            id: "i".into(),
            receipt: "r".into(),
            body: String::new(),
            receive_count: 1,
        };
        assert!(VisibilityKeeper::start(Arc::clone(&q), m.clone(), 0).is_err());
        assert!(VisibilityKeeper::start(q, m, MAX_VISIBILITY_SECS + 1).is_err());
    }
}
