//! The access log: one JSON line per request, appended to an in-memory buffer on the
//! request path and written out by a background thread every 100 ms (like NGINX's
//! `access_log ... buffer= flush=`), so that logging never blocks the runtime and costs
//! no wake-up per line. If the output stalls, lines beyond the buffer cap are dropped and
//! counted rather than stalling requests.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Buffered bytes beyond which the writer is woken early.
const WAKE_AT: usize = 256 * 1024;
/// Buffered bytes beyond which lines are dropped.
const CAP: usize = 16 * 1024 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

struct State {
    buf: Vec<u8>,
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

/// A handle to the access log; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

/// Flushes the remaining lines and stops the writer thread when dropped.
pub struct AccessLogFlusher {
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AccessLog {
    /// Starts the writer thread on `out` (standard output in the binary).
    pub fn start(mut out: Box<dyn Write + Send>) -> (AccessLog, AccessLogFlusher) {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                buf: Vec::with_capacity(64 * 1024),
                closed: false,
            }),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let writer = inner.clone();
        let thread = std::thread::Builder::new()
            .name("rampart-access-log".into())
            .spawn(move || {
                let mut spare = Vec::with_capacity(64 * 1024);
                loop {
                    let closed = {
                        let Ok(guard) = writer.state.lock() else {
                            return;
                        };
                        let Ok((mut state, _)) =
                            writer.wake.wait_timeout_while(guard, FLUSH_EVERY, |s| {
                                s.buf.len() < WAKE_AT && !s.closed
                            })
                        else {
                            return;
                        };
                        std::mem::swap(&mut state.buf, &mut spare);
                        state.closed
                    };
                    if !spare.is_empty() {
                        // A failing output (closed pipe) loses log lines, never requests.
                        let _ = out.write_all(&spare).and_then(|()| out.flush());
                        spare.clear();
                    }
                    if closed {
                        return;
                    }
                }
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access log writer; access log disabled");
                None
            }
        };
        let log = AccessLog {
            inner: inner.clone(),
        };
        (log, AccessLogFlusher { inner, thread })
    }

    /// Appends one line, built by `write` into the shared buffer.
    pub fn line(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let Ok(mut state) = self.inner.state.lock() else {
            return;
        };
        if state.closed || state.buf.len() >= CAP {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        write(&mut state.buf);
        state.buf.push(b'\n');
        if state.buf.len() >= WAKE_AT {
            self.inner.wake.notify_one();
        }
    }

    /// Lines dropped because the output could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for AccessLogFlusher {
    fn drop(&mut self) {
        if let Ok(mut state) = self.inner.state.lock() {
            state.closed = true;
        }
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `s` as a JSON string, for names written into every log line.
pub fn json_string(s: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(s.len() + 2);
    json_str(&mut out, s);
    out.into()
}

/// Appends `s` as a JSON string literal. Runs that need no escape are copied whole, found
/// eight bytes at a time.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8)
            && let Ok(word) = <[u8; 8]>::try_from(chunk)
            && !needs_escape(u64::from_le_bytes(word))
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        } else {
            out.extend_from_slice(escape);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any of the eight bytes is a control character, `"` or `\` (the classic
/// has-less-than and has-zero-byte word tricks).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    control | quote | backslash != 0
}

/// Appends `value` in decimal with at least `width` digits (zero padded, up to 20).
pub fn zero_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut number = itoa::Buffer::new();
    let digits = number.format(value).as_bytes();
    let zeros = width.min(ZEROS.len()).saturating_sub(digits.len());
    out.extend_from_slice(&ZEROS[..zeros]);
    out.extend_from_slice(digits);
}

const ZEROS: &[u8; 20] = b"00000000000000000000";

/// The wall-clock time at `now`, from a reading of both clocks that each thread takes again
/// once a second: a log line's timestamp then costs no clock reading of its own (one is
/// about 20 ns on this VM, and a request already makes several). Off by the two clocks'
/// drift within that second (NTP slews by at most 0.05%) or, after the system clock is
/// stepped, for at most a second.
pub fn wall_time(now: Instant) -> SystemTime {
    const REFRESH: Duration = Duration::from_secs(1);
    thread_local! {
        static ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
    }
    // `now` on the wall clock from an anchor, and how far from the anchor it is: in the
    // common case, `now` just after the anchor, one subtraction.
    let from = |(at, wall): (Instant, SystemTime)| match now.checked_duration_since(at) {
        Some(after) => (wall + after, after),
        None => {
            let before = at - now;
            (wall - before, before)
        }
    };
    ANCHOR.with(|anchor| {
        if let Some((time, distance)) = anchor.get().map(from)
            && distance < REFRESH
        {
            return time;
        }
        let fresh = (Instant::now(), SystemTime::now());
        anchor.set(Some(fresh));
        from(fresh).0
    })
}

/// Appends the time as an RFC 3339 UTC timestamp with microseconds. The part up to the
/// second is formatted once a second per thread.
pub fn rfc3339(out: &mut Vec<u8>, time: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.1.clear();
            date_and_second(&mut cached.1, secs);
            cached.0 = secs;
        }
        out.extend_from_slice(&cached.1);
    });
    zero_padded(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` for seconds since the epoch.
fn date_and_second(out: &mut Vec<u8>, secs: u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let parts = [
        (year.max(0) as u64, 4, b'-'),
        (month as u64, 2, b'-'),
        (day as u64, 2, b'T'),
        (rem / 3600, 2, b':'),
        (rem / 60 % 60, 2, b':'),
        (rem % 60, 2, b'.'),
    ];
    for (value, width, separator) in parts {
        zero_padded(out, value, width);
        out.push(separator);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_follows_the_monotonic_clock_from_an_anchor() {
        let start = Instant::now();
        let first = wall_time(start);
        let drift = |a: SystemTime, b: SystemTime| {
            a.duration_since(b)
                .or_else(|_| b.duration_since(a))
                .unwrap_or_default()
        };
        assert!(drift(first, SystemTime::now()) < Duration::from_millis(50));
        // Within the anchor's second, the wall time moves exactly as the monotonic clock.
        let later = wall_time(start + Duration::from_millis(400));
        assert_eq!(
            later.duration_since(first).ok(),
            Some(Duration::from_millis(400))
        );
        let earlier = wall_time(start - Duration::from_millis(300));
        assert_eq!(
            first.duration_since(earlier).ok(),
            Some(Duration::from_millis(300))
        );
        // Far from the anchor: a new reading of both clocks.
        let far = start + Duration::from_secs(5);
        assert!(
            drift(wall_time(far), SystemTime::now() + Duration::from_secs(5))
                < Duration::from_millis(50)
        );
    }

    #[test]
    fn numbers_are_zero_padded_to_their_width() {
        let mut out = Vec::new();
        for (value, width) in [(7, 3), (0, 6), (12_345, 3), (0, 0), (u64::MAX, 4), (42, 25)] {
            zero_padded(&mut out, value, width);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "007 000000 12345 0 18446744073709551615 00000000000000000042 "
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut out = Vec::new();
        rfc3339(
            &mut out,
            UNIX_EPOCH + Duration::from_micros(1_795_324_536_575_779),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-22T05:15:36.575779Z"
        );
        let mut out = Vec::new();
        rfc3339(&mut out, UNIX_EPOCH + Duration::from_secs(951_782_400)); // leap day
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\n\u{1}é");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, r#""a\"b\\c\n\u0001é""#);
        assert_eq!(
            serde_json::from_str::<String>(&text).unwrap(),
            "a\"b\\c\n\u{1}é"
        );
        // Longer than a word, with escapes inside and after clean eight-byte runs.
        let long = "a longer plain text with \"quotes\" and \\ past eight\u{1}\u{7f}é";
        let mut out = Vec::new();
        json_str(&mut out, long);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(serde_json::from_str::<String>(&text).unwrap(), long);
        assert!(
            text.contains(r#"\"quotes\" and \\ past eight\u0001"#),
            "{text}"
        );
        let mut out = Vec::new();
        json_str(&mut out, "plain");
        json_str(&mut out, "\u{1f}end");
        assert_eq!(out, br#""plain""\u001fend""#);
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_and_flushed_on_drop() {
        let sink = Shared::default();
        let (log, flusher) = AccessLog::start(Box::new(sink.clone()));
        for i in 0..1000 {
            log.line(|b| {
                let _ = write!(b, "{{\"n\":{i}}}");
            });
        }
        drop(flusher);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "{\"n\":999}");
        log.line(|b| b.push(b'x'));
        assert_eq!(
            log.dropped(),
            1,
            "lines after close are counted, not written"
        );
    }
}
