//! A TCP proxy in front of an MQTT broker that can go silent the way a broken middlebox or a
//! broker that lost a subscription does: the connection stays up and keep-alives still get
//! their answers, but no PUBLISH reaches the client any more. New connections pass normally.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The proxy; dropped, it stops accepting (open connections end with their peers).
pub struct MqttProxy {
    port: u16,
    /// Connections numbered at or below this drop broker-to-client PUBLISH packets.
    silenced_through: Arc<AtomicU64>,
    last_connection: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl MqttProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> anyhow::Result<MqttProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let silenced_through = Arc::new(AtomicU64::new(0));
        let last_connection = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (s, l, d) = (
            Arc::clone(&silenced_through),
            Arc::clone(&last_connection),
            Arc::clone(&dropped),
        );
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = l.fetch_add(1, Ordering::SeqCst) + 1;
                let (s, d) = (Arc::clone(&s), Arc::clone(&d));
                tokio::spawn(async move {
                    if let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        forward(client, broker, id, s, d).await;
                    }
                });
            }
        });
        Ok(MqttProxy {
            port,
            silenced_through,
            last_connection,
            dropped,
            task,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, every connection open so far receives no PUBLISH (pings still pass).
    pub fn silence_open_connections(&self) {
        self.silenced_through.store(
            self.last_connection.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.last_connection.load(Ordering::SeqCst)
    }

    /// PUBLISH packets withheld so far.
    pub fn dropped_publishes(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for MqttProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    client: TcpStream,
    broker: TcpStream,
    id: u64,
    silenced_through: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut broker_rx, mut broker_tx) = broker.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_rx, &mut broker_tx).await;
        let _ = broker_tx.shutdown().await;
    });
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match broker_rx.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        // Forward whole packets, withholding PUBLISH (type 3) once silenced.
        let mut start = 0;
        while let Some(len) = packet_len(&buffer[start..]) {
            let packet = &buffer[start..start + len];
            let silenced = id <= silenced_through.load(Ordering::SeqCst);
            if silenced && packet[0] >> 4 == 3 {
                dropped.fetch_add(1, Ordering::SeqCst);
            } else if client_tx.write_all(packet).await.is_err() {
                break 'read;
            }
            start += len;
        }
        buffer.drain(..start);
    }
    upstream.abort();
}

/// Length of the whole MQTT packet at the start of `bytes`, if it is complete.
fn packet_len(bytes: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    let mut shift = 0;
    for (i, &b) in bytes.iter().enumerate().skip(1).take(4) {
        remaining |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            let total = 1 + i + remaining;
            return (bytes.len() >= total).then_some(total);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::packet_len;

    #[test]
    fn frames_packets_by_their_remaining_length() {
        assert_eq!(packet_len(&[0xd0, 0x00]), Some(2));
        assert_eq!(packet_len(&[0x30, 0x03, 1, 2]), None);
        assert_eq!(packet_len(&[0x30, 0x03, 1, 2, 3, 9]), Some(5));
        let mut long = vec![0x30, 0xc8, 0x01];
        long.extend(std::iter::repeat_n(0u8, 200));
        assert_eq!(packet_len(&long), Some(203));
        assert_eq!(packet_len(&[0x30]), None);
    }
}
