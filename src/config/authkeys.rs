//! `authkeys`: which key signs outbound frames and every key accepted (heartbeat `auth.c
//! parse_authfile`, HEARTBEAT-WIRE.md §4.1).
//!
//! ```text
//! auth N              # index that signs outbound frames
//! N crc               # no secret: integrity only
//! N md5|sha1|sha256 KEY
//! ```
//! Indexes run 0–15. As heartbeat reads lines with `sscanf("%d%s%s")`, the key is the first
//! whitespace-delimited token after the method. The file must not be readable or writable
//! by group or others.

use std::collections::BTreeMap;
use std::path::Path;

use super::diag::Diagnostic;
use super::model::{AuthKey, AuthKeys, AuthMethod};
use super::validate::Loc;

/// Highest key index (heartbeat `MAXAUTH` − 1).
pub(crate) const MAX_INDEX: u8 = 15;

/// Parses a method name as written in authkeys or YAML.
pub(crate) fn parse_method(word: &str) -> Option<AuthMethod> {
    match word.to_ascii_lowercase().as_str() {
        "crc" => Some(AuthMethod::Crc),
        "md5" => Some(AuthMethod::Md5),
        "sha1" => Some(AuthMethod::Sha1),
        "sha256" => Some(AuthMethod::Sha256),
        _ => None,
    }
}

/// Checks one key's secret: required except for crc, forbidden for crc, and holding no
/// whitespace (heartbeat's authkeys cannot hold it) nor undecodable bytes; crc gets a warning.
pub(crate) fn check_key(
    index: u8,
    method: AuthMethod,
    secret: Option<&str>,
    loc: &Loc,
    diags: &mut Vec<Diagnostic>,
) -> Option<AuthKey> {
    match (method, secret) {
        (AuthMethod::Crc, None) => {
            diags.push(loc.warning(format!(
                "key {index} uses crc, which does not authenticate: anyone on the network can forge heartbeats; use `{index} sha256 SECRET` on every node"
            )));
            Some(AuthKey {
                method,
                secret: Vec::new(),
            })
        }
        (AuthMethod::Crc, Some(_)) => {
            diags.push(loc.error(format!(
                "key {index}: crc takes no secret; remove the secret or use `{index} sha256 SECRET`"
            )));
            None
        }
        (m, None) => {
            diags.push(loc.error(format!(
                "key {index}: {} needs a secret; write `{index} {} SECRET`",
                m.as_str(),
                m.as_str()
            )));
            None
        }
        (m, Some("")) => {
            diags.push(loc.error(format!(
                "key {index}: the {} secret is empty; give a non-empty secret",
                m.as_str()
            )));
            None
        }
        (_, Some(s)) if s.contains('\u{FFFD}') => {
            diags.push(loc.error(format!(
                "key {index}: the secret is not valid UTF-8 text; use printable ASCII characters"
            )));
            None
        }
        (_, Some(s)) if s.chars().any(char::is_whitespace) => {
            diags.push(loc.error(format!(
                "key {index}: the secret contains whitespace, which heartbeat's authkeys cannot hold; remove the spaces"
            )));
            None
        }
        (m, Some(s)) => Some(AuthKey {
            method: m,
            secret: s.as_bytes().to_vec(),
        }),
    }
}

/// Checks a key index is in 0–15.
pub(crate) fn check_index(text: &str, loc: &Loc, diags: &mut Vec<Diagnostic>) -> Option<u8> {
    match text.parse::<u8>() {
        Ok(i) if i <= MAX_INDEX => Some(i),
        _ => {
            diags.push(loc.error(format!(
                "'{text}' is not a key index; use a number from 0 to {MAX_INDEX}"
            )));
            None
        }
    }
}

/// One key as a front door read it (an authkeys line, a YAML `keys` entry), not yet checked.
pub(crate) struct KeyEntry<'a> {
    /// The index as written.
    pub index: &'a str,
    /// The method as written, if any.
    pub method: Option<&'a str>,
    /// The secret, if any.
    pub secret: Option<&'a str>,
    /// Where the key was written.
    pub loc: Loc,
}

/// The key that signs outbound frames, as a front door found it.
pub(crate) enum Signing {
    /// Named as `written` (`auth 2`, `auth.active: 2`) at `loc`.
    Named {
        /// The key index.
        index: u8,
        /// Where it was named.
        loc: Loc,
        /// How the file named it, for the message when no key has that index.
        written: String,
    },
    /// Not named: the error to report, or `None` when one was reported already.
    Missing(Option<Diagnostic>),
}

/// Checks every key (index, method, secret, one key per index) and the signing key, the
/// rules both front doors share; `None` when any error was reported.
pub(crate) fn assemble(
    entries: &[KeyEntry<'_>],
    signing: Signing,
    diags: &mut Vec<Diagnostic>,
) -> Option<AuthKeys> {
    let mut keys: BTreeMap<u8, (AuthKey, &Loc)> = BTreeMap::new();
    let mut broken = false;
    for e in entries {
        let loc = &e.loc;
        let Some(index) = check_index(e.index, loc, diags) else {
            broken = true;
            continue;
        };
        let Some(method_word) = e.method else {
            broken = true;
            diags.push(loc.error(format!(
                "key {index} has no method; write `{index} sha256 SECRET` (methods: crc, md5, sha1, sha256)"
            )));
            continue;
        };
        let Some(method) = parse_method(method_word) else {
            broken = true;
            diags.push(loc.error(format!(
                "'{method_word}' is not an authentication method; use sha256, sha1, md5 or crc"
            )));
            continue;
        };
        let Some(key) = check_key(index, method, e.secret, loc, diags) else {
            broken = true;
            continue;
        };
        if let Some((_, prev)) = keys.get(&index) {
            broken = true;
            diags.push(loc.error(format!(
                "key index {index} is defined twice (first on line {}); give each key its own index",
                prev.line.map_or_else(|| "?".to_string(), |l| l.to_string())
            )));
            continue;
        }
        keys.insert(index, (key, loc));
    }
    let active = match signing {
        Signing::Named {
            index,
            loc,
            written,
        } => {
            if !broken && !keys.contains_key(&index) {
                diags.push(loc.error(format!(
                    "{written} names key {index}, which is not defined; add key {index} (e.g. `{index} sha256 SECRET`) or name another key"
                )));
                return None;
            }
            index
        }
        Signing::Missing(d) => {
            diags.extend(d);
            return None;
        }
    };
    if broken {
        return None;
    }
    let keys = keys.into_iter().map(|(i, (k, _))| (i, k)).collect();
    Some(AuthKeys { active, keys })
}

/// Parses authkeys text; `None` when any error was reported.
pub(crate) fn parse(text: &str, file: &Path) -> (Option<AuthKeys>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut active: Option<(u8, Loc)> = None;
    let mut entries = Vec::new();
    let mut auth_broken = false;
    for (i, raw) in text.lines().enumerate() {
        let loc = Loc::new(file, Some(i + 1));
        let body = raw.split('#').next().unwrap_or_default();
        let words: Vec<&str> = body.split_whitespace().collect();
        let Some(&first) = words.first() else {
            continue;
        };
        if first.eq_ignore_ascii_case("auth") {
            match words.get(1) {
                None => {
                    auth_broken = true;
                    diags.push(
                        loc.error("`auth` needs the index of the signing key, e.g. `auth 1`"),
                    );
                }
                Some(w) => {
                    if words.len() > 2 {
                        diags.push(loc.warning("text after `auth N` is ignored; remove it"));
                    }
                    match check_index(w, &loc, &mut diags) {
                        Some(idx) => {
                            if let Some((_, prev)) = &active {
                                auth_broken = true;
                                diags.push(loc.error(format!(
                                    "`auth` is given twice (first on line {}); keep exactly one `auth N` line",
                                    prev.line.unwrap_or(0)
                                )));
                            } else {
                                active = Some((idx, loc));
                            }
                        }
                        None => auth_broken = true,
                    }
                }
            }
            continue;
        }
        if words.len() > 3 {
            diags.push(loc.warning(format!(
                "key {first}: text after the secret is ignored (a secret cannot contain spaces); remove it"
            )));
        }
        entries.push(KeyEntry {
            index: first,
            method: words.get(1).copied(),
            secret: words.get(2).copied(),
            loc,
        });
    }
    let signing = match active {
        Some((index, loc)) => Signing::Named {
            index,
            loc,
            written: format!("`auth {index}`"),
        },
        None if auth_broken => Signing::Missing(None),
        None => Signing::Missing(Some(Loc::new(file, None).error(
            "no `auth N` line; add `auth 1` naming the key that signs outbound heartbeats",
        ))),
    };
    let keys = assemble(&entries, signing, &mut diags);
    (keys.filter(|_| !auth_broken), diags)
}

/// heartbeat refuses an authkeys file that group or others may read or write.
pub(crate) fn check_mode(file: &Path, mode: u32) -> Option<Diagnostic> {
    (mode & 0o077 != 0).then(|| {
        Diagnostic::error(
            file,
            None,
            format!(
                "the file holds secrets but has mode {:03o} (readable or writable by group or others); run `chmod 600 {}`",
                mode & 0o777,
                file.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (Option<AuthKeys>, Vec<String>) {
        let (k, d) = parse(text, Path::new("authkeys"));
        (k, d.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn good_files() {
        let (k, d) = run("auth 2\n# old key\n1 md5 old-secret\n2 sha256 new-secret trailing\n");
        let k = k.expect("valid");
        assert_eq!(k.active, 2);
        assert_eq!(k.active_key().method, AuthMethod::Sha256);
        assert_eq!(k.active_key().secret, b"new-secret");
        assert_eq!(k.keys[&1].secret, b"old-secret");
        assert_eq!(
            d,
            vec![
                "authkeys:4: warning: key 2: text after the secret is ignored (a secret cannot contain spaces); remove it"
            ]
        );

        let (k, d) = run("auth 1\n1 crc\n#2 sha1 x\n");
        assert_eq!(k.expect("valid").active_key().method, AuthMethod::Crc);
        assert!(d[0].starts_with("authkeys:2: warning: key 1 uses crc"));

        let (k, d) = run("auth 1\n1 md5 ab\u{FFFD}c\n");
        assert!(k.is_none());
        assert!(d[0].starts_with("authkeys:2: key 1: the secret is not valid UTF-8"));

        let (k, _) = run("auth 0\n0 SHA1 k\n");
        assert_eq!(k.expect("valid").active, 0);
    }

    #[test]
    fn every_problem_reported() {
        let (k, d) = run(
            "auth 3\nauth 4\n16 md5 x\n1 crc secret\n2 md5\n2 sha1 a\n2 sha1 b\n5 des k\nfoo\n6\n",
        );
        assert!(k.is_none());
        let all = d.join("\n");
        for want in [
            "authkeys:2: `auth` is given twice (first on line 1)",
            "authkeys:3: '16' is not a key index",
            "authkeys:4: key 1: crc takes no secret",
            "authkeys:5: key 2: md5 needs a secret",
            "authkeys:7: key index 2 is defined twice (first on line 6)",
            "authkeys:8: 'des' is not an authentication method",
            "authkeys:9: 'foo' is not a key index",
            "authkeys:10: key 6 has no method",
        ] {
            assert!(all.contains(want), "missing {want} in\n{all}");
        }
    }

    #[test]
    fn missing_auth_or_key() {
        let (k, d) = run("1 sha1 x\n");
        assert!(k.is_none());
        assert!(d[0].starts_with("authkeys: no `auth N` line"));
        let (k, d) = run("auth 2\n1 sha1 x\n");
        assert!(k.is_none());
        assert!(d[0].starts_with("authkeys:1: `auth 2` names key 2, which is not defined"));
    }

    #[test]
    fn mode() {
        assert!(check_mode(Path::new("a"), 0o100600).is_none());
        assert!(check_mode(Path::new("a"), 0o100400).is_none());
        let d = check_mode(Path::new("/etc/ha.d/authkeys"), 0o100644).expect("refused");
        assert_eq!(
            d.to_string(),
            "/etc/ha.d/authkeys: the file holds secrets but has mode 644 (readable or writable by group or others); run `chmod 600 /etc/ha.d/authkeys`"
        );
    }
}
