//! Aerospike result codes (spec §7.5): the status byte of an AS_MSG header
//! (offset 5) and of an admin header (offset 9 of the frame).
//!
//! [`ResultCode`] is total over `u8`: every known code has its own variant and
//! any other byte is kept as [`ResultCode::Unknown`], so
//! `ResultCode::from_u8(b).to_u8() == b` for every `b`.

macro_rules! result_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// A server status code (spec §7.5).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ResultCode {
            $($(#[$doc])* $name,)*
            /// A code this crate has no name for (kept as sent).
            Unknown(u8),
        }

        impl ResultCode {
            /// The code for a wire byte (never fails: unnamed codes are `Unknown`).
            pub fn from_u8(value: u8) -> ResultCode {
                match value {
                    $($value => ResultCode::$name,)*
                    other => ResultCode::Unknown(other),
                }
            }

            /// The wire byte.
            pub fn to_u8(self) -> u8 {
                match self {
                    $(ResultCode::$name => $value,)*
                    ResultCode::Unknown(other) => other,
                }
            }
        }
    };
}

result_codes! {
    /// 0: success.
    Ok = 0,
    /// 1: unknown server error.
    ServerError = 1,
    /// 2: record not found.
    NotFound = 2,
    /// 3: generation check failed.
    Generation = 3,
    /// 4: malformed request, bad TTL, bad op, unknown info command.
    Parameter = 4,
    /// 5: create-only write on an existing record.
    RecordExists = 5,
    /// 6: bin already exists.
    BinExists = 6,
    /// 7: cluster key mismatch.
    ClusterKeyMismatch = 7,
    /// 8: server out of space (stop-writes).
    OutOfSpace = 8,
    /// 9: server-side timeout (clients retry).
    Timeout = 9,
    /// 11: partition unavailable here (clients retry, spec §12).
    Unavailable = 11,
    /// 12: bin type mismatch.
    IncompatibleType = 12,
    /// 13: record too big.
    RecordTooBig = 13,
    /// 14: hot key.
    KeyBusy = 14,
    /// 15: scan/query aborted.
    QueryAborted = 15,
    /// 16: unsupported feature.
    UnsupportedFeature = 16,
    /// 17: bin not found.
    BinNotFound = 17,
    /// 18: device overload (clients retry).
    DeviceOverload = 18,
    /// 19: stored key differs from the sent key.
    KeyMismatch = 19,
    /// 20: namespace not found.
    Namespace = 20,
    /// 21: bin name too long or invalid.
    BinName = 21,
    /// 22: forbidden.
    Forbidden = 22,
    /// 23: CDT element not found.
    ElementNotFound = 23,
    /// 24: CDT element exists.
    ElementExists = 24,
    /// 25: enterprise-only feature.
    EnterpriseOnly = 25,
    /// 26: CDT op not applicable.
    OpNotApplicable = 26,
    /// 27: the filter expression was false.
    FilteredOut = 27,
    /// 28: XDR lost conflict.
    LostConflict = 28,
    /// 32: XDR key busy.
    XdrKeyBusy = 32,
    /// 50: security: OK, last message of a stream.
    SecurityOkLast = 50,
    /// 51: security not supported.
    SecurityNotSupported = 51,
    /// 52: security not enabled (the answer to a login here, spec §10).
    SecurityNotEnabled = 52,
    /// 53: security scheme not supported.
    SecuritySchemeNotSupported = 53,
    /// 54: invalid security command.
    InvalidCommand = 54,
    /// 55: invalid security field.
    InvalidField = 55,
    /// 56: illegal security state.
    IllegalState = 56,
    /// 60: invalid user.
    InvalidUser = 60,
    /// 61: user already exists.
    UserAlreadyExists = 61,
    /// 62: invalid password.
    InvalidPassword = 62,
    /// 63: expired password.
    ExpiredPassword = 63,
    /// 64: forbidden password.
    ForbiddenPassword = 64,
    /// 65: invalid credential.
    InvalidCredential = 65,
    /// 66: expired session.
    ExpiredSession = 66,
    /// 70: invalid role.
    InvalidRole = 70,
    /// 71: role already exists.
    RoleAlreadyExists = 71,
    /// 72: invalid privilege.
    InvalidPrivilege = 72,
    /// 73: invalid whitelist.
    InvalidWhitelist = 73,
    /// 74: quotas not enabled.
    QuotasNotEnabled = 74,
    /// 75: invalid quota.
    InvalidQuota = 75,
    /// 80: not authenticated.
    NotAuthenticated = 80,
    /// 81: role violation.
    RoleViolation = 81,
    /// 82: not whitelisted.
    NotWhitelisted = 82,
    /// 83: quota exceeded.
    QuotaExceeded = 83,
    /// 100: UDF execution error.
    UdfExecution = 100,
    /// 120: transaction blocked.
    MrtBlocked = 120,
    /// 121: transaction version mismatch.
    MrtVersionMismatch = 121,
    /// 122: transaction expired.
    MrtExpired = 122,
    /// 123: transaction has too many writes.
    MrtTooManyWrites = 123,
    /// 124: transaction committed.
    MrtCommitted = 124,
    /// 125: transaction aborted.
    MrtAborted = 125,
    /// 126: transaction already locked.
    MrtAlreadyLocked = 126,
    /// 127: transaction monitor exists.
    MrtMonitorExists = 127,
    /// 150: batch disabled.
    BatchDisabled = 150,
    /// 151: too many batch keys (batch-max-requests).
    BatchMaxRequests = 151,
    /// 152: batch queues full.
    BatchQueuesFull = 152,
    /// 160: invalid GeoJSON.
    GeoInvalidGeoJson = 160,
    /// 200: secondary index found (exists).
    IndexFound = 200,
    /// 201: secondary index not found.
    IndexNotFound = 201,
    /// 202: secondary index out of memory.
    IndexOom = 202,
    /// 203: secondary index not readable.
    IndexNotReadable = 203,
    /// 204: secondary index generic error.
    IndexGeneric = 204,
    /// 205: secondary index name error.
    IndexName = 205,
    /// 206: secondary index maximum count reached.
    IndexMaxCount = 206,
    /// 210: query aborted (client-side name).
    QueryAbortedClient = 210,
    /// 211: query queue full (client-side name).
    QueryQueueFull = 211,
    /// 212: query timeout (client-side name).
    QueryTimeout = 212,
    /// 213: query generic error (client-side name).
    QueryGeneric = 213,
}

impl From<u8> for ResultCode {
    fn from(value: u8) -> ResultCode {
        ResultCode::from_u8(value)
    }
}

impl From<ResultCode> for u8 {
    fn from(code: ResultCode) -> u8 {
        code.to_u8()
    }
}

impl std::fmt::Display for ResultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({})", self, self.to_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for b in 0..=u8::MAX {
            assert_eq!(ResultCode::from_u8(b).to_u8(), b);
        }
    }

    #[test]
    fn named_codes_have_spec_values() {
        assert_eq!(ResultCode::Ok.to_u8(), 0);
        assert_eq!(ResultCode::NotFound.to_u8(), 2);
        assert_eq!(ResultCode::Parameter.to_u8(), 4);
        assert_eq!(ResultCode::Unavailable.to_u8(), 11);
        assert_eq!(ResultCode::UnsupportedFeature.to_u8(), 16);
        assert_eq!(ResultCode::FilteredOut.to_u8(), 27);
        assert_eq!(ResultCode::SecurityNotEnabled.to_u8(), 52);
        assert_eq!(ResultCode::BatchMaxRequests.to_u8(), 151);
        assert_eq!(ResultCode::IndexNotFound.to_u8(), 201);
        assert_eq!(ResultCode::from_u8(10), ResultCode::Unknown(10));
        assert_eq!(ResultCode::from_u8(90), ResultCode::Unknown(90));
    }
}
