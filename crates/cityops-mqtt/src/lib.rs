//! MQTT for cityops, built on rumqttc: the QoS 1 publisher the simulator and benchmarks use,
//! and the ingest's subscribing sessions (`subscriber`).

mod subscriber;

pub use subscriber::{
    Delivery, Protocol, ReconnectDelay, Subscriber, SubscriberEvent, SubscriberOptions, Tls,
    TlsError, end_sessions,
};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// What can go wrong publishing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client's request queue is closed (its event loop ended).
    #[error("MQTT client for {address} stopped: {message}")]
    Closed {
        /// `host:port`.
        address: String,
        /// What rumqttc said.
        message: String,
    },
    /// Messages were still unacknowledged when the flush deadline passed.
    #[error("{pending} message(s) not acknowledged within {timeout:?}")]
    Flush {
        /// Messages without PUBACK.
        pending: u64,
        /// The deadline.
        timeout: Duration,
    },
}

/// One connection: the client handle, its acknowledgement counter and its event-loop task.
struct Connection {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// Publishes at QoS 1 over several connections, to go beyond one connection's in-flight window;
/// counts PUBACKs. A full request queue makes [`Publisher::publish`] wait, never drop.
pub struct Publisher {
    address: String,
    connections: Vec<Connection>,
    next: usize,
    sent: u64,
}

impl Publisher {
    /// Connects `connections` clients to `host:port` (client ids `<client_id>-<n>`).
    pub fn connect(host: &str, port: u16, client_id: &str, connections: usize) -> Self {
        Publisher::connect_as(host, port, client_id, connections, None)
    }

    /// Like [`Publisher::connect`], with a user name and password.
    pub fn connect_as(
        host: &str,
        port: u16,
        client_id: &str,
        connections: usize,
        credentials: Option<(&str, &str)>,
    ) -> Self {
        let address = format!("{host}:{port}");
        let connections = (0..connections.max(1))
            .map(|n| {
                let mut options = MqttOptions::new(format!("{client_id}-{n}"), host, port);
                options.set_keep_alive(Duration::from_secs(30));
                options.set_inflight(200);
                // Large enough for the tests' oversized payloads (the broker has its own limit).
                options.set_max_packet_size(1024 * 1024, 64 * 1024 * 1024);
                if let Some((user, password)) = credentials {
                    options.set_credentials(user, password);
                }
                let (client, mut events) = AsyncClient::new(options, 1000);
                let acked = Arc::new(AtomicU64::new(0));
                let errors = Arc::new(AtomicU64::new(0));
                let (a, e) = (Arc::clone(&acked), Arc::clone(&errors));
                let task = tokio::spawn(async move {
                    loop {
                        match events.poll().await {
                            Ok(Event::Incoming(Packet::PubAck(_))) => {
                                a.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => {
                                // rumqttc reconnects on the next poll; unacknowledged QoS 1
                                // messages are resent. Back off so a dead broker is not hammered.
                                e.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                });
                Connection {
                    client,
                    acked,
                    errors,
                    task,
                }
            })
            .collect();
        Publisher {
            address,
            connections,
            next: 0,
            sent: 0,
        }
    }

    /// Publishes one message at QoS 1 (round-robin over the connections).
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), Error> {
        let connection = &self.connections[self.next];
        self.next = (self.next + 1) % self.connections.len();
        connection
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .map_err(|e| Error::Closed {
                address: self.address.clone(),
                message: e.to_string(),
            })?;
        self.sent += 1;
        Ok(())
    }

    /// Messages handed to the clients so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// PUBACKs received so far.
    pub fn acked(&self) -> u64 {
        self.connections
            .iter()
            .map(|c| c.acked.load(Ordering::Relaxed))
            .sum()
    }

    /// Connection errors seen so far (each followed by a reconnect attempt).
    pub fn connection_errors(&self) -> u64 {
        self.connections
            .iter()
            .map(|c| c.errors.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until every published message is acknowledged, up to `timeout`, then disconnects.
    pub async fn finish(self, timeout: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.acked() < self.sent && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pending = self.sent.saturating_sub(self.acked());
        for connection in &self.connections {
            let _ = connection.client.disconnect().await;
        }
        for connection in self.connections {
            connection.task.abort();
        }
        if pending > 0 {
            return Err(Error::Flush { pending, timeout });
        }
        Ok(())
    }
}
