//! A minimal HTTP/1.1 server for loopback benchmarks: keep-alive, bodies by
//! `Content-Length` or chunked, `TCP_NODELAY` on every connection and each
//! response (headers and body) written in one write, so that delayed ACKs
//! never add their ~40 ms to a call and the figures measure the code, not the
//! kernel.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Most header bytes accepted before a request is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;

/// One request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target, e.g. `/2018-06-01/runtime/invocation/next`.
    pub path: String,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers other than `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status` and `body` and no other header.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The whole response as bytes, ready for one write.
    pub fn to_bytes(&self, close: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = Vec::with_capacity(head.len() + self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A boxed future answering one request.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What answers requests. It may wait as long as it likes (a long poll).
pub type Handler = Arc<dyn Fn(Request) -> ResponseFuture + Send + Sync>;

/// A running server; it stops accepting when dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Server {
    /// Serves `handler` on an ephemeral port of 127.0.0.1.
    pub async fn start(handler: Handler) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), handler).await
    }

    /// Serves `handler` on `addr`.
    pub async fn start_on(addr: SocketAddr, handler: Handler) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    // A connection error ends that connection only.
                    let _ = serve_connection(stream, handler).await;
                });
            }
        });
        Ok(Self { addr, accept })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve_connection(mut stream: TcpStream, handler: Handler) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(16 * 1024);
    while let Some(request) = read_request(&mut stream, &mut buf).await? {
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let response = handler(request).await;
        stream.write_all(&response.to_bytes(close)).await?;
        if close {
            break;
        }
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads more bytes into `buf`; `false` at end of stream.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Reads one request from `stream`; `None` when the peer closed the
/// connection between requests. Bytes after the request stay in `buf`.
pub async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let head_len = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(invalid("request head too large"));
        }
        if !fill(stream, buf).await? {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    };
    let (method, path, headers) = parse_head(&buf[..head_len])?;
    buf.drain(..head_len);
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(stream, buf).await?
    } else {
        let length = match headers.iter().find(|(k, _)| k == "content-length") {
            Some((_, v)) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| invalid("bad content-length"))?,
            None => 0,
        };
        while buf.len() < length {
            if !fill(stream, buf).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        buf.drain(..length).collect()
    };
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

type Head = (String, String, Vec<(String, String)>);

fn parse_head(head: &[u8]) -> io::Result<Head> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(invalid("partial request head")),
        Err(e) => return Err(invalid(format!("bad request head: {e}"))),
    }
    let headers = request
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok((
        request.method.unwrap_or_default().to_owned(),
        request.path.unwrap_or_default().to_owned(),
        headers,
    ))
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(buf, b"\r\n") {
                break end;
            }
            if !fill(stream, buf).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                if let Some(end) = find(buf, b"\r\n") {
                    let empty = end == 0;
                    buf.drain(..end + 2);
                    if empty {
                        return Ok(body);
                    }
                } else if !fill(stream, buf).await? {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> Server {
        let handler: Handler = Arc::new(|request: Request| {
            Box::pin(async move {
                let mut body = format!("{} {} ", request.method, request.path).into_bytes();
                body.extend_from_slice(&request.body);
                Response::new(200, body).with_header("X-Test", "yes")
            })
        });
        Server::start(handler).await.unwrap()
    }

    async fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
        stream.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if buf.len() >= end + 4 + length {
                    return String::from_utf8_lossy(&buf[..end + 4 + length]).to_string();
                }
            }
            assert!(fill(stream, &mut buf).await.unwrap(), "server closed early");
        }
    }

    #[tokio::test]
    async fn keep_alive_with_content_length_and_chunked_bodies() {
        let server = echo_server().await;
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        let first = exchange(
            &mut stream,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        assert!(first.contains("X-Test: yes\r\n"));
        assert!(first.ends_with("POST /a hello"), "{first}");
        let second = exchange(
            &mut stream,
            b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .await;
        assert!(second.ends_with("POST /b abcde"), "{second}");
        let third = exchange(&mut stream, b"GET /c HTTP/1.1\r\n\r\n").await;
        assert!(third.ends_with("GET /c "), "{third}");
    }

    #[tokio::test]
    async fn connection_close_is_honoured_and_garbage_is_refused() {
        let server = echo_server().await;
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        let reply = exchange(&mut stream, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(reply.contains("Connection: close\r\n"));
        let mut rest = Vec::new();
        assert!(
            !fill(&mut stream, &mut rest).await.unwrap(),
            "closed after the response"
        );

        let mut bad = TcpStream::connect(server.addr()).await.unwrap();
        bad.write_all(b"\x00\x01 nonsense\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        assert!(
            !fill(&mut bad, &mut rest).await.unwrap_or(false),
            "a bad head closes the connection"
        );
    }
}
