//! `backfill-gen`: writes a synthetic legacy Telemetry store — the old HDFS layout
//! `OUT_DIR/data/telemetry/yyyy/MM/dd/part-m-NNNNN` of SequenceFiles (Text, Text) or
//! text dumps, with `_SUCCESS` markers — and `OUT_DIR/_expected.json`, the counts the
//! tool must report for it. The same arguments always give the same bytes.
//!
//! The records come from `backfill::gen`; this binary only parses arguments and writes
//! files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use backfill::core::mappings::Mappings;
use backfill::core::seqfile::{Codec, Compression};
use backfill::gen::{calendar, Dataset, DatasetSpec, GenOptions, RejectRates};

/// Write a synthetic legacy Telemetry store (old HDFS layout) and its expected counts.
#[derive(Parser, Debug)]
#[command(name = "backfill-gen", version)]
struct Args {
    /// Folder to write into; must be empty or absent unless --force.
    out_dir: PathBuf,
    /// Seed of everything generated.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folder days, `FIRST..LAST` (inclusive) or one day; `yyyy-MM-dd` or `yyyyMMdd`.
    #[arg(long, value_parser = parse_days)]
    days: (i64, i64),
    /// Part files per day.
    #[arg(long, default_value_t = 2)]
    files_per_day: usize,
    /// Records per part file.
    #[arg(long, default_value_t = 100)]
    records_per_file: usize,
    /// SequenceFile codec [default: default, or none with --compression none].
    #[arg(long, value_enum)]
    codec: Option<CodecArg>,
    /// SequenceFile compression [default: block, or none with --codec none].
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
    /// Share of part files written as text dumps (`<45-byte key>\t<json>\n`).
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    text_dump_fraction: f64,
    /// Share of records broken on purpose, spread over the reject reasons.
    #[arg(long, default_value_t = 0.02, value_parser = parse_share)]
    reject_rate: f64,
    /// Mean number of histograms per payload.
    #[arg(long, default_value_t = GenOptions::default().histograms)]
    histograms: usize,
    /// Cycle each file's records through this many distinct partitions (at most
    /// 3600) instead of the realistic skew: with as many --records-per-file, every
    /// part file touches that many partitions, like production day folders.
    #[arg(long, default_value_t = 0)]
    partitions_per_file: usize,
    /// Write into a non-empty OUT_DIR, overwriting files (others are left alone).
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CodecArg {
    None,
    Default,
    Gzip,
    Bzip2,
    Snappy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CompressionArg {
    None,
    Record,
    Block,
}

fn parse_days(s: &str) -> Result<(i64, i64), String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let day = |t: &str| {
        calendar::parse_day(t)
            .ok_or_else(|| format!("{t:?} is not a date (yyyy-MM-dd or yyyyMMdd)"))
    };
    let (first, last) = (day(a)?, day(b)?);
    if last < first {
        return Err(format!("{b} is before {a}"));
    }
    Ok((first, last))
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

/// The SequenceFile compression the two flags ask for.
fn compression(
    codec: Option<CodecArg>,
    compression: Option<CompressionArg>,
) -> Result<Compression> {
    let codec = match codec {
        None | Some(CodecArg::Default) => Some(Codec::Default),
        Some(CodecArg::Gzip) => Some(Codec::Gzip),
        Some(CodecArg::Bzip2) => Some(Codec::Bzip2),
        Some(CodecArg::Snappy) => Some(Codec::Snappy),
        Some(CodecArg::None) => None,
    };
    Ok(match (compression, codec) {
        (Some(CompressionArg::None), _) | (None, None) => Compression::None,
        (Some(CompressionArg::Record), Some(c)) => Compression::Record(c),
        (Some(CompressionArg::Block) | None, Some(c)) => Compression::Block(c),
        (Some(_), None) => bail!("--codec none needs --compression none"),
    })
}

fn compression_name(c: Compression) -> String {
    match c {
        Compression::None => "none".into(),
        Compression::Record(codec) => format!("record/{}", codec.name()),
        Compression::Block(codec) => format!("block/{}", codec.name()),
    }
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    match std::fs::read_dir(p) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn run(args: &Args) -> Result<String> {
    let compression = compression(args.codec, args.compression)?;
    if args.partitions_per_file > backfill::gen::SPREAD_MAX {
        bail!(
            "--partitions-per-file is at most {}",
            backfill::gen::SPREAD_MAX
        );
    }
    if !args.force && !is_empty_dir(&args.out_dir)? {
        bail!(
            "{} is not empty (use --force to overwrite files in it)",
            args.out_dir.display()
        );
    }
    let mappings = Mappings::embedded().map_err(|e| anyhow::anyhow!("loading mappings: {e}"))?;
    let spec = DatasetSpec {
        seed: args.seed,
        first_day: args.days.0,
        last_day: args.days.1,
        files_per_day: args.files_per_day,
        records_per_file: args.records_per_file,
        compression,
        text_dump_fraction: args.text_dump_fraction,
        options: GenOptions {
            reject_rates: RejectRates::default().with_total(args.reject_rate),
            histograms: args.histograms,
            spread: args.partitions_per_file,
            ..GenOptions::default()
        },
    };
    let mut dataset = Dataset::new(mappings, spec);
    let (mut parts, mut bytes) = (0u64, 0u64);
    for file in dataset.by_ref() {
        let path = args.out_dir.join(&file.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, &file.bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        if !file.path.ends_with("/_SUCCESS") {
            parts += 1;
            bytes += file.bytes.len() as u64;
        }
    }
    let t = dataset.tally();
    let expected = serde_json::json!({
        "generator": format!("backfill-gen {}", env!("CARGO_PKG_VERSION")),
        "mappings": mappings.version(),
        "seed": args.seed,
        "days": [calendar::fmt_day(args.days.0), calendar::fmt_day(args.days.1)],
        "files_per_day": args.files_per_day,
        "records_per_file": args.records_per_file,
        "compression": compression_name(compression),
        "text_dump_fraction": args.text_dump_fraction,
        "reject_rate": args.reject_rate,
        "files": parts,
        "text_dump_files": dataset.text_dumps(),
        "bytes": bytes,
        "records": t.records,
        "ok": t.ok,
        "rejected": t.rejected(),
        "by_reason": t.by_reason,
        "histograms_dropped": t.histograms_dropped,
        "neighbour_day_records": t.neighbour_day,
        "duplicate_doc_ids": t.duplicates,
        "gzipped_values": t.gzipped,
        "partition_count": t.partitions.len(),
        "partitions": t.partitions,
    });
    let path = args.out_dir.join("_expected.json");
    let mut text = serde_json::to_string_pretty(&expected)?;
    text.push('\n');
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(format!(
        "backfill-gen: wrote {parts} files ({} text dumps, {:.1} MB) with {} records ({} ok, {} rejected) in {} partitions to {}",
        dataset.text_dumps(),
        bytes as f64 / 1e6,
        t.records,
        t.ok,
        t.rejected(),
        t.partitions.len(),
        args.out_dir.display()
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("backfill-gen: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_shares() {
        let d = |s| calendar::parse_day(s).unwrap();
        assert_eq!(
            parse_days("2013-10-01..2013-10-03"),
            Ok((d("2013-10-01"), d("2013-10-03")))
        );
        assert_eq!(
            parse_days("20131001"),
            Ok((d("2013-10-01"), d("2013-10-01")))
        );
        assert!(parse_days("2013-10-03..2013-10-01").is_err());
        assert!(parse_days("2013-10-32").is_err());
        assert_eq!(parse_share("0.5"), Ok(0.5));
        assert!(parse_share("1.5").is_err());
    }

    #[test]
    fn codec_and_compression_flags() {
        use CodecArg as C;
        use CompressionArg as K;
        assert_eq!(
            compression(None, None).unwrap(),
            Compression::Block(Codec::Default)
        );
        assert_eq!(compression(Some(C::None), None).unwrap(), Compression::None);
        assert_eq!(
            compression(Some(C::Gzip), Some(K::Record)).unwrap(),
            Compression::Record(Codec::Gzip)
        );
        assert_eq!(
            compression(Some(C::Bzip2), None).unwrap(),
            Compression::Block(Codec::Bzip2)
        );
        assert_eq!(compression(None, Some(K::None)).unwrap(), Compression::None);
        assert!(compression(Some(C::None), Some(K::Block)).is_err());
    }

    #[test]
    fn same_arguments_same_bytes() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut trees = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let out = dir.path().join("out");
            let args = Args::parse_from([
                "backfill-gen",
                out.to_str().unwrap(),
                "--seed",
                "5",
                "--days",
                "2013-10-01..2013-10-02",
                "--files-per-day",
                "2",
                "--records-per-file",
                "8",
                "--histograms",
                "10",
                "--text-dump-fraction",
                "0.5",
                "--reject-rate",
                "0.3",
            ]);
            run(&args).unwrap();
            trees.push(read_tree(&out));
            if i == 0 {
                // Refuses a non-empty folder without --force.
                assert!(run(&args).is_err());
            }
        }
        assert_eq!(trees[0], trees[1]);
        let names: Vec<&str> = trees[0].iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "_expected.json",
                "data/telemetry/2013/10/01/_SUCCESS",
                "data/telemetry/2013/10/01/part-m-00000",
                "data/telemetry/2013/10/01/part-m-00001",
                "data/telemetry/2013/10/02/_SUCCESS",
                "data/telemetry/2013/10/02/part-m-00000",
                "data/telemetry/2013/10/02/part-m-00001",
            ]
        );
        let expected: serde_json::Value = serde_json::from_slice(&trees[0][0].1).unwrap();
        assert_eq!(expected["records"], 32);
        assert_eq!(
            expected["ok"].as_u64().unwrap() + expected["rejected"].as_u64().unwrap(),
            32
        );
    }

    /// The committed sample is exactly what the command in `samples/README.md` makes
    /// (provenance fields of `_expected.json` aside).
    #[test]
    fn committed_sample_matches_its_command() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("samples/README.md")).unwrap();
        let line = readme
            .lines()
            .find(|l| l.contains("--bin backfill-gen -- "))
            .expect("the command is in samples/README.md");
        let mut words: Vec<String> = line
            .split_once(" -- ")
            .unwrap()
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let sample = root.join(&words[0]);
        let dir = tempfile::tempdir().unwrap();
        words[0] = dir.path().join("out").to_string_lossy().into_owned();
        let args = Args::parse_from(std::iter::once("backfill-gen".to_string()).chain(words));
        run(&args).unwrap();
        let (made, committed) = (read_tree(&dir.path().join("out")), read_tree(&sample));
        let names = |t: &[(String, Vec<u8>)]| t.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&made), names(&committed));
        for ((name, a), (_, b)) in made.iter().zip(&committed) {
            if name == "_expected.json" {
                let strip = |bytes: &[u8]| {
                    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                    let o = v.as_object_mut().unwrap();
                    o.remove("generator");
                    o.remove("mappings");
                    v
                };
                assert_eq!(
                    strip(a),
                    strip(b),
                    "regenerate the sample (samples/README.md)"
                );
            } else {
                assert!(
                    a == b,
                    "{name} differs: regenerate the sample (samples/README.md)"
                );
            }
        }
    }

    fn read_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}
