//! The info protocol (type 1, spec §2): request parsing, response building,
//! and the pure formatting of the answers of §2.3/§2.4.
//!
//! Request body: command lines, each ending in `\n`. Only complete lines
//! count (a last line without `\n` is ignored, as the real server does); empty
//! lines are skipped; an empty body asks for the server's summary. A line is
//! `name`, `name:key=value;key=value` or `name/arg/arg`.
//!
//! Response body: for each request line, in order, `<line as received>\t<value>\n`.
//! Values must not contain `\n` or `\t`; [`InfoResponseWriter`] refuses them.

use crate::error::{Error, Result};
use crate::framing::{MessageType, begin_frame, finish_frame};
use crate::result::ResultCode;

/// Info names of §2.3.
pub mod names {
    /// Node name.
    pub const NODE: &str = "node";
    /// Build version.
    pub const BUILD: &str = "build";
    /// Partition generation.
    pub const PARTITION_GENERATION: &str = "partition-generation";
    /// Peers generation.
    pub const PEERS_GENERATION: &str = "peers-generation";
    /// Cluster name.
    pub const CLUSTER_NAME: &str = "cluster-name";
    /// Rebalance generation (rack-aware clients).
    pub const REBALANCE_GENERATION: &str = "rebalance-generation";
    /// Rack ids (rack-aware clients).
    pub const RACK_IDS: &str = "rack-ids";
    /// Clear-text peers, standard addresses.
    pub const PEERS_CLEAR_STD: &str = "peers-clear-std";
    /// Clear-text peers, alternate addresses.
    pub const PEERS_CLEAR_ALT: &str = "peers-clear-alt";
    /// TLS peers, standard addresses.
    pub const PEERS_TLS_STD: &str = "peers-tls-std";
    /// TLS peers, alternate addresses.
    pub const PEERS_TLS_ALT: &str = "peers-tls-alt";
    /// This node's clear-text service addresses.
    pub const SERVICE_CLEAR_STD: &str = "service-clear-std";
    /// This node's clear-text alternate service addresses.
    pub const SERVICE_CLEAR_ALT: &str = "service-clear-alt";
    /// This node's TLS service addresses.
    pub const SERVICE_TLS_STD: &str = "service-tls-std";
    /// This node's TLS alternate service addresses.
    pub const SERVICE_TLS_ALT: &str = "service-tls-alt";
    /// Partition ownership bitmaps.
    pub const REPLICAS: &str = "replicas";
    /// Client user agent (build >= 8.1).
    pub const USER_AGENT_SET: &str = "user-agent-set";
    /// Legacy master bitmaps.
    pub const REPLICAS_MASTER: &str = "replicas-master";
    /// Legacy all-replica bitmaps.
    pub const REPLICAS_ALL: &str = "replicas-all";
    /// Legacy partition count.
    pub const PARTITIONS: &str = "partitions";
    /// Legacy feature list.
    pub const FEATURES: &str = "features";
    /// Namespace list.
    pub const NAMESPACES: &str = "namespaces";
    /// `namespace/<ns>` statistics.
    pub const NAMESPACE: &str = "namespace";
    /// `sets[/<ns>[/<set>]]` statistics.
    pub const SETS: &str = "sets";
    /// Node statistics.
    pub const STATISTICS: &str = "statistics";
    /// `<edition> build <version>`.
    pub const VERSION: &str = "version";
    /// Edition.
    pub const EDITION: &str = "edition";
}

/// The build version to claim (spec §2.2): in [6.0.0.0, 8.1.0.0), so clients
/// use batch-any and partition queries without the 8.1+ behaviour
/// (`user-agent-set`, extended errors).
pub const BUILD_VERSION: &str = "7.2.0.0";
/// The partition count the legacy `partitions` name answers.
pub const PARTITIONS_ANSWER: &str = "4096";
/// The answer to a name the server does not know.
pub const ERROR_UNRECOGNIZED_COMMAND: &str = "ERROR:4:unrecognized command";
/// The answer to `user-agent-set`.
pub const USER_AGENT_SET_OK: &str = "ok";
/// Size of a replicas bitmap: 4096 bits.
pub const BITMAP_SIZE_BYTES: usize = 512;
/// Length of a base64 replicas bitmap.
pub const BITMAP_BASE64_LEN: usize = 684;
/// Most replica columns a `replicas` entry may carry.
pub const MAX_REPLICA_COLUMNS: usize = 255;

/// One command line of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoCommand<'a> {
    /// The whole line as received (without `\n`): echoed in the response.
    pub line: &'a str,
    /// The name: up to the first `:` or `/`.
    pub name: &'a str,
    /// What follows the `:` (parameters) or the first `/` (path), if anything.
    pub rest: Option<&'a str>,
    /// True for the `name:params` form, false for `name/path`.
    pub has_params: bool,
}

impl<'a> InfoCommand<'a> {
    /// Splits one line (without its `\n`).
    pub fn parse(line: &'a str) -> InfoCommand<'a> {
        match line.find([':', '/']) {
            None => InfoCommand {
                line,
                name: line,
                rest: None,
                has_params: false,
            },
            Some(at) => InfoCommand {
                line,
                name: &line[..at],
                rest: Some(&line[at + 1..]),
                has_params: line.as_bytes()[at] == b':',
            },
        }
    }

    /// The `/` path arguments (`sets/test/demo` → `test`, `demo`).
    pub fn path_args(&self) -> impl Iterator<Item = &'a str> + 'a {
        let rest = if self.has_params { None } else { self.rest };
        rest.into_iter().flat_map(|r| r.split('/'))
    }

    /// The value of a `key=value` parameter (split on `;`, then the first `=`).
    pub fn param(&self, key: &str) -> Option<&'a str> {
        let rest = if self.has_params { self.rest } else { None };
        rest?.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

/// A parsed info request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// The complete, non-empty lines in order.
    pub commands: Vec<InfoCommand<'a>>,
}

impl<'a> InfoRequest<'a> {
    /// Parses a request body. Non-UTF-8 text is PARAMETER.
    pub fn parse(body: &'a [u8]) -> Result<InfoRequest<'a>> {
        let text = std::str::from_utf8(body)
            .map_err(|e| Error::malformed("info request", e.valid_up_to(), "not UTF-8"))?;
        let complete = match text.rfind('\n') {
            Some(last) => &text[..last],
            None => "",
        };
        let commands = complete
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(InfoCommand::parse)
            .collect();
        Ok(InfoRequest { commands })
    }

    /// True for an empty body (the server's summary).
    pub fn is_summary(&self) -> bool {
        self.commands.is_empty()
    }

    /// Appends a request frame for these names (each followed by `\n`).
    pub fn encode_frame(out: &mut Vec<u8>, names: &[&str]) -> Result<()> {
        let start = begin_frame(out, MessageType::Info);
        for name in names {
            check_text("request line", name)?;
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        finish_frame(out, start)
    }
}

fn check_text(what: &'static str, text: &str) -> Result<()> {
    if text.contains(['\n', '\t']) {
        return Err(Error::InfoText {
            what,
            text: text.to_string(),
        });
    }
    Ok(())
}

/// Writes an info response frame entry by entry.
#[derive(Debug)]
pub struct InfoResponseWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
}

impl<'o> InfoResponseWriter<'o> {
    /// Starts a type-1 frame in `out`.
    pub fn new(out: &'o mut Vec<u8>) -> InfoResponseWriter<'o> {
        let start = begin_frame(out, MessageType::Info);
        InfoResponseWriter { out, start }
    }

    /// Appends `line\tvalue\n`. A newline or tab in either is an error (and
    /// nothing is written).
    pub fn entry(&mut self, line: &str, value: &str) -> Result<()> {
        check_text("line", line)?;
        check_text("value", value)?;
        self.out.extend_from_slice(line.as_bytes());
        self.out.push(b'\t');
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'\n');
        Ok(())
    }

    /// Patches the frame size.
    pub fn finish(self) -> Result<()> {
        finish_frame(self.out, self.start)
    }
}

/// Splits a response body into (line, value) pairs, at each line's first tab
/// (a line without one gets an empty value).
pub fn parse_response(body: &[u8]) -> Result<Vec<(&str, &str)>> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Error::malformed("info response", e.valid_up_to(), "not UTF-8"))?;
    Ok(text
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once('\t').unwrap_or((l, "")))
        .collect())
}

/// True when a value is an error answer (what the C client checks).
pub fn is_error(value: &str) -> bool {
    value.starts_with("ERROR:") || value.starts_with("FAIL:") || value.starts_with("error=")
}

/// `ERROR:<code>:<message>` (`ERROR::<message>` without a code).
pub fn format_error(code: Option<ResultCode>, message: &str) -> String {
    match code {
        Some(code) => format!("ERROR:{}:{message}", code.to_u8()),
        None => format!("ERROR::{message}"),
    }
}

/// A node name: the 64-bit node id in uppercase hex without leading zeros.
pub fn node_name(node_id: u64) -> String {
    format!("{node_id:X}")
}

/// `<edition> build <version>`, the `version` answer.
pub fn version_answer(edition: &str, build: &str) -> String {
    format!("{edition} build {build}")
}

/// `k=v;k=v` with no trailing `;` (`namespace/<ns>`, `statistics`).
pub fn format_key_values<'k, K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> String
where
    K: std::fmt::Display + 'k,
    V: std::fmt::Display + 'k,
{
    join(pairs.into_iter().map(|(k, v)| format!("{k}={v}")), ";")
}

/// One set's line of a `sets` answer: `ns=<ns>:set=<set>:k=v:...;`.
pub fn format_set_entry<K, V>(
    namespace: &str,
    set: &str,
    stats: impl IntoIterator<Item = (K, V)>,
) -> String
where
    K: std::fmt::Display,
    V: std::fmt::Display,
{
    let mut s = format!("ns={namespace}:set={set}");
    for (k, v) in stats {
        s.push_str(&format!(":{k}={v}"));
    }
    s.push(';');
    s
}

fn join(items: impl Iterator<Item = String>, sep: &str) -> String {
    let mut out = String::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&item);
    }
    out
}

/// 4096 partition bits, MSB-first within each byte (spec §2.3).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PartitionBitmap(pub [u8; BITMAP_SIZE_BYTES]);

impl std::fmt::Debug for PartitionBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartitionBitmap({} owned)", self.count())
    }
}

impl Default for PartitionBitmap {
    fn default() -> PartitionBitmap {
        PartitionBitmap([0; BITMAP_SIZE_BYTES])
    }
}

impl PartitionBitmap {
    /// Every partition.
    pub fn all() -> PartitionBitmap {
        PartitionBitmap([0xff; BITMAP_SIZE_BYTES])
    }

    /// The partitions for which `owned` is true.
    pub fn from_fn(mut owned: impl FnMut(u16) -> bool) -> PartitionBitmap {
        let mut b = PartitionBitmap::default();
        for pid in 0..crate::digest::PARTITION_COUNT {
            if owned(pid) {
                b.set(pid);
            }
        }
        b
    }

    /// Marks a partition (ids >= 4096 are ignored).
    pub fn set(&mut self, pid: u16) {
        if let Some(byte) = self.0.get_mut(usize::from(pid >> 3)) {
            *byte |= 0x80 >> (pid & 7);
        }
    }

    /// True when the partition is marked.
    pub fn contains(&self, pid: u16) -> bool {
        self.0
            .get(usize::from(pid >> 3))
            .is_some_and(|byte| byte & (0x80 >> (pid & 7)) != 0)
    }

    /// How many partitions are marked.
    pub fn count(&self) -> u32 {
        self.0.iter().map(|b| b.count_ones()).sum()
    }

    /// Standard base64 with padding: always 684 characters.
    pub fn to_base64(&self) -> String {
        base64_encode(&self.0)
    }

    /// Reads a base64 bitmap (at least 512 decoded bytes, as the Rust client
    /// requires; only the first 512 count).
    pub fn from_base64(text: &str) -> Result<PartitionBitmap> {
        let bytes = base64_decode(text)?;
        let Some(first) = bytes.first_chunk::<BITMAP_SIZE_BYTES>() else {
            return Err(Error::malformed(
                "replicas bitmap",
                0,
                "shorter than 512 bytes",
            ));
        };
        Ok(PartitionBitmap(*first))
    }
}

/// One namespace of a `replicas` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicasEntry<'a> {
    /// Namespace name.
    pub namespace: &'a str,
    /// 0 for AP namespaces.
    pub regime: u32,
    /// Column 0 is the master; 1..=255 columns.
    pub columns: Vec<PartitionBitmap>,
}

/// The `replicas` answer: `<ns>:<regime>,<n>,<bitmap>,...` joined by `;`, with
/// **no trailing `;`** (a trailing one breaks the Rust client).
pub fn format_replicas(entries: &[ReplicasEntry<'_>]) -> Result<String> {
    let mut parts = Vec::with_capacity(entries.len());
    for e in entries {
        if e.columns.is_empty() || e.columns.len() > MAX_REPLICA_COLUMNS {
            return Err(Error::Encode {
                what: "replicas",
                reason: "a namespace needs 1..=255 columns",
            });
        }
        check_text("replicas namespace", e.namespace)?;
        let mut s = format!("{}:{},{}", e.namespace, e.regime, e.columns.len());
        for c in &e.columns {
            s.push(',');
            s.push_str(&c.to_base64());
        }
        parts.push(s);
    }
    Ok(parts.join(";"))
}

/// Parses a `replicas` answer (a trailing `;` is tolerated, as C does).
pub fn parse_replicas(text: &str) -> Result<Vec<ReplicasEntry<'_>>> {
    let bad = |reason| Error::malformed("replicas", 0, reason);
    text.split(';')
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (namespace, rest) = part.split_once(':').ok_or(bad("no ':'"))?;
            let mut items = rest.split(',');
            let regime = items
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or(bad("bad regime"))?;
            let n: usize = items
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=MAX_REPLICA_COLUMNS).contains(n))
                .ok_or(bad("bad column count"))?;
            let columns = items
                .map(PartitionBitmap::from_base64)
                .collect::<Result<Vec<_>>>()?;
            if columns.len() != n {
                return Err(bad("column count differs from the bitmaps"));
            }
            Ok(ReplicasEntry {
                namespace,
                regime,
                columns,
            })
        })
        .collect()
}

/// One address of a peer: a host (IPv4, name or IPv6) and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// IPv4, hostname or IPv6 (written in brackets).
    pub host: String,
    /// Service port.
    pub port: u16,
}

/// One peer of a `peers-*` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The name the peer answers to `node`.
    pub node_name: String,
    /// TLS name (empty for clear text).
    pub tls_name: String,
    /// Client-reachable addresses.
    pub addresses: Vec<PeerAddress>,
}

/// The `peers-*` answer: `<gen>,<default-port>,[[<node>,<tls>,[<addr>[:<port>],...]],...]`.
/// The list must exclude the answering node; a port is written only when it
/// differs from `default_port`.
pub fn format_peers(generation: u64, default_port: u16, peers: &[Peer]) -> String {
    let peers = join(
        peers.iter().map(|p| {
            let addrs = join(
                p.addresses.iter().map(|a| {
                    let host = if a.host.contains(':') {
                        format!("[{}]", a.host)
                    } else {
                        a.host.clone()
                    };
                    if a.port == default_port {
                        host
                    } else {
                        format!("{host}:{}", a.port)
                    }
                }),
                ",",
            );
            format!("[{},{},[{addrs}]]", p.node_name, p.tls_name)
        }),
        ",",
    );
    format!("{generation},{default_port},[{peers}]")
}

/// The `service-*` answer: `addr:port` joined by `;` (empty = not supported).
pub fn format_service(addresses: &[PeerAddress]) -> String {
    join(
        addresses.iter().map(|a| {
            if a.host.contains(':') {
                format!("[{}]:{}", a.host, a.port)
            } else {
                format!("{}:{}", a.host, a.port)
            }
        }),
        ";",
    )
}

/// What a client says in `user-agent-set:value=<base64>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent {
    /// Format version (`1`).
    pub format_version: String,
    /// `<language>-<version>`, e.g. `python-19.3.0`.
    pub client: String,
    /// Application id (`not-set` by default).
    pub app_id: String,
}

impl UserAgent {
    /// Decodes the base64 `value` parameter: `1,<language>-<version>,<app_id>`.
    pub fn decode(value: &str) -> Result<UserAgent> {
        let bytes = base64_decode(value)?;
        let text =
            String::from_utf8(bytes).map_err(|_| Error::malformed("user agent", 0, "not UTF-8"))?;
        let mut parts = text.splitn(3, ',');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(v), Some(c), Some(a)) => Ok(UserAgent {
                format_version: v.to_string(),
                client: c.to_string(),
                app_id: a.to_string(),
            }),
            _ => Err(Error::malformed(
                "user agent",
                0,
                "not three comma-separated parts",
            )),
        }
    }
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(
                    BASE64_ALPHABET[((n >> (18 - 6 * i)) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with `=` padding (strict: length a multiple of 4,
/// padding only at the end).
pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let bad = |offset, reason| Error::malformed("base64", offset, reason);
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(bad(bytes.len(), "length not a multiple of 4"));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks_exact(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return Err(bad(i * 4, "misplaced padding"));
        }
        let mut n = 0u32;
        for (j, &c) in chunk.iter().enumerate() {
            let v = if j >= 4 - pad {
                0
            } else {
                match BASE64_ALPHABET.iter().position(|&a| a == c) {
                    Some(v) => v as u32,
                    None => return Err(bad(i * 4 + j, "not a base64 character")),
                }
            };
            n = (n << 6) | v;
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameDecoder;

    fn lines(body: &[u8]) -> Vec<&str> {
        InfoRequest::parse(body)
            .unwrap()
            .commands
            .iter()
            .map(|c| c.line)
            .collect()
    }

    #[test]
    fn request_line_rules() {
        assert_eq!(
            lines(b"node\npartition-generation\nbuild\n"),
            ["node", "partition-generation", "build"]
        );
        // Only complete lines count.
        assert_eq!(lines(b"node\nbuild"), ["node"]);
        assert_eq!(lines(b"node"), Vec::<&str>::new());
        // Empty lines are skipped; an empty body is the summary.
        assert_eq!(lines(b"\nnode\n\n"), ["node"]);
        assert!(InfoRequest::parse(b"").unwrap().is_summary());
        assert!(InfoRequest::parse(b"\xff\n").is_err());
    }

    #[test]
    fn command_forms() {
        let c = InfoCommand::parse("user-agent-set:value=MSxweXRob24tMTkuMy4wLG5vdC1zZXQ=");
        assert_eq!(c.name, "user-agent-set");
        assert_eq!(c.param("value"), Some("MSxweXRob24tMTkuMy4wLG5vdC1zZXQ="));
        assert_eq!(c.param("other"), None);
        assert_eq!(c.path_args().count(), 0);
        let ua = UserAgent::decode(c.param("value").unwrap()).unwrap();
        assert_eq!(ua.client, "python-19.3.0");
        assert_eq!(ua.app_id, "not-set");
        assert_eq!(
            UserAgent::decode("MSxydXN0LTMuMC4wLG5vdC1zZXQ=")
                .unwrap()
                .client,
            "rust-3.0.0"
        );
        let c = InfoCommand::parse("sets/test/demo");
        assert_eq!(c.name, "sets");
        assert_eq!(c.path_args().collect::<Vec<_>>(), ["test", "demo"]);
        assert_eq!(c.param("x"), None);
        let c = InfoCommand::parse("node");
        assert_eq!((c.name, c.rest), ("node", None));
    }

    #[test]
    fn the_python_seed_exchange_byte_for_byte() {
        // §14.1
        let mut req = Vec::new();
        InfoRequest::encode_frame(&mut req, &["node", "partition-generation", "build"]).unwrap();
        let f = FrameDecoder::default().decode_exact(&req).unwrap();
        assert_eq!(f.body, b"node\npartition-generation\nbuild\n");
        let parsed = InfoRequest::parse(f.body).unwrap();
        let mut out = Vec::new();
        let mut w = InfoResponseWriter::new(&mut out);
        for (c, v) in parsed
            .commands
            .iter()
            .zip(["BB9000000000001", "1", "8.1.2.0"])
        {
            w.entry(c.line, v).unwrap();
        }
        w.finish().unwrap();
        let expected = b"node\tBB9000000000001\npartition-generation\t1\nbuild\t8.1.2.0\n";
        assert_eq!(&out[8..], expected);
        assert_eq!(out[..2], [2, 1]);
        assert_eq!(
            parse_response(&out[8..]).unwrap(),
            [
                ("node", "BB9000000000001"),
                ("partition-generation", "1"),
                ("build", "8.1.2.0")
            ]
        );
    }

    #[test]
    fn values_with_newlines_or_tabs_are_refused() {
        let mut out = Vec::new();
        let mut w = InfoResponseWriter::new(&mut out);
        assert!(w.entry("node", "a\nb").is_err());
        assert!(w.entry("node", "a\tb").is_err());
        assert!(w.entry("no\tde", "a").is_err());
        w.finish().unwrap();
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn replicas_bitmaps() {
        let all = PartitionBitmap::all().to_base64();
        assert_eq!(all.len(), BITMAP_BASE64_LEN);
        assert_eq!(all, format!("{}//8=", "////".repeat(170)));
        let even = PartitionBitmap::from_fn(|p| p % 2 == 0).to_base64();
        assert_eq!(even.len(), BITMAP_BASE64_LEN);
        assert!(even.starts_with("qqqq") && even.ends_with("qqo="));
        let mut b = PartitionBitmap::default();
        b.set(0);
        b.set(9);
        b.set(4095);
        b.set(4096);
        assert_eq!(b.0[0], 0x80);
        assert_eq!(b.0[1], 0x40);
        assert_eq!(b.0[511], 0x01);
        assert!(b.contains(9) && !b.contains(8) && !b.contains(4096));
        assert_eq!(b.count(), 3);
        assert_eq!(PartitionBitmap::from_base64(&b.to_base64()).unwrap(), b);
        assert!(PartitionBitmap::from_base64("AAAA").is_err());
    }

    #[test]
    fn replicas_answer_has_no_trailing_semicolon() {
        let entries = [
            ReplicasEntry {
                namespace: "test",
                regime: 0,
                columns: vec![PartitionBitmap::all()],
            },
            ReplicasEntry {
                namespace: "bar",
                regime: 0,
                columns: vec![PartitionBitmap::default(), PartitionBitmap::all()],
            },
        ];
        let s = format_replicas(&entries).unwrap();
        assert!(s.starts_with("test:0,1,////"));
        assert!(s.contains(";bar:0,2,AAAA"));
        assert!(!s.ends_with(';'));
        assert_eq!(parse_replicas(&s).unwrap(), entries);
        assert_eq!(parse_replicas(&format!("{s};")).unwrap(), entries);
        let none = ReplicasEntry {
            namespace: "x",
            regime: 0,
            columns: vec![],
        };
        assert!(format_replicas(&[none]).is_err());
        assert!(parse_replicas("test:0,2,AAAA").is_err());
        assert!(parse_replicas("test").is_err());
    }

    #[test]
    fn peers_and_services() {
        assert_eq!(format_peers(1, 3000, &[]), "1,3000,[]");
        let peers = [
            Peer {
                node_name: "BB9000000000002".into(),
                tls_name: String::new(),
                addresses: vec![PeerAddress {
                    host: "10.0.0.2".into(),
                    port: 3000,
                }],
            },
            Peer {
                node_name: "BB9000000000003".into(),
                tls_name: String::new(),
                addresses: vec![PeerAddress {
                    host: "10.0.0.3".into(),
                    port: 3100,
                }],
            },
        ];
        assert_eq!(
            format_peers(1, 3000, &peers),
            "1,3000,[[BB9000000000002,,[10.0.0.2]],[BB9000000000003,,[10.0.0.3:3100]]]"
        );
        let v6 = PeerAddress {
            host: "::1".into(),
            port: 3000,
        };
        assert_eq!(
            format_peers(
                2,
                3000,
                &[Peer {
                    node_name: "A".into(),
                    tls_name: "t".into(),
                    addresses: vec![v6.clone()]
                }]
            ),
            "2,3000,[[A,t,[[::1]]]]"
        );
        assert_eq!(
            format_service(&[
                PeerAddress {
                    host: "10.0.0.1".into(),
                    port: 3000
                },
                v6
            ]),
            "10.0.0.1:3000;[::1]:3000"
        );
        assert_eq!(format_service(&[]), "");
    }

    #[test]
    fn small_formats() {
        assert_eq!(node_name(0xBB9000000000001), "BB9000000000001");
        assert_eq!(
            format_error(Some(ResultCode::Parameter), "unrecognized command"),
            ERROR_UNRECOGNIZED_COMMAND
        );
        assert_eq!(format_error(None, "x"), "ERROR::x");
        assert!(is_error(ERROR_UNRECOGNIZED_COMMAND));
        assert!(!is_error("ok"));
        assert_eq!(
            format_key_values([("objects", "2"), ("replication-factor", "1")]),
            "objects=2;replication-factor=1"
        );
        assert_eq!(format_key_values(Vec::<(&str, u32)>::new()), "");
        assert_eq!(
            format_set_entry("test", "demo", [("objects", 3)]),
            "ns=test:set=demo:objects=3;"
        );
        assert_eq!(
            version_answer("Aerospike Community Edition", "8.1.2.0"),
            "Aerospike Community Edition build 8.1.2.0"
        );
    }

    #[test]
    fn base64_round_trip_and_strictness() {
        for n in 0..10 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(
            base64_encode(b"1,python-19.3.0,not-set"),
            "MSxweXRob24tMTkuMy4wLG5vdC1zZXQ="
        );
        assert!(base64_decode("abc").is_err());
        assert!(base64_decode("a=bc").is_err());
        assert!(base64_decode("ab==abcd").is_err());
        assert!(base64_decode("a===").is_err());
        assert!(base64_decode("ab!c").is_err());
    }
}
