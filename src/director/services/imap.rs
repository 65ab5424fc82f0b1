//! IMAP as ldirectord's `check_imap` runs it through Net::IMAP::Simple: an untagged `OK`
//! (or `PREAUTH`) greeting and, when `login` is set, `LOGIN` answered with a tagged `OK`
//! (RFC 9051 §6.2.3); then `LOGOUT`.

use tokio::io::{AsyncRead, AsyncWrite};

use super::check::{Failed, Outcome, Passed, ServiceCheck, cut};
use super::text::Lines;

/// An IMAP quoted string (RFC 9051 §4.3): backslash and double quote escaped.
pub fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            q.push('\\');
        }
        q.push(ch);
    }
    q.push('"');
    q
}

/// Runs the IMAP check over `stream`.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(c: &ServiceCheck, stream: S) -> Outcome {
    let mut l = Lines::new(stream);
    let greeting = l.line("greeting").await?;
    if !(greeting.starts_with("* OK") || greeting.starts_with("* PREAUTH")) {
        return Err(Failed::Answer {
            step: "greeting",
            answer: cut(&greeting, 200),
        });
    }
    let mut what = "greeting OK".to_string();
    if let Some(login) = &c.credentials.login {
        let pass = c.credentials.passwd.as_deref().unwrap_or("");
        l.send(
            "LOGIN",
            &format!("a1 LOGIN {} {}", quoted(login), quoted(pass)),
        )
        .await?;
        // Untagged lines (capabilities) may come before the tagged answer.
        let mut answer = None;
        for _ in 0..100 {
            let line = l.line("LOGIN").await?;
            if line.starts_with("a1 ") {
                answer = Some(line);
                break;
            }
        }
        match answer {
            Some(a) if a.starts_with("a1 OK") => what.push_str(", LOGIN OK"),
            Some(a) => {
                return Err(Failed::Answer {
                    step: "LOGIN",
                    answer: cut(&a, 200),
                });
            }
            None => {
                return Err(Failed::Malformed {
                    step: "LOGIN",
                    why: "no tagged answer in 100 lines".into(),
                });
            }
        }
    }
    if l.send("LOGOUT", "a2 LOGOUT").await.is_ok() {
        let _ = l.next("LOGOUT").await;
    }
    Ok(Passed(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::NegotiatedService;
    use crate::director::services::testing::*;

    fn check_of(login: Option<&str>) -> ServiceCheck {
        let mut c = crate::director::services::testing::sample(NegotiatedService::Imap);
        c.credentials.login = login.map(str::to_string);
        c.credentials.passwd = Some("p\"w".into());
        c
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[tokio::test]
    async fn greeting_and_login() {
        let (s, _srv) = scripted(vec![
            send("* OK [CAPABILITY IMAP4rev1] ready\r\n"),
            expect("a1 LOGIN \"bob\" \"p\\\"w\"\r\n"),
            send("* CAPABILITY IMAP4rev1\r\na1 OK Logged in\r\n"),
            expect("a2 LOGOUT\r\n"),
        ]);
        assert_eq!(
            check(&check_of(Some("bob")), s).await.unwrap().0,
            "greeting OK, LOGIN OK"
        );
    }

    #[tokio::test]
    async fn refusals() {
        let (s, _srv) = scripted(vec![send("* BYE overloaded\r\n")]);
        let e = check(&check_of(None), s).await.unwrap_err();
        assert_eq!(e.to_string(), "greeting: answer \"* BYE overloaded\"");
        let (s, _srv) = scripted(vec![
            send("* OK ready\r\n"),
            Step::Skip(22),
            send("a1 NO [AUTHENTICATIONFAILED] x\r\n"),
        ]);
        let e = check(&check_of(Some("bob")), s).await.unwrap_err();
        assert!(e.to_string().starts_with("LOGIN: answer \"a1 NO"), "{e}");
    }
}
