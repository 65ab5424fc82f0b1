//! An in-memory network for simulation: every node attached to a named link receives what
//! the others send on it, unless the sender's or receiver's side of that link is cut.
//! Frames can be tapped (recorded) and injected, to simulate replay and forgery.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::{FrameForm, Inbound, Transmit};

/// A tap: the link it records and where recorded (sender, frame) pairs go.
type Tap = (String, mpsc::UnboundedSender<(String, Vec<u8>)>);

#[derive(Default)]
struct NetState {
    endpoints: Vec<Endpoint>,
    cut: HashSet<(String, String)>,
    taps: Vec<Tap>,
}

struct Endpoint {
    node: String,
    link_name: String,
    link_index: usize,
    inbound: mpsc::Sender<Inbound>,
}

/// A shared in-memory network.
#[derive(Clone, Default)]
pub struct MemoryNet {
    state: Arc<Mutex<NetState>>,
}

impl MemoryNet {
    /// An empty network.
    pub fn new() -> MemoryNet {
        MemoryNet::default()
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        // A panic while holding the lock only happens in a failing test; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches `node` to the link called `link_name`; frames arriving for it are pushed to
    /// `inbound` tagged with `link_index`. Returns the node's transmit half for that link.
    pub fn attach(
        &self,
        node: &str,
        link_name: &str,
        link_index: usize,
        inbound: mpsc::Sender<Inbound>,
    ) -> MemoryTx {
        let mut st = self.lock();
        st.endpoints
            .retain(|e| !(e.node == node && e.link_name == link_name));
        st.endpoints.push(Endpoint {
            node: node.to_string(),
            link_name: link_name.to_string(),
            link_index,
            inbound,
        });
        MemoryTx {
            net: self.clone(),
            node: node.to_string(),
            link_name: link_name.to_string(),
            form: FrameForm::Datagram,
        }
    }

    /// Cuts `node`'s side of `link_name`: nothing it sends there leaves, nothing arrives.
    pub fn cut(&self, node: &str, link_name: &str) {
        self.lock()
            .cut
            .insert((node.to_string(), link_name.to_string()));
    }

    /// Restores `node`'s side of `link_name`.
    pub fn restore(&self, node: &str, link_name: &str) {
        self.lock()
            .cut
            .remove(&(node.to_string(), link_name.to_string()));
    }

    /// Removes `node` from every link (its process is gone).
    pub fn detach(&self, node: &str) {
        self.lock().endpoints.retain(|e| e.node != node);
    }

    /// Records every frame sent on `link_name` as (sender, frame).
    pub fn tap(&self, link_name: &str) -> mpsc::UnboundedReceiver<(String, Vec<u8>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().taps.push((link_name.to_string(), tx));
        rx
    }

    /// Delivers `frame` on `link_name` to every node but `from` (as a forger would).
    pub fn inject(&self, from: &str, link_name: &str, frame: &[u8]) {
        self.deliver(from, link_name, frame);
    }

    fn deliver(&self, from: &str, link_name: &str, frame: &[u8]) {
        let mut st = self.lock();
        st.taps.retain(|(name, tx)| {
            name != link_name || tx.send((from.to_string(), frame.to_vec())).is_ok()
        });
        if st.cut.contains(&(from.to_string(), link_name.to_string())) {
            return;
        }
        for e in &st.endpoints {
            if e.link_name != link_name
                || e.node == from
                || st.cut.contains(&(e.node.clone(), link_name.to_string()))
            {
                continue;
            }
            // A full queue means the node is not reading: the frame is lost, as on a wire.
            let _ = e.inbound.try_send(Inbound {
                link: e.link_index,
                frame: frame.to_vec(),
                from: None,
            });
        }
    }
}

/// Transmit half of one node on one in-memory link.
pub struct MemoryTx {
    net: MemoryNet,
    node: String,
    link_name: String,
    form: FrameForm,
}

impl MemoryTx {
    /// This link carries heartbeat's classic text, as a serial line does: the node hands it
    /// classic frames, and its peers read them as they read a serial line's.
    pub fn carrying_classic_text(mut self) -> MemoryTx {
        self.form = FrameForm::ClassicText;
        self
    }
}

impl Transmit for MemoryTx {
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.net.deliver(&self.node, &self.link_name, frame);
        Ok(())
    }

    fn form(&self) -> FrameForm {
        self.form
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_to_others_and_honours_cuts() {
        let net = MemoryNet::new();
        let (atx, mut arx) = mpsc::channel(8);
        let (btx, mut brx) = mpsc::channel(8);
        let a = net.attach("a", "l0", 0, atx);
        let _b = net.attach("b", "l0", 3, btx);
        a.send(b"hi").unwrap();
        let got = brx.recv().await.unwrap();
        assert_eq!((got.link, got.frame.as_slice()), (3, &b"hi"[..]));
        assert!(arx.try_recv().is_err());
        net.cut("b", "l0");
        a.send(b"lost").unwrap();
        assert!(brx.try_recv().is_err());
        net.restore("b", "l0");
        a.send(b"back").unwrap();
        assert_eq!(brx.recv().await.unwrap().frame, b"back");
    }
}
