//! The replayable error output: one JSON line per rejected record, with the original
//! key and value bytes (base64), where they were read, why they were rejected, and the
//! tool and mappings versions that judged them. Lines are written into xz objects
//! under `DEST/_backfill/errors/<job>/`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One rejected record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorRecord {
    /// Source file, relative to the source root.
    pub file: String,
    /// Byte offset of the record (of its block, for block-compressed files; of the
    /// line in the decompressed stream, for compressed text dumps).
    pub offset: u64,
    /// The reject reason (`invalid_json`, …).
    pub reason: String,
    /// What exactly failed.
    pub detail: String,
    /// The original key bytes, base64.
    pub key_b64: String,
    /// The original value bytes, base64.
    pub value_b64: String,
    /// Tool version.
    pub tool_version: String,
    /// Mappings version.
    pub mappings_version: String,
    /// Set for a record of the new store (`reprocess`): its submission day, from
    /// the partition name it was stored under; the key is then its doc id, and the
    /// value its JSON. Absent for legacy records, whose key holds the day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// Set for a live submission (`ingest work`): when it was received (epoch ms);
    /// the key is then its request path (without `/submit/telemetry/`), the value
    /// its body, and `day` the UTC day of receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_ms: Option<u64>,
}

impl ErrorRecord {
    /// Builds a record from raw bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        file: &str,
        offset: u64,
        reason: &str,
        detail: &str,
        key: &[u8],
        value: &[u8],
        mappings_version: &str,
    ) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        ErrorRecord {
            file: file.to_string(),
            offset,
            reason: reason.to_string(),
            detail: detail.to_string(),
            key_b64: b64.encode(key),
            value_b64: b64.encode(value),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            mappings_version: mappings_version.to_string(),
            day: None,
            received_ms: None,
        }
    }

    /// The original key bytes.
    pub fn key(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.key_b64)
    }

    /// The original value bytes.
    pub fn value(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.value_b64)
    }

    /// Appends the JSON line (with `\n`).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("error record serialises");
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_bytes() {
        let r = ErrorRecord::new(
            "a/b",
            7,
            "invalid_key",
            "salt",
            b"\x89\n\0",
            b"\xff\xfe{",
            "sha256:x",
        );
        let mut line = Vec::new();
        r.write_line(&mut line);
        assert_eq!(*line.last().unwrap(), b'\n');
        assert_eq!(line.iter().filter(|&&c| c == b'\n').count(), 1);
        let back: ErrorRecord = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.key().unwrap(), b"\x89\n\0");
        assert_eq!(back.value().unwrap(), b"\xff\xfe{");
    }
}
