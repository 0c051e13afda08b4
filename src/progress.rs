//! Progress for long commands: a bar (`indicatif`) when stderr is a terminal,
//! otherwise a log line at every tenth of the way.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// One task's progress.
pub struct Progress {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    logged_tenths: u64,
}

impl Progress {
    /// Starts a task of `total` units (`unit` names them in plain mode).
    pub fn new(label: &str, total: u64, bytes: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = if bytes {
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}"
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = ProgressBar::new(total).with_style(style);
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            label: label.to_string(),
            total,
            bar,
            logged_tenths: 0,
        }
    }

    /// Moves to `position`.
    pub fn set(&mut self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            return;
        }
        let tenths = (position.min(self.total) * 10)
            .checked_div(self.total)
            .unwrap_or(10);
        if tenths > self.logged_tenths {
            self.logged_tenths = tenths;
            tracing::info!(
                "{}: {}% ({position}/{})",
                self.label,
                tenths * 10,
                self.total
            );
        }
    }

    /// Ends the task.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
