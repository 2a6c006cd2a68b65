//! Criterion benches of the hot path: split + parse + classify + count, per line, on
//! generated task lines of about 330 bytes (85 % SUCCEEDED, 10 % FAILED across the
//! codes, 5 % other statuses), and the parse step alone.
//!
//! `cargo bench --bench pipeline`; end-to-end comparisons with mtail are in
//! `benches/compare.sh`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use runway_exporter::{
    FieldMap, Ledger, Limits, LineSplitter, Pipeline, Pricing, RecordParser, Table,
};

const CODES: [&str; 8] = [
    "SAFETY.INPUT.TEXT",
    "SAFETY.OUTPUT.VIDEO",
    "INTERNAL.BAD_OUTPUT.CODE01",
    "INPUT_PREPROCESSING.INTERNAL",
    "ASSET.INVALID",
    "THIRD_PARTY.UNAVAILABLE",
    "INTERNAL",
    "SAFETY.INPUT.IMAGE",
];

/// `n` lines with distinct ids, deterministic.
fn corpus(n: usize, first_id: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 340);
    for i in first_id..first_id + n {
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            i.wrapping_mul(2654435761) as u32,
            i % 65536,
            i % 4096,
            (i * 7) % 4096,
            i
        );
        let body = match i % 20 {
            0 | 1 => format!(
                r#""status":"FAILED","failure":"The generation failed.","failureCode":"{}""#,
                CODES[i % CODES.len()]
            ),
            2 => r#""status":"RUNNING","progress":0.42"#.to_string(),
            _ => format!(
                r#""status":"SUCCEEDED","output":["https://dnznrvs05pmza.cloudfront.net/{id}.mp4?_jwt=eyJhbGciOiJIUzI1NiJ9"]"#
            ),
        };
        out.extend_from_slice(
            format!(
                r#"{{"ts":"2024-11-06T12:00:00.000Z","level":"info","event":"runway_task_result","id":"{id}","createdAt":"2024-11-06T12:00:00.000Z",{body},"model":"gen4_turbo","duration":10,"app":"video-service"}}"#
            )
            .as_bytes(),
        );
        out.push(b'\n');
    }
    out
}

fn pipeline() -> Pipeline {
    let ledger = Ledger::new(
        Arc::new(Table::builtin()),
        Arc::new(Pricing::builtin()),
        Limits::default(),
    );
    Pipeline::new(
        RecordParser::new(&FieldMap::default()).unwrap(),
        ledger,
        None,
    )
}

fn benches(c: &mut Criterion) {
    const LINES: usize = 10_000;
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(LINES as u64));
    let block = corpus(LINES, 0);

    // Split, parse, classify and count, in 256 KiB blocks as the tailer reads them.
    // Fresh ids every iteration, so every terminal record is counted (not a duplicate).
    let p = pipeline();
    let source = p.add_source("file");
    let mut next = 0usize;
    g.bench_function("split_parse_classify_count", |b| {
        b.iter_batched(
            || {
                next += LINES;
                corpus(LINES, next)
            },
            |data| {
                let mut splitter = LineSplitter::new(1 << 20);
                for chunk in data.chunks(256 * 1024) {
                    p.process(source, &mut splitter, chunk, None, None);
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });

    // The parse step alone.
    let parser = RecordParser::new(&FieldMap::default()).unwrap();
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for line in block.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                ok += parser.parse(line).is_ok() as usize;
            }
            assert_eq!(ok, LINES);
        })
    });
    g.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
