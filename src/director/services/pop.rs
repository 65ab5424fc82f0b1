//! POP3 as ldirectord's `check_pop` runs it through Mail::POP3Client: a `+OK` greeting and,
//! when `login` is set, `USER`/`PASS` answered `+OK` (RFC 1939 §7); then `QUIT`.

use tokio::io::{AsyncRead, AsyncWrite};

use super::check::{Failed, Outcome, Passed, ServiceCheck, cut};
use super::text::Lines;

async fn ok<S: AsyncRead + AsyncWrite + Unpin>(
    l: &mut Lines<S>,
    step: &'static str,
) -> Result<(), Failed> {
    let line = l.line(step).await?;
    if line.starts_with("+OK") {
        Ok(())
    } else {
        Err(Failed::Answer {
            step,
            answer: cut(&line, 200),
        })
    }
}

/// Runs the POP3 check over `stream`.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(c: &ServiceCheck, stream: S) -> Outcome {
    let mut l = Lines::new(stream);
    ok(&mut l, "greeting").await?;
    let mut what = "greeting +OK".to_string();
    if let Some(login) = &c.credentials.login {
        l.send("USER", &format!("USER {login}")).await?;
        ok(&mut l, "USER").await?;
        let pass = c.credentials.passwd.as_deref().unwrap_or("");
        l.send("PASS", &format!("PASS {pass}")).await?;
        ok(&mut l, "PASS").await?;
        what.push_str(", login +OK");
    }
    if l.send("QUIT", "QUIT").await.is_ok() {
        let _ = l.next("QUIT").await;
    }
    Ok(Passed(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::NegotiatedService;
    use crate::director::services::testing::*;

    #[tokio::test]
    async fn greeting_only_without_login() {
        let (s, _srv) = scripted(vec![send("+OK ready\r\n"), expect("QUIT\r\n")]);
        let c = check_of(None);
        assert_eq!(check(&c, s).await.unwrap().0, "greeting +OK");
    }

    fn check_of(login: Option<&str>) -> ServiceCheck {
        let mut c = crate::director::services::testing::sample(NegotiatedService::Pop);
        c.credentials.login = login.map(str::to_string);
        c.credentials.passwd = Some("pw".into());
        c
    }

    #[tokio::test]
    async fn login_and_a_refused_password() {
        let (s, _srv) = scripted(vec![
            send("+OK ready\r\n"),
            expect("USER alice\r\n"),
            send("+OK\r\n"),
            expect("PASS pw\r\n"),
            send("+OK logged in\r\n"),
            expect("QUIT\r\n"),
        ]);
        let c = check_of(Some("alice"));
        assert_eq!(check(&c, s).await.unwrap().0, "greeting +OK, login +OK");
        let (s, _srv) = scripted(vec![
            send("+OK ready\r\n"),
            expect("USER alice\r\n"),
            send("+OK\r\n"),
            expect("PASS pw\r\n"),
            send("-ERR [AUTH] bad\r\n"),
        ]);
        let e = check(&c, s).await.unwrap_err();
        assert_eq!(e.to_string(), "PASS: answer \"-ERR [AUTH] bad\"");
    }
}
