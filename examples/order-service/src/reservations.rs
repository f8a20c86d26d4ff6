//! Stock reservations: each is a task that waits for the payment to be
//! confirmed (or cancelled) and then releases or commits the stock. The
//! confirmation senders are kept in a map that nothing reads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

#[derive(Default)]
pub struct Reservations {
    confirmations: Mutex<HashMap<u64, oneshot::Sender<bool>>>,
}

impl Reservations {
    /// Holds stock for order `id` until its payment is confirmed.
    pub fn hold(&self, id: u64) {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            match rx.await {
                Ok(true) => tokio::time::sleep(Duration::from_millis(1)).await,
                Ok(false) | Err(_) => {}
            }
        });
        self.confirmations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
    }
}
