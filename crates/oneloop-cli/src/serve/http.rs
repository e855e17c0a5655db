//! HTTP/1.1 for a static-file server: a request head parsed by `httparse` into what the server
//! acts on, the answer to each malformed or unsupported request, and response heads.
//!
//! What a request may be and what it gets (RFC 9110/9112):
//! * a head larger than the limit: 431, or 414 when even the request line does not fit;
//! * not HTTP/1.0 or 1.1: 505; malformed, or HTTP/1.1 without `Host`: 400;
//! * a known method other than GET/HEAD: 405 with `Allow: GET, HEAD`; an unknown one: 501;
//! * a body announced by `Transfer-Encoding`: 501; by `Content-Length` over the body limit: 413
//!   (smaller bodies are read and dropped, so the connection stays in step).
//!
//! Every refusal closes the connection (after a head we could not act on, the stream's
//! framing is not to be trusted); a refused HEAD gets no body.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most headers a request may carry (more: 431).
const MAX_HEADERS: usize = 64;
/// The longest request target accepted (longer: 414).
pub const MAX_TARGET: usize = 4096;
/// The largest request body read and dropped rather than refused with 413.
pub const MAX_BODY: u64 = 64 * 1024;

/// A request head the server acts on.
#[derive(Debug)]
pub struct Request {
    pub head: bool,
    /// The raw target's path (no query), still percent-encoded.
    pub path: String,
    pub http10: bool,
    pub keep_alive: bool,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<SystemTime>,
    pub accept_encoding: Option<String>,
    /// For the access log (kept only when `parse` is asked to; boxed, so a request without
    /// it stays small).
    pub for_log: Option<Box<ForLog>>,
    /// Body bytes that follow the head (to be read and dropped).
    pub body: u64,
}

/// The request headers only the access log uses.
#[derive(Debug, Default)]
pub struct ForLog {
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

/// What parsing a buffer's start gave.
#[derive(Debug)]
pub enum Parsed {
    /// A whole head of this many bytes.
    Request(Request, usize),
    /// Not yet a whole head.
    Partial,
    /// A request to refuse with this status (and close).
    Refuse(Status),
}

/// The statuses the server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    PartialContent,
    MovedPermanently,
    NotModified,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UriTooLong,
    RangeNotSatisfiable,
    NotAcceptable,
    HeadersTooLarge,
    Internal,
    NotImplemented,
    VersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::PartialContent => 206,
            Status::MovedPermanently => 301,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::PayloadTooLarge => 413,
            Status::UriTooLong => 414,
            Status::RangeNotSatisfiable => 416,
            Status::NotAcceptable => 406,
            Status::HeadersTooLarge => 431,
            Status::Internal => 500,
            Status::NotImplemented => 501,
            Status::VersionNotSupported => 505,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::PartialContent => "Partial Content",
            Status::MovedPermanently => "Moved Permanently",
            Status::NotModified => "Not Modified",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::PayloadTooLarge => "Content Too Large",
            Status::UriTooLong => "URI Too Long",
            Status::RangeNotSatisfiable => "Range Not Satisfiable",
            Status::NotAcceptable => "Not Acceptable",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::Internal => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }

    /// Whether the connection must close after this answer (see the module doc).
    pub fn closes(self) -> bool {
        matches!(
            self,
            Status::BadRequest
                | Status::PayloadTooLarge
                | Status::UriTooLong
                | Status::HeadersTooLarge
                | Status::Internal
                | Status::NotImplemented
                | Status::VersionNotSupported
        )
    }
}

/// Methods we know but do not serve (405); any other token is 501.
const KNOWN_METHODS: &[&str] = &[
    "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// Parses the head at the start of `buf`; `full` says the buffer is at its size limit (so a
/// partial head is too large).
/// Which optional request headers `parse` keeps (each costs an allocation per request).
#[derive(Clone, Copy, Debug, Default)]
pub struct Keep {
    /// Referer and User-Agent, for the access log.
    pub log_fields: bool,
    /// Accept-Encoding, for precompressed siblings.
    pub encodings: bool,
}

pub fn parse(buf: &[u8], full: bool, keep: Keep) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if full => {
            // Whether even the request line fits decides between 414 and 431.
            let line_ends = buf.windows(2).any(|w| w == b"\r\n") || buf.contains(&b'\n');
            return Parsed::Refuse(if line_ends {
                Status::HeadersTooLarge
            } else {
                Status::UriTooLong
            });
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::Version) => return Parsed::Refuse(version_error(buf)),
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refuse(Status::HeadersTooLarge),
        Err(_) => return Parsed::Refuse(Status::BadRequest),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Refuse(Status::BadRequest);
    };
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        m if KNOWN_METHODS.contains(&m) => return Parsed::Refuse(Status::MethodNotAllowed),
        _ => return Parsed::Refuse(Status::NotImplemented),
    };
    if target.len() > MAX_TARGET {
        return Parsed::Refuse(Status::UriTooLong);
    }
    let Some(path) = origin_path(target) else {
        return Parsed::Refuse(Status::BadRequest);
    };
    let http10 = version == 0;
    let mut request = Request {
        head,
        path: path.to_string(),
        http10,
        keep_alive: !http10,
        range: None,
        if_range: None,
        if_none_match: None,
        if_modified_since: None,
        accept_encoding: None,
        for_log: keep.log_fields.then(Box::default),
        body: 0,
    };
    let mut host = false;
    let mut content_length: Option<u64> = None;
    for h in req.headers.iter() {
        let value = || std::str::from_utf8(h.value).ok().map(str::trim);
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            host = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value().unwrap_or("").split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    request.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    request.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("range") {
            request.range = value().map(str::to_string);
        } else if name.eq_ignore_ascii_case("if-range") {
            request.if_range = value().map(str::to_string);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            request.if_none_match = value().map(str::to_string);
        } else if let (Some(log), true) =
            (&mut request.for_log, name.eq_ignore_ascii_case("referer"))
        {
            log.referer = value().map(str::to_string);
        } else if let (Some(log), true) = (
            &mut request.for_log,
            name.eq_ignore_ascii_case("user-agent"),
        ) {
            log.user_agent = value().map(str::to_string);
        } else if keep.encodings && name.eq_ignore_ascii_case("accept-encoding") {
            // Several lines are one list.
            let v = value().unwrap_or("");
            request.accept_encoding = Some(match request.accept_encoding.take() {
                Some(before) => format!("{before}, {v}"),
                None => v.to_string(),
            });
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            request.if_modified_since = value().and_then(|v| httpdate::parse_http_date(v).ok());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Refuse(Status::NotImplemented);
        } else if name.eq_ignore_ascii_case("content-length") {
            // Digits only (no sign, no list), and every copy the same: anything else could
            // frame the stream differently from a proxy in front.
            let digits = value().filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            let Some(n) = digits.and_then(|v| v.parse::<u64>().ok()) else {
                return Parsed::Refuse(Status::BadRequest);
            };
            if content_length.is_some_and(|seen| seen != n) {
                return Parsed::Refuse(Status::BadRequest);
            }
            content_length = Some(n);
            request.body = n;
        }
    }
    if !host && !http10 {
        return Parsed::Refuse(Status::BadRequest);
    }
    if request.body > MAX_BODY {
        return Parsed::Refuse(Status::PayloadTooLarge);
    }
    Parsed::Request(request, len)
}

/// `HTTP/2.0` and the like are 505; anything that is not `HTTP/<digit>` is 400.
fn version_error(buf: &[u8]) -> Status {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or(&[]);
    let version = version.strip_suffix(b"\r").unwrap_or(version);
    match version.strip_prefix(b"HTTP/") {
        Some(rest) if rest.first().is_some_and(u8::is_ascii_digit) => Status::VersionNotSupported,
        _ => Status::BadRequest,
    }
}

/// The path of an origin-form (`/a/b?q`) or absolute-form (`http://host/a/b`) target.
fn origin_path(target: &str) -> Option<&str> {
    let rest = if target.starts_with('/') {
        target
    } else {
        let after = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))?;
        match after.find('/') {
            Some(i) => &after[i..],
            None => "/",
        }
    };
    Some(rest.split(['?', '#']).next().unwrap_or("/"))
}

/// `Date`/`Last-Modified` text of `t` (IMF-fixdate).
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// The current `Date` header value, formatted once per second per thread.
pub fn now_date() -> std::rc::Rc<str> {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, std::rc::Rc<str>)> =
            std::cell::RefCell::new((u64::MAX, std::rc::Rc::from("")));
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, std::rc::Rc::from(http_date(now)));
        }
        std::rc::Rc::clone(&c.1)
    })
}

/// Starts a response head: status line, `Server`, `Date`.
pub fn start_head(out: &mut Vec<u8>, status: Status) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status.code()));
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\nServer: oneloop\r\nDate: ");
    out.extend_from_slice(now_date().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Adds one header line.
pub fn header(out: &mut Vec<u8>, name: &str, value: impl std::fmt::Display) {
    let _ = write!(Text(out), "{name}: {value}\r\n");
}

/// Adds one header line whose value is text (no formatting machinery: the hot path).
pub fn header_text(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Adds `Content-Length: len`.
pub fn header_len(out: &mut Vec<u8>, len: u64) {
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, len);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Ends a head, saying whether the connection stays open.
pub fn end_head(out: &mut Vec<u8>, keep_alive: bool, http10: bool) {
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A whole small error answer (an HTML body naming the status); `head_only` for HEAD.
pub fn error_response(
    out: &mut Vec<u8>,
    status: Status,
    keep_alive: bool,
    http10: bool,
    head_only: bool,
) {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1></body></html>\n",
        code = status.code(),
        reason = status.reason()
    );
    start_head(out, status);
    header(out, "Content-Type", "text/html; charset=utf-8");
    header(out, "Content-Length", body.len());
    if status == Status::MethodNotAllowed {
        header(out, "Allow", "GET, HEAD");
    }
    end_head(out, keep_alive, http10);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

/// `fmt::Write` into a byte vector.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A byte range of a file of `len` bytes, from a `Range` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// Serve the whole file (no header, a form we do not serve, more than [`MAX_RANGES`]
    /// ranges or more bytes asked than the file has).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Several disjoint, non-adjacent parts, in order (`start..=end` each): a
    /// `multipart/byteranges` answer.
    Parts(Vec<(u64, u64)>),
    /// No byte of the range exists: 416.
    Unsatisfiable,
}

/// The most ranges one request may ask for; more are answered with the whole file (a client
/// asking for many tiny ranges would make the server do a part's work per range).
pub const MAX_RANGES: usize = 16;

/// Reads a `bytes=` range header (RFC 9110 §14.1.2): one range or several. Overlapping and
/// adjacent ranges are merged; what merges into one is a single part. The header is ignored
/// (the whole file) if any range in it is malformed, if it asks for more than [`MAX_RANGES`]
/// ranges, or for more bytes in all than the file has (§14.2 lets a server refuse such
/// requests; answering them whole costs no more than the file). None satisfiable: 416.
pub fn range(header: Option<&str>, len: u64) -> Range {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Whole;
    };
    let specs: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if specs.is_empty() || specs.len() > MAX_RANGES {
        return Range::Whole;
    }
    let mut parts = Vec::with_capacity(specs.len());
    for one in specs {
        match one_range(one, len) {
            Range::Part { start, end } => parts.push((start, end)),
            Range::Unsatisfiable => {}
            _ => return Range::Whole,
        }
    }
    let asked: u64 = parts.iter().map(|(s, e)| e - s + 1).sum();
    if asked > len {
        return Range::Whole;
    }
    parts.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(parts.len());
    for (start, end) in parts {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    match merged.as_slice() {
        [] => Range::Unsatisfiable,
        [(start, end)] => Range::Part {
            start: *start,
            end: *end,
        },
        _ => Range::Parts(merged),
    }
}

/// One range of a `bytes=` header: a part, unsatisfiable, or malformed (`Whole`).
fn one_range(spec: &str, len: u64) -> Range {
    let Some((first, last)) = spec.split_once('-') else {
        return Range::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), num(first), num(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        (false, Some(start), None) if last.trim().is_empty() => {
            if start >= len {
                Range::Unsatisfiable
            } else {
                Range::Part {
                    start,
                    end: len - 1,
                }
            }
        }
        (false, Some(start), Some(end)) if start <= end => {
            if start >= len {
                Range::Unsatisfiable
            } else {
                Range::Part {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        _ => Range::Whole,
    }
}

/// A content coding a file may be stored in beside it (`x.css.br` for `x.css`), in the order
/// preferred when the client weighs them alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    pub const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// Its name in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The sibling file's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }

    /// Its bit in a mask of the siblings a file has.
    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// What to send for a file with the siblings in `siblings` (a mask of [`Coding::bit`]s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Representation {
    /// The file itself.
    Identity,
    /// Its sibling in this coding.
    Coded(Coding),
    /// Nothing the client accepts (it refused `identity`, and no accepted sibling exists).
    NotAcceptable,
}

/// Picks the representation by the client's `Accept-Encoding` (RFC 9110 §12.5.3): the
/// accepted coding with the highest weight among the siblings there are, at equal weights br,
/// then zstd, then gzip; a coding is taken only if weighted at least as much as `identity`
/// (implicitly 1, unless listed, or `*` says otherwise). No header: the file itself.
pub fn representation(accept: Option<&str>, siblings: u8) -> Representation {
    let Some(accept) = accept else {
        return Representation::Identity;
    };
    let mut weights: Vec<(&str, u32)> = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        if name.is_empty() {
            continue;
        }
        let mut q = 1000;
        for p in parts {
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                q = qvalue(v.trim());
            }
        }
        weights.push((name, q));
    }
    let weight = |token: &str| -> Option<u32> {
        weights
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(token))
            .map(|&(_, q)| q)
    };
    let star = weight("*");
    let identity = weight("identity").or(star).unwrap_or(1000);
    let best = Coding::ALL
        .into_iter()
        .filter(|c| siblings & c.bit() != 0)
        .filter_map(|c| {
            // `x-gzip` is gzip (RFC 9110 §8.4.1.3).
            let q = weight(c.token())
                .or_else(|| (c == Coding::Gzip).then(|| weight("x-gzip")).flatten())
                .or(star)?;
            (q > 0).then_some((c, q))
        })
        // The first of the highest weight: `ALL` is in the order of preference.
        .fold(None, |best: Option<(Coding, u32)>, (c, q)| match best {
            Some((_, bq)) if bq >= q => best,
            _ => Some((c, q)),
        });
    match best {
        Some((c, q)) if q >= identity => Representation::Coded(c),
        _ if identity > 0 => Representation::Identity,
        Some((c, _)) => Representation::Coded(c),
        None => Representation::NotAcceptable,
    }
}

/// A `q` value in thousandths (RFC 9110 §12.4.2); malformed ones count as 0.
fn qvalue(v: &str) -> u32 {
    let Some((int, frac)) = v.split_once('.').or(Some((v, ""))) else {
        return 0;
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    match int {
        "0" => format!("{frac:0<3}").parse().unwrap_or(0),
        "1" if frac.bytes().all(|b| b == b'0') => 1000,
        _ => 0,
    }
}

/// The `Content-Type` of a file name, by its extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" | "rs" | "toml" | "c" | "h" | "sh" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "avif" => "image/avif",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &[u8]) -> Status {
        match parse(raw, false, Keep::default()) {
            Parsed::Refuse(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads_parse_and_bad_ones_are_refused() {
        let Parsed::Request(r, len) = parse(
            b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\n\r\nGET",
            false,
            Keep::default(),
        ) else {
            panic!()
        };
        assert_eq!((r.path.as_str(), r.keep_alive, len), ("/a%20b", true, 36));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHo", false, Keep::default()),
            Parsed::Partial
        ));
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Status::MethodNotAllowed
        );
        assert_eq!(
            refused(b"BREW / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Status::NotImplemented
        );
        assert_eq!(
            refused(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"),
            Status::VersionNotSupported
        );
        assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), Status::BadRequest);
        assert_eq!(refused(b"GET / FTP/1.1\r\n\r\n"), Status::BadRequest);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Status::NotImplemented
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n"),
            Status::PayloadTooLarge
        );
        // Framing that a proxy might read otherwise: conflicting copies, a sign.
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n"),
            Status::BadRequest
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n"),
            Status::BadRequest
        );
        let Parsed::Request(r, _) = parse(b"GET / HTTP/1.0\r\n\r\n", false, Keep::default()) else {
            panic!()
        };
        assert!(r.http10 && !r.keep_alive);
        let Parsed::Request(r, _) = parse(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            false,
            Keep::default(),
        ) else {
            panic!()
        };
        assert!(r.keep_alive);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert!(matches!(
            parse(long.as_bytes(), true, Keep::default()),
            Parsed::Refuse(Status::HeadersTooLarge)
        ));
        assert!(matches!(
            parse(&long.as_bytes()[..50], true, Keep::default()),
            Parsed::Refuse(Status::UriTooLong)
        ));
    }

    #[test]
    fn representations() {
        use Representation::*;
        let all = Coding::Br.bit() | Coding::Zstd.bit() | Coding::Gzip.bit();
        let gz = Coding::Gzip.bit();
        let r = representation;
        assert_eq!(r(None, all), Identity);
        assert_eq!(r(Some("gzip, deflate, br, zstd"), all), Coded(Coding::Br));
        assert_eq!(r(Some("gzip, zstd"), all), Coded(Coding::Zstd));
        assert_eq!(r(Some("gzip;q=1.0, br;q=0.5"), all), Coded(Coding::Gzip));
        assert_eq!(r(Some("br;q=0, gzip"), all), Coded(Coding::Gzip));
        assert_eq!(r(Some("x-gzip"), gz), Coded(Coding::Gzip));
        assert_eq!(r(Some("*"), gz), Coded(Coding::Gzip));
        assert_eq!(r(Some("br"), gz), Identity, "no br sibling");
        // Weighted below identity: the file itself.
        assert_eq!(r(Some("gzip;q=0.5"), gz), Identity);
        assert_eq!(
            r(Some("gzip;q=0.5, identity;q=0.2"), gz),
            Coded(Coding::Gzip)
        );
        // identity refused: a sibling if one is accepted, else 406.
        assert_eq!(r(Some("gzip;q=0.1, identity;q=0"), gz), Coded(Coding::Gzip));
        assert_eq!(r(Some("br, identity;q=0"), gz), NotAcceptable);
        assert_eq!(r(Some("*;q=0"), 0), NotAcceptable);
        assert_eq!(r(Some("*;q=0, identity"), 0), Identity);
        assert_eq!(
            r(Some("gzip;q=2"), gz),
            Identity,
            "a malformed weight counts as 0"
        );
        assert_eq!(r(Some(""), gz), Identity);
    }

    #[test]
    fn ranges() {
        let r = |h: &str| range(Some(h), 100);
        assert_eq!(r("bytes=0-9"), Range::Part { start: 0, end: 9 });
        assert_eq!(r("bytes=90-"), Range::Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-10"), Range::Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-1000"), Range::Part { start: 0, end: 99 });
        assert_eq!(r("bytes=50-1000"), Range::Part { start: 50, end: 99 });
        assert_eq!(r("bytes=100-"), Range::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Range::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Range::Parts(vec![(0, 1), (5, 6)]));
        // Out of order, overlapping and adjacent: sorted and merged.
        assert_eq!(
            r("bytes=50-59, 0-9,5-12,13-14"),
            Range::Parts(vec![(0, 14), (50, 59)])
        );
        assert_eq!(r("bytes=0-9,10-19"), Range::Part { start: 0, end: 19 });
        assert_eq!(r("bytes=-5,0-4"), Range::Parts(vec![(0, 4), (95, 99)]));
        // Unsatisfiable ones drop out; none left: 416.
        assert_eq!(r("bytes=0-4,200-300"), Range::Part { start: 0, end: 4 });
        assert_eq!(r("bytes=100-,200-300"), Range::Unsatisfiable);
        // One malformed range: the header is ignored.
        assert_eq!(r("bytes=0-4,x-9"), Range::Whole);
        assert_eq!(r("bytes=0-4,9-1"), Range::Whole);
        // More than 16 ranges, or more bytes than the file: whole.
        let many: Vec<String> = (0..17).map(|i| format!("{}-{}", i * 5, i * 5)).collect();
        assert_eq!(r(&format!("bytes={}", many.join(","))), Range::Whole);
        let sixteen: Vec<String> = (0..16).map(|i| format!("{}-{}", i * 5, i * 5)).collect();
        assert!(
            matches!(r(&format!("bytes={}", sixteen.join(","))), Range::Parts(p) if p.len() == 16)
        );
        assert_eq!(r("bytes=0-99,0-99"), Range::Whole);
        assert_eq!(r("bytes=,"), Range::Whole);
        assert_eq!(r("bytes=9-1"), Range::Whole);
        assert_eq!(r("items=0-1"), Range::Whole);
        assert_eq!(range(None, 100), Range::Whole);
        assert_eq!(range(Some("bytes=0-0"), 0), Range::Unsatisfiable);
    }
}
