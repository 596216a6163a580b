//! Compressed bytes: submission bodies and whole-file containers.
//!
//! This module owns two decisions. For one payload body: inflate it when it starts
//! with the gzip magic (several members, trailing zero padding as Python's gzip
//! allowed), else take it as it is, never inflating past a limit. For a whole file:
//! tell from its first bytes which container it is (SequenceFile, gzip, xz, bzip2,
//! LZMA-alone, or plain) and wrap a reader that undoes the compression. What the
//! bytes mean (JSON, records) is for the callers.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read};

/// First bytes of a gzip member.
pub const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// First bytes of an xz stream.
pub const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
/// First bytes of a bzip2 stream (a block-size digit follows).
pub const BZIP2_MAGIC: &[u8] = b"BZh";
/// Bytes [`sniff`] wants to see to tell every container apart.
pub const SNIFF_LEN: usize = 13;
/// Default cap on an inflated body: larger is treated as a gzip bomb.
pub const DEFAULT_MAX_BODY: usize = 256 << 20;
/// Memory the xz and LZMA decoders may use; a corrupt dictionary size asking for
/// more fails instead of allocating (xz -9 needs about 65 MiB).
pub const DECODER_MEMLIMIT: u64 = 256 << 20;

/// Errors decoding a body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body starts with the gzip magic but does not inflate.
    #[error("gzip body does not inflate at offset {offset}: {message}")]
    Gzip {
        /// Offset in the compressed body where inflating stopped.
        offset: u64,
        /// What the decompressor said.
        message: String,
    },
    /// The body inflates past the limit.
    #[error("gzip body inflates past {limit} bytes at offset {offset}")]
    TooLarge {
        /// Offset in the compressed body reached when the limit was passed.
        offset: u64,
        /// The limit in force.
        limit: usize,
    },
}

/// [`decode_body_limited`] with [`DEFAULT_MAX_BODY`].
pub fn decode_body(bytes: &[u8]) -> Result<Cow<'_, [u8]>, BodyError> {
    decode_body_limited(bytes, DEFAULT_MAX_BODY)
}

/// Inflates a gzipped body (one or more members, optionally followed by zero
/// padding), refusing to produce more than `limit` bytes; any other body is returned
/// as it is.
pub fn decode_body_limited(bytes: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, BodyError> {
    if !bytes.starts_with(GZIP_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut rest = bytes;
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
    while !rest.is_empty() && rest.iter().any(|&b| b != 0) {
        let offset = (bytes.len() - rest.len()) as u64;
        let room = (limit - out.len()) as u64 + 1;
        let mut member = flate2::bufread::GzDecoder::new(&mut rest).take(room);
        member.read_to_end(&mut out).map_err(|e| BodyError::Gzip {
            offset,
            message: e.to_string(),
        })?;
        if out.len() > limit {
            return Err(BodyError::TooLarge {
                offset: (bytes.len() - rest.len()) as u64,
                limit,
            });
        }
        if (bytes.len() - rest.len()) as u64 == offset {
            // A member that consumed nothing would loop forever.
            return Err(BodyError::Gzip {
                offset,
                message: "empty gzip member".into(),
            });
        }
    }
    Ok(Cow::Owned(out))
}

/// What a whole file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    /// A Hadoop SequenceFile (`SEQ`).
    SequenceFile,
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`FD 37 7A 58 5A 00`).
    Xz,
    /// bzip2 (`BZh1`–`BZh9`).
    Bzip2,
    /// LZMA-alone (`.lzma`): a properties byte, a dictionary size and a length.
    LzmaAlone,
    /// None of the above: uncompressed bytes.
    Plain,
}

/// Tells the container from a file's first bytes (give [`SNIFF_LEN`] when the file
/// has them; fewer can only match the shorter magics).
pub fn sniff(prefix: &[u8]) -> Container {
    if prefix.starts_with(super::seqfile::MAGIC) {
        Container::SequenceFile
    } else if prefix.starts_with(GZIP_MAGIC) {
        Container::Gzip
    } else if prefix.starts_with(XZ_MAGIC) {
        Container::Xz
    } else if prefix.len() >= 4
        && prefix.starts_with(BZIP2_MAGIC)
        && (b'1'..=b'9').contains(&prefix[3])
    {
        Container::Bzip2
    } else if is_lzma_alone(prefix) {
        Container::LzmaAlone
    } else {
        Container::Plain
    }
}

/// LZMA-alone has no magic: accept the header LZMA Utils writes, a valid properties
/// byte, a dictionary size of 2^n or 2^n + 2^(n-1), and an unknown (all ones) or
/// sane uncompressed size.
fn is_lzma_alone(p: &[u8]) -> bool {
    if p.len() < SNIFF_LEN || p[0] >= 9 * 5 * 5 {
        return false;
    }
    let dict = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
    let n = dict.trailing_zeros();
    let dict_ok = dict != 0
        && (dict == 1 << n || (n > 0 && dict == (1 << n) + (1 << (n - 1))) || dict == u32::MAX);
    let size = u64::from_le_bytes([p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12]]);
    dict_ok && (size == u64::MAX || size < 1 << 40)
}

/// Wraps `r` in a reader that undoes `container`'s compression: all members of a
/// gzip file, all streams of an xz or bzip2 file. SequenceFiles and plain files come
/// back as they are.
pub fn decompressing_reader<'a>(
    r: impl BufRead + 'a,
    container: Container,
) -> Box<dyn BufRead + 'a> {
    match container {
        Container::Gzip => Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(r))),
        Container::Xz => {
            let stream = xz2::stream::Stream::new_stream_decoder(
                DECODER_MEMLIMIT,
                xz2::stream::CONCATENATED,
            )
            .expect("liblzma stream decoder initialises");
            Box::new(BufReader::new(xz2::bufread::XzDecoder::new_stream(
                r, stream,
            )))
        }
        Container::LzmaAlone => {
            let stream = xz2::stream::Stream::new_lzma_decoder(DECODER_MEMLIMIT)
                .expect("liblzma lzma decoder initialises");
            Box::new(BufReader::new(xz2::bufread::XzDecoder::new_stream(
                r, stream,
            )))
        }
        Container::Bzip2 => Box::new(BufReader::new(bzip2::bufread::MultiBzDecoder::new(r))),
        Container::SequenceFile | Container::Plain => Box::new(r),
    }
}

/// Reads up to [`SNIFF_LEN`] bytes of `r`, sniffs them, and returns the container and
/// a reader of the whole decompressed content (the sniffed bytes included).
pub fn open_decompressed<'a>(r: impl Read + 'a) -> io::Result<(Container, Box<dyn BufRead + 'a>)> {
    let (prefix, r) = read_prefix(r, SNIFF_LEN)?;
    let container = sniff(&prefix);
    let whole = BufReader::new(io::Cursor::new(prefix).chain(r));
    Ok((container, decompressing_reader(whole, container)))
}

/// Reads up to `n` bytes (fewer only at the end of the stream) and hands back the
/// reader positioned after them.
pub(crate) fn read_prefix<R: Read>(mut r: R, n: usize) -> io::Result<(Vec<u8>, R)> {
    let mut prefix = Vec::with_capacity(n);
    (&mut r).take(n as u64).read_to_end(&mut prefix)?;
    Ok((prefix, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
        std::fs::read(format!("{dir}{name}")).unwrap()
    }

    /// Name, input, and the output or the error's beginning.
    type Case<'a> = (&'a str, Vec<u8>, Result<&'a [u8], &'a str>);

    #[test]
    fn decode_body_rules() {
        let json = br#"{"ver":1}"#;
        let two = [gzip(b"ab"), gzip(b"cd")].concat();
        let padded = [gzip(json), vec![0; 7]].concat();
        let table: Vec<Case> = vec![
            ("plain stays", json.to_vec(), Ok(json)),
            ("empty stays", Vec::new(), Ok(b"")),
            ("lone 1f stays", vec![0x1f], Ok(&[0x1f])),
            ("gzip inflates", gzip(json), Ok(json)),
            ("members concatenate", two, Ok(b"abcd")),
            ("zero padding is ignored", padded, Ok(json)),
            (
                "magic alone",
                vec![0x1f, 0x8b],
                Err("gzip body does not inflate at offset 0"),
            ),
            (
                "bad deflate",
                [&gzip(json)[..12], &[0xff; 20]].concat(),
                Err("gzip body does not inflate at offset 0"),
            ),
            (
                "cut short",
                gzip(json)[..20].to_vec(),
                Err("gzip body does not inflate at offset 0"),
            ),
            (
                "trailing garbage",
                [gzip(json), b"xyz".to_vec()].concat(),
                Err("gzip body does not inflate at offset"),
            ),
        ];
        for (name, input, want) in table {
            match (decode_body(&input), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got[..], want, "{name}"),
                (Err(e), Err(want)) => assert!(e.to_string().starts_with(want), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        assert!(matches!(decode_body(json), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn decode_body_caps_the_inflated_size() {
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 2000);
        assert_eq!(decode_body_limited(&bomb, 1 << 20).unwrap().len(), 1 << 20);
        let err = decode_body_limited(&bomb, 1000).unwrap_err();
        assert!(
            matches!(err, BodyError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
        // Two members together pass the limit even if each alone does not.
        let two = [gzip(&[1; 600]), gzip(&[2; 600])].concat();
        assert!(matches!(
            decode_body_limited(&two, 1000),
            Err(BodyError::TooLarge { .. })
        ));
    }

    #[test]
    fn sniff_table() {
        let table: &[(&[u8], Container)] = &[
            (b"SEQ\x06rest", Container::SequenceFile),
            (&[0x1f, 0x8b, 8, 0], Container::Gzip),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4], Container::Xz),
            (b"BZh91AY&SY", Container::Bzip2),
            (b"BZh0", Container::Plain),
            (
                &[
                    0x5d, 0, 0, 0x80, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
                ],
                Container::LzmaAlone,
            ),
            (
                &[0x5d, 0, 0, 0x04, 0, 0x34, 0, 0, 0, 0, 0, 0, 0, 0],
                Container::LzmaAlone,
            ),
            (
                &[
                    0x5d, 0, 0, 0x03, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                Container::Plain,
            ),
            (b"]this is text", Container::Plain),
            (b"\x8920130101", Container::Plain),
            (b"", Container::Plain),
            (b"SE", Container::Plain),
        ];
        for &(prefix, want) in table {
            assert_eq!(sniff(prefix), want, "{prefix:02x?}");
        }
        assert_eq!(
            sniff(&fixture("published_v2_ss-ff-n-22.lzma")),
            Container::LzmaAlone
        );
        assert_eq!(
            sniff(&fixture("compress_test.txt.lzma")),
            Container::LzmaAlone
        );
        assert_eq!(sniff(&fixture("compress_test.txt.xz")), Container::Xz);
        assert_eq!(sniff(&fixture("compress_test.txt.gz")), Container::Gzip);
    }

    fn read_all(bytes: &[u8]) -> io::Result<(Container, Vec<u8>)> {
        let (c, mut r) = open_decompressed(bytes)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok((c, out))
    }

    #[test]
    fn containers_decode_to_the_same_text() {
        let (_, gz) = read_all(&fixture("compress_test.txt.gz")).unwrap();
        let (_, xz) = read_all(&fixture("compress_test.txt.xz")).unwrap();
        let (_, lzma) = read_all(&fixture("compress_test.txt.lzma")).unwrap();
        assert!(!gz.is_empty());
        assert_eq!(gz, xz);
        assert_eq!(gz, lzma);
    }

    #[test]
    fn multi_stream_files_read_whole() {
        let text = b"line one\nline two\n".repeat(50);
        let (a, b) = text.split_at(333);
        let gz = [gzip(a), gzip(b)].concat();
        let xz = [xz(a), xz(b)].concat();
        let bz = [bz(a), bz(b)].concat();
        for (bytes, want) in [
            (gz, Container::Gzip),
            (xz, Container::Xz),
            (bz, Container::Bzip2),
        ] {
            assert_eq!(read_all(&bytes).unwrap(), (want, text.clone()));
        }
        assert_eq!(read_all(&text).unwrap(), (Container::Plain, text.clone()));
        assert_eq!(read_all(b"").unwrap(), (Container::Plain, Vec::new()));
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn bz(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    proptest! {
        #[test]
        fn gzip_round_trip(data in prop::collection::vec(any::<u8>(), 0..5000), split in any::<prop::sample::Index>()) {
            let (a, b) = data.split_at(split.index(data.len() + 1));
            let both = [gzip(a), gzip(b)].concat();
            prop_assert_eq!(&decode_body(&both).unwrap()[..], &data[..]);
        }

        #[test]
        fn arbitrary_bodies_never_panic(mut data in prop::collection::vec(any::<u8>(), 0..2000), gz in any::<bool>()) {
            if gz {
                data.splice(0..0, GZIP_MAGIC.iter().copied());
            }
            let _ = decode_body_limited(&data, 1 << 16);
        }

        #[test]
        fn arbitrary_files_never_panic(data in prop::collection::vec(any::<u8>(), 0..2000), magic in 0usize..6) {
            let magics: [&[u8]; 6] = [b"", GZIP_MAGIC, XZ_MAGIC, b"BZh9", &[0x5d, 0, 0, 0x80, 0], b"SEQ"];
            drain(&[magics[magic], &data[..]].concat());
        }
    }

    fn drain(bytes: &[u8]) {
        if let Ok((_, r)) = open_decompressed(bytes) {
            let mut sink = Vec::new();
            let _ = r.take(1 << 22).read_to_end(&mut sink);
        }
    }
}
