//! From a request path to an open file under the root — and never outside it.
//!
//! Two fences, each enough on its own for what it covers:
//! 1. **The path is checked before the kernel sees it.** Each `/`-separated segment is
//!    percent-decoded on its own; a segment that decodes to `..`, or to bytes holding `/` or
//!    NUL (`%2F`, `%00`), is refused (400). `.` and empty segments are dropped, so the path
//!    handed to the kernel is relative and has no `..`.
//! 2. **The kernel resolves it beneath the root.** Every open is `openat2` relative to the
//!    root's descriptor with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`, so a symlink that
//!    points outside (absolute, or by `..`) fails with `EXDEV` (404), and `/proc` magic links
//!    are refused. Symlinks that stay inside the root are followed.
//!
//! Only regular files and directories are served; anything else under the root (a FIFO, a
//! device, a socket) is 403. Opens are non-blocking (`O_NONBLOCK`), so a FIFO never holds the
//! loop or a worker waiting for a writer; a regular file then drops the flag again where the
//! backend's reads would honour it (io_uring; `clear_nonblock`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oneloop_rt::fs::{File, OpenOptions};
use percent_encoding::percent_decode_str;

use super::http::Status;

/// A request path made safe to resolve beneath the root.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// Relative, no `..`, no empty or `.` segments (`.` for the root itself).
    pub rel: String,
    /// Whether the request path ended in `/` (a directory is then served, not redirected).
    pub trailing_slash: bool,
}

/// Checks and decodes a request path (fence 1 of the module doc).
pub fn target(path: &str) -> Result<Target, Status> {
    let Some(path) = path.strip_prefix('/') else {
        return Err(Status::BadRequest);
    };
    let mut rel = String::with_capacity(path.len());
    for segment in path.split('/') {
        let decoded = percent_decode_str(segment).collect::<Vec<u8>>();
        if decoded.contains(&b'/') || decoded.contains(&0) {
            return Err(Status::BadRequest);
        }
        let Ok(decoded) = String::from_utf8(decoded) else {
            // Names on disk may be any bytes, but URLs here are UTF-8.
            return Err(Status::NotFound);
        };
        match decoded.as_str() {
            "" | "." => continue,
            ".." => return Err(Status::BadRequest),
            name => {
                if !rel.is_empty() {
                    rel.push('/');
                }
                rel.push_str(name);
            }
        }
    }
    if rel.is_empty() {
        rel.push('.');
    }
    Ok(Target {
        rel,
        trailing_slash: path.is_empty() || path.ends_with('/'),
    })
}

/// What `fstat` says of an open file, as the server uses it.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub len: u64,
    pub mtime: SystemTime,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Other,
}

impl Meta {
    /// `"<mtime seconds hex>.<nanoseconds hex>-<size hex>"`: changes when the file does, even
    /// twice in a second at the same size.
    pub fn etag(&self) -> String {
        let t = self
            .mtime
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        format!(
            "\"{:x}.{:x}-{:x}\"",
            t.as_secs(),
            t.subsec_nanos(),
            self.len
        )
    }
}

/// What an answer with a regular file says of it: its metadata and their header text.
#[derive(Debug)]
pub struct About {
    pub meta: Meta,
    pub etag: String,
    pub modified: String,
    pub content_type: &'static str,
}

impl About {
    /// The answer's text for a file `name` (its extension picks the type) with `meta`.
    pub fn of(meta: Meta, name: &str) -> About {
        About {
            etag: meta.etag(),
            modified: super::http::http_date(meta.mtime),
            content_type: super::http::content_type(name),
            meta,
        }
    }
}

/// `fstat` of an open file.
pub fn meta(fd: BorrowedFd<'_>) -> io::Result<Meta> {
    let st = rustix::fs::fstat(fd)?;
    let kind = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
        rustix::fs::FileType::RegularFile => Kind::File,
        rustix::fs::FileType::Directory => Kind::Dir,
        _ => Kind::Other,
    };
    // The field types differ between rustix's back ends (signed with libc, not without).
    #[allow(clippy::useless_conversion)]
    let mtime = UNIX_EPOCH
        + Duration::new(
            u64::try_from(st.st_mtime).unwrap_or(0),
            u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        );
    Ok(Meta {
        len: u64::try_from(st.st_size).unwrap_or(0),
        mtime,
        kind,
    })
}

/// Opens `rel` beneath `dir` on the ring (fence 2 of the module doc).
pub async fn open_beneath(
    dir: &Arc<OwnedFd>,
    rel: &str,
    clear_nonblock: bool,
) -> Result<(File, Meta), Status> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .register(false)
        .resolve(libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS);
    let file = options.open_in(dir, rel).await.map_err(open_error)?;
    let meta = meta(file.as_fd()).map_err(|_| Status::Internal)?;
    match meta.kind {
        Kind::File if clear_nonblock => {
            // io_uring returns EAGAIN rather than wait for the disk on an O_NONBLOCK file
            // (epoll's and aio's reads ignore the flag on regular files). No other status
            // flag was asked for, so all are cleared.
            rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())
                .map_err(|_| Status::Internal)?;
        }
        Kind::File => {}
        Kind::Dir => {}
        Kind::Other => return Err(Status::Forbidden),
    }
    Ok((file, meta))
}

fn open_error(e: io::Error) -> Status {
    match e.raw_os_error() {
        Some(
            libc::ENOENT | libc::ENOTDIR | libc::EXDEV | libc::ELOOP | libc::ENXIO | libc::ENODEV,
        ) => Status::NotFound,
        Some(libc::EACCES | libc::EPERM) => Status::Forbidden,
        Some(libc::ENAMETOOLONG) => Status::UriTooLong,
        _ => Status::Internal,
    }
}

/// A directory's listing as HTML (names escaped, directories first, each sorted). Read with
/// plain `getdents` calls on this thread: listings are rare, and a directory being listed is
/// hot in the cache.
pub fn listing(dir: &File, url_path: &str) -> io::Result<String> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut reader = rustix::fs::Dir::read_from(dir.as_fd())?;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        match entry.file_type() {
            rustix::fs::FileType::Directory => dirs.push(name),
            _ => files.push(name),
        }
    }
    dirs.sort();
    files.sort();
    let title = escape(&percent_decode_str(url_path).decode_utf8_lossy());
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<ul>\n"
    );
    if url_path != "/" {
        html.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for (name, slash) in dirs
        .iter()
        .map(|d| (d, "/"))
        .chain(files.iter().map(|f| (f, "")))
    {
        // `./` first, so no name (`javascript:...`) can be read as a URL scheme.
        let href = percent_encoding::utf8_percent_encode(name, HREF).to_string();
        html.push_str(&format!(
            "<li><a href=\"./{href}{slash}\">{}{slash}</a></li>\n",
            escape(name)
        ));
    }
    html.push_str("</ul></body></html>\n");
    Ok(html)
}

/// The URL path of directory `rel` (a [`Target::rel`]), with its trailing `/`, each segment
/// percent-encoded: always one leading `/`, so it never names another host.
pub fn url_of_dir(rel: &str) -> String {
    let mut url = String::from("/");
    if rel != "." {
        for segment in rel.split('/') {
            url.extend(percent_encoding::utf8_percent_encode(segment, HREF));
            url.push('/');
        }
    }
    url
}

/// What a name in an `href` must have encoded.
const HREF: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\'')
    .add(b'&')
    .add(b':')
    .add(b'\\');

/// HTML-escapes text.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_per_segment_and_never_climb() {
        let t = |p: &str| target(p).map(|t| t.rel);
        assert_eq!(t("/"), Ok(".".into()));
        assert_eq!(t("/a/b.txt"), Ok("a/b.txt".into()));
        assert_eq!(t("/a//./b%20c"), Ok("a/b c".into()));
        assert_eq!(t("/../etc/passwd"), Err(Status::BadRequest));
        assert_eq!(t("/a/%2e%2e/%2E%2E/x"), Err(Status::BadRequest));
        assert_eq!(t("/a%2f..%2fb"), Err(Status::BadRequest));
        assert_eq!(t("/a%00b"), Err(Status::BadRequest));
        assert_eq!(t("/%ff"), Err(Status::NotFound));
        assert_eq!(t("relative"), Err(Status::BadRequest));
        assert!(target("/dir/").unwrap().trailing_slash);
        assert!(!target("/dir").unwrap().trailing_slash);
    }

    #[test]
    fn directory_urls_stay_on_this_host() {
        assert_eq!(url_of_dir("."), "/");
        assert_eq!(url_of_dir("a b/c"), "/a%20b/c/");
        // `//evil.example` normalises to the segment `evil.example`: one leading slash.
        assert_eq!(
            url_of_dir(&target("//evil.example").unwrap().rel),
            "/evil.example/"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
