//! The streaming upload behind [`Store::create`](crate::store::Store::create) on S3.
//!
//! Bytes are buffered until the multipart threshold; an object that stays below it
//! is one PutObject at commit. Past it, a multipart upload starts and every full
//! part is handed to a task on the store's runtime, so the caller keeps writing
//! while parts go up; at most `parts_in_flight` parts (plus the one being filled)
//! are held in memory, and a writer that gets ahead waits for the oldest to land.
//! Commit sends the last part, waits for all, and completes the upload; until then
//! nothing is visible under the key. Dropping the writer uncommitted, or any
//! failure, cancels the parts in flight and aborts the upload, so its parts do not
//! linger (and cost) in the bucket.

use super::{content_type, Rt, Shared, MAX_PARTS};
use crate::store::ObjectWriter;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use std::io::{self, Write};
use std::sync::Arc;
use tokio::task::JoinSet;

/// A multipart upload in progress.
struct Upload {
    id: String,
    /// Number of the next part to send (parts are numbered from 1).
    next_part: i32,
    in_flight: JoinSet<io::Result<CompletedPart>>,
    done: Vec<CompletedPart>,
}

/// An object being written to S3; see the module docs.
pub(super) struct S3Writer {
    shared: Arc<Shared>,
    rt: Arc<Rt>,
    /// Full key (with the store's prefix).
    key: String,
    buf: BytesMut,
    written: u64,
    upload: Option<Upload>,
    /// The first failure; once set, every later call fails with it.
    failed: Option<(io::ErrorKind, String)>,
}

impl S3Writer {
    pub(super) fn new(shared: Arc<Shared>, rt: Arc<Rt>, key: String) -> Self {
        S3Writer {
            shared,
            rt,
            key,
            buf: BytesMut::new(),
            written: 0,
            upload: None,
            failed: None,
        }
    }

    fn check_failed(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    /// Remembers `e` as the writer's failure and returns it.
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = Some((e.kind(), e.to_string()));
        e
    }

    /// How much to buffer before doing something with it: one byte past the
    /// threshold (to know the object is large) before the upload starts, a part
    /// after.
    fn buffer_limit(&self) -> usize {
        let s = &self.shared;
        match self.upload {
            None => (s.multipart_threshold + 1).max(s.part_size),
            Some(_) => s.part_size,
        }
    }

    fn start_upload(&mut self) -> io::Result<()> {
        let id = self.rt.block_on(create_upload(&self.shared, &self.key))??;
        self.upload = Some(Upload {
            id,
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
        });
        Ok(())
    }

    /// Waits for a part in flight (whichever lands first); false when none is.
    fn wait_one(&mut self) -> io::Result<bool> {
        let up = self.upload.as_mut().expect("upload started");
        let joined = self.rt.block_on(up.in_flight.join_next())?;
        match joined {
            None => Ok(false),
            Some(Ok(Ok(part))) => {
                up.done.push(part);
                Ok(true)
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(io::Error::other(format!(
                "s3 upload of a part of s3://{}/{} (multipart upload id {}): the task failed: {join}",
                self.shared.bucket, self.key, up.id
            ))),
        }
    }

    /// Hands `body` to a task as the next part, after waiting for room.
    fn send_part(&mut self, body: Bytes) -> io::Result<()> {
        while self
            .upload
            .as_ref()
            .expect("upload started")
            .in_flight
            .len()
            >= self.shared.parts_in_flight
        {
            self.wait_one()?;
        }
        let up = self.upload.as_mut().expect("upload started");
        let n = up.next_part;
        if n > MAX_PARTS {
            return Err(io::Error::other(format!(
                "s3 upload of s3://{}/{}: more than {MAX_PARTS} parts of {} bytes; raise --part-size",
                self.shared.bucket, self.key, self.shared.part_size
            )));
        }
        up.next_part += 1;
        let task = upload_part(
            Arc::clone(&self.shared),
            self.key.clone(),
            up.id.clone(),
            n,
            body,
        );
        up.in_flight.spawn_on(task, self.rt.handle());
        Ok(())
    }

    /// Sends every full part in the buffer, starting the upload when the buffer
    /// has grown past the threshold.
    fn ship(&mut self) -> io::Result<()> {
        if self.upload.is_none() && self.buf.len() > self.shared.multipart_threshold {
            self.start_upload()?;
        }
        if self.upload.is_some() {
            while self.buf.len() >= self.shared.part_size {
                let part = self.buf.split_to(self.shared.part_size).freeze();
                self.send_part(part)?;
            }
        }
        Ok(())
    }

    fn complete(&mut self) -> io::Result<u64> {
        let Some(_) = self.upload else {
            let body = std::mem::take(&mut self.buf).freeze();
            self.rt
                .block_on(self.shared.put_object(&self.key, body))??;
            return Ok(self.written);
        };
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf).freeze();
            self.send_part(last)?;
        }
        while self.wait_one()? {}
        let up = self.upload.as_mut().expect("upload started");
        up.done.sort_by_key(|p| p.part_number());
        let parts = std::mem::take(&mut up.done);
        let id = up.id.clone();
        self.rt
            .block_on(complete(&self.shared, &self.key, &id, parts, self.written))??;
        // Completed: nothing to abort any more.
        self.upload = None;
        Ok(self.written)
    }
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check_failed()?;
        if data.is_empty() {
            return Ok(0);
        }
        let room = self.buffer_limit().saturating_sub(self.buf.len());
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        self.ship().map_err(|e| self.fail(e))?;
        Ok(n)
    }

    /// Nothing to do: bytes go up a whole part at a time, and become visible only at
    /// commit.
    fn flush(&mut self) -> io::Result<()> {
        self.check_failed()
    }
}

impl ObjectWriter for S3Writer {
    fn commit(mut self: Box<Self>) -> io::Result<u64> {
        self.check_failed()?;
        // On an error, dropping `self` aborts the upload.
        self.complete().map_err(|e| self.fail(e))
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        let Some(mut up) = self.upload.take() else {
            return;
        };
        // Cancel the parts in flight and wait until they are gone, so that none can
        // land after the abort and leave a part behind.
        up.in_flight.abort_all();
        let shared = Arc::clone(&self.shared);
        let key = std::mem::take(&mut self.key);
        let abort = async move {
            while up.in_flight.join_next().await.is_some() {}
            if let Err(e) = abort_upload(&shared, &key, &up.id).await {
                tracing::warn!(bucket = %shared.bucket, key = %key, upload_id = %up.id, error = %e, "s3 upload abandoned but not aborted; its parts stay in the bucket until a lifecycle rule removes them");
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Dropped on a runtime thread, which must not block: abort in the background.
            self.rt.handle().spawn(abort);
        } else {
            let _ = self.rt.block_on(abort);
        }
    }
}

async fn create_upload(s: &Shared, key: &str) -> io::Result<String> {
    let r = s
        .send(0, || {
            s.client
                .create_multipart_upload()
                .bucket(&s.bucket)
                .key(key)
                .content_type(content_type(key))
                .set_metadata(Some(s.metadata.clone()))
                .set_storage_class(s.storage_class.clone())
                .set_server_side_encryption(s.sse.clone())
                .set_ssekms_key_id(s.sse_kms_key_id.clone())
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .send()
        })
        .await;
    let (out, attempts) = r.map_err(|f| s.error("start of multipart upload of", key, None, f))?;
    let Some(id) = out.upload_id else {
        return Err(io::Error::other(format!(
            "s3 start of multipart upload of s3://{}/{key} at {}: the answer has no upload id",
            s.bucket, s.endpoint
        )));
    };
    if attempts > 1 {
        // A failed attempt may have started an upload whose answer was lost; abort
        // any such upload of this key, or its parts would linger unseen.
        abort_others(s, key, &id).await;
    }
    Ok(id)
}

/// Aborts every multipart upload of exactly `key` except `ours` (best effort).
async fn abort_others(s: &Shared, key: &str, ours: &str) {
    let listed = s
        .send(0, || {
            s.client
                .list_multipart_uploads()
                .bucket(&s.bucket)
                .prefix(key)
                .send()
        })
        .await;
    let uploads = match listed {
        Ok((out, _)) => out.uploads.unwrap_or_default(),
        Err(f) => {
            let e = s.error("listing of multipart uploads of", key, None, f);
            tracing::warn!(error = %e, "s3 could not look for stray uploads");
            return;
        }
    };
    for u in uploads {
        if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
            if k == key && id != ours {
                tracing::debug!(bucket = %s.bucket, key, upload_id = id, "s3 aborting a stray upload left by a retried start");
                if let Err(e) = abort_upload(s, key, id).await {
                    tracing::warn!(error = %e, "s3 could not abort a stray upload");
                }
            }
        }
    }
}

async fn upload_part(
    s: Arc<Shared>,
    key: String,
    upload_id: String,
    n: i32,
    body: Bytes,
) -> io::Result<CompletedPart> {
    let r = s
        .send(body.len() as u64, || {
            s.client
                .upload_part()
                .bucket(&s.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(n)
                .body(ByteStream::from(body.clone()))
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .send()
        })
        .await;
    let (out, _) = r.map_err(|f| {
        s.error(
            &format!("upload of part {n} ({} bytes) of", body.len()),
            &key,
            Some(&upload_id),
            f,
        )
    })?;
    crate::failpoint::hit("multipart-part-uploaded");
    Ok(CompletedPart::builder()
        .part_number(n)
        .set_e_tag(out.e_tag)
        .set_checksum_crc32_c(out.checksum_crc32_c)
        .build())
}

async fn complete(
    s: &Shared,
    key: &str,
    upload_id: &str,
    parts: Vec<CompletedPart>,
    size: u64,
) -> io::Result<()> {
    let n_parts = parts.len();
    let body = CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build();
    let r = s
        .send(0, || {
            s.client
                .complete_multipart_upload()
                .bucket(&s.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(body.clone())
                .send()
        })
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(f) if f.attempts > 1 && f.last.code() == Some("NoSuchUpload") => {
            // An earlier attempt may have completed the upload, and only its answer
            // was lost: then the object is there, with this upload's size and
            // number of parts.
            if completed_earlier(s, key, size, n_parts).await {
                Ok(())
            } else {
                Err(s.error("completion of", key, Some(upload_id), f))
            }
        }
        Err(f) => Err(s.error("completion of", key, Some(upload_id), f)),
    }
}

/// Whether `key` now holds an object of `size` bytes made of `n_parts` parts (a
/// multipart ETag ends in `-N`).
async fn completed_earlier(s: &Shared, key: &str, size: u64, n_parts: usize) -> bool {
    let head = s
        .send(0, || {
            s.client.head_object().bucket(&s.bucket).key(key).send()
        })
        .await;
    match head {
        Ok((h, _)) => {
            let etag_parts = h
                .e_tag()
                .map(|t| t.trim_matches('"'))
                .and_then(|t| t.rsplit_once('-'))
                .and_then(|(_, n)| n.parse::<usize>().ok());
            h.content_length() == Some(size as i64) && etag_parts == Some(n_parts)
        }
        Err(_) => false,
    }
}

async fn abort_upload(s: &Shared, key: &str, upload_id: &str) -> io::Result<()> {
    let r = s
        .send(0, || {
            s.client
                .abort_multipart_upload()
                .bucket(&s.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
        })
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(f) if f.last.is_not_found() => Ok(()),
        Err(f) => Err(s.error("abort of", key, Some(upload_id), f)),
    }
}
