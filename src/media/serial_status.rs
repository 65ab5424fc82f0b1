//! A serial line's state and counters as `hactl status` shows them: below both the serial
//! link (which fills them) and the [`super::Transmit`] trait (which hands them to the node),
//! so neither file imports the other.

use std::path::PathBuf;

use super::serial::framer::FramerStats;

/// Whether the device is usable. In `hactl status --json` it is the link's `state` field
/// (`opening`, `open`, `retrying` with `error`, `stopped`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SerialState {
    /// The thread has not tried to open the device yet.
    Opening,
    /// Open: frames flow both ways.
    Open,
    /// It could not be opened, or it went away; the thread tries again with backoff.
    Retrying {
        /// The last error, as the system said it.
        error: String,
    },
    /// The link was closed.
    Stopped,
}

/// What `hactl status` shows about one serial link (its JSON form is part of the control
/// protocol: fields are added, never renamed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialLinkStatus {
    /// The device.
    pub device: PathBuf,
    /// The line speed.
    pub baud: u32,
    /// Open, or why not.
    #[serde(flatten)]
    pub state: SerialState,
    /// How many times the device was opened (1 while it never went away).
    pub opened: u64,
    /// Frames received and handed on.
    pub frames_in: u64,
    /// Frames written to the line.
    pub frames_out: u64,
    /// Frames replaced by a newer one before the line was free for them.
    pub superseded: u64,
    /// Frames given while the device was not open (dropped).
    pub dropped_while_down: u64,
    /// What the receiving side threw away (noise, cut and oversize frames).
    pub framer: FramerStats,
}

impl std::fmt::Display for SerialLinkStatus {
    /// One line for status output and logs: `open at 19200 baud, 12 frames in, 12 out, …`
    /// or `retrying (No such file or directory), …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            SerialState::Opening => write!(f, "opening")?,
            SerialState::Open => write!(f, "open at {} baud", self.baud)?,
            SerialState::Retrying { error } => write!(f, "retrying ({error})")?,
            SerialState::Stopped => write!(f, "stopped")?,
        }
        write!(
            f,
            ", {} frames in, {} out, {} superseded, {} dropped while down, {} noise bytes, {} cut, {} oversize",
            self.frames_in,
            self.frames_out,
            self.superseded,
            self.dropped_while_down,
            self.framer.noise_bytes,
            self.framer.cut_frames,
            self.framer.oversize_frames
        )
    }
}
