//! `serve --queue URL --incoming s3://…`: finished raw logs leave the machine. A
//! forwarder thread claims each file of the spool's `ready/` (like a local worker
//! would), uploads it to the incoming prefix, sends one SQS message naming it, and
//! only then removes it from the spool. A crash in between leaves the claim, which
//! comes back after its TTL and is sent again: a message may be sent twice, which
//! the workers make harmless (a committed file is never processed twice).

use backfill::ingest::work::{IncomingFile, MESSAGE_FORMAT};
use backfill::ingest::Spool;
use backfill::queue::Queue;
use backfill::store::Store;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where finished raw logs go.
pub struct Forward {
    /// The incoming prefix.
    pub incoming: Box<dyn Store>,
    /// The queue workers claim from.
    pub queue: Arc<dyn Queue>,
}

impl Forward {
    /// Sends every ready file of the spool; returns how many.
    pub fn pass(&self, spool: &Spool) -> io::Result<usize> {
        spool.release_stale()?;
        let mut n = 0;
        while let Some(name) = spool.claim()? {
            let path = spool.root().join(backfill::ingest::CLAIMED).join(&name);
            let mut w = self.incoming.create(&name)?;
            io::copy(&mut std::fs::File::open(&path)?, &mut w)?;
            w.commit()?;
            let body = serde_json::to_string(&IncomingFile {
                format: MESSAGE_FORMAT.into(),
                key: name.clone(),
            })
            .map_err(io::Error::other)?;
            self.queue.send(&body)?;
            spool.done(&name)?;
            n += 1;
        }
        Ok(n)
    }

    /// Runs passes every `every` until `stop`, then one last pass (the file handed
    /// over at shutdown).
    pub fn run(&self, spool: &Spool, every: Duration, stop: &AtomicBool) {
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if let Err(e) = self.pass(spool) {
                eprintln!(
                    "ingest: forwarding raw logs to {} failed: {e}; retrying",
                    self.incoming.describe()
                );
            }
            if stopping {
                return;
            }
            std::thread::sleep(every);
        }
    }
}
