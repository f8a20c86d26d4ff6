//! Hands orders to the carrier over TCP. Connections are kept "for
//! reuse" in a list, but a new one is opened for every order.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

pub struct Dispatcher {
    carrier: Option<SocketAddr>,
    lines: Mutex<Vec<TcpStream>>,
}

impl Dispatcher {
    pub fn new(carrier: Option<SocketAddr>) -> Dispatcher {
        Dispatcher {
            carrier,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Sends order `id` to the carrier.
    pub async fn dispatch(&self, id: u64) -> std::io::Result<()> {
        let carrier = self.carrier.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no carrier (ORDERS_UPSTREAM)")
        })?;
        let mut line = TcpStream::connect(carrier).await?;
        line.write_all(format!("SHIP {id}\n").as_bytes()).await?;
        self.lines.lock().await.push(line);
        Ok(())
    }
}
