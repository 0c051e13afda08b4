//! `aerie wal dump` and `aerie wal verify`.

use aerie_wal::inspect::{self, DirReport, Severity};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum WalCommand {
    /// Print every segment, the entry ranges of each stream in it, and every
    /// problem found with file and offset.
    Dump {
        /// The WAL directory (`<data-dir>/wal`).
        dir: PathBuf,
    },
    /// Check every frame of every segment. Exits 1 on corruption; a torn tail
    /// (which an open cuts off) is reported but is not an error.
    Verify {
        /// The WAL directory (`<data-dir>/wal`).
        dir: PathBuf,
    },
}

pub fn run(command: WalCommand) -> ExitCode {
    let (dir, dump) = match command {
        WalCommand::Dump { dir } => (dir, true),
        WalCommand::Verify { dir } => (dir, false),
    };
    let report = match inspect::inspect_dir(&dir) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if dump {
        print_segments(&report);
    }
    print_summary(&report);
    if report.has_corruption() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_segments(report: &DirReport) {
    for segment in &report.segments {
        println!(
            "segment {} {}: {} frames, {} of {} bytes used",
            segment.seq,
            segment.path.display(),
            segment.frames,
            segment.used_bytes,
            segment.file_bytes
        );
        for (stream, range) in &segment.streams {
            let entries = if range.entries == 0 {
                "no entries".to_string()
            } else {
                format!(
                    "{} entries, index {}..={}",
                    range.entries, range.min_index, range.max_index
                )
            };
            println!(
                "  stream {stream}: {entries}, {} hard states, {} compactions",
                range.hard_states, range.compactions
            );
        }
    }
}

fn print_summary(report: &DirReport) {
    let frames: u64 = report.segments.iter().map(|s| s.frames).sum();
    println!(
        "{} segments, {} frames, {} free segment files, {} problems",
        report.segments.len(),
        frames,
        report.free_files,
        report.problems.len()
    );
    for problem in &report.problems {
        let kind = match problem.severity {
            Severity::TornTail => "torn tail (cut off at open)",
            Severity::Corruption => "CORRUPTION",
        };
        println!(
            "{kind}: {} at offset {}: {}",
            problem.path.display(),
            problem.offset,
            problem.reason
        );
    }
}
