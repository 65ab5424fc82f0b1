//! The node as a task fed by channels: the inputs of the simulation tests.
//!
//! Frames come from a channel (the in-memory network queues them there), mail from another;
//! the wait is a `select!` with one timer on the runtime's clock, so a whole cluster runs in
//! one runtime on a paused clock, through the same [`Node::run`] loop the daemon runs.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::inputs::{InputSink, Inputs, Mail, MailSender};
use crate::media::Inbound;

/// Inputs from channels; see the module doc.
pub struct ChannelInputs {
    inbound: mpsc::Receiver<Inbound>,
    mail: mpsc::UnboundedReceiver<Mail>,
    /// One timer for the whole loop, replaced only when the deadline changes (a new
    /// registration can cost the driver an eventfd write and an extra epoll round).
    timer: Pin<Box<Sleep>>,
}

impl ChannelInputs {
    /// Inputs over `inbound` frames; returns them with the sender that mails the node.
    pub fn new(inbound: mpsc::Receiver<Inbound>) -> (ChannelInputs, MailSender) {
        let (tx, mail) = mpsc::unbounded_channel();
        let sender: MailSender = Arc::new(move |m| {
            let _ = tx.send(m);
        });
        let inputs = ChannelInputs {
            inbound,
            mail,
            timer: Box::pin(tokio::time::sleep_until(crate::clock::now())),
        };
        (inputs, sender)
    }
}

impl Inputs for ChannelInputs {
    fn read_waiting<S: InputSink>(&mut self, _node: &mut S) {
        // Every frame is read as it arrives.
    }

    async fn wait<S: InputSink>(&mut self, node: &mut S, wake: Instant) -> bool {
        if self.timer.deadline() != wake {
            // A fresh timer, not `reset`: tokio extends a later deadline lazily, leaving the
            // old one in its wheel, and the driver then wakes at the old deadline for
            // nothing (one spurious wakeup per received heartbeat).
            self.timer = Box::pin(tokio::time::sleep_until(wake));
        }
        tokio::select! {
            biased;
            Some(mail) = self.mail.recv() => node.on_mail(crate::clock::now(), mail),
            frame = self.inbound.recv() => match frame {
                Some(frame) => node.on_frame(crate::clock::now(), frame.as_ref()),
                None => return false,
            },
            _ = &mut self.timer => {}
        }
        true
    }
}
