//! The SQS queue against moto's SQS (started by `scripts/test-servers.sh --sqs`): SQS
//! has no real local counterpart, and moto keeps its rules that matter here
//! (visibility timeouts, ChangeMessageVisibility, receive counts). Every request is
//! signed and sent over HTTP by aws-sdk-sqs. Timeouts are 1-3 s to keep it quick.

use backfill::queue::{Message, Queue, SqsQueue, VisibilityKeeper};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub(crate) fn endpoint() -> String {
    std::env::var("BACKFILL_TEST_SQS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "BACKFILL_TEST_SQS_ENDPOINT is not set: the SQS tests need the moto test server. \
             Run them through `scripts/test-servers.sh --sqs -- cargo test --test tests sqs`"
        )
    })
}

/// An AWS configuration for moto: its endpoint, and credentials of our own (moto
/// takes any; the environment may have none when only SQS was started).
fn config() -> aws_config::SdkConfig {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint())
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "backfilltest",
                "backfill-test-secret",
                None,
                None,
                "tests",
            ))
            .load(),
    )
}

/// A new, empty queue of its own for one test.
pub(crate) fn new_queue(test: &str) -> Arc<SqsQueue> {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "backfill-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let config = config();
    let url = SqsQueue::create_with_sdk_config(&name, &config).unwrap();
    assert!(url.ends_with(&name), "{url}");
    Arc::new(SqsQueue::with_sdk_config(&url, &config).unwrap())
}

fn one(q: &SqsQueue, wait: u32, visibility: u32) -> Option<Message> {
    let mut got = q.receive(1, wait, visibility).unwrap();
    assert!(got.len() <= 1);
    got.pop()
}

#[test]
fn send_receive_delete_round_trip() {
    let q = new_queue("round-trip");
    assert_eq!(q.describe(), q.url());
    q.send("hello {\"unit\": 1}").unwrap();
    let m = one(&q, 5, 30).expect("the message sent");
    assert_eq!(m.body, "hello {\"unit\": 1}");
    assert_eq!(m.receive_count, 1);
    assert!(!m.id.is_empty() && !m.receipt.is_empty());
    q.delete(&m).unwrap();
    assert!(q.receive(10, 1, 30).unwrap().is_empty(), "deleted");
    assert_eq!(q.approximate_counts().unwrap(), (0, 0));
    q.delete_queue().unwrap();
}

#[test]
fn a_batch_of_25_arrives_whole() {
    let q = new_queue("batch");
    let bodies: Vec<String> = (0..25).map(|i| format!("unit {i}")).collect();
    q.send_batch(&bodies).unwrap();
    assert_eq!(q.approximate_counts().unwrap(), (25, 0));
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 25 && Instant::now() < deadline {
        let ms = q.receive(25, 1, 60).unwrap();
        assert!(ms.len() <= 10, "SQS gives at most 10 per receive");
        for m in ms {
            assert_eq!(m.receive_count, 1);
            assert!(got.insert(m.body.clone()), "{} delivered twice", m.body);
            q.delete(&m).unwrap();
        }
    }
    assert_eq!(got, bodies.into_iter().collect::<BTreeSet<_>>());
    q.delete_queue().unwrap();
}

#[test]
fn an_unextended_message_reappears_after_its_timeout() {
    let q = new_queue("reappear");
    q.send("x").unwrap();
    let first = one(&q, 5, 1).unwrap();
    assert!(one(&q, 0, 1).is_none(), "invisible while its timeout runs");
    let t = Instant::now();
    let again = one(&q, 5, 30).expect("back after 1 s");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(again.id, first.id);
    assert_eq!(again.body, "x");
    assert_eq!(again.receive_count, 2);
    assert_ne!(again.receipt, first.receipt, "a new receipt per delivery");
    q.delete(&again).unwrap();
    q.delete_queue().unwrap();
}

#[test]
fn extend_keeps_a_message_invisible_past_its_first_timeout() {
    let q = new_queue("extend");
    q.send("x").unwrap();
    let t0 = Instant::now();
    let m = one(&q, 5, 1).unwrap();
    sleep(Duration::from_millis(500));
    q.extend(&m, 3).unwrap();
    // 2 s after the receive: twice the first timeout, within the extension.
    sleep(Duration::from_millis(1500));
    assert!(one(&q, 0, 1).is_none(), "extended to 3 s at 0.5 s");
    let again = one(&q, 5, 30).expect("back once the extension ran out");
    assert!(
        t0.elapsed() >= Duration::from_millis(3400),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!((again.id.as_str(), again.receive_count), (m.id.as_str(), 2));
    q.delete(&again).unwrap();
    q.delete_queue().unwrap();
}

#[test]
fn a_keeper_holds_a_message_for_three_timeouts_then_lets_go() {
    let q = new_queue("keeper");
    q.send("held").unwrap();
    let m = one(&q, 5, 1).unwrap();
    let keeper = VisibilityKeeper::start(Arc::clone(&q), m.clone(), 1).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        assert!(
            one(&q, 0, 1).is_none(),
            "delivered again {:?} after the receive, while held",
            t0.elapsed()
        );
        sleep(Duration::from_millis(250));
    }
    assert_eq!(keeper.failures(), 0);
    drop(keeper);
    let again = one(&q, 5, 30).expect("back once the keeper stopped");
    assert_eq!((again.id.as_str(), again.receive_count), (m.id.as_str(), 2));
    q.delete(&again).unwrap();
    q.delete_queue().unwrap();
}

#[test]
fn approximate_counts_see_visible_and_in_flight() {
    let q = new_queue("counts");
    q.send_batch(&["a".into(), "b".into(), "c".into()]).unwrap();
    assert_eq!(q.approximate_counts().unwrap(), (3, 0));
    let m = one(&q, 5, 60).unwrap();
    assert_eq!(q.approximate_counts().unwrap(), (2, 1));
    q.delete(&m).unwrap();
    assert_eq!(q.approximate_counts().unwrap(), (2, 0));
    q.delete_queue().unwrap();
}

#[test]
fn creating_a_queue_twice_gives_the_same_url() {
    let q = new_queue("create");
    let name = q.url().rsplit('/').next().unwrap().to_owned();
    let again = SqsQueue::create_with_sdk_config(&name, &config()).unwrap();
    assert_eq!(again, q.url());
    q.delete_queue().unwrap();
}

#[test]
fn errors_name_the_action_and_the_queue() {
    let url = format!("{}/123456789012/backfill-no-such-queue", endpoint());
    let q = SqsQueue::with_sdk_config(&url, &config()).unwrap();
    let t = Instant::now();
    for (action, e) in [
        ("SendMessage", q.send("x").unwrap_err()),
        ("ReceiveMessage", q.receive(1, 0, 1).unwrap_err()),
        ("GetQueueAttributes", q.approximate_counts().unwrap_err()),
    ] {
        let msg = e.to_string();
        assert!(msg.contains(action) && msg.contains(&url), "{msg}");
        assert!(
            msg.contains("1 attempt"),
            "a missing queue is not retried: {msg}"
        );
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{msg}");
        assert!(!msg.contains("backfill-test-secret"), "{msg}");
    }
    assert!(t.elapsed() < Duration::from_secs(5));
}
