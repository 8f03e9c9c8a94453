//! The ingest's MQTT sessions: one task per connection, manual acknowledgements bound to the
//! connection they belong to, reconnects with a delay the caller chooses, subscription on every
//! connection (a broker may restore a session without its subscriptions), forced reconnects
//! for the stall watchdog, and the broker's `$SYS` counters.
//!
//! Every connection attempt gets a fresh rumqttc client and event loop, numbered by an
//! *epoch*. A delivery carries its epoch and [`Subscriber::ack`] sends the PUBACK only through
//! the client of that epoch: an acknowledgement can therefore never reach a later connection,
//! where the broker may have given the same packet id to another message. The broker resends
//! what was not acknowledged (with DUP set) on the next connection instead.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a connection must have lasted for the reconnect delay to start over.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// The largest packet MQTT can carry (a 4-byte remaining length).
const MQTT_MAX_PACKET_BYTES: usize = 268_435_455;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 5.
    V5,
    /// MQTT 3.1.1.
    V311,
}

/// TLS settings for the broker connections: the trusted CAs and an optional client
/// certificate, on an explicit crypto provider (the process may link more than one, and
/// rustls then has no default).
#[derive(Clone)]
pub struct Tls {
    config: std::sync::Arc<rustls::ClientConfig>,
}

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA or client PEM is not what it should be.
    #[error("{what}: {reason}")]
    Pem {
        /// Which material.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl Tls {
    /// From the PEM of the CA(s) that signed the broker's certificate and, for brokers that
    /// require one, a PEM client certificate (chain) and key.
    pub fn from_pem(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> Result<Tls, TlsError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let pem = |what: &'static str| {
            move |e: rustls_pki_types::pem::Error| TlsError::Pem {
                what,
                reason: e.to_string(),
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("the CA file"))?;
        if cas.is_empty() {
            return Err(TlsError::Pem {
                what: "the CA file",
                reason: "holds no certificate".into(),
            });
        }
        for ca in cas {
            roots.add(ca).map_err(|e| TlsError::Pem {
                what: "the CA file",
                reason: e.to_string(),
            })?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pem {
                what: "the TLS settings",
                reason: e.to_string(),
            })?
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(pem("the client certificate"))?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(pem("the client key"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Pem {
                        what: "the client certificate and key",
                        reason: e.to_string(),
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Tls {
            config: std::sync::Arc::new(config),
        })
    }
}

/// Delays between reconnect attempts of one connection (the caller's capped, jittered
/// backoff: rumqttc alone would reconnect at once, forever).
pub trait ReconnectDelay: Send + Sync + 'static {
    /// The delay before the next attempt.
    fn next_delay(&mut self) -> Duration;
    /// Called once a connection is accepted.
    fn reset(&mut self);
}

/// How to connect and what to subscribe to.
pub struct SubscriberOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Protocol version.
    pub protocol: Protocol,
    /// Client id prefix; connection `n` is `<client_id>-<n>`.
    pub client_id: String,
    /// Number of connections (sessions).
    pub connections: u16,
    /// Shared-subscription group, if subscriptions are shared.
    pub shared_group: Option<String>,
    /// Topic filters (without `$share/...`), subscribed at QoS 1 on every connection.
    pub filters: Vec<String>,
    /// MQTT 5 session expiry.
    pub session_expiry: Duration,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// MQTT 5 Receive Maximum.
    pub receive_maximum: u16,
    /// Largest packet accepted.
    pub max_packet_bytes: u32,
    /// Time to wait for a CONNACK.
    pub connect_timeout: Duration,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS, or plain TCP.
    pub tls: Option<Tls>,
    /// Subscribe to `$SYS/broker/#` counters on connection 0.
    pub sys_topics: bool,
    /// Makes the reconnect delay policy of connection `n`.
    pub reconnect_delay: Box<dyn Fn(u16) -> Box<dyn ReconnectDelay> + Send + Sync>,
    /// Retiring: each connection unsubscribes its filters instead of subscribing them, so that
    /// the sessions receive what the broker queued for them and nothing new (see
    /// [`end_sessions`] for the last step).
    pub retire: bool,
}

/// One message the broker delivered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Connection number it arrived on.
    pub connection: u16,
    /// The connection attempt it arrived on (see [`Subscriber::ack`]).
    pub epoch: u64,
    /// Packet identifier (0 for QoS 0).
    pub pkid: u16,
    /// QoS of the delivery (0 or 1).
    pub qos: u8,
    /// The broker resends a message it had sent before.
    pub dup: bool,
    /// Sent because it was retained, not live.
    pub retain: bool,
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
}

/// What the connections report.
#[derive(Debug, Clone)]
pub enum SubscriberEvent {
    /// A message to store (and then acknowledge).
    Message(Delivery),
    /// A connection was accepted.
    Connected {
        /// Connection number.
        connection: u16,
        /// Whether the broker still had the session (its queued messages). The filters are
        /// subscribed on every connection all the same.
        session_present: bool,
    },
    /// A connection ended or could not be made; it is retried after a delay.
    Disconnected {
        /// Connection number.
        connection: u16,
        /// What went wrong.
        error: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// The broker answered a connection's subscription: from then on it delivers what
    /// matches the filters it accepted.
    Subscribed {
        /// Connection number.
        connection: u16,
        /// Filters the broker accepted.
        accepted: usize,
        /// The filters it refused, each with its reason.
        refused: Vec<String>,
    },
    /// The broker confirmed a retiring connection's unsubscribe: nothing new comes to its
    /// session, only what was queued for it before.
    Unsubscribed {
        /// Connection number.
        connection: u16,
    },
    /// A `$SYS` counter of the broker.
    BrokerStat {
        /// Topic below `$SYS/broker/`, e.g. `publish/messages/dropped`.
        name: String,
        /// Its value.
        value: f64,
    },
}

/// The client of the current attempt of one connection.
type AckSlot = Mutex<Option<(u64, Client)>>;

struct Connection {
    /// Acknowledgements for the forwarder, in the order they must go out.
    acks: mpsc::UnboundedSender<(u64, u16)>,
    connected_since: Arc<Mutex<Option<Instant>>>,
    task: JoinHandle<()>,
    forwarder: JoinHandle<()>,
}

/// The running connections.
pub struct Subscriber {
    connections: Vec<Connection>,
    reconnect: watch::Sender<u64>,
    cancel: CancellationToken,
    sent_acks: Arc<AtomicU64>,
}

impl Subscriber {
    /// Starts the connections; their events go to `events` (bounded: a slow consumer holds
    /// the connections back, and the broker holds the messages).
    pub fn start(
        options: SubscriberOptions,
        events: mpsc::Sender<SubscriberEvent>,
        cancel: CancellationToken,
    ) -> Subscriber {
        let (reconnect, reconnect_rx) = watch::channel(0u64);
        let options = Arc::new(options);
        let sent_acks = Arc::new(AtomicU64::new(0));
        let connections = (0..options.connections.max(1))
            .map(|n| {
                let slot = Arc::new(Mutex::new(None));
                let connected_since = Arc::new(Mutex::new(None));
                let (acks, acks_rx) = mpsc::unbounded_channel();
                let forwarder = tokio::spawn(forward_acks(
                    acks_rx,
                    Arc::clone(&slot),
                    Arc::clone(&sent_acks),
                ));
                let task = tokio::spawn(run_connection(ConnectionTask {
                    n,
                    options: Arc::clone(&options),
                    events: events.clone(),
                    slot: Arc::clone(&slot),
                    connected_since: Arc::clone(&connected_since),
                    reconnect: reconnect_rx.clone(),
                    cancel: cancel.clone(),
                    delay: (options.reconnect_delay)(n),
                    unsubscribes_answered: 0,
                }));
                Connection {
                    acks,
                    connected_since,
                    task,
                    forwarder,
                }
            })
            .collect();
        Subscriber {
            connections,
            reconnect,
            cancel,
            sent_acks,
        }
    }

    /// Sends the PUBACK of a delivery if its connection attempt is still the current one
    /// when its turn comes (otherwise the broker sends the message again on the new
    /// connection). Acknowledgements of one connection go out in the order of the calls; a full
    /// request queue delays them, never drops them.
    pub fn ack(&self, connection: u16, epoch: u64, pkid: u16) {
        if let Some(c) = self.connections.get(usize::from(connection)) {
            // Closed only at shutdown, when the broker keeps what was not acknowledged.
            let _ = c.acks.send((epoch, pkid));
        }
    }

    /// PUBACKs handed to their connection so far.
    pub fn sent_acks(&self) -> u64 {
        self.sent_acks.load(Ordering::Relaxed)
    }

    /// Drops every connection and connects (and subscribes) again: the stall watchdog's
    /// remedy.
    pub fn reconnect_all(&self) {
        self.reconnect.send_modify(|n| *n += 1);
    }

    /// How long every connection has been up; `None` if any is down.
    pub fn all_connected_for(&self, now: Instant) -> Option<Duration> {
        self.connections
            .iter()
            .map(|c| {
                c.connected_since
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map(|since| now.saturating_duration_since(since))
            })
            .try_fold(Duration::MAX, |shortest, up| up.map(|up| shortest.min(up)))
    }

    /// Connections currently up.
    pub fn connected(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| {
                c.connected_since
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some()
            })
            .count()
    }

    /// Disconnects cleanly (the sessions stay at the broker) and waits for the tasks.
    pub async fn shutdown(self, deadline: Duration) {
        self.cancel.cancel();
        for c in self.connections {
            let abort = c.task.abort_handle();
            if tokio::time::timeout(deadline, c.task).await.is_err() {
                abort.abort();
            }
            c.forwarder.abort();
        }
    }
}

struct ConnectionTask {
    n: u16,
    options: Arc<SubscriberOptions>,
    events: mpsc::Sender<SubscriberEvent>,
    slot: Arc<AckSlot>,
    connected_since: Arc<Mutex<Option<Instant>>>,
    reconnect: watch::Receiver<u64>,
    cancel: CancellationToken,
    delay: Box<dyn ReconnectDelay>,
    /// UNSUBACKs received on the current attempt of a retiring connection.
    unsubscribes_answered: usize,
}

/// What one poll of the event loop gave.
enum Polled {
    ConnAck {
        session_present: bool,
    },
    Publish(Delivery),
    SubAck {
        accepted: usize,
        /// Position in the SUBSCRIBE of each filter refused, with the broker's reason.
        refused: Vec<(usize, String)>,
    },
    UnsubAck,
    Disconnect(String),
    Other,
}

#[derive(Clone)]
enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

enum EventLoop {
    V4(rumqttc::EventLoop),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Hands the acknowledgements of one connection to the client of their attempt, waiting when
/// its request queue is full (rumqttc takes one request per turn of its event loop, while a
/// turn may bring many deliveries). Acknowledgements of an earlier attempt are dropped.
async fn forward_acks(
    mut acks: mpsc::UnboundedReceiver<(u64, u16)>,
    slot: Arc<AckSlot>,
    sent: Arc<AtomicU64>,
) {
    while let Some((epoch, pkid)) = acks.recv().await {
        let client = match &*slot.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((current, client)) if *current == epoch => client.clone(),
            // An earlier attempt's: the broker sends that message again.
            _ => continue,
        };
        if client.ack(pkid).await.is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Client {
    async fn ack(&self, pkid: u16) -> Result<(), String> {
        match self {
            Client::V4(c) => {
                let mut p = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::new());
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let mut p = rumqttc::v5::mqttbytes::v5::Publish::new(
                    "",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    Vec::new(),
                    None,
                );
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
        }
    }

    fn try_subscribe(&self, filters: &[(String, u8)]) -> Result<(), String> {
        match self {
            Client::V4(c) => {
                let filters = filters.iter().map(|(f, qos)| {
                    let qos = if *qos == 0 {
                        rumqttc::QoS::AtMostOnce
                    } else {
                        rumqttc::QoS::AtLeastOnce
                    };
                    rumqttc::SubscribeFilter::new(f.clone(), qos)
                });
                c.try_subscribe_many(filters).map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                use rumqttc::v5::mqttbytes::{
                    QoS,
                    v5::{Filter, RetainForwardRule},
                };
                let filters = filters.iter().map(|(f, qos)| {
                    let qos = if *qos == 0 {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    let mut filter = Filter::new(f.clone(), qos);
                    // Subscribing again on every connection must not replay retained values.
                    filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
                    filter
                });
                c.try_subscribe_many(filters).map_err(|e| e.to_string())
            }
        }
    }

    fn try_unsubscribe(&self, filters: &[(String, u8)]) -> Result<(), String> {
        for (filter, _) in filters {
            match self {
                Client::V4(c) => c.try_unsubscribe(filter.clone()).map_err(|e| e.to_string()),
                Client::V5(c) => c.try_unsubscribe(filter.clone()).map_err(|e| e.to_string()),
            }?;
        }
        Ok(())
    }

    fn try_disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    async fn poll(&mut self, connection: u16, epoch: u64) -> Result<Polled, String> {
        match self {
            EventLoop::V4(l) => {
                use rumqttc::{Event, Packet};
                match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(ack)) => Ok(Polled::ConnAck {
                        session_present: ack.session_present,
                    }),
                    Event::Incoming(Packet::Publish(p)) => Ok(Polled::Publish(Delivery {
                        connection,
                        epoch,
                        pkid: p.pkid,
                        qos: p.qos as u8,
                        dup: p.dup,
                        retain: p.retain,
                        topic: p.topic,
                        payload: p.payload,
                    })),
                    Event::Incoming(Packet::SubAck(ack)) => {
                        let refused: Vec<(usize, String)> = ack
                            .return_codes
                            .iter()
                            .enumerate()
                            .filter(|(_, c)| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                            .map(|(i, _)| (i, "failure (0x80)".to_owned()))
                            .collect();
                        Ok(Polled::SubAck {
                            accepted: ack.return_codes.len() - refused.len(),
                            refused,
                        })
                    }
                    Event::Incoming(Packet::UnsubAck(_)) => Ok(Polled::UnsubAck),
                    Event::Incoming(Packet::Disconnect) => {
                        Ok(Polled::Disconnect("the broker disconnected".into()))
                    }
                    _ => Ok(Polled::Other),
                }
            }
            EventLoop::V5(l) => {
                use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
                use rumqttc::v5::{Event, Incoming};
                match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Incoming::ConnAck(ack)) => Ok(Polled::ConnAck {
                        session_present: ack.session_present,
                    }),
                    Event::Incoming(Packet::Publish(p)) => Ok(Polled::Publish(Delivery {
                        connection,
                        epoch,
                        pkid: p.pkid,
                        qos: p.qos as u8,
                        dup: p.dup,
                        retain: p.retain,
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                    })),
                    Event::Incoming(Packet::SubAck(ack)) => {
                        let refused: Vec<(usize, String)> = ack
                            .return_codes
                            .iter()
                            .enumerate()
                            .filter(|(_, c)| !matches!(c, SubscribeReasonCode::Success(_)))
                            .map(|(i, c)| (i, format!("{c:?}")))
                            .collect();
                        Ok(Polled::SubAck {
                            accepted: ack.return_codes.len() - refused.len(),
                            refused,
                        })
                    }
                    Event::Incoming(Packet::UnsubAck(_)) => Ok(Polled::UnsubAck),
                    Event::Incoming(Packet::Disconnect(d)) => Ok(Polled::Disconnect(format!(
                        "the broker disconnected: {:?}",
                        d.reason_code
                    ))),
                    _ => Ok(Polled::Other),
                }
            }
        }
    }
}

/// Each refused filter of a SUBACK named by its filter (the broker gives only positions in
/// the SUBSCRIBE), with the broker's reason.
fn name_refusals(subscribed: &[(String, u8)], refused: Vec<(usize, String)>) -> Vec<String> {
    refused
        .into_iter()
        .map(|(i, reason)| match subscribed.get(i) {
            Some((filter, _)) => format!("{filter}: {reason}"),
            None => format!("filter #{i} (not one this connection sent): {reason}"),
        })
        .collect()
}

impl ConnectionTask {
    fn client_id(&self) -> String {
        format!("{}-{}", self.options.client_id, self.n)
    }

    /// The filters this connection subscribes to, with their QoS.
    fn filters(&self) -> Vec<(String, u8)> {
        let o = &self.options;
        let mut filters: Vec<(String, u8)> = o
            .filters
            .iter()
            .map(|f| match &o.shared_group {
                Some(group) => (format!("$share/{group}/{f}"), 1),
                None => (f.clone(), 1),
            })
            .collect();
        if o.sys_topics && self.n == 0 {
            filters.push(("$SYS/broker/#".into(), 0));
        }
        filters
    }

    /// How many filters a retiring connection unsubscribes (each answered by one UNSUBACK).
    fn unsubscribe_count(&self) -> usize {
        self.options.filters.len()
    }

    fn new_client(&self) -> (Client, EventLoop) {
        self.client_with(false)
    }

    /// A client of this connection's session; `clean` asks the broker to discard the session
    /// (and, on MQTT 5, to keep nothing after the connection).
    fn client_with(&self, clean: bool) -> (Client, EventLoop) {
        let o = &self.options;
        // Acknowledgements and subscribes go through this queue; it must hold a full window.
        let capacity = usize::from(o.receive_maximum) * 2 + 256;
        let transport = o.tls.as_ref().map(|tls| {
            rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
                std::sync::Arc::clone(&tls.config),
            ))
        });
        match o.protocol {
            Protocol::V311 => {
                let mut m = rumqttc::MqttOptions::new(self.client_id(), &o.host, o.port);
                // 3.1.1 has no way to tell the broker a packet limit: a larger message comes
                // anyway, and refusing it would fail the session on it after every reconnect.
                // Take whatever the broker sends (its own limit bounds it); the feed rejects it
                // as too large.
                m.set_keep_alive(o.keep_alive)
                    .set_clean_session(clean)
                    .set_manual_acks(true)
                    .set_max_packet_size(MQTT_MAX_PACKET_BYTES, o.max_packet_bytes as usize);
                if let Some((user, password)) = &o.credentials {
                    m.set_credentials(user, password);
                }
                if let Some(t) = transport {
                    m.set_transport(t);
                }
                let (client, mut l) = rumqttc::AsyncClient::new(m, capacity);
                let mut network = rumqttc::NetworkOptions::new();
                network.set_connection_timeout(o.connect_timeout.as_secs().max(1));
                l.set_network_options(network);
                (Client::V4(client), EventLoop::V4(l))
            }
            Protocol::V5 => {
                let mut m = rumqttc::v5::MqttOptions::new(self.client_id(), &o.host, o.port);
                m.set_keep_alive(o.keep_alive)
                    .set_clean_start(clean)
                    .set_manual_acks(true)
                    .set_session_expiry_interval(Some(if clean {
                        0
                    } else {
                        u32::try_from(o.session_expiry.as_secs()).unwrap_or(u32::MAX)
                    }))
                    .set_receive_maximum(Some(o.receive_maximum))
                    .set_max_packet_size(Some(o.max_packet_bytes))
                    .set_connection_timeout(o.connect_timeout.as_secs().max(1));
                if let Some((user, password)) = &o.credentials {
                    m.set_credentials(user, password);
                }
                if let Some(t) = transport {
                    m.set_transport(t);
                }
                let (client, l) = rumqttc::v5::AsyncClient::new(m, capacity);
                (Client::V5(client), EventLoop::V5(Box::new(l)))
            }
        }
    }

    fn set_connected(&self, up: bool) {
        *self
            .connected_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = up.then(Instant::now);
    }

    async fn emit(&self, event: SubscriberEvent) -> bool {
        tokio::select! {
            sent = self.events.send(event) => sent.is_ok(),
            () = self.cancel.cancelled() => false,
        }
    }
}

/// The last step of retiring: connects each connection's client id once with a clean
/// session, which makes the broker discard the session it kept (its shared-subscription share
/// and anything still queued), then disconnects. Run it only after everything the sessions
/// delivered is stored: what the broker still held for them is gone afterwards.
pub async fn end_sessions(options: SubscriberOptions) -> Result<(), String> {
    let options = Arc::new(options);
    for n in 0..options.connections.max(1) {
        let (_, reconnect) = watch::channel(0u64);
        let (events, _) = mpsc::channel(1);
        let task = ConnectionTask {
            n,
            options: Arc::clone(&options),
            events,
            slot: Arc::new(Mutex::new(None)),
            connected_since: Arc::new(Mutex::new(None)),
            reconnect,
            cancel: CancellationToken::new(),
            delay: (options.reconnect_delay)(n),
            unsubscribes_answered: 0,
        };
        let (client, mut event_loop) = task.client_with(true);
        let connected = tokio::time::timeout(options.connect_timeout * 2, async {
            loop {
                match event_loop.poll(n, 0).await? {
                    Polled::ConnAck { .. } => return Ok(()),
                    Polled::Disconnect(reason) => return Err(reason),
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| format!("{}: no CONNACK in time", task.client_id()))?;
        connected.map_err(|e| format!("{}: {e}", task.client_id()))?;
        client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while event_loop.poll(n, 0).await.is_ok() {}
        })
        .await;
    }
    Ok(())
}

/// Why one attempt ended.
enum Ended {
    Cancelled,
    Forced,
    Failed(String),
}

async fn run_connection(mut task: ConnectionTask) {
    let mut epoch = 0u64;
    loop {
        epoch += 1;
        let (client, mut event_loop) = task.new_client();
        *task.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((epoch, client.clone()));
        task.reconnect.mark_unchanged();
        let ended = attempt(&mut task, &client, &mut event_loop, epoch).await;
        // The delay starts over only after a connection that held: one that fails right after
        // connecting (a packet it cannot take, a broker refusing it) backs off as if it never
        // connected, instead of reconnecting ten times a second.
        let held = task
            .connected_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|since| since.elapsed() >= STABLE_CONNECTION);
        if held {
            task.delay.reset();
        }
        task.set_connected(false);
        *task.slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
        match ended {
            Ended::Cancelled => {
                // A clean DISCONNECT keeps the session; give it a moment to go out.
                client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while event_loop.poll(task.n, epoch).await.is_ok() {}
                })
                .await;
                return;
            }
            Ended::Forced => drop(event_loop),
            Ended::Failed(error) => {
                drop(event_loop);
                let retry_in = task.delay.next_delay();
                let n = task.n;
                if !task
                    .emit(SubscriberEvent::Disconnected {
                        connection: n,
                        error,
                        retry_in,
                    })
                    .await
                {
                    return;
                }
                tokio::select! {
                    () = task.cancel.cancelled() => return,
                    () = tokio::time::sleep(retry_in) => {}
                }
            }
        }
    }
}

async fn attempt(
    task: &mut ConnectionTask,
    client: &Client,
    event_loop: &mut EventLoop,
    epoch: u64,
) -> Ended {
    loop {
        let polled = tokio::select! {
            () = task.cancel.cancelled() => return Ended::Cancelled,
            changed = task.reconnect.changed() => {
                if changed.is_err() {
                    return Ended::Cancelled;
                }
                return Ended::Forced;
            }
            polled = event_loop.poll(task.n, epoch) => polled,
        };
        let event = match polled {
            Err(error) => return Ended::Failed(error),
            Ok(Polled::Other) => continue,
            Ok(Polled::ConnAck { session_present }) => {
                task.set_connected(true);
                if task.options.retire {
                    // The broker's own statistics are not the session's share: left alone.
                    let shared: Vec<(String, u8)> = task
                        .filters()
                        .into_iter()
                        .filter(|(f, _)| !f.starts_with("$SYS/"))
                        .collect();
                    if let Err(error) = client.try_unsubscribe(&shared) {
                        return Ended::Failed(format!("cannot unsubscribe: {error}"));
                    }
                // Subscribe on every connection, also when the broker says it kept the session:
                // mosquitto 2.0 restores a persisted session without its shared subscriptions
                // (measured: session present, nothing delivered). Subscribing again is harmless.
                } else if let Err(error) = client.try_subscribe(&task.filters()) {
                    return Ended::Failed(format!("cannot subscribe: {error}"));
                }
                SubscriberEvent::Connected {
                    connection: task.n,
                    session_present,
                }
            }
            Ok(Polled::UnsubAck) => {
                task.unsubscribes_answered += 1;
                // One UNSUBACK per filter unsubscribed.
                if task.unsubscribes_answered < task.unsubscribe_count() {
                    continue;
                }
                task.unsubscribes_answered = 0;
                SubscriberEvent::Unsubscribed { connection: task.n }
            }
            Ok(Polled::SubAck { accepted, refused }) => SubscriberEvent::Subscribed {
                connection: task.n,
                accepted,
                refused: name_refusals(&task.filters(), refused),
            },
            Ok(Polled::Disconnect(reason)) => return Ended::Failed(reason),
            Ok(Polled::Publish(delivery)) => {
                if let Some(name) = delivery.topic.strip_prefix("$SYS/broker/") {
                    let value = std::str::from_utf8(&delivery.payload)
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok());
                    match value {
                        Some(value) => SubscriberEvent::BrokerStat {
                            name: name.to_owned(),
                            value,
                        },
                        None => continue,
                    }
                } else {
                    SubscriberEvent::Message(delivery)
                }
            }
        };
        if !task.emit(event).await {
            return Ended::Cancelled;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_subscription_is_named_by_its_filter() {
        let subscribed = vec![
            ("$share/ioc/danang/water/#".to_owned(), 1),
            ("danang/air/#".to_owned(), 1),
            ("$SYS/broker/#".to_owned(), 0),
        ];
        let named = name_refusals(
            &subscribed,
            vec![(1, "NotAuthorized".into()), (7, "failure (0x80)".into())],
        );
        assert_eq!(
            named,
            [
                "danang/air/#: NotAuthorized",
                "filter #7 (not one this connection sent): failure (0x80)",
            ]
        );
    }
}
