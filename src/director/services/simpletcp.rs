//! simpletcp as ldirectord's `check_simpletcp` runs it: `request` sent (`\n` written as a
//! newline), the sending side shut down, then the answer read line by line until one
//! matches `receive`.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::check::{Failed, Outcome, Passed, ServiceCheck, cut};
use super::text::Lines;

/// ldirectord's request text: the two characters `\n` become a newline.
pub fn request_text(request: &str) -> String {
    request.replace("\\n", "\n")
}

/// Runs the simpletcp check over `stream`.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(c: &ServiceCheck, mut stream: S) -> Outcome {
    let request = request_text(c.request.as_deref().unwrap_or(""));
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(Failed::io("request"))?;
    stream.shutdown().await.map_err(Failed::io("request"))?;
    let mut l = Lines::new(stream);
    let mut first = None;
    for _ in 0..10_000 {
        let Some(line) = l.next("answer").await? else {
            break;
        };
        match &c.receive {
            Some(r) if r.is_match(&line) => {
                return Ok(Passed(format!("answer {:?}", cut(&line, 80))));
            }
            None => return Ok(Passed(format!("answer {:?}", cut(&line, 80)))),
            Some(_) => {
                first.get_or_insert(line);
            }
        }
    }
    match (first, &c.receive) {
        (Some(line), Some(r)) => Err(Failed::Mismatch {
            what: "answer",
            got: cut(&line, 200),
            pattern: r.as_str().to_string(),
        }),
        _ => Err(Failed::Closed { step: "answer" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::{NegotiatedService, Receive};
    use crate::director::services::testing::*;

    fn check_of(receive: &str) -> ServiceCheck {
        let mut c = sample(NegotiatedService::Simpletcp);
        c.request = Some("PING\\n".into());
        c.receive = Some(Receive::new(receive).unwrap());
        c
    }

    #[tokio::test]
    async fn sends_the_request_then_matches_a_line() {
        let (s, srv) = scripted(vec![expect("PING\n"), send("hello\nPONG\n")]);
        let r = super::check(&check_of("^PONG$"), s).await.unwrap();
        assert_eq!(r.0, "answer \"PONG\"");
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn no_matching_line_is_a_mismatch() {
        let (s, _srv) = scripted(vec![expect("PING\n"), send("ERR\n")]);
        let e = super::check(&check_of("^PONG$"), s).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "answer \"ERR\" does not match receive \"^PONG$\""
        );
        // The server reads the request and closes without a word.
        let (s, _srv) = scripted(vec![expect("PING\n")]);
        let e = super::check(&check_of("^PONG$"), s).await.unwrap_err();
        assert_eq!(e.to_string(), "answer: connection closed by the server");
    }
}
