//! The core alone, on one core: parse + validate + convert + serialise
//! (`Converter::convert_legacy`) over realistic classic payloads, no compression and
//! no I/O. BENCHMARKS.md's figure to beat is in MB/s of input JSON (goal ≥ 150).
//!
//! The payloads come from `backfill::gen`: ~45 KB each, ~200 histograms valid for the
//! shipped revision, about a quarter with a few unknown histograms (dropped), none
//! rejected and none gzipped, so the measure is the converter's own work.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use backfill::core::convert::Converter;
use backfill::core::mappings::Mappings;
use backfill::gen::{calendar, Framing, GenOptions, RecordGen, RejectRates};

/// Payloads per iteration: enough to spread over many shapes, small enough to stay
/// mostly in cache like a worker's steady state.
const RECORDS: usize = 300;

fn records() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mappings = Mappings::embedded().expect("embedded mappings");
    let opts = GenOptions {
        reject_rates: RejectRates::none(),
        gzip_rate: 0.0,
        ..GenOptions::default()
    };
    let mut gen = RecordGen::new(mappings, 2013, opts);
    let day = calendar::parse_day("2013-10-11").expect("a date");
    (0..RECORDS)
        .map(|_| {
            let r = gen.record(day, Framing::SequenceFile);
            (r.key, r.value)
        })
        .collect()
}

fn convert_all(c: &mut Converter<'_>, records: &[(Vec<u8>, Vec<u8>)]) -> usize {
    let mut out = 0;
    for (key, value) in records {
        let converted = c.convert_legacy(key, value).expect("generated as valid");
        out += converted.line.len();
    }
    out
}

fn bench(c: &mut Criterion) {
    let mappings = Mappings::embedded().expect("embedded mappings");
    let records = records();
    let bytes: u64 = records.iter().map(|(_, v)| v.len() as u64).sum();
    let mut conv = Converter::new(mappings);
    // Warm the converter's buffers and check every record converts.
    let out = convert_all(&mut conv, &records);
    eprintln!(
        "{} payloads, {:.1} MB in ({:.1} KB each), {:.1} MB out",
        records.len(),
        bytes as f64 / 1e6,
        bytes as f64 / records.len() as f64 / 1e3,
        out as f64 / 1e6
    );

    let mut g = c.benchmark_group("convert_bytes");
    g.sample_size(20);
    g.throughput(Throughput::BytesDecimal(bytes));
    g.bench_function("convert_legacy", |b| {
        b.iter(|| black_box(convert_all(&mut conv, black_box(&records))))
    });
    g.finish();

    let mut g = c.benchmark_group("convert_records");
    g.sample_size(20);
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("convert_legacy", |b| {
        b.iter(|| black_box(convert_all(&mut conv, black_box(&records))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
