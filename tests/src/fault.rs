//! A fault-injecting HTTP proxy in front of any of the test servers (the S3 server,
//! Azurite, the GCS emulator, the token and metadata stand-ins), on 127.0.0.1.
//!
//! Every request is read whole, then either answered by the proxy with a fault or
//! forwarded to the upstream server and its answer passed back, perhaps damaged. Each
//! connection carries one request and is closed after its answer (the proxy asks both
//! sides for `Connection: close`), so a fault never leaks into the next request and the
//! counts per request are exact.
//!
//! The faults are [`Rule`]s the test sets and clears while the proxy runs
//! ([`FaultProxy::set`], [`FaultProxy::clear`]), so a fault schedule starts and stops
//! at known moments and recovery can be timed. A rule applies to every `every`-th
//! request it matches, counted per rule (the first rule whose turn it is decides):
//! deterministic, so a failing run repeats.
//!
//! The proxy counts every request by method and path ([`FaultProxy::requests_for`]),
//! so a test can bound how many requests one object took, and every fault it injected
//! by kind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

/// What the proxy does to a request a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answered by the proxy with this status, the upstream never sees the request;
    /// with `retry_after`, a `Retry-After` header of that many seconds.
    Status { code: u16, retry_after: Option<u32> },
    /// The connection reset once the request's head is read, before its body.
    ResetBeforeBody,
    /// The connection reset halfway through the request's body.
    ResetDuringBody,
    /// The request is forwarded (the upstream carries it out) and the connection reset
    /// instead of the answer: the client cannot know whether it happened.
    ResetAfterRequest,
    /// The request held this long before it is forwarded (past a client's deadline); a
    /// client that gives up first ends it ([`FaultProxy::stalls_held`] counts those
    /// still held, [`FaultProxy::stalls_abandoned`] those the client gave up).
    Stall(Duration),
    /// The answer cut off halfway through its body.
    TruncateResponse,
    /// One byte of the answer's body flipped (corruption on the wire).
    CorruptResponse,
    /// The answer's `Content-Length` says half its body, and only that half is sent: a
    /// short answer that HTTP itself cannot tell from a whole one.
    ShortContentLength,
    /// The answer sent at this many bytes per second (a slow link).
    Slow { bytes_per_second: u64 },
    /// Answered by the proxy with this status and an S3 error document carrying this
    /// `<Code>` (`RequestTimeTooSkewed`, `AccessDenied`, …).
    ErrorCode { status: u16, code: String },
    /// Answered by the proxy with this status and error code, from a server whose clock
    /// is `server_clock` seconds ahead of this machine's (behind when negative): its
    /// `Date` header says so. `oauth` answers as an OAuth token endpoint does (JSON,
    /// `{"error": code}`); otherwise as S3 and Azure do (an XML error document, and
    /// Azure's `x-ms-error-code`).
    Refused {
        status: u16,
        code: String,
        server_clock: i64,
        oauth: bool,
    },
    /// Answered `200 OK` with this body by the proxy, the upstream never sees the
    /// request: an answer that is well-formed and wrong, as a listing that lags behind
    /// the writes.
    Stale(String),
}

/// An answer the proxy gives itself instead of the upstream's.
struct ErrorAnswer<'a> {
    status: u16,
    retry_after: Option<u32>,
    code: &'a str,
    server_clock: i64,
    oauth: bool,
}

impl Fault {
    /// The answer the proxy gives itself, for the faults that are such an answer.
    fn error_answer(&self) -> Option<ErrorAnswer<'_>> {
        let plain = |status: u16, retry_after, code| ErrorAnswer {
            status,
            retry_after,
            code,
            server_clock: 0,
            oauth: false,
        };
        match self {
            Fault::Status { code, retry_after } => Some(plain(
                *code,
                *retry_after,
                match code {
                    429 => "SlowDown",
                    503 => "ServiceUnavailable",
                    _ => "InternalError",
                },
            )),
            Fault::ErrorCode { status, code } => Some(plain(*status, None, code)),
            Fault::Refused {
                status,
                code,
                server_clock,
                oauth,
            } => Some(ErrorAnswer {
                status: *status,
                retry_after: None,
                code,
                server_clock: *server_clock,
                oauth: *oauth,
            }),
            _ => None,
        }
    }

    /// A short, stable name for counting.
    pub fn kind(&self) -> String {
        match self {
            Fault::Status {
                code,
                retry_after: Some(_),
            } => format!("{code}+retry-after"),
            Fault::Status { code, .. } => code.to_string(),
            Fault::ResetBeforeBody => "reset-before-body".into(),
            Fault::ResetDuringBody => "reset-during-body".into(),
            Fault::ResetAfterRequest => "reset-after-request".into(),
            Fault::Stall(_) => "stall".into(),
            Fault::TruncateResponse => "truncated-response".into(),
            Fault::CorruptResponse => "corrupt-response".into(),
            Fault::ShortContentLength => "short-content-length".into(),
            Fault::Slow { .. } => "slow".into(),
            Fault::Stale(_) => "stale".into(),
            Fault::ErrorCode { status, code } => format!("{status} {code}"),
            Fault::Refused {
                status,
                code,
                server_clock,
                ..
            } => format!("{status} {code} at {server_clock:+} s"),
        }
    }
}

/// A fault for the requests it matches.
#[derive(Clone, Debug)]
pub struct Rule {
    pub fault: Fault,
    /// Only requests of this method (`PUT`, `GET`, …); any when `None`.
    pub method: Option<String>,
    /// Only requests whose target (path and query, percent-decoded: GCS names the
    /// object of an upload in its query) contains this.
    pub path_contains: Option<String>,
    /// Every n-th matching request (1: all of them).
    pub every: u32,
    /// At most this many faults from this rule; unbounded when `None`.
    pub at_most: Option<u64>,
}

impl Rule {
    /// `fault` on every `every`-th request.
    pub fn every(every: u32, fault: Fault) -> Rule {
        Rule {
            fault,
            method: None,
            path_contains: None,
            every: every.max(1),
            at_most: None,
        }
    }

    /// No more than `n` faults from this rule.
    pub fn at_most(mut self, n: u64) -> Rule {
        self.at_most = Some(n);
        self
    }

    /// Only requests of `method`.
    pub fn on(mut self, method: &str) -> Rule {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests whose target (path and query, percent-decoded) contains `part`.
    pub fn path(mut self, part: &str) -> Rule {
        self.path_contains = Some(part.to_owned());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When its head had been read.
    pub at: Instant,
    pub method: String,
    /// The target: path and query, percent-decoded; for a GCS multipart upload,
    /// followed by `#name=<object>` from the body's JSON part.
    pub path: String,
    /// The kind ([`Fault::kind`]) of the fault it got, if any.
    pub fault: Option<String>,
}

#[derive(Default)]
struct State {
    /// Each rule with the requests it matched and the faults it injected.
    rules: Vec<(Rule, u64, u64)>,
    requests: BTreeMap<(String, String), u64>,
    faults: BTreeMap<String, u64>,
    log: Vec<Seen>,
    stalls_held: u64,
    stalls_abandoned: u64,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 forwarding to 127.0.0.1:`upstream`, with no faults yet.
    pub fn start(upstream: u16) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let thread = std::thread::spawn({
            let (stop, state) = (stop.clone(), state.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (stop, state) = (stop.clone(), state.clone());
                            std::thread::spawn(move || {
                                let _ = serve(client, upstream, &state, &stop);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        Ok(FaultProxy {
            port,
            stop,
            state,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Applies `rules` from now on. Each rule counts the requests it matches; when it is
    /// the turn of several, the first in `rules` decides.
    pub fn set(&self, rules: Vec<Rule>) {
        self.lock().rules = rules.into_iter().map(|r| (r, 0, 0)).collect();
    }

    /// No faults from now on.
    pub fn clear(&self) {
        self.set(Vec::new());
    }

    /// Requests seen for `method` on targets (path and query, percent-decoded)
    /// containing `path_part`.
    pub fn requests_for(&self, method: &str, path_part: &str) -> u64 {
        self.lock()
            .requests
            .iter()
            .filter(|((m, p), _)| m == method && p.contains(path_part))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request seen, by method and target (path and query, percent-decoded).
    pub fn requests(&self) -> BTreeMap<(String, String), u64> {
        self.lock().requests.clone()
    }

    /// Faults injected, by [`Fault::kind`].
    pub fn faults(&self) -> BTreeMap<String, u64> {
        self.lock().faults.clone()
    }

    /// Every request so far, in the order their heads were read.
    pub fn log(&self) -> Vec<Seen> {
        self.lock().log.clone()
    }

    /// Stalled requests held now, their client still waiting.
    pub fn stalls_held(&self) -> u64 {
        self.lock().stalls_held
    }

    /// Stalled requests whose client gave up (closed the connection) while held.
    pub fn stalls_abandoned(&self) -> u64 {
        self.lock().stalls_abandoned
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A request's head as read: the request line and the header lines.
struct Head {
    method: String,
    path: String,
    lines: Vec<String>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The head for the upstream: `Connection: close`, and no `Expect` (the proxy has
    /// answered `100 Continue` itself and holds the whole body).
    fn forwarded(&self, request_line: &str) -> Vec<u8> {
        let mut out = format!("{request_line}\r\n");
        for line in &self.lines {
            let name = line.split(':').next().unwrap_or_default().trim();
            if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("expect") {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// `%XX` escapes decoded, so that a rule matches an object name however it is written
/// (S3 and Azure put it in the path, GCS in the query, escaped).
fn percent_decoded(target: &str) -> String {
    let bytes = target.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `"name"` of the JSON object in `peeked`, if it is there whole.
fn named_in(peeked: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(peeked);
    let start = text.find("\"name\":\"")? + "\"name\":\"".len();
    let len = text[start..].find('"')?;
    Some(text[start..start + len].to_owned())
}

fn reset(stream: &TcpStream) {
    // SO_LINGER 0: close sends RST rather than FIN, as a dropped connection does.
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(Shutdown::Both);
}

/// Reads a body of `Content-Length` bytes, or a chunked one raw; `limit` stops early
/// (for a reset halfway through).
fn read_body(
    reader: &mut impl BufRead,
    head: &Head,
    limit: Option<usize>,
) -> std::io::Result<Vec<u8>> {
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            body.extend_from_slice(size_line.as_bytes());
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if limit.is_some_and(|l| body.len() >= l) {
                return Ok(body);
            }
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                return Ok(body);
            }
        }
    }
    let length: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    body.resize(limit.map_or(length, |l| l.min(length)), 0);
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn reason(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Injected",
    }
}

/// Holds a stalled request for `duration`, or until its client gives up (false) or the
/// proxy stops.
fn hold(
    client: &TcpStream,
    duration: Duration,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> std::io::Result<bool> {
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    lock().stalls_held += 1;
    client.set_nonblocking(true)?;
    let until = Instant::now() + duration;
    let mut waiting = true;
    while waiting && Instant::now() < until && !stop.load(Ordering::Relaxed) {
        // The whole request has been read: a readable end now means the client closed
        // it (or reset it).
        waiting = match client.peek(&mut [0u8; 1]) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        };
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut state = lock();
    state.stalls_held -= 1;
    if !waiting {
        state.stalls_abandoned += 1;
    }
    drop(state);
    client.set_nonblocking(false)?;
    Ok(waiting)
}

fn serve(
    client: TcpStream,
    upstream: u16,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let request_line = request_line.trim_end().to_owned();
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        lines.push(line.trim_end().to_owned());
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = percent_decoded(parts.next().unwrap_or_default());
    let mut head = Head {
        method,
        path,
        lines,
    };
    // A GCS multipart upload names its object in the JSON part that opens its body, not
    // in its target: peeked at (not consumed, so a reset still comes before the body is
    // read) and added as `#name=<object>`, so that rules and counts see the object.
    if head
        .header("content-type")
        .is_some_and(|v| v.starts_with("multipart/related"))
        && let Some(name) = named_in(reader.fill_buf()?)
    {
        head.path = format!("{}#name={name}", head.path);
    }

    let fault = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        *state
            .requests
            .entry((head.method.clone(), head.path.clone()))
            .or_default() += 1;
        // Every rule counts the requests it matches; the first whose turn it is decides.
        let mut fault = None;
        for (rule, seen, injected) in &mut state.rules {
            if rule.matches(&head.method, &head.path) {
                *seen += 1;
                if fault.is_none()
                    && *seen % u64::from(rule.every) == 0
                    && rule.at_most.is_none_or(|n| *injected < n)
                {
                    *injected += 1;
                    fault = Some(rule.fault.clone());
                }
            }
        }
        if let Some(fault) = &fault {
            *state.faults.entry(fault.kind()).or_default() += 1;
        }
        state.log.push(Seen {
            at: Instant::now(),
            method: head.method.clone(),
            path: head.path.clone(),
            fault: fault.as_ref().map(Fault::kind),
        });
        fault
    };
    let mut client_w = client.try_clone()?;
    if fault == Some(Fault::ResetBeforeBody) {
        reset(&client);
        return Ok(());
    }
    if head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        client_w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if fault == Some(Fault::ResetDuringBody) {
        let length: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let _ = read_body(&mut reader, &head, Some(length / 2));
        reset(&client);
        return Ok(());
    }
    let body = read_body(&mut reader, &head, None)?;
    if let Some(error) = fault.as_ref().and_then(Fault::error_answer) {
        let (kind, message) = match error.oauth {
            true => (
                "application/json",
                format!(
                    "{{\"error\":\"{}\",\"error_description\":\"injected by the test's \
                     fault proxy\"}}",
                    error.code
                ),
            ),
            false => (
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code>\
                     <Message>injected by the test's fault proxy</Message></Error>",
                    error.code
                ),
            ),
        };
        let date = chrono::Utc::now() + chrono::Duration::seconds(error.server_clock);
        let mut answer = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
             x-ms-error-code: {}\r\nx-ms-request-id: 00000000-0000-0000-0000-000000000000\r\n\
             Date: {}\r\n",
            error.status,
            reason(error.status),
            message.len(),
            error.code,
            date.format("%a, %d %b %Y %H:%M:%S GMT"),
        );
        if let Some(seconds) = error.retry_after {
            answer.push_str(&format!("Retry-After: {seconds}\r\n"));
        }
        answer.push_str("Connection: close\r\n\r\n");
        // A HEAD's answer has the length of a body but no body.
        if head.method != "HEAD" {
            answer.push_str(&message);
        }
        client_w.write_all(answer.as_bytes())?;
        return Ok(());
    }
    match &fault {
        Some(Fault::Stale(text)) => {
            // The headers each cloud's client requires of an answer (Azure's SDK refuses
            // one without a request id), and the body's type.
            let kind = match text.starts_with('{') {
                true => "application/json",
                false => "application/xml",
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                 x-ms-request-id: 00000000-0000-0000-0000-000000000000\r\n\
                 x-ms-version: 2021-08-06\r\nDate: {}\r\nConnection: close\r\n\r\n{text}",
                text.len(),
                chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")
            );
            client_w.write_all(answer.as_bytes())?;
            return Ok(());
        }
        // Held; a client that gave up meanwhile gets nothing.
        Some(Fault::Stall(duration)) if !hold(&client, *duration, state, stop)? => {
            return Ok(());
        }
        _ => {}
    }

    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&head.forwarded(&request_line))?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    if fault == Some(Fault::ResetAfterRequest) {
        reset(&client);
        return Ok(());
    }
    // The upstream was asked to close; the client is told so too.
    let head_text = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut body = answer[split..].to_vec();
    let mut out = String::new();
    for line in head_text.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("content-length") && fault == Some(Fault::ShortContentLength) {
            body.truncate(body.len() / 2);
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        } else if !name.eq_ignore_ascii_case("connection") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    match fault {
        Some(Fault::TruncateResponse) => body.truncate(body.len() / 2),
        Some(Fault::CorruptResponse) if !body.is_empty() => {
            let at = body.len() / 2;
            body[at] ^= 0x01;
        }
        _ => {}
    }
    client_w.write_all(out.as_bytes())?;
    match fault {
        Some(Fault::Slow { bytes_per_second }) => {
            // Tenths of a second's worth at a time.
            let step = usize::try_from((bytes_per_second / 10).max(1)).unwrap_or(usize::MAX);
            for chunk in body.chunks(step) {
                client_w.write_all(chunk)?;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        _ => client_w.write_all(&body)?,
    }
    client_w.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::stub::{LoopbackServer, read_request};

    /// An upstream that answers every request with `body:<method> <path>` and counts
    /// what reached it.
    fn upstream() -> (LoopbackServer, Arc<AtomicU64>) {
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let server = LoopbackServer::start(move |mut stream| {
            let Ok(request) = read_request(&stream) else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let body = format!("body:{} {}", request.method(), request.path());
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                body.len()
            );
        })
        .unwrap();
        (server, seen)
    }

    /// Sends one request with a body; the raw answer, or the error that ended it.
    fn send(proxy: &FaultProxy, method: &str, path: &str) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = vec![b'x'; 100_000];
        write!(
            stream,
            "{method} {path}?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        // A reset before the body is read makes this write fail; that is the fault.
        let _ = stream.write_all(&body);
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    }

    fn text(answer: &[u8]) -> String {
        String::from_utf8_lossy(answer).into_owned()
    }

    #[test]
    fn without_rules_every_request_is_forwarded_and_counted_by_method_and_path() {
        let (up, seen) = upstream();
        let proxy = FaultProxy::start(up.port()).unwrap();
        for _ in 0..3 {
            let answer = text(&send(&proxy, "PUT", "/bucket/a").unwrap());
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
            assert!(answer.ends_with("body:PUT /bucket/a?q=1"), "{answer}");
            assert!(answer.contains("Connection: close"), "{answer}");
        }
        send(&proxy, "GET", "/bucket/b").unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 4);
        assert_eq!(proxy.requests_for("PUT", "/bucket/a"), 3);
        assert_eq!(proxy.requests_for("GET", "/bucket"), 1);
        assert!(proxy.faults().is_empty());
        // Object names in the query count too, escaped or not.
        send(&proxy, "POST", "/upload/b/o?name=pg%2Fwals%2F0001").unwrap();
        assert_eq!(proxy.requests_for("POST", "pg/wals/0001"), 1);
    }

    #[test]
    fn a_status_rule_answers_every_nth_matching_request_itself_with_retry_after() {
        let (up, seen) = upstream();
        let proxy = FaultProxy::start(up.port()).unwrap();
        proxy.set(vec![
            Rule::every(
                2,
                Fault::Status {
                    code: 503,
                    retry_after: Some(3),
                },
            )
            .on("PUT"),
        ]);
        let answers: Vec<String> = (0..4)
            .map(|_| text(&send(&proxy, "PUT", "/k").unwrap()))
            .collect();
        assert!(answers[0].starts_with("HTTP/1.1 200"), "{}", answers[0]);
        assert!(answers[1].starts_with("HTTP/1.1 503"), "{}", answers[1]);
        assert!(answers[1].contains("Retry-After: 3"), "{}", answers[1]);
        assert!(answers[2].starts_with("HTTP/1.1 200"));
        assert!(answers[3].starts_with("HTTP/1.1 503"));
        // A GET does not match the rule.
        assert!(text(&send(&proxy, "GET", "/k").unwrap()).starts_with("HTTP/1.1 200"));
        assert_eq!(
            seen.load(Ordering::SeqCst),
            3,
            "answered requests reach the upstream"
        );
        assert_eq!(proxy.faults().get("503+retry-after"), Some(&2));
        proxy.clear();
        assert!(text(&send(&proxy, "PUT", "/k").unwrap()).starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn resets_before_the_body_never_reach_the_upstream_and_after_the_request_they_do() {
        let (up, seen) = upstream();
        let proxy = FaultProxy::start(up.port()).unwrap();
        for (fault, reached) in [
            (Fault::ResetBeforeBody, 0),
            (Fault::ResetDuringBody, 0),
            (Fault::ResetAfterRequest, 1),
        ] {
            seen.store(0, Ordering::SeqCst);
            proxy.set(vec![Rule::every(1, fault.clone())]);
            let answer = send(&proxy, "PUT", "/k");
            assert!(
                answer.as_ref().map_or(true, |a| a.is_empty()),
                "{fault:?} answered {:?}",
                answer.map(|a| text(&a))
            );
            // The upstream's own thread may still be finishing the forwarded request.
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(seen.load(Ordering::SeqCst), reached, "{fault:?}");
        }
    }

    #[test]
    fn a_stall_delays_the_answer_and_damaged_answers_are_cut_or_flipped() {
        let (up, _seen) = upstream();
        let proxy = FaultProxy::start(up.port()).unwrap();
        let intact = send(&proxy, "GET", "/object").unwrap();

        proxy.set(vec![Rule::every(
            1,
            Fault::Stall(Duration::from_millis(600)),
        )]);
        let started = Instant::now();
        assert_eq!(send(&proxy, "GET", "/object").unwrap(), intact);
        assert!(started.elapsed() >= Duration::from_millis(600));

        // A client that gives up ends its stall.
        proxy.set(vec![Rule::every(1, Fault::Stall(Duration::from_secs(60)))]);
        let mut gave_up = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        write!(gave_up, "GET /object HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        crate::wait_until(Duration::from_secs(5), "a held stall", || {
            Ok(proxy.stalls_held() == 1)
        })
        .unwrap();
        drop(gave_up);
        crate::wait_until(Duration::from_secs(5), "the stall abandoned", || {
            Ok(proxy.stalls_held() == 0 && proxy.stalls_abandoned() == 1)
        })
        .unwrap();

        proxy.set(vec![Rule::every(1, Fault::ShortContentLength)]);
        let short = text(&send(&proxy, "GET", "/object").unwrap());
        let body = "body:GET /object?q=1";
        assert!(
            short.contains(&format!("Content-Length: {}\r\n", body.len() / 2)),
            "{short}"
        );
        assert!(
            short.ends_with(&format!("\r\n\r\n{}", &body[..body.len() / 2])),
            "{short}"
        );

        proxy.set(vec![Rule::every(
            1,
            Fault::Slow {
                bytes_per_second: 100,
            },
        )]);
        let started = Instant::now();
        assert_eq!(send(&proxy, "GET", "/object").unwrap(), intact);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "20 bytes at 100 B/s"
        );
        let log = proxy.log();
        assert_eq!(log.last().map(|s| s.fault.as_deref()), Some(Some("slow")));
        assert!(log.windows(2).all(|w| w[0].at <= w[1].at));

        proxy.set(vec![Rule::every(1, Fault::TruncateResponse)]);
        let cut = send(&proxy, "GET", "/object").unwrap();
        assert!(cut.len() < intact.len() && intact.starts_with(&cut));

        proxy.set(vec![Rule::every(1, Fault::CorruptResponse)]);
        let flipped = send(&proxy, "GET", "/object").unwrap();
        assert_eq!(flipped.len(), intact.len());
        let differing = flipped.iter().zip(&intact).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1);
        assert!(
            text(&flipped).starts_with("HTTP/1.1 200 OK"),
            "the head is intact"
        );
    }
}
