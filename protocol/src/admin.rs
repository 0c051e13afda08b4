//! Admin / security messages (type 2, spec §10).
//!
//! ```text
//! 16-byte admin header: byte 0 unused | byte 1 result code | byte 2 command
//!                       | byte 3 field count | 12 bytes 0
//! fields: u32 size (BE, includes the id byte) | u8 id | data
//! ```
//!
//! Aerie has no security: a LOGIN (or AUTHENTICATE) is answered with result
//! 52, SECURITY_NOT_ENABLED, which both clients take as "logged in, no
//! session" ([`encode_security_not_enabled`]).

use crate::error::{Error, Result};
use crate::framing::{MessageType, begin_frame, finish_frame};
use crate::result::ResultCode;
use crate::wire::{Reader, bounded_capacity, len_u8, len_u32};

/// Size of the admin header.
pub const ADMIN_HEADER_SIZE_BYTES: usize = 16;
/// Bytes before a field's data: the u32 size and the id.
pub const ADMIN_FIELD_HEADER_SIZE_BYTES: usize = 5;

/// Admin command bytes.
pub mod command {
    /// Authenticate a connection with a session token.
    pub const AUTHENTICATE: u8 = 0;
    /// Log in with user and credential.
    pub const LOGIN: u8 = 20;
}

/// Admin field ids.
pub mod field_id {
    /// User name.
    pub const USER: u8 = 0;
    /// Password.
    pub const PASSWORD: u8 = 1;
    /// bcrypt credential.
    pub const CREDENTIAL: u8 = 3;
    /// Clear password (external authentication).
    pub const CLEAR_PASSWORD: u8 = 4;
    /// Session token.
    pub const SESSION_TOKEN: u8 = 5;
    /// Session TTL.
    pub const SESSION_TTL: u8 = 6;
}

/// One admin field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminField<'a> {
    /// Field id ([`field_id`]).
    pub id: u8,
    /// Data.
    pub data: &'a [u8],
}

/// An admin message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminMessage<'a> {
    /// Status (responses).
    pub result_code: ResultCode,
    /// Command ([`command`]).
    pub command: u8,
    /// Fields in order.
    pub fields: Vec<AdminField<'a>>,
}

impl<'a> AdminMessage<'a> {
    /// Decodes a type-2 body.
    pub fn decode(body: &'a [u8]) -> Result<AdminMessage<'a>> {
        let mut r = Reader::new(body, 0);
        let header: [u8; ADMIN_HEADER_SIZE_BYTES] = r.array("admin header")?;
        let count = usize::from(header[3]);
        let mut fields = Vec::with_capacity(bounded_capacity(
            count,
            ADMIN_FIELD_HEADER_SIZE_BYTES,
            r.remaining(),
        ));
        for _ in 0..count {
            let start = r.offset();
            let size = r.u32_be("admin field size")? as usize;
            if size == 0 {
                return Err(Error::malformed(
                    "admin field",
                    start,
                    "size 0 (no id byte)",
                ));
            }
            let id = r.u8("admin field id")?;
            let data = r.bytes(size - 1, "admin field data")?;
            fields.push(AdminField { id, data });
        }
        if !r.is_empty() {
            return Err(Error::malformed(
                "admin message",
                r.offset(),
                "bytes after the last field",
            ));
        }
        Ok(AdminMessage {
            result_code: ResultCode::from_u8(header[1]),
            command: header[2],
            fields,
        })
    }

    /// The first field with this id.
    pub fn field(&self, id: u8) -> Option<&'a [u8]> {
        self.fields.iter().find(|f| f.id == id).map(|f| f.data)
    }

    /// Appends the message as a type-2 frame.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = begin_frame(out, MessageType::Admin);
        let mut header = [0u8; ADMIN_HEADER_SIZE_BYTES];
        header[1] = self.result_code.to_u8();
        header[2] = self.command;
        header[3] = len_u8(self.fields.len(), "admin fields")?;
        out.extend_from_slice(&header);
        for f in &self.fields {
            out.extend_from_slice(&len_u32(1 + f.data.len(), "admin field")?.to_be_bytes());
            out.push(f.id);
            out.extend_from_slice(f.data);
        }
        finish_frame(out, start)
    }
}

/// Appends the answer to any admin request when security is off: result 52,
/// the request's command echoed, no fields.
pub fn encode_security_not_enabled(out: &mut Vec<u8>, request_command: u8) -> Result<()> {
    AdminMessage {
        result_code: ResultCode::SecurityNotEnabled,
        command: request_command,
        fields: Vec::new(),
    }
    .encode_frame(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameDecoder;

    #[test]
    fn login_round_trip_and_answer() {
        let login = AdminMessage {
            result_code: ResultCode::Ok,
            command: command::LOGIN,
            fields: vec![
                AdminField {
                    id: field_id::USER,
                    data: b"admin",
                },
                AdminField {
                    id: field_id::CREDENTIAL,
                    data: b"$2a$10$hash",
                },
            ],
        };
        let mut out = Vec::new();
        login.encode_frame(&mut out).unwrap();
        let f = FrameDecoder::default().decode_exact(&out).unwrap();
        assert_eq!(f.header.msg_type, MessageType::Admin);
        let back = AdminMessage::decode(f.body).unwrap();
        assert_eq!(back, login);
        assert_eq!(back.field(field_id::USER), Some(&b"admin"[..]));

        let mut answer = Vec::new();
        encode_security_not_enabled(&mut answer, back.command).unwrap();
        assert_eq!(answer.len(), 8 + 16);
        // Byte 9 of the frame is the result code.
        assert_eq!(answer[9], 52);
        assert_eq!(answer[10], command::LOGIN);
    }

    #[test]
    fn bad_admin_messages_are_errors() {
        assert!(AdminMessage::decode(&[0; 15]).is_err());
        let mut body = [0u8; 16];
        body[3] = 200;
        assert!(AdminMessage::decode(&body).is_err());
        let mut body = vec![0u8; 16];
        body[3] = 1;
        body.extend_from_slice(&[0, 0, 0, 0]);
        body.push(0);
        assert!(AdminMessage::decode(&body).is_err());
        let mut body = vec![0u8; 16];
        body.push(1);
        assert!(AdminMessage::decode(&body).is_err());
    }
}
