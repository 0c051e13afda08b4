//! Aerie's codec for the Aerospike wire protocol: pure code over bytes (no
//! I/O, no async), used by the server (`aerie node`) to decode requests and
//! encode responses, and by Aerie's own client tools (`aerie info`,
//! `aerie bench`) the other way round. The specification is
//! `shared/protocol/aerospike-wire.md`; section numbers below refer to it.
//!
//! # Who owns what
//!
//! | module | owns | spec |
//! |---|---|---|
//! | [`framing`] | the 8-byte proto header, message types, [`Limits`], the incremental [`FrameDecoder`] | §1 |
//! | [`info`] | info request parsing, response writing, answer formats (`replicas` bitmaps, peers, errors, base64), the build version to claim | §2 |
//! | [`admin`] | type-2 messages; the "security not enabled" (52) answer to a login | §10 |
//! | [`message`] | the 22-byte AS_MSG header, info1..4 flags, whole messages, streams, [`MessageWriter`] | §3 |
//! | [`field`] | fields and their types (little-endian PID/bval/transaction fields) | §4 |
//! | [`op`] | bin ops and op types | §5, §5.1 |
//! | [`particle`] | particle types and values, the user key | §4.1, §5.2 |
//! | [`digest`] | RIPEMD-160 digest and partition id | §6 |
//! | [`request`] | dispatch into typed requests, single-record commands, TTLs and void times, single-record responses | §3, §7 |
//! | [`result`] | result codes | §7.5 |
//! | [`batch`] | batch-index requests and response rows | §8 |
//! | [`scan`] | partition scan requests and the record / partition-done / LAST stream | §9 |
//! | [`compress`] | type-4 zlib messages, bounded inflation | §11 |
//! | [`error`] | the crate's one error type, with the result code to answer | |
//!
//! Decoders borrow from their input ([`Message`], [`Op`], [`Value`] hold
//! slices of it) and are total: malformed, truncated or oversized input is an
//! [`Error`] carrying what was being read, where, and (via
//! [`Error::result_code`]) the status a server should answer with. No count
//! read from the wire reserves more memory than the bytes left could hold.
//!
//! # Serving a connection
//!
//! ```
//! use aerie_protocol::{
//!     FrameDecoder, FrameStatus, Limits, MessageType, Op, Request, ResultCode, Value,
//!     compress, encode_record_response, info,
//! };
//!
//! // What a client sent: Python's `get(("test", "demo", "k1"))` (spec §14.5).
//! let hex = "02030000000000411603000000000000000000000000000003e800030000000000\
//!            050074657374000000050164656d6f0000001504b747f5854d0b33259928d0cfab\
//!            7fad81d6abfbf6";
//! let input: Vec<u8> = (0..hex.len()).step_by(2)
//!     .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
//!     .collect();
//!
//! let limits = Limits::default();
//! let mut reply = Vec::new();
//! let FrameStatus::Complete { frame, consumed_bytes } = FrameDecoder::new(limits).decode(&input)?
//! else {
//!     unreachable!("read more bytes and try again");
//! };
//! assert_eq!(consumed_bytes, input.len());
//! let inflated; // a type-4 body inflates into a buffer the request borrows from
//! let body = match frame.header.msg_type {
//!     MessageType::AsMsg => frame.body,
//!     MessageType::Compressed => {
//!         inflated = compress::decompress(frame.body, &limits)?;
//!         compress::inner_frame(&inflated, &limits)?.body
//!     }
//!     MessageType::Info => unimplemented!("info::InfoRequest::parse(frame.body)"),
//!     MessageType::Admin => unimplemented!("admin::encode_security_not_enabled"),
//! };
//! match Request::decode(body, &limits) {
//!     Ok(Request::Record(get)) => {
//!         assert_eq!((get.namespace, get.set_name()), ("test", "demo"));
//!         // ... look up (namespace, get.digest) ...
//!         let bins = [Op::result("a", Value::Int(1))];
//!         encode_record_response(&mut reply, ResultCode::Ok, 1, 0, &bins)?;
//!     }
//!     Ok(Request::Batch(_) | Request::Scan(_)) => unreachable!(),
//!     Err(e) => aerie_protocol::encode_error_response(&mut reply, e.result_code())?,
//! }
//! assert_eq!(reply.len(), 8 + 39);
//! # Ok::<(), aerie_protocol::Error>(())
//! ```
//!
//! Batch answers are rows written with [`batch::encode_batch_row`] inside
//! frames of the server's choosing, then a LAST message
//! ([`message::encode_last`]) in its own frame; scans write records with
//! [`scan::encode_scan_record`] (or [`scan::begin_scan_record`] and
//! [`MessageWriter`]), [`scan::encode_partition_done`] for partitions not
//! served here, then LAST.

pub mod admin;
pub mod batch;
pub mod compress;
pub mod digest;
pub mod error;
pub mod field;
pub mod framing;
pub mod info;
pub mod message;
pub mod op;
pub mod particle;
pub mod request;
pub mod result;
pub mod scan;
mod wire;

pub use batch::{BatchRequest, BatchResponseItem, BatchRow, BatchRowAttrs};
pub use digest::{Digest, PARTITION_COUNT, compute_digest, partition_id};
pub use error::{Error, Result};
pub use field::Field;
pub use framing::{Frame, FrameDecoder, FrameStatus, Limits, MessageType, ProtoHeader};
pub use message::{Info1, Info2, Info3, Info4, Message, MessageHeader, MessageIter, MessageWriter};
pub use op::{Op, OpType};
pub use particle::{BlobType, GeoJson, UserKey, Value};
pub use request::{
    RecordCommand, RecordRequest, Request, Ttl, encode_error_response, encode_record_response,
};
pub use result::ResultCode;
pub use scan::{IndexFilter, ScanRecordHeader, ScanRequest, ScanResponseItem};
