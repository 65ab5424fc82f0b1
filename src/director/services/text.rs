//! Line I/O for the text protocols (SMTP, FTP, POP3, IMAP, SIP over TCP, simpletcp), and
//! the numbered multi-line replies of SMTP and FTP (RFC 5321 §4.2.1, RFC 959 §4.2).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::check::{Failed, MAX_LINE, cut};

/// A stream read line by line (any of CRLF or LF ends a line), written whole lines at a time.
#[derive(Debug)]
pub struct Lines<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lines<S> {
    /// Lines over `stream`.
    pub fn new(stream: S) -> Lines<S> {
        Lines {
            stream,
            buf: Vec::with_capacity(512),
            start: 0,
        }
    }

    /// The next line without its line end. `Ok(None)` at end of stream with nothing pending.
    pub async fn next(&mut self, step: &'static str) -> Result<Option<String>, Failed> {
        loop {
            if let Some(i) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
                let end = self.start + i;
                let mut line = &self.buf[self.start..end];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                let text = String::from_utf8_lossy(line).into_owned();
                self.start = end + 1;
                return Ok(Some(text));
            }
            if self.buf.len() - self.start > MAX_LINE {
                return Err(Failed::Malformed {
                    step,
                    why: format!("line longer than {MAX_LINE} bytes"),
                });
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 2048];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(Failed::io(step))?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let text = String::from_utf8_lossy(&self.buf).into_owned();
                self.buf.clear();
                return Ok(Some(text));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next line; end of stream is [`Failed::Closed`].
    pub async fn line(&mut self, step: &'static str) -> Result<String, Failed> {
        self.next(step).await?.ok_or(Failed::Closed { step })
    }

    /// Writes `text` followed by CRLF.
    pub async fn send(&mut self, step: &'static str, text: &str) -> Result<(), Failed> {
        let mut b = Vec::with_capacity(text.len() + 2);
        b.extend_from_slice(text.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.stream.write_all(&b).await.map_err(Failed::io(step))
    }

    /// One SMTP/FTP reply: its code and its last line.
    pub async fn reply(&mut self, step: &'static str) -> Result<(u16, String), Failed> {
        let first = self.line(step).await?;
        let Some((code, mut last)) = reply_line(&first) else {
            return Err(Failed::Malformed {
                step,
                why: format!("not a numbered reply: {:?}", cut(&first, 80)),
            });
        };
        let mut line = first;
        for _ in 0..1000 {
            if last {
                return Ok((code, line));
            }
            line = self.line(step).await?;
            // RFC 959 §4.2: inner lines of a multi-line reply need not start with the code.
            last = matches!(reply_line(&line), Some((c, true)) if c == code);
        }
        Err(Failed::Malformed {
            step,
            why: "reply of more than 1000 lines".into(),
        })
    }

    /// One reply whose code must be in `ok`'s hundreds (2 = 2xx); else [`Failed::Answer`].
    pub async fn expect(&mut self, step: &'static str, class: u16) -> Result<u16, Failed> {
        let (code, line) = self.reply(step).await?;
        if code / 100 == class {
            Ok(code)
        } else {
            Err(Failed::Answer {
                step,
                answer: cut(&line, 200),
            })
        }
    }

    /// The stream, for what is left to do with it (half-close).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

/// A line of a numbered reply: `(code, is_last)`: `250-more` continues, `250 text` or `250`
/// ends (RFC 5321 §4.2.1). `None`: the line does not start with a code.
pub fn reply_line(line: &str) -> Option<(u16, bool)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..3].parse().ok()?;
    match b.get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::services::testing::*;

    #[test]
    fn reply_lines() {
        assert_eq!(reply_line("220 mail ESMTP"), Some((220, true)));
        assert_eq!(reply_line("250-PIPELINING"), Some((250, false)));
        assert_eq!(reply_line("250"), Some((250, true)));
        assert_eq!(reply_line("   free text"), None);
        assert_eq!(reply_line("25x oops"), None);
        assert_eq!(reply_line("250+x"), None);
    }

    #[tokio::test]
    async fn lines_in_any_split_and_multiline_replies() {
        let (c, srv) = scripted(vec![
            send("250-first\r"),
            send("\n  inner line\n250-sec"),
            send("ond\n250 last\r\nbare"),
        ]);
        let mut l = Lines::new(c);
        assert_eq!(
            l.reply("EHLO").await.unwrap(),
            (250, "250 last".to_string())
        );
        assert_eq!(l.line("x").await.unwrap(), "bare");
        drop(l);
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn a_line_without_end_is_cut() {
        let long = "x".repeat(MAX_LINE + 10);
        let (c, _srv) = scripted(vec![Step::Send(long.into_bytes())]);
        let mut l = Lines::new(c);
        let e = l.line("greeting").await.unwrap_err();
        assert!(e.to_string().contains("line longer than"), "{e}");
    }
}
