//! `haresources`: one resource group per logical line, exactly as heartbeat's
//! `ResourceManager` reads it (features.md §2.3).
//!
//! Comments (`#` to end of line) are stripped, lines ending in `\` are joined, whitespace is
//! squeezed and blank lines dropped. Field 1 is the preferred node (lower-cased); the rest are
//! resources: a bare IPv4 address (`isip`: `[0-9]*.[0-9]*.[0-9]*.[0-9]*`) means
//! `IPaddr::<address>`, and `script::a::b` calls `script` with arguments `a b`.

use std::path::Path;

use super::diag::Diagnostic;
use super::model::{GroupSpec, ResourceSpec};
use super::validate::{At, Loc};

/// heartbeat's `isip` shell pattern `[0-9]*.[0-9]*.[0-9]*.[0-9]*`: four parts that each start
/// with a digit, separated by dots, where `*` matches anything.
pub(crate) fn is_ip(word: &str) -> bool {
    /// Does `s` match `[0-9]*` followed by `rest` pieces of `.[0-9]*`?
    fn matches(s: &str, pieces_left: usize) -> bool {
        let Some(first) = s.chars().next() else {
            return false;
        };
        if !first.is_ascii_digit() {
            return false;
        }
        if pieces_left == 0 {
            return true; // the trailing `*` eats the rest
        }
        let rest = &s[1..];
        // `*` then `.`: try every dot as the separator.
        rest.char_indices()
            .filter(|&(_, c)| c == '.')
            .any(|(i, _)| matches(&rest[i + 1..], pieces_left - 1))
    }
    matches(word, 3)
}

/// Why a haresources word cannot be a resource (each message names the word and the fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResourceWordError {
    /// Empty, or holding whitespace.
    #[error(
        "resource '{0}' is empty or contains whitespace; write one resource per word, arguments separated by `::`"
    )]
    Blank(String),
    /// `::ARG` with nothing before it.
    #[error(
        "resource '{0}' has no script name before `::`; write SCRIPT::ARG (e.g. IPaddr::192.0.2.10/24/eth0)"
    )]
    NoScript(String),
    /// A path where a script name belongs.
    #[error(
        "resource script '{0}' contains '/'; name a script in /etc/ha.d/resource.d or /etc/init.d, not a path"
    )]
    ScriptPath(String),
}

/// Parses one resource word into kind and arguments, or says why it cannot be used.
pub(crate) fn parse_resource(word: &str) -> Result<ResourceSpec, ResourceWordError> {
    if word.is_empty() || word.chars().any(char::is_whitespace) {
        return Err(ResourceWordError::Blank(word.to_string()));
    }
    if is_ip(word) {
        return Ok(ResourceSpec {
            spec: word.to_string(),
            kind: "IPaddr".to_string(),
            args: vec![word.to_string()],
        });
    }
    let mut parts = word.split("::");
    let kind = parts.next().unwrap_or_default().to_string();
    if kind.is_empty() {
        return Err(ResourceWordError::NoScript(word.to_string()));
    }
    if kind.contains('/') {
        return Err(ResourceWordError::ScriptPath(kind));
    }
    Ok(ResourceSpec {
        spec: word.to_string(),
        kind,
        args: parts.map(str::to_string).collect(),
    })
}

/// Parses haresources text into groups (each with the line its logical line starts on).
pub(crate) fn parse(text: &str, file: &Path) -> (Vec<At<GroupSpec>>, Vec<Diagnostic>) {
    let mut groups = Vec::new();
    let mut diags = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let uncommented = raw.split('#').next().unwrap_or_default();
        let (body, continues) = match uncommented.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (uncommented, false),
        };
        let (start, mut logical) = pending.take().unwrap_or((lineno, String::new()));
        logical.push(' ');
        logical.push_str(body);
        if continues {
            pending = Some((start, logical));
            continue;
        }
        group_line(
            &logical,
            Loc::new(file, Some(start)),
            &mut groups,
            &mut diags,
        );
    }
    if let Some((start, logical)) = pending {
        diags.push(Diagnostic::warning(
            file,
            Some(start),
            "the last line ends with `\\` but nothing follows; remove the trailing backslash",
        ));
        group_line(
            &logical,
            Loc::new(file, Some(start)),
            &mut groups,
            &mut diags,
        );
    }
    (groups, diags)
}

fn group_line(
    logical: &str,
    loc: Loc,
    groups: &mut Vec<At<GroupSpec>>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut words = logical.split_whitespace();
    let Some(node) = words.next() else {
        return;
    };
    let mut resources = Vec::new();
    let mut ok = true;
    for w in words {
        match parse_resource(w) {
            Ok(r) => resources.push(r),
            Err(e) => {
                ok = false;
                diags.push(loc.error(e.to_string()));
            }
        }
    }
    if resources.is_empty() && ok {
        diags.push(loc.error(format!(
            "group line for node '{node}' lists no resources; write `{node} RESOURCE [RESOURCE...]`"
        )));
        return;
    }
    if ok {
        groups.push(At::new(
            GroupSpec {
                preferred: node.to_ascii_lowercase(),
                resources,
            },
            loc,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isip_rule() {
        for yes in [
            "192.168.136.10",
            "135.9.8.7/24",
            "135.9.8.7/24/eth0/135.9.8.210",
            "1.2.3.4x",
            "1.2.3.4.5",
            "1a.2b.3c.4d",
        ] {
            assert!(is_ip(yes), "{yes}");
        }
        for no in [
            "IPaddr::1.2.3.4",
            "lvs",
            "1.2.3",
            ".1.2.3.4",
            "1..2.3",
            "1.2.3.",
            "a1.2.3.4",
        ] {
            assert!(!is_ip(no), "{no}");
        }
    }

    #[test]
    fn seed_line() {
        let (g, d) = parse(
            "loadbalancer lvs IPaddr::192.168.136.10/24/eth0 ipvsadm ldirectord\n",
            Path::new("haresources"),
        );
        assert!(d.is_empty());
        let g = &g[0];
        assert_eq!(g.loc.line, Some(1));
        assert_eq!(g.value.preferred, "loadbalancer");
        assert_eq!(g.value.name(), "lvs");
        let r = &g.value.resources;
        assert_eq!(r.len(), 4);
        assert_eq!(r[1].kind, "IPaddr");
        assert_eq!(r[1].args, vec!["192.168.136.10/24/eth0"]);
        assert_eq!(r[1].spec, "IPaddr::192.168.136.10/24/eth0");
        assert_eq!(r[3].kind, "ldirectord");
        assert!(r[3].args.is_empty());
    }

    #[test]
    fn grammar_details() {
        let text = "# comment\n\n  NODE1   135.9.8.7/24  \\\n   Filesystem::/dev/sda1::/data1::ext2 # trailing\nnode2 10.0.0.1\n";
        let (g, d) = parse(text, Path::new("haresources"));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].loc.line, Some(3));
        assert_eq!(g[0].value.preferred, "node1");
        assert_eq!(g[0].value.resources[0].kind, "IPaddr");
        assert_eq!(g[0].value.resources[0].spec, "135.9.8.7/24");
        assert_eq!(g[0].value.resources[1].kind, "Filesystem");
        assert_eq!(
            g[0].value.resources[1].args,
            vec!["/dev/sda1", "/data1", "ext2"]
        );
        assert_eq!(g[1].loc.line, Some(5));
    }

    #[test]
    fn bad_lines() {
        let (g, d) = parse("node1\nnode2 ::x\nnode3 /etc/init.d/x\n", Path::new("hr"));
        assert!(g.is_empty());
        let all: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert!(all[0].starts_with("hr:1: group line for node 'node1' lists no resources"));
        assert!(all[1].starts_with("hr:2: resource '::x' has no script name"));
        assert!(all[2].starts_with("hr:3: resource script '/etc/init.d/x' contains '/'"));
    }
}
