//! Typed AS_MSG requests: dispatch (spec §3), single-record commands (§7.1),
//! TTLs and void times (§7.3), and the single-record response (§7.4).
//!
//! [`Request::decode`] turns a type-3 frame body into a
//! [`RecordRequest`], a [`BatchRequest`] or a [`ScanRequest`], in the real
//! server's order: info1 BATCH first, then "no digest field" means scan/query,
//! else a single-record command.

use crate::batch::BatchRequest;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::field::{Field, field_type};
use crate::framing::{Limits, MessageType, write_frame};
use crate::message::{Info2, Info3, Message, MessageHeader, MessageWriter, encode_last};
use crate::op::Op;
use crate::particle::UserKey;
use crate::result::ResultCode;
use crate::scan::ScanRequest;

/// Request record_ttl: the namespace default TTL.
pub const TTL_NAMESPACE_DEFAULT: u32 = 0;
/// Request record_ttl: never expire.
pub const TTL_NEVER_EXPIRE: u32 = 0xFFFF_FFFF;
/// Request record_ttl: keep the existing TTL.
pub const TTL_DONT_UPDATE: u32 = 0xFFFF_FFFE;
/// Request record_ttl: the client-only "use the policy default" (never sent).
pub const TTL_CLIENT_DEFAULT: u32 = 0xFFFF_FFFD;
/// Largest TTL in seconds a write may ask for (10 years).
pub const MAX_TTL_SECS: u32 = 315_360_000;
/// The Aerospike epoch, 2010-01-01T00:00:00Z, in Unix seconds.
pub const AEROSPIKE_EPOCH_UNIX_SECS: u64 = 1_262_304_000;

/// The TTL of a write (spec §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// 0: the namespace default.
    NamespaceDefault,
    /// 0xFFFFFFFF: never expire.
    NeverExpire,
    /// 0xFFFFFFFE: keep the existing TTL (a new record gets the default).
    DontUpdate,
    /// 1..=315360000 seconds from now.
    Seconds(u32),
}

impl Ttl {
    /// Interprets a write's record_ttl; anything else is PARAMETER.
    pub fn from_wire(record_ttl: u32) -> Result<Ttl> {
        match record_ttl {
            TTL_NAMESPACE_DEFAULT => Ok(Ttl::NamespaceDefault),
            TTL_NEVER_EXPIRE => Ok(Ttl::NeverExpire),
            TTL_DONT_UPDATE => Ok(Ttl::DontUpdate),
            1..=MAX_TTL_SECS => Ok(Ttl::Seconds(record_ttl)),
            _ => Err(Error::malformed(
                "record ttl",
                10,
                "above 10 years and not a special value",
            )),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u32 {
        match self {
            Ttl::NamespaceDefault => TTL_NAMESPACE_DEFAULT,
            Ttl::NeverExpire => TTL_NEVER_EXPIRE,
            Ttl::DontUpdate => TTL_DONT_UPDATE,
            Ttl::Seconds(s) => s,
        }
    }
}

/// The response void time for an expiry at `expiry_unix_secs` (`None`: never
/// expires, answered as 0). Times before the epoch+1s floor to 1 so that they
/// never read as "never".
pub fn void_time_secs(expiry_unix_secs: Option<u64>) -> u32 {
    match expiry_unix_secs {
        None => 0,
        Some(t) => {
            let since_epoch = t.saturating_sub(AEROSPIKE_EPOCH_UNIX_SECS).max(1);
            u32::try_from(since_epoch).unwrap_or(u32::MAX)
        }
    }
}

/// The Unix expiry time of a response void time (`None` for 0 = never).
pub fn expiry_unix_secs(void_time_secs: u32) -> Option<u64> {
    (void_time_secs != 0).then(|| AEROSPIKE_EPOCH_UNIX_SECS + u64::from(void_time_secs))
}

/// What a write does about an existing record (info2/info3 bits, §3 and §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExistsPolicy {
    /// Create or merge bins.
    Update,
    /// info3 UPDATE_ONLY: merge; the record must exist.
    UpdateOnly,
    /// info3 CREATE_OR_REPLACE: replace all bins; create if missing.
    CreateOrReplace,
    /// info3 REPLACE_ONLY: replace all bins; the record must exist.
    ReplaceOnly,
    /// info2 CREATE_ONLY: the record must not exist.
    CreateOnly,
}

/// The generation check of a write (info2 GENERATION / GENERATION_GT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenerationPolicy {
    /// No check.
    None,
    /// Apply only if the record's generation equals this.
    Equal(u32),
    /// Apply only if this is greater than the record's generation.
    Greater(u32),
}

/// The path a single-record command takes (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordCommand {
    /// READ set, WRITE clear.
    Read,
    /// WRITE set, DELETE clear.
    Write,
    /// WRITE and DELETE set.
    Delete,
}

/// A single-record command (spec §7.1): namespace, set, digest, optional key
/// and filter, then ops.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRequest<'a> {
    /// The header as sent (flags, generation, record_ttl, timeout).
    pub header: MessageHeader,
    /// Namespace (field 0, required).
    pub namespace: &'a str,
    /// Set (field 1): `None` when absent (Rust), `Some("")` when empty (C).
    pub set: Option<&'a str>,
    /// Digest (field 4, required).
    pub digest: Digest,
    /// User key (field 2), when the client sends it.
    pub key: Option<UserKey<'a>>,
    /// Filter expression (field 43).
    pub filter: Option<&'a [u8]>,
    /// Every other field, in wire order (transaction fields, unknown types).
    pub other_fields: Vec<Field<'a>>,
    /// The ops.
    pub ops: Vec<Op<'a>>,
}

/// The fields most requests pick out of their field list; duplicates are
/// PARAMETER errors, anything else lands in `other`.
#[derive(Debug, Default)]
pub(crate) struct CommonFields<'a> {
    pub(crate) namespace: Option<&'a str>,
    pub(crate) set: Option<&'a str>,
    pub(crate) digest: Option<Digest>,
    pub(crate) key: Option<UserKey<'a>>,
    pub(crate) filter: Option<&'a [u8]>,
    pub(crate) other: Vec<Field<'a>>,
}

pub(crate) fn put_once<T>(slot: &mut Option<T>, value: T, what: &'static str) -> Result<()> {
    if slot.is_some() {
        return Err(Error::malformed(what, 0, "field repeated"));
    }
    *slot = Some(value);
    Ok(())
}

impl<'a> CommonFields<'a> {
    /// Sorts `fields`; `pick` sees each field not taken here first and returns
    /// it back if it does not want it either.
    pub(crate) fn split(
        fields: Vec<Field<'a>>,
        mut pick: impl FnMut(Field<'a>) -> Result<Option<Field<'a>>>,
    ) -> Result<CommonFields<'a>> {
        let mut c = CommonFields::default();
        for field in fields {
            match field {
                Field::Namespace(ns) => put_once(&mut c.namespace, ns, "namespace")?,
                Field::Set(set) => put_once(&mut c.set, set, "set")?,
                Field::Digest(d) => put_once(&mut c.digest, d, "digest")?,
                Field::Key(k) => put_once(&mut c.key, k, "key")?,
                Field::Filter(f) => put_once(&mut c.filter, f, "filter")?,
                other => {
                    if let Some(rest) = pick(other)? {
                        c.other.push(rest);
                    }
                }
            }
        }
        Ok(c)
    }

    pub(crate) fn namespace(&self) -> Result<&'a str> {
        self.namespace
            .ok_or(Error::MissingField { what: "namespace" })
    }
}

impl<'a> RecordRequest<'a> {
    /// A request with no key, filter or extra fields.
    pub fn new(
        header: MessageHeader,
        namespace: &'a str,
        set: Option<&'a str>,
        digest: Digest,
        ops: Vec<Op<'a>>,
    ) -> RecordRequest<'a> {
        RecordRequest {
            header,
            namespace,
            set,
            digest,
            key: None,
            filter: None,
            other_fields: Vec::new(),
            ops,
        }
    }

    /// Interprets a decoded message (which must carry a digest field).
    pub fn from_message(message: Message<'a>) -> Result<RecordRequest<'a>> {
        let c = CommonFields::split(message.fields, |f| Ok(Some(f)))?;
        Ok(RecordRequest {
            header: message.header,
            namespace: c.namespace()?,
            set: c.set,
            digest: c.digest.ok_or(Error::MissingField { what: "digest" })?,
            key: c.key,
            filter: c.filter,
            other_fields: c.other,
            ops: message.ops,
        })
    }

    /// The set name, "" when there is none.
    pub fn set_name(&self) -> &'a str {
        self.set.unwrap_or("")
    }

    /// The server-side timeout in ms (0 = none).
    pub fn timeout_ms(&self) -> u32 {
        self.header.transaction_ttl
    }

    /// Read, write or delete; neither READ nor WRITE is PARAMETER.
    pub fn command(&self) -> Result<RecordCommand> {
        let h = &self.header;
        if h.info2.contains(Info2::WRITE) {
            if h.info2.contains(Info2::DELETE) {
                Ok(RecordCommand::Delete)
            } else {
                Ok(RecordCommand::Write)
            }
        } else if h.info1.contains(crate::message::Info1::READ) {
            Ok(RecordCommand::Read)
        } else {
            Err(Error::malformed(
                "message header",
                1,
                "neither READ nor WRITE",
            ))
        }
    }

    /// The TTL of a write.
    pub fn ttl(&self) -> Result<Ttl> {
        Ttl::from_wire(self.header.record_ttl)
    }

    /// The exists policy of a write. CREATE_ONLY wins, then the info3 bits in
    /// the order UPDATE_ONLY, CREATE_OR_REPLACE, REPLACE_ONLY.
    pub fn exists_policy(&self) -> ExistsPolicy {
        let (i2, i3) = (self.header.info2, self.header.info3);
        if i2.contains(Info2::CREATE_ONLY) {
            ExistsPolicy::CreateOnly
        } else if i3.contains(Info3::UPDATE_ONLY) {
            ExistsPolicy::UpdateOnly
        } else if i3.contains(Info3::CREATE_OR_REPLACE) {
            ExistsPolicy::CreateOrReplace
        } else if i3.contains(Info3::REPLACE_ONLY) {
            ExistsPolicy::ReplaceOnly
        } else {
            ExistsPolicy::Update
        }
    }

    /// The generation policy of a write (GENERATION wins over GENERATION_GT).
    pub fn generation_policy(&self) -> GenerationPolicy {
        let h = &self.header;
        if h.info2.contains(Info2::GENERATION) {
            GenerationPolicy::Equal(h.generation)
        } else if h.info2.contains(Info2::GENERATION_GT) {
            GenerationPolicy::Greater(h.generation)
        } else {
            GenerationPolicy::None
        }
    }

    /// Appends the message (no proto header). Fields in the C client's order:
    /// namespace, set, digest, other fields, key, filter.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut w = MessageWriter::begin(out, &self.header);
        w.field(out, &Field::Namespace(self.namespace))?;
        if let Some(set) = self.set {
            w.field(out, &Field::Set(set))?;
        }
        w.field(out, &Field::Digest(self.digest))?;
        for f in &self.other_fields {
            w.field(out, f)?;
        }
        if let Some(key) = self.key {
            w.field(out, &Field::Key(key))?;
        }
        if let Some(filter) = self.filter {
            w.field(out, &Field::Filter(filter))?;
        }
        w.finish_with_ops(out, &self.ops)
    }

    /// Appends the request as a type-3 frame.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<()> {
        write_frame(out, MessageType::AsMsg, |out| self.encode(out))
    }
}

/// A decoded type-3 request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request<'a> {
    /// A single-record command.
    Record(RecordRequest<'a>),
    /// A batch-index request.
    Batch(BatchRequest<'a>),
    /// A partition scan or query.
    Scan(ScanRequest<'a>),
}

impl<'a> Request<'a> {
    /// Decodes a type-3 frame body (or the body of an inflated type-4 frame).
    pub fn decode(body: &'a [u8], limits: &Limits) -> Result<Request<'a>> {
        Request::from_message(Message::decode(body)?, limits)
    }

    /// Dispatches a decoded message as the real server does (spec §3).
    pub fn from_message(message: Message<'a>, limits: &Limits) -> Result<Request<'a>> {
        if message.header.info1.contains(crate::message::Info1::BATCH) {
            Ok(Request::Batch(BatchRequest::from_message(
                message,
                limits.max_batch_rows,
            )?))
        } else if message.field(field_type::DIGEST).is_none() {
            Ok(Request::Scan(ScanRequest::from_message(message)?))
        } else {
            Ok(Request::Record(RecordRequest::from_message(message)?))
        }
    }

    /// Appends the request as a type-3 frame.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Request::Record(r) => r.encode_frame(out),
            Request::Batch(b) => b.encode_frame(out),
            Request::Scan(s) => s.encode_frame(out),
        }
    }
}

/// Appends a single-record response frame (spec §7.4): status, generation,
/// void time, no fields, these result ops.
pub fn encode_record_response(
    out: &mut Vec<u8>,
    result_code: ResultCode,
    generation: u32,
    void_time_secs: u32,
    ops: &[Op<'_>],
) -> Result<()> {
    write_frame(out, MessageType::AsMsg, |out| {
        let header = MessageHeader::response(result_code, generation, void_time_secs);
        MessageWriter::begin(out, &header).finish_with_ops(out, ops)
    })
}

/// Appends an error answer for a request that could not be decoded (so its
/// kind is unknown): one message with the status and info3 LAST. Batch and
/// scan clients take LAST with a non-zero status as the whole call's error;
/// single-record clients read only the status (the real server's
/// single-record error has info3 0: once the kind is known, answer with
/// [`encode_record_response`] instead).
pub fn encode_error_response(out: &mut Vec<u8>, result_code: ResultCode) -> Result<()> {
    write_frame(out, MessageType::AsMsg, |out| {
        encode_last(out, result_code);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameDecoder;
    use crate::message::Info1;
    use crate::particle::Value;

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const PUT: &str = "02030000000000521600010000000000000000000000000003e800030001000000050074657374000000050164656d6f0000001504b747f5854d0b33259928d0cfab7fad81d6abfbf60000000d02010001610000000000000001";
    const GET: &str = "02030000000000411603000000000000000000000000000003e800030000000000050074657374000000050164656d6f0000001504b747f5854d0b33259928d0cfab7fad81d6abfbf6";
    const PUT_RESPONSE: &str = "020300000000001616000000000000000001000000000000000000000000";
    const GET_RESPONSE: &str = "0203000000000027160000000000000000010000000000000000000000010000000d01010001610000000000000001";
    const DIGEST_K1: &str = "b747f5854d0b33259928d0cfab7fad81d6abfbf6";

    fn digest_k1() -> Digest {
        unhex(DIGEST_K1).try_into().unwrap()
    }

    fn decode_request(frame: &[u8]) -> RecordRequest<'_> {
        let f = FrameDecoder::default().decode_exact(frame).unwrap();
        assert_eq!(f.header.msg_type, MessageType::AsMsg);
        match Request::decode(f.body, &Limits::default()).unwrap() {
            Request::Record(r) => r,
            other => panic!("not a record request: {other:?}"),
        }
    }

    #[test]
    fn python_put_decodes_and_re_encodes_byte_for_byte() {
        let bytes = unhex(PUT);
        let req = decode_request(&bytes);
        let expected = RecordRequest::new(
            MessageHeader {
                info2: Info2::WRITE,
                transaction_ttl: 1000,
                ..MessageHeader::default()
            },
            "test",
            Some("demo"),
            digest_k1(),
            vec![Op::write("a", Value::Int(1))],
        );
        assert_eq!(req, expected);
        assert_eq!(req.command().unwrap(), RecordCommand::Write);
        assert_eq!(req.ttl().unwrap(), Ttl::NamespaceDefault);
        assert_eq!(req.exists_policy(), ExistsPolicy::Update);
        assert_eq!(req.generation_policy(), GenerationPolicy::None);
        assert_eq!(req.timeout_ms(), 1000);
        let mut out = Vec::new();
        req.encode_frame(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn python_get_decodes_and_re_encodes_byte_for_byte() {
        let bytes = unhex(GET);
        let req = decode_request(&bytes);
        assert_eq!(req.header.info1, Info1::READ | Info1::GET_ALL);
        assert_eq!(req.command().unwrap(), RecordCommand::Read);
        assert!(req.ops.is_empty());
        assert_eq!(req.set_name(), "demo");
        let mut out = Vec::new();
        Request::Record(req).encode_frame(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn spec_responses_encode_and_decode_byte_for_byte() {
        let mut out = Vec::new();
        encode_record_response(&mut out, ResultCode::Ok, 1, 0, &[]).unwrap();
        assert_eq!(out, unhex(PUT_RESPONSE));

        let mut out = Vec::new();
        let bins = [Op::result("a", Value::Int(1))];
        encode_record_response(&mut out, ResultCode::Ok, 1, 0, &bins).unwrap();
        let expected = unhex(GET_RESPONSE);
        assert_eq!(out, expected);

        let f = FrameDecoder::default().decode_exact(&expected).unwrap();
        let m = Message::decode(f.body).unwrap();
        assert_eq!(m.header, MessageHeader::response(ResultCode::Ok, 1, 0));
        assert_eq!(m.ops, bins);
    }

    #[test]
    fn spec_header_shapes() {
        // §14.6: exists 21 00 00, remove 00 03 00, touch with record_ttl 100.
        let mut req = RecordRequest::new(
            MessageHeader {
                info1: Info1(0x21),
                ..MessageHeader::default()
            },
            "test",
            Some(""),
            digest_k1(),
            vec![],
        );
        assert_eq!(req.command().unwrap(), RecordCommand::Read);
        req.header.info1 = Info1(0);
        req.header.info2 = Info2(0x03);
        assert_eq!(req.command().unwrap(), RecordCommand::Delete);
        req.header.info2 = Info2(0);
        assert_eq!(
            req.command().unwrap_err().result_code(),
            ResultCode::Parameter
        );
        req.header.info2 = Info2::WRITE | Info2::CREATE_ONLY | Info2::GENERATION;
        req.header.generation = 4;
        assert_eq!(req.exists_policy(), ExistsPolicy::CreateOnly);
        assert_eq!(req.generation_policy(), GenerationPolicy::Equal(4));
        req.header.info2 = Info2::WRITE | Info2::GENERATION_GT;
        req.header.info3 = Info3::REPLACE_ONLY;
        assert_eq!(req.exists_policy(), ExistsPolicy::ReplaceOnly);
        assert_eq!(req.generation_policy(), GenerationPolicy::Greater(4));
        // The C client's empty set field survives a round trip.
        let mut out = Vec::new();
        req.encode_frame(&mut out).unwrap();
        assert_eq!(decode_request(&out), req);
    }

    #[test]
    fn ttl_rules() {
        assert_eq!(Ttl::from_wire(0).unwrap(), Ttl::NamespaceDefault);
        assert_eq!(Ttl::from_wire(u32::MAX).unwrap(), Ttl::NeverExpire);
        assert_eq!(Ttl::from_wire(u32::MAX - 1).unwrap(), Ttl::DontUpdate);
        assert_eq!(Ttl::from_wire(100).unwrap(), Ttl::Seconds(100));
        assert_eq!(
            Ttl::from_wire(MAX_TTL_SECS).unwrap(),
            Ttl::Seconds(MAX_TTL_SECS)
        );
        assert!(Ttl::from_wire(MAX_TTL_SECS + 1).is_err());
        assert!(Ttl::from_wire(TTL_CLIENT_DEFAULT).is_err());
        for t in [0, u32::MAX, u32::MAX - 1, 5] {
            assert_eq!(Ttl::from_wire(t).unwrap().to_wire(), t);
        }
    }

    #[test]
    fn void_times() {
        assert_eq!(void_time_secs(None), 0);
        // §7.3: void time 533014765 is 2026-11-21 (unix 1795318765).
        assert_eq!(void_time_secs(Some(1_795_318_765)), 533_014_765);
        assert_eq!(expiry_unix_secs(533_014_765), Some(1_795_318_765));
        assert_eq!(expiry_unix_secs(0), None);
        assert_eq!(void_time_secs(Some(5)), 1);
    }

    #[test]
    fn missing_and_repeated_fields_are_errors() {
        let header = MessageHeader {
            info1: Info1::READ,
            ..MessageHeader::default()
        };
        let d = Field::Digest([0; 20]);
        let no_ns = Message::new(header, vec![d], vec![]);
        assert_eq!(
            RecordRequest::from_message(no_ns).unwrap_err(),
            Error::MissingField { what: "namespace" }
        );
        let twice = Message::new(
            header,
            vec![Field::Namespace("a"), d, Field::Namespace("b")],
            vec![],
        );
        assert!(RecordRequest::from_message(twice).is_err());
    }

    #[test]
    fn error_response_is_last_with_the_code() {
        let mut out = Vec::new();
        encode_error_response(&mut out, ResultCode::Parameter).unwrap();
        let f = FrameDecoder::default().decode_exact(&out).unwrap();
        let m = Message::decode(f.body).unwrap();
        assert_eq!(m.header.result_code, ResultCode::Parameter);
        assert!(m.header.info3.contains(Info3::LAST));
    }
}
