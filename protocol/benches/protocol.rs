#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Codec benchmarks: encode and decode per message type, and the digest.
//! Quick run of everything (figures in protocol/README.md):
//! `CARGO_TARGET_DIR=/work/target-protocol cargo bench -p aerie-protocol -- --quick`

use std::hint::black_box;

use aerie_protocol::batch::encode_batch_row;
use aerie_protocol::info::{
    InfoRequest, InfoResponseWriter, PartitionBitmap, ReplicasEntry, format_replicas,
};
use aerie_protocol::message::{MessageIter, encode_last};
use aerie_protocol::scan::{ScanRecordHeader, encode_scan_record};
use aerie_protocol::{
    BatchRequest, BatchResponseItem, BatchRow, BatchRowAttrs, BlobType, FrameDecoder, FrameStatus,
    Info1, Info2, Limits, Message, MessageHeader, Op, RecordRequest, Request, ResultCode,
    ScanRequest, ScanResponseItem, UserKey, Value, compress, compute_digest,
    encode_record_response,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const VALUE_SIZE_BYTES: usize = 100;
const BATCH_ROWS: usize = 100;
const SCAN_RECORDS: usize = 100;

fn digest(i: usize) -> [u8; 20] {
    compute_digest(b"demo", &UserKey::Int(i as i64))
}

fn put_request(value: &[u8]) -> RecordRequest<'_> {
    RecordRequest::new(
        MessageHeader {
            info2: Info2::WRITE,
            transaction_ttl: 1000,
            ..MessageHeader::default()
        },
        "test",
        Some("demo"),
        digest(1),
        vec![Op::write("value", Value::Blob(BlobType::Generic, value))],
    )
}

fn get_request() -> RecordRequest<'static> {
    RecordRequest::new(
        MessageHeader {
            info1: Info1::READ | Info1::GET_ALL,
            transaction_ttl: 1000,
            ..MessageHeader::default()
        },
        "test",
        Some("demo"),
        digest(1),
        vec![],
    )
}

fn encode(f: impl FnOnce(&mut Vec<u8>) -> aerie_protocol::Result<()>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    f(&mut out).unwrap();
    out
}

fn bench_digest(c: &mut Criterion) {
    let mut g = c.benchmark_group("digest");
    g.throughput(Throughput::Elements(1));
    g.bench_function("string key", |b| {
        b.iter(|| compute_digest(black_box(b"demo"), &UserKey::String(black_box(b"user1"))))
    });
    g.bench_function("integer key", |b| {
        b.iter(|| compute_digest(black_box(b"demo"), &UserKey::Int(black_box(42))))
    });
    g.finish();
}

fn bench_single_record(c: &mut Criterion) {
    let limits = Limits::default();
    let value = vec![7u8; VALUE_SIZE_BYTES];
    let put = put_request(&value);
    let put_frame = encode(|out| put.encode_frame(out));
    let get_frame = encode(|out| get_request().encode_frame(out));
    let bins = [Op::result("value", Value::Blob(BlobType::Generic, &value))];
    let get_response = encode(|out| encode_record_response(out, ResultCode::Ok, 1, 0, &bins));

    let mut g = c.benchmark_group("single record");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(256);
    g.bench_function("encode put (100 B bin)", |b| {
        b.iter(|| {
            out.clear();
            black_box(&put).encode_frame(&mut out).unwrap();
        })
    });
    g.bench_function("decode put frame (100 B bin)", |b| {
        b.iter(|| {
            let FrameStatus::Complete { frame, .. } = FrameDecoder::new(limits)
                .decode(black_box(&put_frame))
                .unwrap()
            else {
                unreachable!()
            };
            black_box(Request::decode(frame.body, &limits).unwrap());
        })
    });
    g.bench_function("decode get frame", |b| {
        b.iter(|| black_box(Request::decode(&black_box(&get_frame)[8..], &limits).unwrap()))
    });
    g.bench_function("encode get response (100 B bin)", |b| {
        b.iter(|| {
            out.clear();
            encode_record_response(&mut out, ResultCode::Ok, 1, 0, black_box(&bins)).unwrap();
        })
    });
    g.bench_function("decode get response (100 B bin)", |b| {
        b.iter(|| black_box(Message::decode(&black_box(&get_response)[8..]).unwrap()))
    });
    g.finish();
}

fn bench_batch(c: &mut Criterion) {
    let limits = Limits::default();
    let digests: Vec<_> = (0..BATCH_ROWS).map(digest).collect();
    let attrs = BatchRowAttrs::read(Info1::READ | Info1::GET_ALL, "test", "demo", vec![]);
    let rows = digests
        .iter()
        .enumerate()
        .map(|(i, d)| BatchRow {
            index: i as u32,
            digest: *d,
            attrs: (i == 0).then(|| attrs.clone()),
        })
        .collect();
    let request = BatchRequest {
        header: MessageHeader {
            info1: Info1::BATCH,
            transaction_ttl: 1000,
            ..MessageHeader::default()
        },
        filter: None,
        other_fields: vec![],
        parent_flags: 0x0d,
        rows,
    };
    let request_frame = encode(|out| request.encode_frame(out));
    let value = vec![7u8; VALUE_SIZE_BYTES];
    let bins = [Op::result("value", Value::Blob(BlobType::Generic, &value))];
    let encode_rows = |out: &mut Vec<u8>| {
        for i in 0..BATCH_ROWS {
            encode_batch_row(out, i as u32, ResultCode::Ok, 1, 0, &bins)?;
        }
        encode_last(out, ResultCode::Ok);
        Ok(())
    };
    let response = encode(encode_rows);

    let mut g = c.benchmark_group("batch of 100");
    g.throughput(Throughput::Elements(BATCH_ROWS as u64));
    let mut out = Vec::with_capacity(response.len());
    g.bench_function("encode request", |b| {
        b.iter(|| {
            out.clear();
            black_box(&request).encode_frame(&mut out).unwrap();
        })
    });
    g.bench_function("decode request", |b| {
        b.iter(|| black_box(Request::decode(&black_box(&request_frame)[8..], &limits).unwrap()))
    });
    g.bench_function("encode response rows (100 B bin)", |b| {
        b.iter(|| {
            out.clear();
            encode_rows(&mut out).unwrap();
        })
    });
    g.bench_function("decode response rows (100 B bin)", |b| {
        b.iter(|| {
            for m in MessageIter::new(black_box(&response)) {
                black_box(BatchResponseItem::from_message(m.unwrap()));
            }
        })
    });
    g.finish();
}

fn bench_scan(c: &mut Criterion) {
    let limits = Limits::default();
    let request = ScanRequest::new("test", Some("demo"), (0..4096).collect());
    let request_frame = encode(|out| request.encode_frame(out));
    let value = vec![7u8; VALUE_SIZE_BYTES];
    let bins = [Op::result("value", Value::Blob(BlobType::Generic, &value))];
    let digests: Vec<_> = (0..SCAN_RECORDS).map(digest).collect();
    let encode_records = |out: &mut Vec<u8>| {
        for d in &digests {
            let record = ScanRecordHeader {
                namespace: "test",
                digest: *d,
                set: Some("demo"),
                key: None,
                generation: 1,
                void_time_secs: 0,
                no_bins: false,
            };
            encode_scan_record(out, &record, &bins)?;
        }
        encode_last(out, ResultCode::Ok);
        Ok(())
    };
    let response = encode(encode_records);

    let mut g = c.benchmark_group("scan");
    let mut out = Vec::with_capacity(response.len());
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode request (4096 partitions)", |b| {
        b.iter(|| {
            out.clear();
            black_box(&request).encode_frame(&mut out).unwrap();
        })
    });
    g.bench_function("decode request (4096 partitions)", |b| {
        b.iter(|| black_box(Request::decode(&black_box(&request_frame)[8..], &limits).unwrap()))
    });
    g.throughput(Throughput::Elements(SCAN_RECORDS as u64));
    g.bench_function("encode 100 records (100 B bin)", |b| {
        b.iter(|| {
            out.clear();
            encode_records(&mut out).unwrap();
        })
    });
    g.bench_function("decode 100 records (100 B bin)", |b| {
        b.iter(|| {
            for m in MessageIter::new(black_box(&response)) {
                black_box(ScanResponseItem::from_message(m.unwrap()).unwrap());
            }
        })
    });
    g.finish();
}

fn bench_info(c: &mut Criterion) {
    let tend = b"node\npeers-generation\npartition-generation\n";
    let entries = [ReplicasEntry {
        namespace: "test",
        regime: 0,
        columns: vec![PartitionBitmap::from_fn(|p| p % 2 == 0)],
    }];
    let mut g = c.benchmark_group("info");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse tend request", |b| {
        b.iter(|| black_box(InfoRequest::parse(black_box(tend)).unwrap()))
    });
    let mut out = Vec::with_capacity(1024);
    g.bench_function("answer tend request", |b| {
        b.iter(|| {
            out.clear();
            let request = InfoRequest::parse(black_box(tend)).unwrap();
            let mut w = InfoResponseWriter::new(&mut out);
            for c in &request.commands {
                w.entry(c.line, "1").unwrap();
            }
            w.finish().unwrap();
        })
    });
    g.bench_function("format replicas (1 namespace)", |b| {
        b.iter(|| black_box(format_replicas(black_box(&entries)).unwrap()))
    });
    g.finish();
}

fn bench_compress(c: &mut Criterion) {
    let limits = Limits::default();
    let value: Vec<u8> = (0..10_000u32).map(|i| (i % 64) as u8 + b' ').collect();
    let inner = encode(|out| put_request(&value).encode_frame(out));
    let frame = encode(|out| compress::encode_compressed_frame(out, &inner, 1));
    let mut g = c.benchmark_group("compressed (10 kB put)");
    g.throughput(Throughput::Bytes(inner.len() as u64));
    let mut out = Vec::with_capacity(inner.len());
    g.bench_function("compress level 1", |b| {
        b.iter(|| {
            out.clear();
            compress::encode_compressed_frame(&mut out, black_box(&inner), 1).unwrap();
        })
    });
    g.bench_function("decompress", |b| {
        b.iter(|| black_box(compress::decompress(black_box(&frame[8..]), &limits).unwrap()))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_digest,
    bench_single_record,
    bench_batch,
    bench_scan,
    bench_info,
    bench_compress
);
criterion_main!(benches);
