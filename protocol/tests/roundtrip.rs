#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests: every encoder's output decodes back to what was encoded.

mod common;

use aerie_protocol::admin::{AdminField, AdminMessage};
use aerie_protocol::batch::encode_batch_row;
use aerie_protocol::framing::{FrameDecoder, MessageType};
use aerie_protocol::info::{
    InfoRequest, InfoResponseWriter, PartitionBitmap, ReplicasEntry, base64_decode, base64_encode,
    format_replicas, parse_replicas, parse_response,
};
use aerie_protocol::message::{MessageIter, encode_last};
use aerie_protocol::scan::{ScanRecordHeader, encode_partition_done, encode_scan_record};
use aerie_protocol::{
    BatchResponseItem, Field, IndexFilter, Message, Op, Request, ResultCode, ScanResponseItem,
    UserKey, Value, compress, compute_digest, partition_id,
};
use common::*;
use proptest::prelude::*;

fn body(frame: &[u8], msg_type: MessageType) -> &[u8] {
    let f = FrameDecoder::new(test_limits())
        .decode_exact(frame)
        .unwrap();
    assert_eq!(f.header.msg_type, msg_type);
    f.body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn values(v in value()) {
        let v = v.v();
        let bytes = encode(|out| v.encode(out));
        prop_assert_eq!(bytes.len(), v.encoded_len());
        prop_assert_eq!(Value::decode(v.particle_type(), &bytes, 0).unwrap(), v);
    }

    #[test]
    fn user_keys(k in key(), set in set_name()) {
        let k = k.k();
        let mut bytes = Vec::new();
        k.encode(&mut bytes);
        prop_assert_eq!(bytes.len(), k.encoded_len());
        prop_assert_eq!(UserKey::decode(&bytes, 0).unwrap(), k);
        let d = compute_digest(set.as_bytes(), &k);
        prop_assert!(partition_id(&d) < 4096);
        prop_assert_eq!(partition_id(&d), u16::from_le_bytes([d[0], d[1]]) & 0x0fff);
    }

    #[test]
    fn fields(f in field()) {
        let f = f.f();
        let bytes = encode(|out| f.encode(out));
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(Field::decode_prefix(&bytes).unwrap(), (f, bytes.len()));
    }

    #[test]
    fn bin_ops(o in op()) {
        let o = o.o();
        let bytes = encode(|out| o.encode(out));
        prop_assert_eq!(bytes.len(), o.encoded_len());
        prop_assert_eq!(Op::decode_prefix(&bytes).unwrap(), (o, bytes.len()));
    }

    #[test]
    fn messages(m in message()) {
        let m = m.m();
        let frame = encode(|out| m.encode_frame(out));
        prop_assert_eq!(frame.len(), 8 + m.encoded_len());
        prop_assert_eq!(Message::decode(body(&frame, MessageType::AsMsg)).unwrap(), m);
    }

    #[test]
    fn record_requests(r in record_request()) {
        let r = r.r();
        let frame = encode(|out| r.encode_frame(out));
        let back = Request::decode(body(&frame, MessageType::AsMsg), &test_limits()).unwrap();
        prop_assert_eq!(back, Request::Record(r));
    }

    #[test]
    fn batch_requests(b in batch_request()) {
        let b = b.b();
        let frame = encode(|out| b.encode_frame(out));
        let back = Request::decode(body(&frame, MessageType::AsMsg), &test_limits()).unwrap();
        prop_assert_eq!(back, Request::Batch(b));
    }

    #[test]
    fn scan_requests(s in scan_request()) {
        let s = s.s();
        let frame = encode(|out| s.encode_frame(out));
        let back = Request::decode(body(&frame, MessageType::AsMsg), &test_limits()).unwrap();
        prop_assert_eq!(back, Request::Scan(s));
    }

    #[test]
    fn batch_responses(
        rows in prop::collection::vec((any::<u32>(), any::<u8>(), any::<u32>(), any::<u32>(), ops(3)), 0..5),
        last in any::<u8>(),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (index, code, generation, void_time, bins) in &rows {
            let bins: Vec<Op<'_>> = bins.iter().map(OOp::o).collect();
            let code = ResultCode::from_u8(*code);
            encode_batch_row(&mut stream, *index, code, *generation, *void_time, &bins).unwrap();
            expected.push(BatchResponseItem::Row {
                index: *index,
                result_code: code,
                generation: *generation,
                void_time_secs: *void_time,
                ops: bins,
            });
        }
        encode_last(&mut stream, ResultCode::from_u8(last));
        expected.push(BatchResponseItem::Last { result_code: ResultCode::from_u8(last) });
        let got: Vec<_> = MessageIter::new(&stream)
            .map(|m| m.map(BatchResponseItem::from_message))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn scan_responses(
        records in prop::collection::vec(
            (namespace(), digest(), prop::option::of(set_name()), prop::option::of(key()),
             any::<(u32, u32, bool)>(), ops(3)),
            0..4),
        done in prop::collection::vec((0..4096u16, any::<u8>()), 0..3),
        last in any::<u8>().prop_filter("2 reads as a clean end", |c| *c != 2),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (ns, digest, set, key, (generation, void_time, no_bins), bins) in &records {
            let record = ScanRecordHeader {
                namespace: ns,
                digest: *digest,
                set: set.as_deref(),
                key: key.as_ref().map(OKey::k),
                generation: *generation,
                void_time_secs: *void_time,
                no_bins: *no_bins,
            };
            let bins: Vec<Op<'_>> = bins.iter().map(OOp::o).collect();
            encode_scan_record(&mut stream, &record, &bins).unwrap();
            expected.push(ScanResponseItem::Record { record, bins });
        }
        for (pid, code) in &done {
            let code = ResultCode::from_u8(*code);
            encode_partition_done(&mut stream, *pid, code);
            expected.push(ScanResponseItem::PartitionDone { partition_id: *pid, result_code: code });
        }
        encode_last(&mut stream, ResultCode::from_u8(last));
        expected.push(ScanResponseItem::Last { result_code: ResultCode::from_u8(last) });
        let got: Vec<_> = MessageIter::new(&stream)
            .map(|m| m.and_then(ScanResponseItem::from_message))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn info_requests(names in prop::collection::vec("[a-z:/=;.0-9-]{1,20}", 0..6)) {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let frame = encode(|out| InfoRequest::encode_frame(out, &names));
        let parsed = InfoRequest::parse(body(&frame, MessageType::Info)).unwrap();
        let lines: Vec<&str> = parsed.commands.iter().map(|c| c.line).collect();
        prop_assert_eq!(lines, names);
    }

    #[test]
    fn info_responses(entries in prop::collection::vec(("[a-z:/=;.0-9-]{1,20}", "[ -~]{0,30}"), 0..6)) {
        let mut frame = Vec::new();
        let mut w = InfoResponseWriter::new(&mut frame);
        for (line, value) in &entries {
            w.entry(line, value).unwrap();
        }
        w.finish().unwrap();
        let parsed = parse_response(body(&frame, MessageType::Info)).unwrap();
        let expected: Vec<(&str, &str)> =
            entries.iter().map(|(l, v)| (l.as_str(), v.as_str())).collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn replicas(
        namespaces in prop::collection::vec(
            (namespace(), any::<u32>(), prop::collection::vec(prop::collection::vec(0..4096u16, 0..50), 1..4)),
            0..3),
    ) {
        let entries: Vec<ReplicasEntry<'_>> = namespaces
            .iter()
            .map(|(ns, regime, columns)| ReplicasEntry {
                namespace: ns,
                regime: *regime,
                columns: columns
                    .iter()
                    .map(|pids| {
                        let mut b = PartitionBitmap::default();
                        pids.iter().for_each(|p| b.set(*p));
                        b
                    })
                    .collect(),
            })
            .collect();
        let text = format_replicas(&entries).unwrap();
        prop_assert!(!text.ends_with(';'));
        prop_assert_eq!(parse_replicas(&text).unwrap(), entries);
    }

    #[test]
    fn base64(data in bytes(100)) {
        let text = base64_encode(&data);
        prop_assert_eq!(text.len(), data.len().div_ceil(3) * 4);
        prop_assert_eq!(base64_decode(&text).unwrap(), data);
    }

    #[test]
    fn index_filters(name in bytes(20), particle in any::<u8>(), begin in bytes(20), end in bytes(20)) {
        let f = IndexFilter { bin_name: &name, particle_type: particle, begin: &begin, end: &end };
        let data = encode(|out| f.encode(out));
        prop_assert_eq!(data.len(), f.encoded_len());
        prop_assert_eq!(IndexFilter::decode(&data).unwrap(), f);
    }

    #[test]
    fn admin_messages(code in any::<u8>(), command in any::<u8>(),
                      fields in prop::collection::vec((any::<u8>(), bytes(20)), 0..4)) {
        let m = AdminMessage {
            result_code: ResultCode::from_u8(code),
            command,
            fields: fields.iter().map(|(id, data)| AdminField { id: *id, data }).collect(),
        };
        let frame = encode(|out| m.encode_frame(out));
        prop_assert_eq!(AdminMessage::decode(body(&frame, MessageType::Admin)).unwrap(), m);
    }

    #[test]
    fn compressed_messages(m in message(), level in 0..10u32) {
        let inner = encode(|out| m.m().encode_frame(out));
        let frame = encode(|out| compress::encode_compressed_frame(out, &inner, level));
        let limits = test_limits();
        let inflated = compress::decompress(body(&frame, MessageType::Compressed), &limits).unwrap();
        prop_assert_eq!(&inflated, &inner);
        let inner_body = compress::inner_frame(&inflated, &limits).unwrap().body;
        prop_assert_eq!(Message::decode(inner_body).unwrap(), m.m());
    }
}
