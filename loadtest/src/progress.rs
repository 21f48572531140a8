//! Progress on a terminal: one line on stderr, redrawn in place (`\r`), with a bar when the
//! length of the phase is known. Quiet (nothing drawn, nothing printed) when stderr is not a
//! terminal, so logs and test output stay clean.
//!
//! ```no_run
//! let bar = loadtest::progress::Bar::new("certificates", 10_000);
//! for _ in 0..10_000 {
//!     // ... make one
//!     bar.inc(1);
//! }
//! bar.finish();
//! ```
//!
//! A `Bar` is `Sync`: share it (`Arc`) between threads; `inc` is an atomic add and redraws
//! at most every 100 ms.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest time between two redraws.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 24;

/// Whether progress is drawn: stderr is a terminal.
pub fn enabled() -> bool {
    std::io::stderr().is_terminal()
}

/// Where a visible bar draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Stderr,
    /// Into `State::written` (tests).
    Buffer,
}

/// How the position and the total read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// A count: "1234/10000".
    Count,
    /// Milliseconds, shown as seconds: "3.0s/10.0s".
    Millis,
}

struct State {
    message: String,
    last_draw: Option<Instant>,
    finished: bool,
    /// What was drawn, when not drawn to stderr (tests).
    written: Option<String>,
}

struct Inner {
    label: String,
    total: u64,
    unit: Unit,
    position: AtomicU64,
    state: Mutex<State>,
}

/// One progress line, with a bar of known length (`total > 0`) or without (`total == 0`:
/// the position alone).
pub struct Bar {
    /// `None` when quiet.
    inner: Option<Inner>,
}

impl Bar {
    /// A bar of `total` steps; quiet when stderr is not a terminal.
    pub fn new(label: impl Into<String>, total: u64) -> Bar {
        Self::build(
            label.into(),
            total,
            Unit::Count,
            enabled().then_some(Output::Stderr),
        )
    }

    /// A bar for a phase of fixed length: the position is the time elapsed
    /// (`set_elapsed`); quiet when stderr is not a terminal.
    pub fn for_duration(label: impl Into<String>, total: Duration) -> Bar {
        Self::build(
            label.into(),
            total.as_millis() as u64,
            Unit::Millis,
            enabled().then_some(Output::Stderr),
        )
    }

    /// A bar that draws nothing.
    pub fn hidden() -> Bar {
        Bar { inner: None }
    }

    fn build(label: String, total: u64, unit: Unit, output: Option<Output>) -> Bar {
        Bar {
            inner: output.map(|output| Inner {
                label,
                total,
                unit,
                position: AtomicU64::new(0),
                state: Mutex::new(State {
                    message: String::new(),
                    last_draw: None,
                    finished: false,
                    written: (output == Output::Buffer).then(String::new),
                }),
            }),
        }
    }

    /// Whether anything is drawn.
    pub fn is_visible(&self) -> bool {
        self.inner.is_some()
    }

    /// `n` more steps done.
    pub fn inc(&self, n: u64) {
        if let Some(i) = &self.inner {
            i.position.fetch_add(n, Ordering::Relaxed);
            self.draw(false);
        }
    }

    /// `n` steps done in all.
    pub fn set_position(&self, n: u64) {
        if let Some(i) = &self.inner {
            i.position.store(n, Ordering::Relaxed);
            self.draw(false);
        }
    }

    /// For `for_duration` bars: this much of the phase has passed.
    pub fn set_elapsed(&self, elapsed: Duration) {
        self.set_position(elapsed.as_millis() as u64);
    }

    /// The text after the bar (rates, errors).
    pub fn set_message(&self, message: impl Into<String>) {
        if let Some(i) = &self.inner {
            if let Ok(mut s) = i.state.lock() {
                s.message = message.into();
                s.last_draw = None;
            }
            self.draw(false);
        }
    }

    /// Draws the final state and ends the line (the next output starts on a line of its own).
    pub fn finish(&self) {
        self.draw(true);
    }

    fn draw(&self, finish: bool) {
        let Some(i) = &self.inner else {
            return;
        };
        // A thread that finds the line being drawn skips its redraw (the next one shows it);
        // the final one waits for its turn.
        let state = if finish {
            i.state.lock().ok()
        } else {
            i.state.try_lock().ok()
        };
        let Some(mut state) = state else {
            return;
        };
        if state.finished {
            return;
        }
        let now = Instant::now();
        if !finish && state.last_draw.is_some_and(|t| now - t < REDRAW_EVERY) {
            return;
        }
        state.last_draw = Some(now);
        state.finished = finish;
        let line = render(
            &i.label,
            i.position.load(Ordering::Relaxed),
            i.total,
            i.unit,
            &state.message,
            terminal_columns(),
        );
        // Carriage return, clear the line, the line; a newline when done.
        let text = format!("\r\x1b[2K{line}{}", if finish { "\n" } else { "" });
        match &mut state.written {
            Some(buffer) => buffer.push_str(&text),
            None => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(text.as_bytes());
                let _ = err.flush();
            }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

fn amount(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Count => n.to_string(),
        Unit::Millis => format!("{:.1}s", n as f64 / 1000.0),
    }
}

/// The line: `label [#######.........] 3.0s/10.0s  message`, cut to `columns - 1`
/// characters (a line that wraps cannot be redrawn in place).
fn render(
    label: &str,
    position: u64,
    total: u64,
    unit: Unit,
    message: &str,
    columns: usize,
) -> String {
    let mut line = String::new();
    if !label.is_empty() {
        line.push_str(label);
        line.push(' ');
    }
    if total > 0 {
        let shown = position.min(total);
        let filled = (shown as f64 / total as f64 * BAR_WIDTH as f64).round() as usize;
        line.push('[');
        line.push_str(&"#".repeat(filled));
        line.push_str(&".".repeat(BAR_WIDTH - filled));
        line.push_str("] ");
        line.push_str(&amount(shown, unit));
        line.push('/');
        line.push_str(&amount(total, unit));
    } else {
        line.push_str(&amount(position, unit));
    }
    if !message.is_empty() {
        line.push_str("  ");
        line.push_str(message);
    }
    let max = columns.saturating_sub(1).max(20);
    if line.chars().count() > max {
        line = line.chars().take(max).collect();
    }
    line
}

/// The width of the terminal on stderr (80 when unknown).
fn terminal_columns() -> usize {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to a live,
    // writable one; on a descriptor that is not a terminal it fails and writes nothing.
    let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    if r == 0 && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_of_known_length() {
        let line = render("run", 5_000, 10_000, Unit::Millis, "1200 req/s", 120);
        assert_eq!(
            line,
            format!(
                "run [{}{}] 5.0s/10.0s  1200 req/s",
                "#".repeat(12),
                ".".repeat(12)
            )
        );
        let line = render("certificates", 10_000, 10_000, Unit::Count, "", 120);
        assert_eq!(
            line,
            format!("certificates [{}] 10000/10000", "#".repeat(24))
        );
        // Past the end: a full bar, the total.
        let line = render("", 12, 10, Unit::Count, "", 120);
        assert_eq!(line, format!("[{}] 10/10", "#".repeat(24)));
        // Unknown length: the position alone.
        assert_eq!(render("x", 7, 0, Unit::Count, "m", 80), "x 7  m");
    }

    #[test]
    fn a_line_never_wraps() {
        let long = "y".repeat(300);
        let line = render("run", 1, 2, Unit::Count, &long, 60);
        assert_eq!(line.chars().count(), 59);
        // A terminal absurdly narrow still shows the start.
        assert_eq!(
            render("run", 1, 2, Unit::Count, &long, 3).chars().count(),
            20
        );
    }

    #[test]
    fn a_hidden_bar_counts_nothing_and_prints_nothing() {
        let bar = Bar::build("t".into(), 10, Unit::Count, None);
        assert!(!bar.is_visible());
        bar.inc(3);
        bar.set_message("m");
        bar.finish();
        assert!(!Bar::hidden().is_visible());
    }

    fn written(bar: &Bar) -> String {
        let inner = bar.inner.as_ref().unwrap();
        let state = inner.state.lock().unwrap();
        state.written.clone().unwrap()
    }

    #[test]
    fn a_visible_bar_redraws_in_place_and_ends_its_line() {
        let bar = Bar::build("run".into(), 10_000, Unit::Millis, Some(Output::Buffer));
        bar.set_elapsed(Duration::from_millis(1_000));
        // Within 100 ms of the last redraw: not drawn again.
        bar.set_elapsed(Duration::from_millis(1_200));
        bar.set_message("5 req/s");
        bar.finish();
        bar.finish();
        let out = written(&bar);
        let draws: Vec<&str> = out.split("\r\x1b[2K").filter(|d| !d.is_empty()).collect();
        assert_eq!(
            draws,
            [
                format!("run [##{}] 1.0s/10.0s", ".".repeat(22)),
                format!("run [###{}] 1.2s/10.0s  5 req/s", ".".repeat(21)),
                format!("run [###{}] 1.2s/10.0s  5 req/s\n", ".".repeat(21)),
            ],
            "{out:?}"
        );
        // Nothing after the end.
        bar.inc(1);
        assert_eq!(written(&bar), out);
    }

    #[test]
    fn a_visible_bar_counts_from_many_threads() {
        let bar = std::sync::Arc::new(Bar::build(
            "t".into(),
            4_000,
            Unit::Count,
            Some(Output::Buffer),
        ));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let bar = bar.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        bar.inc(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let inner = bar.inner.as_ref().unwrap();
        assert_eq!(inner.position.load(Ordering::Relaxed), 4_000);
        bar.finish();
        assert!(inner.state.lock().unwrap().finished);
        assert!(
            written(&bar).ends_with("] 4000/4000\n"),
            "{}",
            written(&bar)
        );
    }
}
