//! The crate's one error type. Every decoder returns it for malformed,
//! truncated or oversized input; [`Error::result_code`] is the Aerospike status
//! a server should answer with (where the protocol lets it answer at all).
//!
//! Offsets are byte offsets into the buffer the failing decoder was given (for
//! AS_MSG decoders: the message body, i.e. the frame minus its 8-byte proto
//! header).

use crate::result::ResultCode;

/// Every error this crate returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ends before `what` does.
    #[error(
        "truncated {what} at offset {offset}: needs {needed_bytes} bytes, {available_bytes} left"
    )]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// How many bytes it needs.
        needed_bytes: usize,
        /// How many were left.
        available_bytes: usize,
    },
    /// The proto header's version byte is not 2 (spec §1).
    #[error("proto version {version} with message type {msg_type} (expected version 2)")]
    BadVersion {
        /// The version byte.
        version: u8,
        /// The message type byte.
        msg_type: u8,
    },
    /// The proto header's type byte is not one a client may send (1..=4).
    #[error("unsupported message type {msg_type}")]
    BadMessageType {
        /// The type byte.
        msg_type: u8,
    },
    /// A declared size is over its limit (checked before any allocation).
    #[error("{what} of {size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The declared size.
        size_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// A value is not what the wire format allows at this place.
    #[error("bad {what} at offset {offset}: {reason}")]
    Malformed {
        /// The field, op or structure being decoded.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
        /// The status to answer with.
        code: ResultCode,
    },
    /// A particle type this crate does not know (or does not accept here).
    #[error("unknown particle type {particle_type} in {what} at offset {offset}")]
    UnknownParticleType {
        /// The particle type byte.
        particle_type: u8,
        /// Op value or user key.
        what: &'static str,
        /// Where the value starts.
        offset: usize,
    },
    /// An op type this crate does not know (spec §5.1).
    #[error("unknown op type {op_type} at offset {offset}")]
    UnknownOpType {
        /// The op type byte.
        op_type: u8,
        /// Where the op starts.
        offset: usize,
    },
    /// A required field is absent.
    #[error("missing {what} field")]
    MissingField {
        /// The field.
        what: &'static str,
    },
    /// A batch request has more rows than the configured limit (spec §8).
    #[error("batch of {rows} rows exceeds the limit of {max_rows}")]
    TooManyBatchRows {
        /// Rows declared.
        rows: u32,
        /// The limit.
        max_rows: u32,
    },
    /// A scan or query request without info3 PARTITION_DONE (spec §9.1).
    #[error("scan request without info3 PARTITION_DONE")]
    ScanWithoutPartitionDone,
    /// A type-4 message that does not inflate to what it declares (spec §11).
    #[error("compressed message: {reason}")]
    Decompress {
        /// What went wrong.
        reason: String,
    },
    /// An info response value or line that would break the text format.
    #[error("info {what} contains a newline or tab: {text:?}")]
    InfoText {
        /// Line or value.
        what: &'static str,
        /// The offending text.
        text: String,
    },
    /// An encoder was given something the wire cannot carry.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it does not fit.
        reason: &'static str,
    },
}

impl Error {
    /// The Aerospike status a server should answer this error with.
    ///
    /// Framing errors (bad version, bad type, oversized or truncated frames)
    /// leave the connection out of step: the server should close it rather than
    /// answer; the code given for them is still PARAMETER.
    pub fn result_code(&self) -> ResultCode {
        match self {
            Error::Malformed { code, .. } => *code,
            Error::TooManyBatchRows { .. } => ResultCode::BatchMaxRequests,
            Error::ScanWithoutPartitionDone => ResultCode::UnsupportedFeature,
            Error::Truncated { .. }
            | Error::BadVersion { .. }
            | Error::BadMessageType { .. }
            | Error::TooLarge { .. }
            | Error::UnknownParticleType { .. }
            | Error::UnknownOpType { .. }
            | Error::MissingField { .. }
            | Error::Decompress { .. }
            | Error::InfoText { .. }
            | Error::Encode { .. } => ResultCode::Parameter,
        }
    }

    /// A [`Error::Malformed`] answered with PARAMETER.
    pub(crate) fn malformed(what: &'static str, offset: usize, reason: &'static str) -> Error {
        Error::Malformed {
            what,
            offset,
            reason,
            code: ResultCode::Parameter,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_follow_the_spec() {
        assert_eq!(
            Error::malformed("op", 3, "x").result_code(),
            ResultCode::Parameter
        );
        assert_eq!(
            Error::TooManyBatchRows {
                rows: 9,
                max_rows: 1
            }
            .result_code(),
            ResultCode::BatchMaxRequests
        );
        assert_eq!(
            Error::ScanWithoutPartitionDone.result_code(),
            ResultCode::UnsupportedFeature
        );
        let e = Error::Malformed {
            what: "bin name",
            offset: 0,
            reason: "longer than 15 bytes",
            code: ResultCode::BinName,
        };
        assert_eq!(e.result_code(), ResultCode::BinName);
        assert!(e.to_string().contains("bin name"));
    }
}
