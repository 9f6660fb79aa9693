//! A progress line for long redrives and purges: on a terminal (stderr) only, never with --json, cleared when done.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidings::admin::Pace;

/// A spinner counting what `pace` has done, or `None` when stderr is not a terminal or the output is JSON.
pub fn start(json: bool, done_verb: &str) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {msg} {pos} dead letter(s), {per_sec} ({elapsed})")
        .expect("the template parses");
    bar.set_style(style);
    bar.set_message(done_verb.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

/// Keeps the bar at `pace`'s count until dropped (never completes).
pub async fn follow(bar: Option<&ProgressBar>, pace: &Pace) {
    loop {
        if let Some(b) = bar {
            b.set_position(pace.count());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
