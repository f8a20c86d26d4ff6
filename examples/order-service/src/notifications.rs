//! Watchers that tell a customer when their order moves. Each one is a
//! thread waiting for status changes of its order; the sender side is
//! filed away and, in this version, nothing ever sends or drops it, so the
//! thread waits forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

/// A change of an order's status.
pub enum StatusChange {
    Shipped,
}

#[derive(Default)]
pub struct Watchers {
    senders: Mutex<HashMap<u64, Sender<StatusChange>>>,
}

impl Watchers {
    /// Starts a watcher thread for order `id`.
    pub fn watch(&self, id: u64) -> std::io::Result<()> {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name(format!("notify-{id}"))
            .spawn(move || wait_for_changes(id, rx))?;
        self.senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        Ok(())
    }

    /// Tells the watcher of order `id`, if any, that it shipped.
    pub fn shipped(&self, id: u64) {
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = senders.get(&id) {
            let _ = tx.send(StatusChange::Shipped);
        }
    }
}

fn wait_for_changes(id: u64, changes: Receiver<StatusChange>) {
    while let Ok(change) = changes.recv() {
        match change {
            StatusChange::Shipped => eprintln!("order {id} shipped"),
        }
    }
}
