//! Log lines on stderr the way journald wants them.
//!
//! Under systemd hbd's stderr is a stream to journald, which tells it so by setting
//! `JOURNAL_STREAM=DEV:INODE` to the stream's device and inode (`systemd.exec(5)`: a process
//! compares them with its stderr, since a child may inherit the variable with another
//! stderr). journald takes a line's priority from a leading `<N>` (`sd-daemon(3)`: `<3>`
//! error … `<7>` debug) and stamps the time and the unit itself, so such a line carries the
//! prefix, the span and event fields as `key=value` (node, group, vip, real) and no time, no
//! level word and no colour codes.
//!
//! Elsewhere: on a terminal, tracing's usual coloured lines; on a file or pipe, the same lines
//! without colour codes. File and syslog destinations are `logging`'s business; this module
//! only chooses the stderr form ([`StderrStyle::detect`]) and builds its layer
//! ([`stderr_layer`]).

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines written to stderr look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StderrStyle {
    /// stderr is journald's stream: `<N>` priority prefixes, no time, no colour.
    Journal,
    /// stderr is a terminal: timestamps, levels and colour.
    Terminal,
    /// A file or a pipe: timestamps and levels, no colour codes.
    Plain,
}

impl StderrStyle {
    /// The style for this process's stderr.
    pub fn detect() -> StderrStyle {
        if stderr_is_journal() {
            StderrStyle::Journal
        } else if std::io::stderr().is_terminal() {
            StderrStyle::Terminal
        } else {
            StderrStyle::Plain
        }
    }
}

/// Whether stderr is the journald stream named by `JOURNAL_STREAM`.
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => journal_stream_matches(&value, st.st_dev, st.st_ino),
        Err(_) => false,
    }
}

/// Whether a `JOURNAL_STREAM` value (`DEV:INODE`, both decimal) names the file with this
/// device and inode.
pub fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// The `sd-daemon(3)` priority prefix for a tracing level: syslog's err, warning, info and
/// debug (tracing has no notice, and its trace is debug to syslog).
pub fn priority_prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// A tracing event formatter for journald: `<N>span{fields}: message key=value…`. A
/// multi-line message gets the prefix on every line, so journald keeps its priority.
#[derive(Debug, Clone, Copy, Default)]
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                line.push_str(span.name());
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(line, "{{{fields}}}")?;
                }
                line.push_str(": ");
            }
        }
        ctx.field_format()
            .format_fields(format::Writer::new(&mut line), event)?;
        let prefix = priority_prefix(*event.metadata().level());
        for part in line.trim_end_matches('\n').split('\n') {
            writeln!(writer, "{prefix}{part}")?;
        }
        Ok(())
    }
}

/// The layer writing log lines to stderr in `style`.
pub fn stderr_layer<S>(style: StderrStyle) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match style {
        StderrStyle::Journal => Box::new(layer.with_ansi(false).event_format(JournalFormat)),
        StderrStyle::Terminal => Box::new(layer.with_ansi(true).with_target(false)),
        StderrStyle::Plain => Box::new(layer.with_ansi(false).with_target(false)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects what the formatter writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn journal_lines(emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(out.clone())
                .with_ansi(false)
                .event_format(JournalFormat),
        );
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn levels_map_to_sd_daemon_prefixes() {
        let text = journal_lines(|| {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
            tracing::trace!("t");
        });
        assert_eq!(text, "<3>e\n<4>w\n<6>i\n<7>d\n<7>t\n");
    }

    #[test]
    fn fields_and_spans_are_kept_without_colour_or_time() {
        let text = journal_lines(|| {
            let span = tracing::info_span!("group", group = "192.0.2.10");
            let _entered = span.enter();
            tracing::warn!(node = "n2", vip = %"192.0.2.10", real = "198.51.100.5:80", "node is dead");
        });
        assert_eq!(
            text,
            "<4>group{group=\"192.0.2.10\"}: node is dead node=\"n2\" vip=192.0.2.10 \
             real=\"198.51.100.5:80\"\n"
        );
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn every_line_of_a_multi_line_message_keeps_its_priority() {
        let text = journal_lines(|| {
            tracing::error!("the new configuration is refused:\nha.cf:3: bad\nha.cf:4: worse");
        });
        assert_eq!(
            text,
            "<3>the new configuration is refused:\n<3>ha.cf:3: bad\n<3>ha.cf:4: worse\n"
        );
    }

    #[test]
    fn journal_stream_must_name_this_stderr() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(journal_stream_matches("8:12345\n", 8, 12345));
        assert!(!journal_stream_matches("8:12346", 8, 12345));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("812345", 8, 12345));
        assert!(!journal_stream_matches("", 8, 12345));
    }
}
