//! SMTP (and submission) as ldirectord's `check_smtp` runs it through Net::SMTP: a 2xx
//! greeting, `EHLO` (`HELO` when EHLO is refused) answered 2xx, then `QUIT`.

use tokio::io::{AsyncRead, AsyncWrite};

use super::check::{Failed, Outcome, Passed, ServiceCheck};
use super::text::Lines;

/// Runs the SMTP check over `stream`.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(c: &ServiceCheck, stream: S) -> Outcome {
    let mut l = Lines::new(stream);
    let greeting = l.expect("greeting", 2).await?;
    l.send("EHLO", &format!("EHLO {}", c.hostname)).await?;
    let hello = match l.expect("EHLO", 2).await {
        Ok(code) => format!("EHLO {code}"),
        // Net::SMTP falls back to HELO when EHLO is refused (RFC 5321 §4.1.1.1).
        Err(Failed::Answer { .. }) => {
            l.send("HELO", &format!("HELO {}", c.hostname)).await?;
            format!("HELO {}", l.expect("HELO", 2).await?)
        }
        Err(e) => return Err(e),
    };
    // The answer to QUIT does not change the outcome (Net::SMTP ignores it too).
    if l.send("QUIT", "QUIT").await.is_ok() {
        let _ = l.reply("QUIT").await;
    }
    Ok(Passed(format!("greeting {greeting}, {hello}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::NegotiatedService;
    use crate::director::services::testing::*;

    #[tokio::test]
    async fn greeting_ehlo_quit() {
        let (s, srv) = scripted(vec![
            send("220 mx.example ESMTP\r\n"),
            expect("EHLO director.example\r\n"),
            send("250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
            expect("QUIT\r\n"),
            send("221 bye\r\n"),
        ]);
        let r = check(&check_of(), s).await.unwrap();
        assert_eq!(r.0, "greeting 220, EHLO 250");
        srv.await.unwrap();
    }

    fn check_of() -> ServiceCheck {
        crate::director::services::testing::sample(NegotiatedService::Smtp)
    }

    #[tokio::test]
    async fn helo_when_ehlo_is_refused() {
        let (s, _srv) = scripted(vec![
            send("220 old\r\n"),
            expect("EHLO director.example\r\n"),
            send("502 no\r\n"),
            expect("HELO director.example\r\n"),
            send("250 ok\r\n"),
        ]);
        assert_eq!(
            check(&check_of(), s).await.unwrap().0,
            "greeting 220, HELO 250"
        );
    }

    #[tokio::test]
    async fn a_busy_greeting_fails() {
        let (s, _srv) = scripted(vec![send("421 too busy\r\n")]);
        let e = check(&check_of(), s).await.unwrap_err();
        assert_eq!(e.to_string(), "greeting: answer \"421 too busy\"");
    }
}
