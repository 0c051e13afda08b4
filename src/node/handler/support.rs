//! What Aerie refuses instead of ignoring: every field, flag and op a request
//! may carry that the handler does not act on is answered
//! UNSUPPORTED_FEATURE (16) when it names a feature Aerie does not implement
//! (filter expressions, transactions, UDFs, secondary indexes, XDR,
//! read-touch, throttles), or PARAMETER (4) when it has no meaning there.
//! Everything is checked before anything is proposed, read or returned, so a
//! refused request surely did nothing.
//!
//! Accepted although not acted on, because Aerie already gives at least what
//! they ask for: info1 READ_MODE_AP_ALL and info3 SC read modes (reads are
//! linearizable), info3 COMMIT_LEVEL_MASTER (writes wait for a majority),
//! info2 DURABLE_DELETE (deletes always leave a tombstone), info1
//! COMPRESS_RESPONSE (answers may be uncompressed, spec §11), the info4
//! error-detail verbosity (no details are sent, which clients accept), info1
//! SHORT_QUERY and info2 RELAX_AP_LONG_QUERY, and the scan task id and
//! socket timeout (the timeout bounds each wait of the scan).

use aerie_protocol::batch::parent_flags;
use aerie_protocol::field::field_type as ft;
use aerie_protocol::scan::ScanRequest;
use aerie_protocol::{
    BatchRequest, BatchRowAttrs, Field, Info1, Info2, Info4, MessageHeader, Op, OpType,
    RecordRequest, ResultCode, Value,
};

type Check = Result<(), ResultCode>;

/// info4 bits of multi-record transactions (everything but the verbosity).
const TXN_BITS: u8 = !Info4::ERROR_DETAIL_VERBOSITY.0;
/// Read record_ttl: the namespace's read-touch default (which is "never").
const READ_TOUCH_DEFAULT: u32 = 0;
/// Read record_ttl: do not touch.
const READ_TOUCH_NEVER: u32 = u32::MAX;
/// Read record_ttl 1..=100: touch when within this percent of the TTL.
const READ_TOUCH_MAX_PCT: u32 = 100;
/// Field 8: the old scan options.
const OLD_SCAN_OPTIONS: u8 = 8;
/// Field 44: a query's text WHERE clause (8.2+ servers).
const QUERY_WHERE: u8 = 44;
/// Every batch parent flag: inline processing is a scheduling hint, and
/// every row is always answered (what the other two ask for).
const KNOWN_PARENT_FLAGS: u8 = parent_flags::ALLOW_INLINE
    | parent_flags::ALLOW_INLINE_SSD
    | parent_flags::RESPOND_ALL_KEYS
    | parent_flags::REPORT_ERROR_PER_RECORD;

fn refuse(code: ResultCode) -> Check {
    Err(code)
}

/// A filter expression (field 43, the old predexp field too) is never
/// evaluated here: running the command without it would change or return
/// records the client excluded.
fn no_filter(filter: Option<&[u8]>) -> Check {
    match filter {
        Some(_) => refuse(ResultCode::UnsupportedFeature),
        None => Ok(()),
    }
}

/// The code for a field a request carries that its handler does not use.
fn field_code(field: &Field<'_>) -> ResultCode {
    match field.field_type() {
        ft::RECORD_VERSION
        | ft::TXN_ID
        | ft::TXN_DEADLINE
        | OLD_SCAN_OPTIONS
        | ft::LUT
        | ft::BVAL_ARRAY
        | ft::INDEX_NAME
        | ft::INDEX_RANGE
        | ft::INDEX_CONTEXT
        | ft::INDEX_EXPRESSION
        | ft::INDEX_TYPE
        | ft::UDF_PACKAGE_NAME
        | ft::UDF_FUNCTION
        | ft::UDF_ARGLIST
        | ft::UDF_OP
        | ft::QUERY_BINLIST
        | ft::BATCH_WITH_SET
        | QUERY_WHERE => ResultCode::UnsupportedFeature,
        _ => ResultCode::Parameter,
    }
}

fn no_other_fields(fields: &[Field<'_>]) -> Check {
    fields.first().map_or(Ok(()), |f| refuse(field_code(f)))
}

fn no_transaction(info4: Info4) -> Check {
    if info4.0 & TXN_BITS != 0 {
        return refuse(ResultCode::UnsupportedFeature);
    }
    Ok(())
}

/// XDR writes carry conflict-resolution semantics Aerie does not have.
fn no_xdr(info1: Info1) -> Check {
    if info1.contains(Info1::XDR) {
        return refuse(ResultCode::UnsupportedFeature);
    }
    Ok(())
}

/// A read's record_ttl is its read-touch percent: Aerie never touches on read.
fn no_read_touch(record_ttl: u32) -> Check {
    match record_ttl {
        READ_TOUCH_DEFAULT | READ_TOUCH_NEVER => Ok(()),
        1..=READ_TOUCH_MAX_PCT => refuse(ResultCode::UnsupportedFeature),
        _ => refuse(ResultCode::Parameter),
    }
}

/// The ops of a pure read (a single-record read, a batch read row, a scan's
/// bin selection): plain READs of a bin, without a value.
fn read_ops_only(ops: &[Op<'_>]) -> Check {
    for op in ops {
        match op.op_type {
            OpType::Read if op.value == Value::Nil => {}
            OpType::Read => return refuse(ResultCode::Parameter),
            t if t.is_write() => return refuse(ResultCode::Parameter),
            // CDT, bit, HLL, expression and string reads.
            _ => return refuse(ResultCode::UnsupportedFeature),
        }
    }
    Ok(())
}

/// Header, fields and filter every single-record command is checked for.
fn record_common(req: &RecordRequest<'_>) -> Check {
    no_filter(req.filter)?;
    no_other_fields(&req.other_fields)?;
    no_transaction(req.header.info4)?;
    no_xdr(req.header.info1)
}

/// A single-record read.
pub fn read(req: &RecordRequest<'_>) -> Check {
    record_common(req)?;
    no_read_touch(req.header.record_ttl)?;
    read_ops_only(&req.ops)
}

/// A single-record write (put, touch, operate): the ops are checked as they
/// are converted (`convert::op_in`).
pub fn write(req: &RecordRequest<'_>) -> Check {
    record_common(req)?;
    for op in &req.ops {
        if op.op_type == OpType::Read && op.value != Value::Nil {
            return refuse(ResultCode::Parameter);
        }
    }
    Ok(())
}

/// A delete: no ops (they would be ignored).
pub fn delete(req: &RecordRequest<'_>) -> Check {
    record_common(req)?;
    if !req.ops.is_empty() {
        return refuse(ResultCode::Parameter);
    }
    Ok(())
}

/// A batch as a whole (a refusal fails the whole call).
pub fn batch(req: &BatchRequest<'_>) -> Check {
    no_filter(req.filter)?;
    no_other_fields(&req.other_fields)?;
    if req.parent_flags & !KNOWN_PARENT_FLAGS != 0 {
        return refuse(ResultCode::Parameter);
    }
    header(&req.header)
}

fn header(h: &MessageHeader) -> Check {
    no_transaction(h.info4)?;
    no_xdr(h.info1)
}

/// One batch read row (write rows are refused by the caller).
pub fn batch_row(attrs: &BatchRowAttrs<'_>) -> Check {
    no_filter(attrs.filter)?;
    no_other_fields(&attrs.other_fields)?;
    no_transaction(attrs.info4.unwrap_or_default())?;
    no_xdr(attrs.info1)?;
    no_read_touch(attrs.record_ttl.unwrap_or(READ_TOUCH_DEFAULT))?;
    read_ops_only(&attrs.ops)
}

/// A scan or query: foreground, without throttle, index, UDF or filter.
pub fn scan(req: &ScanRequest<'_>) -> Check {
    no_filter(req.filter)?;
    no_other_fields(&req.other_fields)?;
    header(&req.header)?;
    if req.header.info2.contains(Info2::WRITE) || req.records_per_second.is_some_and(|r| r > 0) {
        return refuse(ResultCode::UnsupportedFeature);
    }
    no_read_touch(req.header.record_ttl)?;
    read_ops_only(&req.ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerie_protocol::MessageHeader;

    fn get() -> RecordRequest<'static> {
        let header = MessageHeader {
            info1: Info1::READ | Info1::GET_ALL,
            transaction_ttl: 1000,
            ..MessageHeader::default()
        };
        RecordRequest::new(header, "test", Some("demo"), [1; 20], vec![])
    }

    #[test]
    fn what_clients_send_by_default_is_accepted() {
        let mut req = get();
        assert_eq!(read(&req), Ok(()));
        // Rust: read modes, compression, verbosity; C: read-touch "never".
        req.header.info1 = req.header.info1 | Info1::READ_MODE_AP_ALL | Info1::COMPRESS_RESPONSE;
        req.header.info3 = aerie_protocol::Info3::SC_READ_TYPE;
        req.header.info4 = Info4::ERROR_DETAIL_VERBOSITY;
        req.header.record_ttl = u32::MAX;
        assert_eq!(read(&req), Ok(()));
        req.ops = vec![Op::read("a")];
        assert_eq!(read(&req), Ok(()));
    }

    #[test]
    fn unimplemented_features_are_refused_with_16_and_nonsense_with_4() {
        let unsupported = ResultCode::UnsupportedFeature;
        let cases: Vec<(RecordRequest<'static>, ResultCode)> = vec![
            (
                RecordRequest {
                    filter: Some(&[0x93, 0x04]),
                    ..get()
                },
                unsupported,
            ),
            (
                RecordRequest {
                    other_fields: vec![Field::TxnId(7)],
                    ..get()
                },
                unsupported,
            ),
            (
                RecordRequest {
                    other_fields: vec![Field::Other {
                        field_type: ft::UDF_FUNCTION,
                        data: b"f",
                    }],
                    ..get()
                },
                unsupported,
            ),
            (
                RecordRequest {
                    other_fields: vec![Field::Other {
                        field_type: 99,
                        data: b"?",
                    }],
                    ..get()
                },
                ResultCode::Parameter,
            ),
            (
                RecordRequest {
                    ops: vec![Op::new(OpType::CdtRead, "l", Value::Nil)],
                    ..get()
                },
                unsupported,
            ),
            (
                RecordRequest {
                    ops: vec![Op::new(OpType::Incr, "n", Value::Int(1))],
                    ..get()
                },
                ResultCode::Parameter,
            ),
        ];
        for (req, code) in cases {
            assert_eq!(read(&req), Err(code), "{req:?}");
        }
        let mut req = get();
        req.header.record_ttl = 80;
        assert_eq!(read(&req), Err(unsupported), "read-touch");
        req.header.record_ttl = 0;
        req.header.info4 = Info4::TXN_VERIFY_READ;
        assert_eq!(read(&req), Err(unsupported), "transaction");
        req.header.info4 = Info4(0);
        req.header.info1 = Info1::XDR;
        assert_eq!(write(&req), Err(unsupported), "xdr");
        let mut del = get();
        del.ops = vec![Op::write("a", Value::Int(1))];
        assert_eq!(delete(&del), Err(ResultCode::Parameter));
    }

    #[test]
    fn scans_with_filters_throttles_or_background_ops_are_refused() {
        let base = ScanRequest::new("test", Some("demo"), vec![0, 1]);
        assert_eq!(scan(&base), Ok(()));
        let filtered = ScanRequest {
            filter: Some(&[1]),
            ..base.clone()
        };
        let throttled = ScanRequest {
            records_per_second: Some(100),
            ..base.clone()
        };
        let indexed = ScanRequest {
            other_fields: vec![Field::Other {
                field_type: ft::INDEX_RANGE,
                data: &[1],
            }],
            ..base.clone()
        };
        let projected = ScanRequest {
            ops: vec![Op::new(OpType::ExpRead, "x", Value::Nil)],
            ..base.clone()
        };
        for req in [filtered, throttled, indexed, projected] {
            assert_eq!(scan(&req), Err(ResultCode::UnsupportedFeature), "{req:?}");
        }
    }
}
