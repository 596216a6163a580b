//! A queue in memory with the rules of an SQS standard queue that callers can
//! observe: visibility timeouts, receive counts, a new receipt per delivery, long
//! polls, at most 10 messages per receive. For unit tests of the logic that uses a
//! [`Queue`]; its clock can be moved forward ([`MemQueue::advance`]) so that
//! timeouts run out without sleeping.
//!
//! Stricter than SQS where SQS makes no promise: messages come out in the order
//! sent (among the visible ones), and a delete with a receipt that is no longer
//! current (the message was delivered again since) leaves the message in place.

use super::{check_limits, Message, Queue};
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct Entry {
    id: String,
    body: String,
    receive_count: u32,
    /// Receipt of the latest delivery (empty before the first).
    receipt: String,
    /// When it is visible again (`None`: never received, visible).
    invisible_until: Option<Instant>,
}

struct State {
    messages: Vec<Entry>,
    next_id: u64,
    /// How far [`MemQueue::advance`] has moved the clock.
    skew: Duration,
}

/// An in-memory [`Queue`]. See the module documentation for its rules.
pub struct MemQueue {
    name: String,
    state: Mutex<State>,
    /// Signalled on every send and clock move, for long polls.
    changed: Condvar,
}

impl MemQueue {
    /// An empty queue; `name` is what [`Queue::describe`] shows.
    pub fn new(name: &str) -> MemQueue {
        MemQueue {
            name: name.to_owned(),
            state: Mutex::new(State {
                messages: Vec::new(),
                next_id: 0,
                skew: Duration::ZERO,
            }),
            changed: Condvar::new(),
        }
    }

    /// Moves the queue's clock forward by `d`: visibility timeouts run out as if
    /// that much time had passed.
    pub fn advance(&self, d: Duration) {
        self.lock().skew += d;
        self.changed.notify_all();
    }

    /// Every message not deleted, visible or not, as (id, body, receive count), in
    /// the order sent: for assertions.
    pub fn snapshot(&self) -> Vec<(String, String, u32)> {
        self.lock()
            .messages
            .iter()
            .map(|e| (e.id.clone(), e.body.clone(), e.receive_count))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data (every
        // change is one assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find<'a>(&self, st: &'a mut State, m: &Message) -> io::Result<&'a mut Entry> {
        let now = Instant::now() + st.skew;
        st.messages
            .iter_mut()
            .find(|e| e.id == m.id && e.receipt == m.receipt)
            .filter(|e| e.invisible_until.is_some_and(|t| t > now))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "queue {}: message {} with receipt {} is not in flight (deleted, or \
                         its visibility timeout ran out)",
                        self.name, m.id, m.receipt
                    ),
                )
            })
    }
}

fn visible(e: &Entry, now: Instant) -> bool {
    e.invisible_until.is_none_or(|t| t <= now)
}

impl Queue for MemQueue {
    fn describe(&self) -> String {
        format!("mem:{}", self.name)
    }

    fn send(&self, body: &str) -> io::Result<()> {
        let mut st = self.lock();
        st.next_id += 1;
        let id = format!("m{}", st.next_id);
        st.messages.push(Entry {
            id,
            body: body.to_owned(),
            receive_count: 0,
            receipt: String::new(),
            invisible_until: None,
        });
        drop(st);
        self.changed.notify_all();
        Ok(())
    }

    fn send_batch(&self, bodies: &[String]) -> io::Result<()> {
        bodies.iter().try_for_each(|b| self.send(b))
    }

    fn receive(
        &self,
        max: usize,
        wait_secs: u32,
        visibility_secs: u32,
    ) -> io::Result<Vec<Message>> {
        let Some(max) = super::receivable(max, wait_secs, visibility_secs)? else {
            return Ok(Vec::new());
        };
        // The wait is in real time; the skew only moves timeouts.
        let deadline = Instant::now() + Duration::from_secs(u64::from(wait_secs));
        let mut st = self.lock();
        loop {
            let now = Instant::now() + st.skew;
            let mut out = Vec::new();
            let st_ref = &mut *st;
            for e in st_ref.messages.iter_mut().filter(|e| visible(e, now)) {
                if out.len() == max {
                    break;
                }
                st_ref.next_id += 1;
                e.receipt = format!("r{}-{}", st_ref.next_id, e.id);
                e.receive_count += 1;
                e.invisible_until = Some(now + Duration::from_secs(u64::from(visibility_secs)));
                out.push(Message {
                    id: e.id.clone(),
                    receipt: e.receipt.clone(),
                    body: e.body.clone(),
                    receive_count: e.receive_count,
                });
            }
            let real_now = Instant::now();
            if !out.is_empty() || real_now >= deadline {
                return Ok(out);
            }
            // Wake for a send, a clock move, the next timeout to run out, or the end.
            let next_visible = st
                .messages
                .iter()
                .filter_map(|e| e.invisible_until)
                .map(|t| t.saturating_duration_since(now))
                .min();
            let mut wait = deadline - real_now;
            if let Some(n) = next_visible {
                wait = wait.min(n.max(Duration::from_millis(1)));
            }
            st = self
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn extend(&self, m: &Message, visibility_secs: u32) -> io::Result<()> {
        check_limits(0, visibility_secs)?;
        let mut st = self.lock();
        let now = Instant::now() + st.skew;
        let e = self.find(&mut st, m)?;
        e.invisible_until = Some(now + Duration::from_secs(u64::from(visibility_secs)));
        drop(st);
        // A timeout of 0 makes it visible at once: wake the long polls.
        self.changed.notify_all();
        Ok(())
    }

    fn delete(&self, m: &Message) -> io::Result<()> {
        let mut st = self.lock();
        // SQS accepts a stale receipt without promising a delete; here it never deletes.
        st.messages
            .retain(|e| !(e.id == m.id && e.receipt == m.receipt));
        Ok(())
    }

    fn approximate_counts(&self) -> io::Result<(u64, u64)> {
        let st = self.lock();
        let now = Instant::now() + st.skew;
        let visible = st.messages.iter().filter(|e| visible(e, now)).count() as u64;
        Ok((visible, st.messages.len() as u64 - visible))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(ms: &[Message]) -> Vec<&str> {
        ms.iter().map(|m| m.body.as_str()).collect()
    }

    #[test]
    fn send_receive_delete() {
        let q = MemQueue::new("t");
        q.send("a").unwrap();
        q.send_batch(&["b".into(), "c".into()]).unwrap();
        assert_eq!(q.approximate_counts().unwrap(), (3, 0));
        let got = q.receive(2, 0, 30).unwrap();
        assert_eq!(bodies(&got), ["a", "b"]);
        assert!(got.iter().all(|m| m.receive_count == 1));
        assert_eq!(q.approximate_counts().unwrap(), (1, 2));
        for m in &got {
            q.delete(m).unwrap();
        }
        assert_eq!(q.approximate_counts().unwrap(), (1, 0));
        let last = q.receive(10, 0, 30).unwrap();
        assert_eq!(bodies(&last), ["c"]);
        q.delete(&last[0]).unwrap();
        assert_eq!(q.approximate_counts().unwrap(), (0, 0));
        assert!(q.receive(10, 0, 30).unwrap().is_empty());
    }

    #[test]
    fn at_most_ten_per_receive() {
        let q = MemQueue::new("t");
        let all: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        q.send_batch(&all).unwrap();
        assert_eq!(q.receive(100, 0, 30).unwrap().len(), 10);
        assert_eq!(q.receive(0, 0, 30).unwrap().len(), 0);
        assert_eq!(q.approximate_counts().unwrap(), (15, 10));
    }

    #[test]
    fn an_unextended_message_reappears_with_a_new_receipt() {
        let q = MemQueue::new("t");
        q.send("a").unwrap();
        let first = q.receive(1, 0, 10).unwrap().pop().unwrap();
        q.advance(Duration::from_secs(9));
        assert!(q.receive(1, 0, 10).unwrap().is_empty());
        q.advance(Duration::from_secs(1));
        let second = q.receive(1, 0, 10).unwrap().pop().unwrap();
        assert_eq!(
            (second.id.as_str(), second.receive_count),
            (first.id.as_str(), 2)
        );
        assert_ne!(second.receipt, first.receipt);
        // The old receipt is stale: it can neither extend nor delete.
        assert_eq!(
            q.extend(&first, 10).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        q.delete(&first).unwrap();
        assert_eq!(q.snapshot().len(), 1);
        q.delete(&second).unwrap();
        assert!(q.snapshot().is_empty());
    }

    #[test]
    fn extend_moves_the_timeout_from_now() {
        let q = MemQueue::new("t");
        q.send("a").unwrap();
        let m = q.receive(1, 0, 10).unwrap().pop().unwrap();
        q.advance(Duration::from_secs(8));
        q.extend(&m, 10).unwrap();
        q.advance(Duration::from_secs(8));
        assert!(
            q.receive(1, 0, 10).unwrap().is_empty(),
            "16 s after receive, extended at 8"
        );
        q.advance(Duration::from_secs(2));
        assert_eq!(q.receive(1, 0, 10).unwrap()[0].receive_count, 2);
    }

    #[test]
    fn extend_to_zero_releases_and_deleted_messages_cannot_be_extended() {
        let q = MemQueue::new("t");
        q.send("a").unwrap();
        let m = q.receive(1, 0, 10).unwrap().pop().unwrap();
        q.extend(&m, 0).unwrap();
        let again = q.receive(1, 0, 10).unwrap().pop().unwrap();
        q.delete(&again).unwrap();
        assert!(q.extend(&again, 10).is_err());
    }

    #[test]
    fn long_poll_wakes_on_send_and_on_timeout_running_out() {
        let q = std::sync::Arc::new(MemQueue::new("t"));
        let q2 = std::sync::Arc::clone(&q);
        let t0 = Instant::now();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            q2.send("late").unwrap();
        });
        let got = q.receive(1, 5, 1).unwrap();
        sender.join().unwrap();
        assert_eq!(bodies(&got), ["late"]);
        assert!(t0.elapsed() < Duration::from_secs(2));
        // Its 1 s timeout runs out during the next long poll, which then returns it.
        let again = q.receive(1, 5, 1).unwrap();
        assert_eq!(again[0].receive_count, 2);
        let t1 = Instant::now();
        assert!(q.receive(1, 0, 1).unwrap().is_empty());
        assert!(
            t1.elapsed() < Duration::from_millis(100),
            "wait 0 returns at once"
        );
    }

    #[test]
    fn limits_are_those_of_sqs() {
        let q = MemQueue::new("t");
        assert!(q.receive(1, 21, 30).is_err());
        assert!(q.receive(1, 0, 43_201).is_err());
    }
}
