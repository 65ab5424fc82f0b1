//! The small HTTP/1.1 client of HTTP health checks: the request bytes of a check and a
//! response parser, as pure functions and a byte-fed state machine (RFC 9112), plus the one
//! async function that runs a request over a stream.
//!
//! Why not hyper: a health check sends one fixed request and reads one small response. hyper's
//! connection machinery (handshake, dispatch task, per-connection read/write buffers of 8 KiB
//! and more) costs CPU per check and memory per kept connection; with 5,000 kept-alive check
//! connections that matters (docs/benchmarks-history.md, "Health checks at 5,000 real servers").
//!
//! What the parser handles (RFC 9112 §6.3 message body length, in its order): responses to
//! HEAD and 1xx/204/304 responses have no body; `Transfer-Encoding` ending in `chunked` is
//! decoded (chunk extensions and trailers skipped); other transfer codings and responses
//! without a length are read until the server closes; otherwise `Content-Length`. Interim 1xx
//! responses (100 Continue, 103 Early Hints) are skipped. A body is kept up to
//! [`MAX_BODY`](super::checks::MAX_BODY) bytes. Anything malformed becomes an [`HttpError`]
//! whose text is the check's reason; nothing here panics on input.
//!
//! Whether a connection may carry the next check ([`ResponseParser::reusable`]): the response
//! was complete, self-delimited (not read-until-close), nothing followed it, and the server did
//! not ask to close (`Connection: close`; HTTP/1.0 without `Connection: keep-alive`).

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::config::director::{HttpMethod, Receive};

/// Most body bytes read for the `receive` match; the rest is not downloaded.
pub const MAX_BODY: usize = 1 << 20;

/// Which HTTP status counts as success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpStatus {
    /// Any 2xx (ldirectord: the only choice there).
    #[default]
    Any2xx,
    /// Exactly this code.
    Code(u16),
}

/// An HTTP or HTTPS negotiate check. Equal checks (a `receive` compares by its pattern) are
/// shared by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    /// `https` instead of `http` (service = https).
    pub https: bool,
    /// GET or HEAD.
    pub method: HttpMethod,
    /// ldirectord `request`: a path (`/index.html`, leading `/` optional), or an absolute
    /// `http://…`/`https://…` URL that replaces scheme, host and port.
    pub request: String,
    /// ldirectord `receive`: the body (header lines for HEAD) must match this regex. Compiled
    /// once when the configuration is read; a clone shares the compiled program.
    pub receive: Option<Receive>,
    /// ldirectord `virtualhost`: `Host` header and TLS SNI name.
    pub virtual_host: Option<String>,
    /// Which status is success.
    pub status: HttpStatus,
}

/// Largest response head (status line and header lines) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in one response head (hyper's default limit too).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// `User-Agent` of every check request.
pub const USER_AGENT: &str = concat!("hbd-check/", env!("CARGO_PKG_VERSION"));

/// Why a response could not be read; the text is the check's reason after `HTTP: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// httparse rejected the status line or a header line.
    #[error("bad response head: {0}")]
    BadHead(String),
    /// The head did not end within [`MAX_HEAD`] bytes.
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// A `Content-Length` that is not a number, or two different ones.
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    /// A malformed chunked body.
    #[error("bad chunked body: {0}")]
    BadChunk(&'static str),
    /// The server closed before the response head was complete.
    #[error("connection closed before the response")]
    ClosedBeforeResponse,
    /// The server closed in the middle of a body that had a length.
    #[error("connection closed before the end of the body")]
    ClosedInBody,
}

/// A request target that cannot be written on a request line or in a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// The path has a space, a control character or a non-ASCII byte.
    #[error("bad HTTP request: path {0:?} has a space, control or non-ASCII character")]
    Path(String),
    /// The Host value has a control character.
    #[error("bad HTTP request: Host {0:?} has a control character")]
    Host(String),
}

/// The bytes of one check request: `METHOD path HTTP/1.1`, `Host`, `User-Agent`, and
/// `Connection: close` when the connection will not be kept. Built once per check spec.
pub fn request_bytes(
    method: HttpMethod,
    path: &str,
    host: &str,
    close: bool,
) -> Result<Vec<u8>, BadRequest> {
    if path.is_empty() || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BadRequest::Path(path.to_string()));
    }
    if host.bytes().any(|b| b.is_ascii_control()) {
        return Err(BadRequest::Host(host.to_string()));
    }
    let m = method.name();
    let conn = if close { "Connection: close\r\n" } else { "" };
    Ok(
        format!("{m} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n{conn}\r\n")
            .into_bytes(),
    )
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// The final response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub code: u16,
    /// How the body ends.
    pub framing: Framing,
    /// The server lets the connection carry another request.
    pub keep_alive: bool,
    /// `name: value\n` per header line, names lower-cased, when asked for (HEAD `receive`).
    pub text: Option<String>,
}

/// Parses one response head at the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((head, n)))`: the head took `n` bytes. Interim 1xx heads are returned like others
/// (see [`ResponseParser`], which skips them).
pub fn parse_head(
    buf: &[u8],
    method: HttpMethod,
    want_text: bool,
) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    // Uninitialised header slots: httparse fills those it uses, and 100 empty headers
    // (3.2 KB) are not written on every check.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let n = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(HttpError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::BadHead(e.to_string())),
    };
    if n > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let code = resp.code.unwrap_or(0);
    let minor = resp.version.unwrap_or(1);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close, mut keep) = (false, false);
    let mut text = want_text.then(String::new);
    for h in resp.headers.iter() {
        if let Some(t) = &mut text {
            t.push_str(&h.name.to_ascii_lowercase());
            t.push_str(": ");
            t.push_str(&String::from_utf8_lossy(h.value));
            t.push('\n');
        }
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            for v in value.split(',').map(str::trim) {
                let len = match v.parse::<u64>() {
                    Ok(l) if v.bytes().all(|b| b.is_ascii_digit()) => l,
                    _ => return Err(HttpError::BadContentLength(value.into_owned())),
                };
                if length.is_some_and(|l| l != len) {
                    return Err(HttpError::BadContentLength(value.into_owned()));
                }
                length = Some(len);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides (RFC 9112 §6.3 item 4); several headers form one list.
            if let Some(last) = value.split(',').map(str::trim).rfind(|c| !c.is_empty()) {
                chunked = Some(last.eq_ignore_ascii_case("chunked"));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let framing =
        if method == HttpMethod::Head || (100..200).contains(&code) || code == 204 || code == 304 {
            Framing::Empty
        } else {
            match (chunked, length) {
                (Some(true), _) => Framing::Chunked,
                (Some(false), _) => Framing::UntilClose,
                (None, Some(l)) => Framing::Length(l),
                (None, None) => Framing::UntilClose,
            }
        };
    let keep_alive =
        !close && (minor >= 1 || keep) && framing != Framing::UntilClose && code != 101;
    Ok(Some((
        ResponseHead {
            code,
            framing,
            keep_alive,
            text,
        },
        n,
    )))
}

/// Where a chunked-body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// Reading the CRLF after a chunk's data.
    DataEnd,
    /// Reading trailer lines after the last chunk.
    Trailer,
    /// The body is complete.
    Done,
}

/// Decodes a chunked body (RFC 9112 §7.1) from bytes in any split.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            line: Vec::new(),
        }
    }
}

impl ChunkedDecoder {
    /// The last chunk and the trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Collects a line into `self.line`; returns the bytes consumed and whether a line ended.
    fn take_line(&mut self, input: &[u8]) -> Result<(usize, bool), HttpError> {
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.line.extend_from_slice(&input[..i]);
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                Ok((i + 1, true))
            }
            None => {
                self.line.extend_from_slice(input);
                Ok((input.len(), false))
            }
        }
        .and_then(|r| {
            if self.line.len() > MAX_CHUNK_LINE {
                Err(HttpError::BadChunk("line too long"))
            } else {
                Ok(r)
            }
        })
    }

    /// Feeds `input`; data bytes are appended to `out` while it is shorter than `max` (the
    /// rest is decoded and dropped). Returns how many bytes of `input` belong to the body:
    /// less than `input.len()` only once the body is done.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    let room = max.saturating_sub(out.len()).min(take);
                    out.extend_from_slice(&input[i..i + room]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let (used, ended) = self.take_line(&input[i..])?;
                    i += used;
                    if !ended {
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    self.state = match self.state {
                        ChunkState::Size => match chunk_size(&line)? {
                            0 => ChunkState::Trailer,
                            n => ChunkState::Data(n),
                        },
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => {
                            return Err(HttpError::BadChunk("no CRLF after chunk data"));
                        }
                        _ if line.is_empty() => ChunkState::Done,
                        s => s,
                    };
                }
            }
        }
        Ok(i)
    }
}

/// The size of a chunk-size line (`1a;ext=x`), hex, without overflow.
fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let hex = line.split(|&b| b == b';').next().unwrap_or(&[]);
    let hex = hex.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(HttpError::BadChunk("bad chunk size"));
    }
    let mut n = 0u64;
    for &b in hex {
        let d = (b as char)
            .to_digit(16)
            .ok_or(HttpError::BadChunk("bad chunk size"))?;
        n = n * 16 + u64::from(d);
    }
    Ok(n)
}

/// Where the body reader is.
#[derive(Debug, Clone)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// Reads one response from bytes fed in any split: skips interim 1xx heads, parses the final
/// head, then delimits (and, when asked, keeps up to [`MAX_BODY`] bytes of) the body.
#[derive(Debug)]
pub struct ResponseParser {
    method: HttpMethod,
    want_text: bool,
    keep_body: bool,
    buf: Vec<u8>,
    head: Option<ResponseHead>,
    body: Vec<u8>,
    state: BodyState,
    extra: bool,
    seen: bool,
}

impl ResponseParser {
    /// A parser for the response to `method`; `want_text`: keep the header text (HEAD
    /// `receive`); `keep_body`: keep the body (GET `receive`).
    pub fn new(method: HttpMethod, want_text: bool, keep_body: bool) -> ResponseParser {
        ResponseParser {
            method,
            want_text,
            keep_body,
            buf: Vec::new(),
            head: None,
            body: Vec::new(),
            state: BodyState::Done,
            extra: false,
            seen: false,
        }
    }

    /// Feeds bytes read from the connection.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), HttpError> {
        self.seen |= !data.is_empty();
        if self.head.is_some() {
            return self.feed_body(data);
        }
        if self.buf.is_empty() {
            // The usual case, a head that arrives whole in one read, is parsed where it lies:
            // no copy into the head buffer.
            let used = if data.contains(&b'\n') {
                self.heads(data)?
            } else {
                0
            };
            if self.head.is_some() {
                return self.feed_body(&data[used..]);
            }
            self.buf.extend_from_slice(&data[used..]);
            return self.head_fits();
        }
        self.buf.extend_from_slice(data);
        // A head can only end at a newline: a server dripping bytes does not cost a re-parse
        // of the whole buffer per byte.
        if !data.contains(&b'\n') {
            return self.head_fits();
        }
        let buf = std::mem::take(&mut self.buf);
        let used = self.heads(&buf)?;
        if self.head.is_some() {
            return self.feed_body(&buf[used..]);
        }
        self.buf = buf;
        self.buf.drain(..used);
        Ok(())
    }

    /// Parses the complete heads at the start of `input`, skipping interim 1xx ones; at the
    /// final head, keeps it and sets up the body. Returns how many bytes the heads took.
    fn heads(&mut self, input: &[u8]) -> Result<usize, HttpError> {
        let mut used = 0;
        while let Some((head, n)) = parse_head(&input[used..], self.method, self.want_text)? {
            used += n;
            if (100..200).contains(&head.code) && head.code != 101 {
                continue;
            }
            self.state = match head.framing {
                Framing::Empty | Framing::Length(0) => BodyState::Done,
                Framing::Length(l) => BodyState::Length(l),
                Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
                Framing::UntilClose => BodyState::UntilClose,
            };
            self.head = Some(head);
            break;
        }
        Ok(used)
    }

    /// An incomplete head kept so far is within [`MAX_HEAD`].
    fn head_fits(&self) -> Result<(), HttpError> {
        if self.buf.len() > MAX_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(())
        }
    }

    fn keep(&mut self, data: &[u8]) {
        if self.keep_body {
            let room = MAX_BODY.saturating_sub(self.body.len()).min(data.len());
            self.body.extend_from_slice(&data[..room]);
        }
    }

    fn feed_body(&mut self, data: &[u8]) -> Result<(), HttpError> {
        match &mut self.state {
            BodyState::Done => self.extra |= !data.is_empty(),
            BodyState::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= take as u64;
                if *left == 0 {
                    self.state = BodyState::Done;
                }
                self.extra |= take < data.len();
                self.keep(&data[..take]);
            }
            BodyState::Chunked(d) => {
                let mut out = std::mem::take(&mut self.body);
                let max = if self.keep_body { MAX_BODY } else { 0 };
                let used = d.feed(data, &mut out, max);
                self.body = out;
                let used = used?;
                if d.is_done() {
                    self.state = BodyState::Done;
                }
                self.extra |= used < data.len();
            }
            BodyState::UntilClose => self.keep(data),
        }
        Ok(())
    }

    /// The server closed the connection (read returned 0).
    pub fn closed(&mut self) -> Result<(), HttpError> {
        match (&self.head, &self.state) {
            (None, _) => Err(HttpError::ClosedBeforeResponse),
            (Some(_), BodyState::UntilClose | BodyState::Done) => {
                self.state = BodyState::Done;
                Ok(())
            }
            (Some(_), _) => Err(HttpError::ClosedInBody),
        }
    }

    /// The final head, once read.
    pub fn head(&self) -> Option<&ResponseHead> {
        self.head.as_ref()
    }

    /// Any byte of a response arrived.
    pub fn response_started(&self) -> bool {
        self.seen
    }

    /// The whole response was read.
    pub fn is_complete(&self) -> bool {
        self.head.is_some() && matches!(self.state, BodyState::Done)
    }

    /// The kept body bytes (at most [`MAX_BODY`]).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body kept is as long as it may get: stop reading.
    pub fn body_full(&self) -> bool {
        self.keep_body && self.body.len() >= MAX_BODY
    }

    /// The connection may carry the next request (module docs).
    pub fn reusable(&self) -> bool {
        self.is_complete() && !self.extra && self.head.as_ref().is_some_and(|h| h.keep_alive)
    }
}

/// Whether a status code passes the check's status rule.
pub fn status_ok(rule: HttpStatus, code: u16) -> bool {
    match rule {
        HttpStatus::Any2xx => (200..300).contains(&code),
        HttpStatus::Code(c) => code == c,
    }
}

/// The outcome of one request/response on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The check passed.
    pub ok: bool,
    /// Why ("HTTP 200, receive matched", "HTTP 503", "HTTP: connection reset", …).
    pub reason: String,
    /// The connection may carry the next check.
    pub reusable: bool,
    /// The server closed or reset the connection before any response byte: on a reused
    /// connection this is the server's idle close racing the request, worth one fresh retry.
    pub closed_before_response: bool,
}

impl Exchange {
    fn done(ok: bool, reason: String, reusable: bool) -> Exchange {
        Exchange {
            ok,
            reason,
            reusable,
            closed_before_response: false,
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::BrokenPipe => "connection closed (broken pipe)".into(),
        _ => e.to_string(),
    }
}

/// Bytes read at once (a health check's response usually fits).
const READ_CHUNK: usize = 4096;

thread_local! {
    /// The buffer every read of this thread goes into, fed to the parser before the read
    /// returns. A buffer in each exchange made every check's future 4 KiB larger, and that
    /// future is allocated per check; uninitialised, as tokio's `ReadBuf` allows (a zeroed
    /// one showed in profiles at 20,000 checks a second).
    static READ_SPACE: std::cell::RefCell<[std::mem::MaybeUninit<u8>; READ_CHUNK]> =
        const { std::cell::RefCell::new([std::mem::MaybeUninit::uninit(); READ_CHUNK]) };
}

/// What one read from the connection did to the parser.
struct Fed {
    /// The server closed (read returned 0).
    eof: bool,
    /// The parser's verdict on what was read, or on the close.
    step: Result<(), HttpError>,
}

/// One read from `io`, fed to `p` in the same poll: the read lands in this thread's
/// [`READ_SPACE`], which is never held across an await.
async fn read_and_feed<S>(io: &mut S, p: &mut ResponseParser) -> std::io::Result<Fed>
where
    S: AsyncRead + Unpin,
{
    std::future::poll_fn(|cx| {
        READ_SPACE.with_borrow_mut(|space| {
            let mut buf = tokio::io::ReadBuf::uninit(space);
            std::task::ready!(std::pin::Pin::new(&mut *io).poll_read(cx, &mut buf))?;
            let chunk = buf.filled();
            std::task::Poll::Ready(Ok(if chunk.is_empty() {
                Fed {
                    eof: true,
                    step: p.closed(),
                }
            } else {
                Fed {
                    eof: false,
                    step: p.feed(chunk),
                }
            }))
        })
    })
    .await
}

/// Sends `request` on `io` and reads the response, deciding the check by `h`'s rules. With
/// no `receive`, the outcome is known at the head; the rest of the body is then read only
/// until `drain_until` (to keep the connection), never failing the check. The caller's
/// deadline drops this future, which drops nothing it does not own: `io` is borrowed, and the
/// caller drops the connection unless `reusable`.
pub async fn exchange<S>(
    h: &HttpCheck,
    request: &[u8],
    io: &mut S,
    drain_until: Instant,
) -> Exchange
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let retryable = |reason: String| Exchange {
        ok: false,
        reason: format!("HTTP: {reason}"),
        reusable: false,
        closed_before_response: true,
    };
    if let Err(e) = io.write_all(request).await {
        return retryable(io_reason(&e));
    }
    let want_text = h.method == HttpMethod::Head && h.receive.is_some();
    let keep_body = h.method == HttpMethod::Get && h.receive.is_some();
    let mut p = ResponseParser::new(h.method, want_text, keep_body);
    let mut decided: Option<(bool, String)> = None;
    loop {
        let read = if decided.is_some() {
            match tokio::time::timeout_at(drain_until, read_and_feed(io, &mut p)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            read_and_feed(io, &mut p).await
        };
        let (eof, step) = match read {
            Ok(Fed { eof, step }) => (eof, step),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => (true, p.closed()),
            Err(e) if !p.response_started() => return retryable(io_reason(&e)),
            Err(e) => match (&decided, p.head()) {
                (Some(_), _) => break,
                (None, Some(head)) => {
                    return Exchange::done(
                        false,
                        format!("HTTP {}, body: {}", head.code, io_reason(&e)),
                        false,
                    );
                }
                (None, None) => {
                    return Exchange::done(false, format!("HTTP: {}", io_reason(&e)), false);
                }
            },
        };
        if let Err(e) = step {
            if decided.is_some() {
                break;
            }
            if e == HttpError::ClosedBeforeResponse && !p.response_started() {
                return retryable(e.to_string());
            }
            return match (p.head(), &e) {
                (Some(head), HttpError::ClosedInBody | HttpError::BadChunk(_)) => {
                    Exchange::done(false, format!("HTTP {}, body: {e}", head.code), false)
                }
                _ => Exchange::done(false, format!("HTTP: {e}"), false),
            };
        }
        if decided.is_none()
            && let Some(head) = p.head()
        {
            let code = head.code;
            if !status_ok(h.status, code) {
                return Exchange::done(false, format!("HTTP {code}"), false);
            }
            match (&h.receive, h.method) {
                (None, _) => decided = Some((true, format!("HTTP {code}"))),
                (Some(re), HttpMethod::Head) => {
                    let text = head.text.as_deref().unwrap_or("");
                    decided = Some(if re.is_match(text) {
                        (true, format!("HTTP {code}, receive matched"))
                    } else {
                        (false, format!("HTTP {code}, receive regex not matched"))
                    });
                }
                (Some(re), HttpMethod::Get) if p.is_complete() || p.body_full() => {
                    let text = String::from_utf8_lossy(p.body());
                    let ok = re.is_match(&text);
                    let reason = if ok {
                        format!("HTTP {code}, receive matched")
                    } else {
                        format!("HTTP {code}, receive regex not matched")
                    };
                    // A failed check, or a body cut at MAX_BODY: the connection is not kept.
                    return Exchange::done(ok, reason, ok && p.reusable());
                }
                (Some(_), HttpMethod::Get) => {}
            }
        }
        if p.is_complete() || eof {
            break;
        }
    }
    match decided {
        Some((ok, reason)) => {
            let reusable = ok && p.reusable();
            Exchange::done(ok, reason, reusable)
        }
        // Only reached when the loop ended without a head, which `closed()` reports above.
        None => Exchange::done(
            false,
            "HTTP: connection closed before the response".into(),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use tokio::io::AsyncReadExt;

    fn feed_split(p: &mut ResponseParser, data: &[u8], step: usize) -> Result<(), HttpError> {
        for c in data.chunks(step) {
            p.feed(c)?;
        }
        Ok(())
    }

    #[test]
    fn request_bytes_are_exact() {
        let r = request_bytes(HttpMethod::Get, "/ok?x=1", "192.0.2.21:80", false).unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            format!(
                "GET /ok?x=1 HTTP/1.1\r\nHost: 192.0.2.21:80\r\nUser-Agent: {USER_AGENT}\r\n\r\n"
            )
        );
        let r = request_bytes(HttpMethod::Head, "/", "www.example.org", true).unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            format!(
                "HEAD / HTTP/1.1\r\nHost: www.example.org\r\nUser-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n"
            )
        );
        assert!(matches!(
            request_bytes(HttpMethod::Get, "/a b", "h", false),
            Err(BadRequest::Path(_))
        ));
        assert!(matches!(
            request_bytes(HttpMethod::Get, "/\r\nX: y", "h", false),
            Err(BadRequest::Path(_))
        ));
        assert!(matches!(
            request_bytes(HttpMethod::Get, "", "h", false),
            Err(BadRequest::Path(_))
        ));
        assert!(matches!(
            request_bytes(HttpMethod::Get, "/", "h\r\nX: y", false),
            Err(BadRequest::Host(_))
        ));
        let e = request_bytes(HttpMethod::Get, "/a b", "h", false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad HTTP request: path"), "{e}");
    }

    #[test]
    fn heads_and_their_framing() {
        let p = |s: &str, m| parse_head(s.as_bytes(), m, false).unwrap().unwrap().0;
        let h = p(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            HttpMethod::Get,
        );
        assert_eq!(
            (h.code, h.framing, h.keep_alive),
            (200, Framing::Length(5), true)
        );
        let h = p(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            HttpMethod::Get,
        );
        assert!(!h.keep_alive);
        let h = p(
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\n\r\n",
            HttpMethod::Get,
        );
        assert!(!h.keep_alive, "close anywhere in the list");
        let h = p(
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            HttpMethod::Get,
        );
        assert!(!h.keep_alive, "HTTP/1.0 closes by default");
        let h = p(
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
            HttpMethod::Get,
        );
        assert!(h.keep_alive);
        let h = p("HTTP/1.1 200 OK\r\n\r\n", HttpMethod::Get);
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = p(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            HttpMethod::Get,
        );
        assert_eq!(
            h.framing,
            Framing::Chunked,
            "chunked wins over Content-Length"
        );
        let h = p(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            HttpMethod::Get,
        );
        assert_eq!(h.framing, Framing::UntilClose);
        let h = p(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            HttpMethod::Head,
        );
        assert_eq!(h.framing, Framing::Empty, "HEAD has no body");
        for code in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let h = p(
                &format!("HTTP/1.1 {code}\r\nContent-Length: 3\r\n\r\n"),
                HttpMethod::Get,
            );
            assert_eq!(h.framing, Framing::Empty, "{code}");
        }
        let h = p(
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n",
            HttpMethod::Get,
        );
        assert_eq!(h.framing, Framing::Length(4));
        let t = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: b\r\n\r\n",
            HttpMethod::Head,
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.0.text.as_deref(), Some("content-length: 11\nx-a: b\n"));
        assert_eq!(t.1, 47);
    }

    #[test]
    fn bad_heads_are_errors_not_panics() {
        let e = |s: &[u8]| parse_head(s, HttpMethod::Get, false).unwrap_err();
        assert!(matches!(e(b"garbage\r\n\r\n"), HttpError::BadHead(_)));
        assert!(matches!(e(b"\x00\x01\x02 nonsense"), HttpError::BadHead(_)));
        assert!(matches!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            HttpError::BadContentLength(_)
        ));
        assert!(matches!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            HttpError::BadContentLength(_)
        ));
        assert!(matches!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            HttpError::BadContentLength(_)
        ));
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(e(many.as_bytes()), HttpError::TooManyHeaders);
        let big = format!("HTTP/1.1 200 OK\r\nA: {}", "x".repeat(MAX_HEAD));
        assert_eq!(e(big.as_bytes()), HttpError::HeadTooLarge);
        assert_eq!(
            parse_head(b"HTTP/1.1 200 O", HttpMethod::Get, false),
            Ok(None)
        );
        assert_eq!(
            e(b"garbage\r\n\r\n").to_string(),
            "bad response head: invalid HTTP version"
        );
    }

    #[test]
    fn a_dripped_head_without_end_is_cut_at_max_head() {
        let mut p = ResponseParser::new(HttpMethod::Get, false, false);
        p.feed(b"HTTP/1.1 200 OK\r\nX: ").unwrap();
        let mut r = Ok(());
        for _ in 0..=MAX_HEAD / 1024 {
            r = p.feed(&[b'a'; 1024]);
            if r.is_err() {
                break;
            }
        }
        assert_eq!(r, Err(HttpError::HeadTooLarge));
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";

    #[test]
    fn chunked_bodies_in_every_split() {
        for step in 1..CHUNKED.len() {
            let mut p = ResponseParser::new(HttpMethod::Get, false, true);
            feed_split(&mut p, CHUNKED, step).unwrap();
            assert!(p.is_complete(), "step {step}");
            assert_eq!(p.body(), b"hello, world", "step {step}");
            assert!(p.reusable(), "step {step}");
        }
        // Bytes after the end: not reusable.
        let mut p = ResponseParser::new(HttpMethod::Get, false, true);
        p.feed(&[CHUNKED, b"HTTP/1.1"].concat()).unwrap();
        assert!(p.is_complete() && !p.reusable());
    }

    #[test]
    fn bad_chunks() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, why) in [
            ("zz\r\n", "bad chunk size"),
            ("\r\n", "bad chunk size"),
            ("fffffffffffffffff\r\n", "bad chunk size"),
            ("3\r\nabcX\r\n", "no CRLF after chunk data"),
        ] {
            let mut p = ResponseParser::new(HttpMethod::Get, false, true);
            assert_eq!(
                p.feed(format!("{head}{body}").as_bytes()),
                Err(HttpError::BadChunk(why)),
                "{body:?}"
            );
        }
        let mut p = ResponseParser::new(HttpMethod::Get, false, true);
        let long = format!("{head}1;{}", "e".repeat(MAX_CHUNK_LINE + 1));
        assert_eq!(
            p.feed(long.as_bytes()),
            Err(HttpError::BadChunk("line too long"))
        );
        let mut p = ResponseParser::new(HttpMethod::Get, false, true);
        p.feed(format!("{head}5\r\nhel").as_bytes()).unwrap();
        assert_eq!(p.closed(), Err(HttpError::ClosedInBody));
    }

    #[test]
    fn content_length_bodies_and_extra_bytes() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nservice OK\n";
        for step in 1..r.len() {
            let mut p = ResponseParser::new(HttpMethod::Get, false, true);
            feed_split(&mut p, r, step).unwrap();
            assert!(p.is_complete() && p.reusable(), "step {step}");
            assert_eq!(p.body(), b"service OK\n");
        }
        let mut p = ResponseParser::new(HttpMethod::Get, false, false);
        p.feed(&[&r[..], b"junk"].concat()).unwrap();
        assert!(p.is_complete() && !p.reusable(), "trailing bytes");
        assert!(p.body().is_empty(), "body not kept when not asked");
        let mut p = ResponseParser::new(HttpMethod::Get, false, true);
        p.feed(&r[..r.len() - 2]).unwrap();
        assert!(!p.is_complete());
        assert_eq!(p.closed(), Err(HttpError::ClosedInBody));
    }

    #[test]
    fn until_close_interim_and_empty_bodies() {
        let mut p = ResponseParser::new(HttpMethod::Get, false, true);
        p.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
            .unwrap();
        assert!(p.head().is_none(), "interim responses skipped");
        p.feed(b"HTTP/1.0 200 OK\r\n\r\nall of ").unwrap();
        p.feed(b"it").unwrap();
        assert_eq!(p.head().unwrap().code, 200);
        assert!(!p.is_complete());
        p.closed().unwrap();
        assert!(p.is_complete() && !p.reusable());
        assert_eq!(p.body(), b"all of it");
        let mut p = ResponseParser::new(HttpMethod::Get, false, true);
        p.feed(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert!(p.is_complete() && p.reusable());
        let mut p = ResponseParser::new(HttpMethod::Head, true, false);
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
            .unwrap();
        assert!(p.is_complete() && p.reusable());
        let mut p = ResponseParser::new(HttpMethod::Get, false, true);
        assert_eq!(p.closed(), Err(HttpError::ClosedBeforeResponse));
        assert!(!p.response_started());
    }

    #[test]
    fn bodies_are_kept_up_to_max_body() {
        let mut p = ResponseParser::new(HttpMethod::Get, false, true);
        let len = MAX_BODY + 10;
        p.feed(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())
            .unwrap();
        let block = vec![b'a'; 64 * 1024];
        while !p.body_full() {
            p.feed(&block).unwrap();
        }
        assert_eq!(p.body().len(), MAX_BODY);
        assert!(!p.is_complete() && !p.reusable());
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic byte soup through every split size.
        let mut x = 0x9e37_79b9_u32;
        let soup: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        for prefix in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            for step in [1, 3, 7, 64, 2000] {
                let mut p = ResponseParser::new(HttpMethod::Get, true, true);
                let _ = p.feed(prefix);
                let _ = feed_split(&mut p, &soup, step);
                let _ = p.closed();
            }
        }
    }

    #[test]
    fn status_rules() {
        assert!(status_ok(HttpStatus::Any2xx, 204));
        assert!(!status_ok(HttpStatus::Any2xx, 301));
        assert!(status_ok(HttpStatus::Code(503), 503));
        assert!(!status_ok(HttpStatus::Code(503), 200));
    }

    #[tokio::test]
    async fn exchange_over_an_in_memory_stream() {
        let h = HttpCheck {
            https: false,
            method: HttpMethod::Get,
            request: "/".into(),
            receive: Some(Receive::new("OK").unwrap()),
            virtual_host: None,
            status: HttpStatus::Any2xx,
        };
        let req = request_bytes(HttpMethod::Get, "/", "h", false).unwrap();
        let far = clock::now() + std::time::Duration::from_secs(5);
        let (mut client, mut server) = tokio::io::duplex(1024);
        let srv = tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            let n = server.read(&mut buf).await.unwrap();
            server
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nOK\n")
                .await
                .unwrap();
            (buf[..n].to_vec(), server)
        });
        let ex = exchange(&h, &req, &mut client, far).await;
        assert_eq!(
            ex,
            Exchange::done(true, "HTTP 200, receive matched".into(), true)
        );
        let (got, server) = srv.await.unwrap();
        assert_eq!(got, req);
        drop(server);
        // The server is gone: nothing arrives, a retry is worth it on a reused connection.
        let ex = exchange(&h, &req, &mut client, far).await;
        assert!(ex.closed_before_response && !ex.ok, "{ex:?}");
    }
}
