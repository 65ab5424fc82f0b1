//! Test support: ask a lab web server (examples/labweb answers with its own name) who it is.

use std::time::Duration;

/// One `GET /` over a fresh connection to `addr`; the trimmed body (the server's name), or
/// `None` when it does not answer within `timeout`. Call it inside the client's namespace.
pub async fn who_answers(addr: (&str, u16), timeout: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        text.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}
