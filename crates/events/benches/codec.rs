//! Decode + validate and encode throughput for ~1 KiB envelopes; the target is ≥ 200 000 events/s per core
//! each way. Run: `cargo bench -p events --bench codec -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use events::{Envelope, EventType, decode, encode, examples};

/// A settlement with full metadata, padded to about 1 KiB through the user agent (as a browser's can be).
fn one_kib_envelope() -> Envelope {
    let mut parts = examples::example(EventType::SettlementCompleted).into_parts();
    let base = examples::example(EventType::InvoiceCreated)
        .metadata()
        .clone();
    parts.metadata.ip_address = base.ip_address;
    parts.metadata.request_id = base.request_id;
    parts.metadata.traceparent = base.traceparent;
    let size_without_agent = encode(&Envelope::from_parts(parts.clone()).unwrap())
        .unwrap()
        .len();
    parts.metadata.user_agent = Some(
        "Mozilla/5.0 (X11; Linux x86_64) ".repeat(10)[..1024 - size_without_agent - 16].to_owned(),
    );
    Envelope::from_parts(parts).unwrap()
}

fn codec(c: &mut Criterion) {
    let envelope = one_kib_envelope();
    let bytes = encode(&envelope).unwrap();
    assert!(
        (1000..=1050).contains(&bytes.len()),
        "benchmark envelope is {} bytes",
        bytes.len()
    );
    // The spec's producers may send amounts as JSON numbers; measure that path too.
    let with_numbers = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("\"16.49\"", "16.49")
        .replace("\"0.16\"", "0.16")
        .replace("\"16.33\"", "16.33");

    let mut group = c.benchmark_group("codec_1kib");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_validate", |b| {
        b.iter(|| decode(black_box(&bytes)).unwrap())
    });
    group.bench_function("decode_validate_numbers", |b| {
        b.iter(|| decode(black_box(with_numbers.as_bytes())).unwrap())
    });
    group.bench_function("encode", |b| {
        b.iter(|| encode(black_box(&envelope)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
