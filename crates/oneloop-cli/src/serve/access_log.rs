//! `--access-log FILE|-`: one line per answer, in nginx's `combined` format or as JSON
//! (`--log-format json`), written through the ring.
//!
//! Each thread appends its lines to a buffer of its own; a task of that thread writes the
//! buffer to the file (opened `O_APPEND`, so threads' writes interleave whole) every
//! [`FLUSH`], or sooner once it holds [`FLUSH_AT`]. An answer never waits for the log: past
//! [`BUFFER_MAX`] of unwritten lines (a disk that cannot keep up), lines are dropped and
//! counted, and the count is reported. `SIGUSR1` makes every thread reopen the file (log
//! rotation: rename it, send the signal); shutdown writes what is buffered.

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use oneloop_rt::fs::{File, OpenOptions};

/// How often a thread writes its lines.
pub const FLUSH: Duration = Duration::from_millis(100);
/// A thread writes at once when this much is buffered.
pub const FLUSH_AT: usize = 64 << 10;
/// The most unwritten bytes a thread keeps; past it, lines are dropped (and counted).
pub const BUFFER_MAX: usize = 1 << 20;

/// The line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// nginx's `combined`: `addr - - [time] "request" status bytes "referer" "agent"`.
    Combined,
    /// One JSON object per line.
    Json,
}

/// What every thread's log shares: the file, the format, and the rotation generation.
pub struct Shared {
    /// `None`: standard output.
    pub path: Option<PathBuf>,
    pub format: Format,
    /// Bumped at each `SIGUSR1`: threads reopen the file when they see it change.
    pub generation: AtomicU64,
}

/// One answer, for its line.
pub struct Entry<'a> {
    pub peer: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub http10: bool,
    pub status: u16,
    pub bytes: u64,
    pub referer: Option<&'a str>,
    pub agent: Option<&'a str>,
}

/// A thread's log: its buffer and what it dropped.
pub struct ThreadLog {
    shared: std::sync::Arc<Shared>,
    buf: RefCell<Vec<u8>>,
    dropped: Cell<u64>,
    /// The second's time text, and the second it is for.
    clock: RefCell<(u64, String)>,
}

impl ThreadLog {
    pub fn new(shared: std::sync::Arc<Shared>) -> ThreadLog {
        ThreadLog {
            shared,
            buf: RefCell::new(Vec::with_capacity(FLUSH_AT)),
            dropped: Cell::new(0),
            clock: RefCell::new((u64::MAX, String::new())),
        }
    }

    /// Buffers `entry`'s line, or drops it if the buffer is full.
    pub fn line(&self, entry: &Entry<'_>) {
        let mut buf = self.buf.borrow_mut();
        if buf.len() >= BUFFER_MAX {
            self.dropped.set(self.dropped.get() + 1);
            return;
        }
        let version = if entry.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut clock = self.clock.borrow_mut();
        if clock.0 != secs {
            *clock = (secs, time_text(secs, self.shared.format));
        }
        let time = &clock.1;
        let buf = &mut *buf;
        // Written straight into the buffer (no line allocated): this runs once per answer.
        let _ = match self.shared.format {
            Format::Combined => {
                let _ = write!(buf, "{} - - [{time}] \"{} ", entry.peer.ip(), entry.method);
                escape_combined(buf, entry.path);
                let _ = write!(buf, " {version}\" {} {} \"", entry.status, entry.bytes);
                escape_combined(buf, entry.referer.unwrap_or("-"));
                buf.extend_from_slice(b"\" \"");
                escape_combined(buf, entry.agent.unwrap_or("-"));
                buf.write_all(b"\"\n")
            }
            Format::Json => {
                let _ = write!(
                    buf,
                    "{{\"remote_addr\":\"{}\",\"time\":\"{time}\",\"method\":",
                    entry.peer.ip()
                );
                json_string(buf, Some(entry.method));
                buf.extend_from_slice(b",\"path\":");
                json_string(buf, Some(entry.path));
                let _ = write!(
                    buf,
                    ",\"protocol\":\"{version}\",\"status\":{},\"bytes\":{},\"referer\":",
                    entry.status, entry.bytes
                );
                json_string(buf, entry.referer);
                buf.extend_from_slice(b",\"user_agent\":");
                json_string(buf, entry.agent);
                buf.write_all(b"}\n")
            }
        };
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    fn take(&self, spare: &mut Vec<u8>) {
        spare.clear();
        std::mem::swap(&mut *self.buf.borrow_mut(), spare);
    }

    fn len(&self) -> usize {
        self.buf.borrow().len()
    }
}

/// The time as `combined` writes it (`10/Oct/2000:13:55:36 +0000`) or RFC 3339 for JSON.
fn time_text(secs: u64, format: Format) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    match format {
        Format::Combined => {
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let mon = MONTHS[(month - 1) as usize];
            format!("{day:02}/{mon}/{year}:{h:02}:{m:02}:{s:02} +0000")
        }
        Format::Json => format!("{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
    }
}

/// Appends a value inside `combined`'s quotes: `"` and `\` escaped, control bytes as `\xHH`.
fn escape_combined(out: &mut Vec<u8>, s: &str) {
    if !s
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || b.is_ascii_control())
    {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

/// Appends a JSON string literal (`null` for `None`).
fn json_string(out: &mut Vec<u8>, s: Option<&str>) {
    let Some(s) = s else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Opens the log for appending (standard output: a duplicate of it).
async fn open(shared: &Shared) -> std::io::Result<File> {
    match &shared.path {
        Some(path) => {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .await
        }
        None => {
            let out = std::io::stdout().as_fd_dup()?;
            Ok(File::from(out))
        }
    }
}

trait DupFd {
    fn as_fd_dup(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl DupFd for std::io::Stdout {
    fn as_fd_dup(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}

/// Appends all of `buf` to `file` (a short write goes on with the rest); `buf` comes back
/// empty, its capacity kept.
async fn write_all(file: &File, mut buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
    while !buf.is_empty() {
        let (res, back) = file.write_at(buf, oneloop::CURRENT_POSITION).await;
        buf = back;
        match res {
            Ok(0) => return (Err(std::io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => {
                buf.drain(..n);
            }
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// The thread's writer: every [`FLUSH`] (or at [`FLUSH_AT`]), writes what is buffered;
/// reopens the file when the generation moved (`SIGUSR1`); returns, after a last write, when
/// `stop` is set.
pub async fn writer(log: Rc<ThreadLog>, stop: Rc<Cell<bool>>) {
    let mut seen = log.shared.generation.load(Ordering::Acquire);
    let mut file = match open(&log.shared).await {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("oneloop serve: access log: {e}");
            None
        }
    };
    let mut spare = Vec::with_capacity(FLUSH_AT);
    let mut waited = Duration::ZERO;
    loop {
        let stopping = stop.get();
        let generation = log.shared.generation.load(Ordering::Acquire);
        if generation != seen {
            seen = generation;
            file = match open(&log.shared).await {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("oneloop serve: access log reopen: {e}");
                    file
                }
            };
        }
        if stopping || waited >= FLUSH || log.len() >= FLUSH_AT {
            waited = Duration::ZERO;
            log.take(&mut spare);
            if let (Some(f), false) = (&file, spare.is_empty()) {
                let (res, back) = write_all(f, std::mem::take(&mut spare)).await;
                spare = back;
                if let Err(e) = res {
                    eprintln!("oneloop serve: access log write: {e}");
                }
            }
        }
        if stopping {
            if log.dropped() > 0 {
                eprintln!(
                    "oneloop serve: access log: {} line(s) dropped (the log could not keep up)",
                    log.dropped()
                );
            }
            return;
        }
        oneloop_rt::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_and_escapes() {
        assert_eq!(
            time_text(971_185_736, Format::Combined),
            "10/Oct/2000:13:48:56 +0000"
        );
        assert_eq!(time_text(0, Format::Json), "1970-01-01T00:00:00Z");
        assert_eq!(time_text(951_782_400, Format::Json), "2000-02-29T00:00:00Z");
        let mut out = Vec::new();
        escape_combined(&mut out, "a\"b\\c\u{1}é");
        assert_eq!(out, "a\\\"b\\\\c\\x01é".as_bytes());
        let mut out = Vec::new();
        json_string(&mut out, Some("a\"b\né"));
        json_string(&mut out, None);
        assert_eq!(out, "\"a\\\"b\\u000aé\"null".as_bytes());
    }
}
