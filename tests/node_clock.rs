//! A node whose wall clock is stepped while it runs (libfaketime, Debian's
//! `libfaketime`; `.ci/run` installs it): its engine's flushes and
//! checkpoints run on the monotonic clock, so a clock set back an hour does
//! not hold them for an hour (it did, found by the fault harness's clock
//! nemesis: the WAL could not be compacted meanwhile), and every write stays
//! readable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use aerospike::{Bins, Client, ClientPolicy, ReadPolicy, Value, WritePolicy, as_bin, as_key};
use common::{NodeProcess, free_port};

/// How long a checkpoint may take to appear after the clock step (the
/// interval is 300 ms).
const CHECKPOINT_WAIT: Duration = Duration::from_secs(10);

fn checkpoint_mtime(data: &Path) -> Option<SystemTime> {
    let ckpt = data.join("engine").join("test").join("index.ckpt");
    std::fs::metadata(ckpt).and_then(|m| m.modified()).ok()
}

async fn put(client: &Client, i: i64) {
    let key = as_key!("test", "clock", i);
    client
        .put(&WritePolicy::default(), &key, &[as_bin!("i", i)])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_wall_clock_stepped_back_an_hour_holds_no_checkpoint_and_loses_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("aerie.toml");
    std::fs::write(&config, "[engine]\ncheckpoint_interval_ms = 300\n").unwrap();
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "+0\n").unwrap();
    // .ci/run installs libfaketime; the error says how.
    let lib = aerie_faults::cluster::find_libfaketime().unwrap();
    let env = aerie_faults::cluster::faketime_env(&lib, &clock);
    let node = NodeProcess::start_env(&data, free_port(), Some(&config), false, &env);
    let client = Client::new(&ClientPolicy::default(), &node.address())
        .await
        .unwrap();
    put(&client, 0).await;
    let deadline = Instant::now() + CHECKPOINT_WAIT;
    while checkpoint_mtime(&data).is_none() {
        assert!(Instant::now() < deadline, "no first checkpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(&clock, "-3600\n").unwrap();
    // libfaketime reads the file at most once a second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stepped = SystemTime::now();
    let mut i = 1;
    let deadline = Instant::now() + CHECKPOINT_WAIT;
    while checkpoint_mtime(&data).is_none_or(|m| m <= stepped) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint within {CHECKPOINT_WAIT:?} of the clock going back an hour"
        );
        put(&client, i).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for k in 0..i {
        let record = client
            .get(
                &ReadPolicy::default(),
                &as_key!("test", "clock", k),
                Bins::All,
            )
            .await
            .unwrap();
        assert_eq!(record.bins.get("i"), Some(&Value::Int(k)), "record {k}");
    }
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));
}
