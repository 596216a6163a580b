//! Bounds on what the store asks of the network: a token bucket over bytes uploaded
//! (`--max-write-rate`) and a cap on requests in flight (`--max-requests`, a plain
//! semaphore in the store). The bucket's arithmetic is pure ([`Pace::reserve`]
//! takes the clock as an argument), so it is tested without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket over bytes, kept as the time at which the bucket would be full
/// again (GCRA). A request larger than the bucket is let through once the bucket is
/// full and leaves it in debt, so one big part is never refused, only paced.
#[derive(Debug)]
pub struct Pace {
    bytes_per_sec: f64,
    burst: Duration,
    /// When everything reserved so far has "drained" at the rate.
    drained_at: Option<Instant>,
}

impl Pace {
    /// A bucket that lets `bytes_per_sec` through on average and up to `burst`
    /// worth of bytes at once.
    pub fn new(bytes_per_sec: f64, burst: Duration) -> Self {
        assert!(bytes_per_sec > 0.0, "rate must be positive");
        Pace {
            bytes_per_sec,
            burst,
            drained_at: None,
        }
    }

    /// Reserves `bytes` at `now`; returns how long to wait before sending them.
    pub fn reserve(&mut self, now: Instant, bytes: u64) -> Duration {
        let drained = self.drained_at.map_or(now, |t| t.max(now));
        let wait = drained
            .checked_sub(self.burst)
            .map_or(Duration::ZERO, |start| start.saturating_duration_since(now));
        self.drained_at =
            Some(drained + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec));
        wait
    }
}

/// [`Pace`] shared by every upload of a store.
#[derive(Debug)]
pub struct WriteRate(Mutex<Pace>);

impl WriteRate {
    /// At most `mb_per_sec` megabytes (10^6 bytes) per second, one second of burst.
    pub fn new(mb_per_sec: f64) -> Self {
        WriteRate(Mutex::new(Pace::new(
            mb_per_sec * 1e6,
            Duration::from_secs(1),
        )))
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: u64) {
        let wait = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve(Instant::now(), bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_lets_a_burst_through_then_spaces_requests_at_the_rate() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // 1 MB/s, 1 s of burst.
        let mut p = Pace::new(1e6, Duration::from_secs(1));
        // (offset from t0 in ms, bytes, expected wait in ms)
        let table = [
            (0, 500_000, 0),        // drained at 0.5 s
            (0, 500_000, 0),        // drained at 1.0 s: the burst is used up
            (0, 1_000_000, 0),      // start allowed at 1.0 - 1.0 = 0: drained at 2.0 s
            (0, 1_000, 1000),       // allowed at 2.0 - 1.0 s
            (500, 1_000, 501),      // allowed at 2.001 - 1.0 s
            (10_000, 100, 0),       // idle long enough: no wait
            (10_000, 5_000_000, 0), // larger than the bucket: let through, in debt
            (10_000, 1, 4000),      // the debt must drain first
        ];
        for (i, (at, bytes, want)) in table.into_iter().enumerate() {
            let got = p.reserve(t0 + ms(at), bytes);
            let diff = got.as_secs_f64() * 1000.0 - want as f64;
            assert!(diff.abs() < 2.0, "row {i}: waited {got:?}, want {want} ms");
        }
    }
}
