//! A small etcd v3 load client for `benches/etcd_compare.sh`: durable puts
//! of `--value-bytes` values over `--connections` keep-alive HTTP/1.1
//! connections to etcd's JSON gateway (`POST /v3/kv/put`), spread over the
//! endpoints, one request in flight per connection (the load shape of
//! `aerie bench --workload insert`). Prints ops/s and p50 / p99 / max.
//!
//!     cargo run --release --example etcd_load -- \
//!         --endpoints 127.0.0.1:2379,127.0.0.1:22379 --connections 64 --duration-secs 10

use std::time::{Duration, Instant};

use aerie_protocol::info::base64_encode;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// Client URLs of the members, host:port, comma-separated.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
}

/// Most latencies one connection records (bounds memory on long runs).
const MAX_SAMPLES_PER_CONNECTION: usize = 1 << 20;
/// Longest one request may take before the run is called failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.endpoints.is_empty() {
        return Err("--endpoints is required".into());
    }
    let until = Instant::now() + Duration::from_secs(args.duration_secs);
    let value = base64_encode(&vec![b'v'; args.value_bytes]);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.connections {
        let endpoint = args.endpoints[c % args.endpoints.len()].clone();
        let (value, keys, stride) = (value.clone(), args.keys, args.connections as u64);
        tasks
            .spawn(async move { connection(endpoint, value, c as u64, stride, keys, until).await });
    }
    let started = Instant::now();
    let mut latencies_us: Vec<u32> = Vec::new();
    let mut errors = 0u64;
    while let Some(done) = tasks.join_next().await {
        let (samples, failed) = done.map_err(|e| e.to_string())??;
        latencies_us.extend(samples);
        errors += failed;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let at = |q: f64| {
        let i =
            ((latencies_us.len() as f64 * q) as usize).min(latencies_us.len().saturating_sub(1));
        latencies_us.get(i).copied().unwrap_or(0)
    };
    println!(
        "etcd put: {} ops in {secs:.1} s = {:.0} ops/s, p50 {} µs, p99 {} µs, max {} µs, {errors} errors",
        latencies_us.len(),
        latencies_us.len() as f64 / secs,
        at(0.50),
        at(0.99),
        latencies_us.last().copied().unwrap_or(0)
    );
    Ok(())
}

/// Puts keys `first, first + stride, ...` until `until`; returns the
/// latencies (µs) and the count of non-200 answers.
async fn connection(
    endpoint: String,
    value: String,
    first: u64,
    stride: u64,
    keys: u64,
    until: Instant,
) -> Result<(Vec<u32>, u64), String> {
    let mut stream = TcpStream::connect(&endpoint)
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    let mut errors = 0;
    let mut buf = Vec::with_capacity(4096);
    let mut key = first;
    while Instant::now() < until && samples.len() < MAX_SAMPLES_PER_CONNECTION {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{value}\"}}",
            base64_encode(format!("k{:012}", key % keys).as_bytes())
        );
        let request = format!(
            "POST /v3/kv/put HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = Instant::now();
        let status =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut stream, &request, &mut buf))
                .await
                .map_err(|_| format!("{endpoint}: no answer within {REQUEST_TIMEOUT:?}"))??;
        samples.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        if status != 200 {
            errors += 1;
        }
        key += stride;
    }
    Ok((samples, errors))
}

/// Sends one request and reads its whole response; returns the status.
async fn exchange(stream: &mut TcpStream, request: &str, buf: &mut Vec<u8>) -> Result<u16, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    buf.clear();
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("a response without a status")?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("a response without content-length (chunked is not expected)")?;
            while buf.len() < end + 4 + length {
                read_more(stream, buf).await?;
            }
            return Ok(status);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("etcd closed the connection".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
