//! Tests of the generator against the real converter: every record gets the outcome
//! it was made for.

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::core::convert::Converter;
use crate::core::seqfile::{Codec, SeqReader};
use crate::core::textdump::TextDumpReader;

fn mappings() -> &'static Mappings {
    Mappings::embedded().expect("embedded mappings load")
}

fn defs() -> &'static Definitions {
    mappings().definitions(SHIPPED_REVISION).unwrap()
}

/// Converts `r` and checks the outcome, partition and dropped count.
fn check(c: &mut Converter<'_>, r: &Record) {
    let got = c.convert_legacy(&r.key, &r.value);
    match (&got, r.expected) {
        (Ok(out), Expected::Ok) => {
            assert_eq!(Some(out.partition), r.partition.as_deref());
            assert_eq!(out.dropped().count(), r.dropped, "{:?}", r.key);
        }
        (Err(e), Expected::Reject(want)) => assert_eq!(e.reason, want, "{e}"),
        (got, want) => panic!(
            "want {want:?}, got {:?}; value starts {:?}",
            got.as_ref().map(|o| o.partition).map_err(|e| e.to_string()),
            String::from_utf8_lossy(&r.value[..r.value.len().min(300)])
        ),
    }
}

#[test]
fn every_record_gets_its_intended_outcome() {
    let mut c = Converter::new(mappings());
    let mut seen: HashSet<Expected> = HashSet::new();
    let mut salts = HashSet::new();
    for seed in [1, 2, 3, 4] {
        // Small payloads and many faults, so every reason shows up often.
        let opts = GenOptions {
            reject_rates: RejectRates::uniform(0.4),
            histograms: 20,
            neighbour_day_rate: 0.05,
            duplicate_rate: 0.02,
            table_revision_rate: 0.05,
            ..GenOptions::default()
        };
        let mut g = RecordGen::new(mappings(), seed, opts);
        let day = calendar::parse_day("2013-10-11").unwrap();
        for i in 0..1000 {
            let framing = if i % 3 == 0 {
                Framing::TextDump
            } else {
                Framing::SequenceFile
            };
            let r = g.record(day, framing);
            if framing == Framing::TextDump {
                assert!(
                    !r.value.contains(&b'\n'),
                    "a text-dump value holds a newline"
                );
                // One line, read back as one record by the real reader.
                let mut line = r.key.clone();
                line.push(b'\t');
                line.extend_from_slice(&r.value);
                line.push(b'\n');
                let got: Vec<_> = TextDumpReader::new(&line[..])
                    .collect::<std::io::Result<_>>()
                    .unwrap();
                assert_eq!(got.len(), 1, "{:?}", String::from_utf8_lossy(&line[..50]));
                if got[0].malformed {
                    assert_eq!(r.expected, Expected::Reject(Reason::InvalidKey));
                } else {
                    assert_eq!((&got[0].key, &got[0].value), (&r.key, &r.value));
                }
            }
            check(&mut c, &r);
            seen.insert(r.expected);
            salts.insert(r.key[0]);
        }
    }
    // Ids starting 89 / 8a: the salt byte is a tab / a newline.
    assert!(salts.contains(&b'\t') && salts.contains(&b'\n'));
    assert!(seen.contains(&Expected::Ok));
    for reason in Reason::ALL {
        assert!(
            seen.contains(&Expected::Reject(reason)),
            "{reason} never made"
        );
    }
}

#[test]
fn full_size_records_at_default_rates() {
    let mut c = Converter::new(mappings());
    let mut g = RecordGen::new(mappings(), 9, GenOptions::default());
    let day = calendar::parse_day("2013-10-02").unwrap();
    let mut tally = Tally::new();
    let (mut bytes_in, mut bytes_out) = (0, 0);
    for _ in 0..150 {
        let r = g.record(day, Framing::SequenceFile);
        check(&mut c, &r);
        tally.add(&r);
        if r.expected == Expected::Ok && !r.gzipped {
            bytes_in += r.value.len();
            bytes_out += c.convert_legacy(&r.key, &r.value).unwrap().line.len();
        }
    }
    assert!(tally.ok >= 140, "{tally:?}");
    assert!(tally.gzipped > 0);
    // BENCHMARKS.md's realistic data converts 200 MB of JSON into 130 MB: the mix
    // of bucket counts (dense output arrays) must be of that kind.
    let ratio = bytes_out as f64 / bytes_in as f64;
    assert!((0.55..0.8).contains(&ratio), "output/input {ratio:.2}");
}

#[test]
fn payload_is_realistic() {
    let cat = Catalog::new(defs());
    let pop = Population::new();
    let mut rng = Rng::new(5);
    let day = calendar::parse_day("2013-10-11").unwrap();
    let mut total = 0;
    let mut non_ascii = 0;
    let n = 40;
    for _ in 0..n {
        let spec = pop.spec(&mut rng, day, 200);
        let text = cat.payload(&mut rng, &spec);
        total += text.len();
        non_ascii += usize::from(!text.is_ascii());
        assert!(!text.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for field in [
            "ver",
            "info",
            "simpleMeasurements",
            "histograms",
            "slowSQL",
            "chromeHangs",
            "lateWrites",
            "addonHistograms",
        ] {
            assert!(v.get(field).is_some(), "no {field}");
        }
        let info = &v["info"];
        for field in [
            "reason",
            "appName",
            "appVersion",
            "appUpdateChannel",
            "appBuildID",
            "revision",
            "OS",
            "cpucount",
            "memsize",
        ] {
            assert!(info.get(field).is_some(), "no info.{field}");
        }
        let hists = v["histograms"].as_object().unwrap();
        assert!((150..=250).contains(&hists.len()), "{}", hists.len());
        let startup = hists.keys().filter(|k| k.starts_with("STARTUP_")).count();
        assert!(startup >= 10, "{startup} STARTUP_ histograms");
        for (name, h) in hists {
            let def = defs().lookup(name).expect("known histogram");
            assert_eq!(h["bucket_count"].as_u64(), Some(def.buckets.len() as u64));
            for (k, c) in h["values"].as_object().unwrap() {
                assert!(def.bucket_index(k).is_some(), "{name} key {k}");
                assert!(c.is_u64());
            }
            assert!(h["sum"].is_u64());
        }
        assert_compact(&text);
    }
    let mean = total / n;
    assert!(
        (38_000..52_000).contains(&mean),
        "mean payload {mean} bytes"
    );
    assert!(non_ascii > 0, "no payload had non-ASCII text");
}

/// No whitespace outside strings.
fn assert_compact(text: &str) {
    let mut in_str = false;
    let mut esc = false;
    for c in text.chars() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
        } else {
            assert!(!c.is_whitespace(), "whitespace outside a string");
        }
    }
}

#[test]
fn payload_faults_give_their_reason() {
    let cat = Catalog::new(defs());
    let mut c = Converter::new(mappings());
    let key = rowkey::build("20131011", "17caa68c-25f5-450a-9cce-7d31318846d8");
    let mut rng = Rng::new(11);
    for fault in [
        PayloadFault::InvalidJson,
        PayloadFault::UnsupportedVersion,
        PayloadFault::MissingInfo,
        PayloadFault::HistogramMismatch,
        PayloadFault::InvalidBucket,
        PayloadFault::InvalidCount,
    ] {
        for _ in 0..30 {
            let spec = PayloadSpec {
                fault: Some(fault),
                ..PayloadSpec::firefox(30)
            };
            let text = payload(&mut rng, defs(), &spec);
            let got = c.convert_legacy(&key, text.as_bytes()).map(|_| ());
            assert_eq!(got.unwrap_err().reason, fault.reason(), "{text}");
        }
    }
    // And without a fault it converts, unknown names dropped.
    let spec = PayloadSpec {
        unknown_histograms: 3,
        ..PayloadSpec::firefox(30)
    };
    let text = cat.payload(&mut rng, &spec);
    assert_eq!(
        c.convert_legacy(&key, text.as_bytes())
            .unwrap()
            .dropped()
            .count(),
        3
    );
}

#[test]
fn unknown_names_are_unknown_to_the_shipped_definitions() {
    assert_eq!(
        Catalog::new(defs()).unknown_available(),
        payload::UNKNOWN_HISTOGRAMS.len()
    );
}

#[test]
fn dimensions_have_a_realistic_spread() {
    let pop = Population::new();
    let mut rng = Rng::new(21);
    let first = calendar::parse_day("2013-10-01").unwrap();
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    let mut apps: BTreeMap<&str, u32> = BTreeMap::new();
    let mut channels: BTreeMap<&str, u32> = BTreeMap::new();
    let mut builds: BTreeMap<String, u32> = BTreeMap::new();
    let mut versions: HashSet<String> = HashSet::new();
    let n = 20_000;
    for i in 0..n {
        let day = first + (i % 3) as i64;
        let s = pop.spec(&mut rng, day, 0);
        assert!(s.build_id < format!("{}000000", calendar::fmt_day(day)));
        *reasons.entry(s.reason).or_default() += 1;
        *apps.entry(s.app.name()).or_default() += 1;
        *channels.entry(s.channel.name()).or_default() += 1;
        *builds.entry(s.build_id).or_default() += 1;
        versions.insert(s.version);
    }
    let main = reasons["saved-session"] + reasons["idle-daily"];
    assert!(main as f64 > 0.97 * n as f64);
    assert!(
        apps.len() == 3 && apps["Firefox"] > apps["Fennec"] && apps["Fennec"] > apps["Thunderbird"]
    );
    for ch in ["release", "beta", "aurora", "nightly"] {
        assert!(channels[ch] > 100, "{channels:?}");
    }
    // Thousands of build IDs (about 3000 in 100k records): a few hot, most rare.
    assert!(builds.len() > 1500, "{} build ids", builds.len());
    let mut counts: Vec<u32> = builds.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    assert!(counts[0] as f64 > 0.02 * n as f64, "hottest {}", counts[0]);
    assert!(counts.iter().filter(|&&c| c == 1).count() > 500);
    assert!(versions.len() > 40, "{} versions", versions.len());
}

#[test]
fn reject_rates() {
    let d = RejectRates::default();
    assert!((d.total() - 0.02).abs() < 1e-9);
    let s = d.with_total(0.1);
    assert!((s.total() - 0.1).abs() < 1e-9);
    assert!((s.get(Reason::InvalidJson) / s.get(Reason::InvalidKey) - 3.0).abs() < 1e-9);
    assert_eq!(
        RejectRates::none().with_total(0.02),
        RejectRates::default().with_total(0.02)
    );
    assert_eq!(RejectRates::none().draw(0.0), None);
    assert_eq!(
        RejectRates::uniform(1.0).draw(0.0),
        Some(Reason::InvalidKey)
    );
}

fn small_spec(seed: u64, compression: Compression) -> DatasetSpec {
    DatasetSpec {
        seed,
        first_day: calendar::parse_day("2013-10-10").unwrap(),
        last_day: calendar::parse_day("2013-10-11").unwrap(),
        files_per_day: 3,
        records_per_file: 12,
        compression,
        text_dump_fraction: 0.34,
        options: GenOptions {
            histograms: 10,
            reject_rates: RejectRates::uniform(0.3),
            ..GenOptions::default()
        },
    }
}

#[test]
fn datasets_are_reproducible() {
    let spec = small_spec(7, Compression::Block(Codec::Default));
    let a: Vec<DataFile> = Dataset::new(mappings(), spec.clone()).collect();
    let b: Vec<DataFile> = Dataset::new(mappings(), spec.clone()).collect();
    assert_eq!(a, b);
    assert_eq!(a.len(), 2 * (3 + 1));
    let c: Vec<DataFile> = Dataset::new(mappings(), DatasetSpec { seed: 8, ..spec }).collect();
    assert_ne!(a, c);
    let paths: Vec<&str> = a.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths[0], "data/telemetry/2013/10/10/part-m-00000");
    assert_eq!(paths[3], "data/telemetry/2013/10/10/_SUCCESS");
    assert_eq!(paths[7], "data/telemetry/2013/10/11/_SUCCESS");
}

#[test]
fn datasets_read_back_to_their_records() {
    for compression in [
        Compression::None,
        Compression::Record(Codec::Gzip),
        Compression::Block(Codec::Default),
        Compression::Block(Codec::Bzip2),
    ] {
        let mut c = Converter::new(mappings());
        let mut ds = Dataset::new(mappings(), small_spec(3, compression));
        let mut syncs = HashSet::new();
        let mut read = 0u64;
        let mut ok = 0u64;
        for f in ds.by_ref() {
            if f.path.ends_with("_SUCCESS") {
                assert!(f.bytes.is_empty());
                continue;
            }
            let mut records = Vec::new();
            if f.text_dump {
                for rec in TextDumpReader::new(&f.bytes[..]) {
                    let rec = rec.unwrap();
                    records.push((rec.key, rec.value, !rec.malformed));
                }
            } else {
                let mut r = SeqReader::new(&f.bytes[..]).unwrap();
                assert_eq!(r.header().compression, compression);
                assert!(syncs.insert(r.header().sync), "sync marker repeats");
                while let Some(rec) = r.next_record().unwrap() {
                    records.push((rec.key, rec.value, true));
                }
            }
            assert_eq!(records.len(), 12);
            for (key, value, tab) in records {
                read += 1;
                if tab && c.convert_legacy(&key, &value).is_ok() {
                    ok += 1;
                }
            }
        }
        assert_eq!(read, ds.tally().records);
        assert_eq!(ok, ds.tally().ok);
        assert!(ds.text_dumps() > 0);
    }
}

/// `spread` makes every file touch that many partitions, and each of its records
/// still gets its intended outcome from the converter.
#[test]
fn spread_touches_as_many_partitions_per_file() {
    let mut c = Converter::new(mappings());
    for n in [1, 7, SPREAD_MAX] {
        let opts = GenOptions {
            histograms: 1,
            reject_rates: RejectRates::none(),
            neighbour_day_rate: 0.0,
            table_revision_rate: 0.0,
            spread: n,
            ..GenOptions::default()
        };
        let mut gen = RecordGen::new(mappings(), 3, opts);
        let day = calendar::parse_day("2013-10-11").unwrap();
        let mut parts = HashSet::new();
        for _ in 0..n {
            let r = gen.record(day, Framing::SequenceFile);
            check(&mut c, &r);
            parts.insert(r.partition.unwrap());
        }
        assert_eq!(parts.len(), n);
    }
}
