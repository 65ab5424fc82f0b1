//! Writes hbd(8) and hactl(8) and their bash and zsh completions from the clap definitions
//! of the two binaries, so the pages never drift from `--help`:
//!
//! ```sh
//! cargo run --example gen-manpages -- OUTDIR
//! ```
//!
//! OUTDIR gets `hbd.8`, `hactl.8` and `hactl-SUBCOMMAND.8`, `hbd.bash`, `hactl.bash`, `_hbd` and `_hactl`.
//! `scripts/build-deb.sh` runs it; clap_mangen and clap_complete stay dev-dependencies, out
//! of the daemon.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

#[allow(dead_code, unused_imports)]
#[path = "../src/bin/hbd.rs"]
mod hbd_bin;

#[allow(dead_code, unused_imports)]
#[path = "../src/bin/hactl.rs"]
mod hactl_bin;

/// Sections clap does not know about, in roff.
const HBD_EXTRA: &str = r#".SH "EXIT STATUS"
0 after a clean stop or a valid \fB\-\-check\-config\fR; 1 when the configuration is refused
or start\-up fails (one line on stderr says why).
.SH SIGNALS
\fBSIGHUP\fR re\-reads the configuration, as \fBhactl reload\fR does.
\fBSIGTERM\fR and \fBSIGINT\fR stop gracefully: every group is handed to a live peer first.
.SH ENVIRONMENT
.TP
\fBHBD_LOG\fR
Log filter (tracing env\-filter syntax), default \fBinfo\fR.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR, \fBWATCHDOG_PID\fR, \fBJOURNAL_STREAM\fR
Set by systemd: hbd reports readiness and feeds the watchdog, and writes journald
priorities on stderr.
.SH FILES
.TP
\fI/etc/hbd/hbd.yaml\fR
Native configuration (mode 0600), see \fBhbd.yaml\fR(5).
.TP
\fI/var/lib/hbd\fR
Generation number, node uuid and peer generations.
.TP
\fI/run/hbd/hbd.sock\fR
Control socket used by \fBhactl\fR(8) and \fBcl_status\fR.
.TP
\fI/usr/lib/hbd/resources\fR
hbd's own heartbeat\-class resource scripts.
.SH "SEE ALSO"
\fBhactl\fR(8), \fBhbd.yaml\fR(5), \fBcl_status\fR(8), \fBhb_standby\fR(8),
\fBhb_takeover\fR(8), \fBsystemctl\fR(1), \fBjournalctl\fR(1)
"#;

const HACTL_EXTRA: &str = r#".SH "EXIT STATUS"
0 done; 1 refused or failed (the reason is on stderr); 2 usage error; 3 the daemon is not
reachable on its socket.
.SH "SEE ALSO"
\fBhbd\fR(8), \fBhbd.yaml\fR(5), \fBcl_status\fR(8), \fBhb_standby\fR(8), \fBhb_takeover\fR(8)
"#;

/// Writes `cmd`'s page with `extra` appended, and one page per subcommand
/// (`hactl-status.8`, …), which the main page lists.
fn write_page(out: &Path, cmd: clap::Command, file: &str, extra: &str) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = |c: clap::Command| {
        clap_mangen::Man::new(c)
            .section("8")
            .manual("System Administration")
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        let page = man(sub);
        let mut text = Vec::new();
        page.render(&mut text)?;
        std::fs::write(out.join(page.get_filename()), text)?;
    }
    let mut page = Vec::new();
    man(cmd).render(&mut page)?;
    page.extend_from_slice(extra.as_bytes());
    std::fs::write(out.join(file), page)
}

fn write_completions(out: &Path, mut cmd: clap::Command, name: &str) -> std::io::Result<()> {
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, name, &mut text);
        std::fs::write(out.join(file), text)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "target/man".into());
    std::fs::create_dir_all(&out)?;
    let hbd = hbd_bin::Args::command();
    let hactl = hactl_bin::Args::command();
    write_page(&out, hbd.clone(), "hbd.8", HBD_EXTRA)?;
    write_page(&out, hactl.clone(), "hactl.8", HACTL_EXTRA)?;
    write_completions(&out, hbd, "hbd")?;
    write_completions(&out, hactl, "hactl")?;
    println!("wrote man pages and completions to {}", out.display());
    Ok(())
}
