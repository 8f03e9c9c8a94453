//! MQTT to ClickHouse. Two threads and the writer task:
//!
//! - the **receiver** takes deliveries from the sessions (`cityops_mqtt::Subscriber`), appends
//!   them to the spool, syncs (one fdatasync for everything that arrived meanwhile), and only
//!   then sends their PUBACKs, in the order received; it also runs the stall watchdog and
//!   reads the broker's `$SYS` counters;
//! - the **pipeline** (the calling thread) reads the spool in sequence order up to what is
//!   synced, decodes, batches and hands batches to the writer; what the writer stored lets the
//!   receiver delete spool segments.
//!
//! ARCHITECTURE.md ("MQTT ingest") explains why no acknowledged message is lost or stored
//! twice, and how throughput survives the broker's small in-flight window.

use crate::batch::{Batch, BatchBuilder, ReplayFilter};
use crate::held::Held;
use crate::pipeline::{Decoder, Done, Received, Summary, WriterTask, limits, start_writer};
use crate::sequence::SequenceTracker;
use crate::spool::{Appended, Arrival, Spool, SpoolReader, SpoolSettings};
use crate::{Error, IngestMetrics};
use cityops_clickhouse::ClickHouse;
use cityops_config::{Config, SourceKind};
use cityops_event::{SourceCoordinates, Timestamp};
use cityops_mqtt::{Delivery, Subscriber, SubscriberEvent};
use cityops_telemetry::{Readiness, ReadinessHandle};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SOURCE: &str = "mqtt";
/// How long a sequence gap may stay open before it is counted.
const GAP_GRACE_MS: i64 = 10_000;
/// How often gap and broker-drop summaries may be logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What the receiver tells the pipeline: the synced sequence number and whether it finished.
struct Durable {
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Durable {
    fn set(&self, seq: u64, finished: bool) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.0 = s.0.max(seq);
        s.1 |= finished;
        self.changed.notify_all();
    }

    fn get(&self) -> (u64, bool) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_beyond(&self, seq: u64, timeout: Duration) {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.0 > seq || s.1 {
            return;
        }
        let _ = self
            .changed
            .wait_timeout(s, timeout)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// A new spool's id: any positive 31-bit number, different per process start.
fn new_spool_id() -> i32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let h = xxhash_rust::xxh3::xxh3_64(
        &[
            nanos.to_le_bytes(),
            u64::from(std::process::id()).to_le_bytes(),
        ]
        .concat(),
    );
    (h >> 33) as i32
}

/// Per-feed stall watchdog state.
struct Watch {
    feed: String,
    timeout: Duration,
    last_message: Instant,
    /// Reconnects since the feed last received something.
    heals: u32,
    /// Whether anything arrived since the start: a feed that never delivered is more likely
    /// denied by the broker (an ACL) or misconfigured than stalled.
    delivered: bool,
}

/// The receiver thread's state.
struct Receiver {
    spool: Spool,
    subscriber: Subscriber,
    metrics: IngestMetrics,
    store_retained: bool,
    /// Per connection: whether the broker confirmed its subscription on the current attempt.
    subscribed: Vec<bool>,
    /// Deliveries not yet spooled because the spool is full, in arrival order.
    held: Held,
    /// QoS 0 deliveries dropped since the spool became full (logged once per episode).
    dropped_while_full: u64,
    /// PUBACKs to send after the next sync, in arrival order.
    acks: Vec<(u16, u64, u16)>,
    durable: Arc<Durable>,
    stored_seq: Arc<AtomicU64>,
    released_to: u64,
    /// MQTT feed number (config order) of each watched feed, and the feeds for topic lookup.
    watches: BTreeMap<usize, Watch>,
    feeds: cityops_feeds::FeedSet,
    broker_dropped: Option<f64>,
    mqtt_ready: ReadinessHandle,
    spool_ready: ReadinessHandle,
    full_since: Option<Instant>,
    /// While the spool's filesystem is full: when to try the sync again.
    disk_full_retry: Option<Instant>,
    sync_delay: Duration,
    /// Retiring (`cityops ingest --retire`): per connection, whether the broker confirmed its
    /// unsubscribe on the current attempt.
    retire: Option<Vec<bool>>,
    /// When the last delivery arrived.
    last_delivery: Instant,
}

impl Receiver {
    fn take(&mut self, event: SubscriberEvent) {
        match event {
            SubscriberEvent::Message(d) => {
                self.last_delivery = Instant::now();
                // Matching the topic costs per message: only when some feed is watched.
                if !self.watches.is_empty()
                    && let Some(i) = self.feeds.position(SourceKind::Mqtt, &d.topic)
                    && let Some(w) = self.watches.get_mut(&i)
                {
                    w.last_message = Instant::now();
                    w.heals = 0;
                    w.delivered = true;
                }
                if self.held.is_empty() {
                    self.append(d);
                } else {
                    self.hold(d);
                }
            }
            SubscriberEvent::Connected {
                connection,
                session_present,
            } => {
                tracing::info!(
                    connection,
                    session_present,
                    "MQTT connection accepted; subscribing"
                );
                // A new attempt (also a forced one): subscribed once the broker says so.
                self.set_subscribed(connection, false);
                if let Some(done) = self
                    .retire
                    .as_mut()
                    .and_then(|r| r.get_mut(usize::from(connection)))
                {
                    *done = false;
                }
            }
            SubscriberEvent::Unsubscribed { connection } => {
                tracing::info!(
                    connection,
                    "retiring: the session unsubscribed; receiving what the broker queued for it"
                );
                if let Some(done) = self
                    .retire
                    .as_mut()
                    .and_then(|r| r.get_mut(usize::from(connection)))
                {
                    *done = true;
                }
            }
            SubscriberEvent::Disconnected {
                connection,
                error,
                retry_in,
            } => {
                self.metrics.mqtt_connection_errors.inc();
                tracing::warn!(
                    connection,
                    %error,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "MQTT connection lost; reconnecting after a delay"
                );
                self.set_subscribed(connection, false);
            }
            SubscriberEvent::Subscribed {
                connection,
                accepted,
                refused,
            } => {
                if !refused.is_empty() {
                    self.metrics.mqtt_subscribe_refusals.inc();
                    tracing::error!(
                        connection,
                        detail = refused.join("; "),
                        "the broker refused a subscription"
                    );
                }
                self.set_subscribed(connection, accepted > 0);
            }
            SubscriberEvent::BrokerStat { name, value } => {
                if name == "publish/messages/dropped" {
                    self.metrics.mqtt_broker_dropped.set(value);
                    if self.broker_dropped.is_none() {
                        tracing::debug!(
                            total = value,
                            "the broker's count of dropped messages read"
                        );
                    }
                    if let Some(before) = self.broker_dropped
                        && value > before
                    {
                        tracing::warn!(
                            dropped = value - before,
                            total = value,
                            "the broker dropped messages (its queue limits; broker-wide count from $SYS)"
                        );
                    }
                    self.broker_dropped = Some(value);
                }
            }
        }
    }

    /// Retiring and done receiving: every session unsubscribed, nothing delivered for
    /// [`RETIRE_QUIET`] (the broker sends what it queued as fast as the acknowledgements
    /// return), and everything received spooled and acknowledged.
    fn retired(&self) -> bool {
        self.retire
            .as_ref()
            .is_some_and(|r| r.iter().all(|done| *done))
            && self.last_delivery.elapsed() >= RETIRE_QUIET
            && self.held.is_empty()
            && self.acks.is_empty()
    }

    fn set_subscribed(&mut self, connection: u16, subscribed: bool) {
        if let Some(s) = self.subscribed.get_mut(usize::from(connection)) {
            *s = subscribed;
        }
        self.update_connections();
    }

    fn update_connections(&mut self) {
        let up = self.subscriber.connected();
        let subscribed = self.subscribed.iter().filter(|s| **s).count();
        self.metrics.mqtt_connections.set(up as f64);
        self.metrics.mqtt_subscribed.set(subscribed as f64);
        // Ready once the broker delivers to at least one session.
        self.mqtt_ready.set_ready(subscribed > 0);
    }

    /// Spools one delivery (or holds it if the spool is full); queues its PUBACK.
    fn append(&mut self, d: Delivery) {
        if let Err(d) = self.try_append(d) {
            if self.full_since.is_none() {
                self.full_since = Some(Instant::now());
                self.metrics.spool_full.set(1.0);
                self.spool_ready.set_ready(false);
                tracing::warn!(
                    spool_bytes = self.spool.bytes(),
                    "spool full: acknowledging nothing more until ClickHouse catches up (the broker keeps the messages)"
                );
            }
            self.hold(d);
        }
    }

    /// Holds a delivery the spool cannot take yet, dropping the oldest QoS 0 ones beyond
    /// `mqtt.spool.held_qos0_max_bytes`.
    fn hold(&mut self, d: Delivery) {
        let dropped = self.held.push_back(d);
        if dropped > 0 {
            if self.dropped_while_full == 0 {
                tracing::warn!(
                    held_qos0_bytes = self.held.qos0_bytes(),
                    "spool full and the QoS 0 deliveries held in memory reached mqtt.spool.held_qos0_max_bytes: dropping the oldest (the broker keeps no copy of them)"
                );
            }
            self.dropped_while_full += dropped;
            self.metrics.mqtt_qos0_dropped.inc_by(dropped as f64);
        }
        self.metrics
            .mqtt_held_qos0_bytes
            .set(self.held.qos0_bytes() as f64);
    }

    /// Spools one delivery and queues its PUBACK; gives it back if the spool is full.
    fn try_append(&mut self, d: Delivery) -> Result<(), Delivery> {
        if self.disk_full_retry.is_some() {
            return Err(d);
        }
        if d.retain && !self.store_retained {
            self.metrics.mqtt_retained_skipped.inc();
            if d.qos > 0 {
                self.acks.push((d.connection, d.epoch, d.pkid));
            }
            return Ok(());
        }
        match self.spool.append(&Arrival {
            received_ms: crate::pipeline::now().as_millis(),
            connection: d.connection,
            epoch: d.epoch,
            pkid: d.pkid,
            qos1: d.qos > 0,
            dup: d.dup,
            retain: d.retain,
            topic: &d.topic,
            payload: &d.payload,
        }) {
            Appended::New(_) => {
                if d.qos > 0 {
                    self.acks.push((d.connection, d.epoch, d.pkid));
                }
                Ok(())
            }
            Appended::Resend => {
                self.metrics.mqtt_resends.inc();
                self.acks.push((d.connection, d.epoch, d.pkid));
                Ok(())
            }
            Appended::Full => Err(d),
        }
    }

    /// Syncs what was appended, then sends the PUBACKs.
    fn sync_and_ack(&mut self) -> Result<(), crate::spool::SpoolError> {
        if self.spool.needs_sync() {
            if self.disk_full_retry.is_some_and(|at| Instant::now() < at) {
                return Ok(());
            }
            let started = Instant::now();
            match self.spool.sync() {
                Ok(durable) => {
                    self.metrics
                        .spool_sync_duration
                        .observe(started.elapsed().as_secs_f64());
                    self.durable.set(durable, false);
                    if self.disk_full_retry.take().is_some() {
                        tracing::info!("spool's filesystem has room again; acknowledging");
                    }
                }
                Err(error @ crate::spool::SpoolError::NoSpace { .. }) => {
                    // Nothing of what waits for this sync is acknowledged; the broker keeps
                    // it (and stops sending once its in-flight window is full).
                    if self.disk_full_retry.is_none() {
                        tracing::warn!(
                            %error,
                            "spool's filesystem is full: acknowledging nothing more until there is room"
                        );
                        self.full_since.get_or_insert_with(Instant::now);
                        self.metrics.spool_full.set(1.0);
                        self.spool_ready.set_ready(false);
                    }
                    self.disk_full_retry = Some(Instant::now() + Duration::from_secs(1));
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
        for (connection, epoch, pkid) in self.acks.drain(..) {
            self.subscriber.ack(connection, epoch, pkid);
        }
        // The forwarders send asynchronously: the counter follows what they handed over.
        let sent = self.subscriber.sent_acks() as f64;
        self.metrics
            .mqtt_acks
            .inc_by((sent - self.metrics.mqtt_acks.get()).max(0.0));
        self.metrics.spool_bytes.set(self.spool.bytes() as f64);
        Ok(())
    }

    /// Deletes stored segments and spools held deliveries if there is room again.
    fn release(&mut self) -> Result<(), crate::spool::SpoolError> {
        let stored = self.stored_seq.load(Ordering::SeqCst);
        self.metrics
            .spool_backlog
            .set(self.spool.durable_seq().saturating_sub(stored) as f64);
        if stored > self.released_to {
            self.spool.release(stored)?;
            self.released_to = stored;
        }
        if self.disk_full_retry.is_some() {
            return Ok(());
        }
        while let Some(d) = self.held.pop_front() {
            if let Err(d) = self.try_append(d) {
                // Still full; the order of what is held stays as it arrived.
                self.held.push_front(d);
                break;
            }
        }
        self.metrics
            .mqtt_held_qos0_bytes
            .set(self.held.qos0_bytes() as f64);
        if !self.held.is_empty() {
            return Ok(());
        }
        if self.full_since.take().is_some() {
            self.metrics.spool_full.set(0.0);
            self.spool_ready.set_ready(true);
            let qos0_dropped = std::mem::take(&mut self.dropped_while_full);
            tracing::info!(qos0_dropped, "spool has room again; acknowledging");
        }
        Ok(())
    }

    /// Reconnects if a watched feed went silent while every connection was up.
    fn watchdog(&mut self) {
        let now = Instant::now();
        let Some(up) = self.subscriber.all_connected_for(now) else {
            return;
        };
        let mut stalled = None;
        for w in self.watches.values_mut() {
            let patience = w.timeout * 2u32.pow(w.heals.min(3));
            if up >= w.timeout && now.duration_since(w.last_message) >= patience {
                w.heals += 1;
                w.last_message = now;
                self.metrics.mqtt_stalls.with_label_values(&[&w.feed]).inc();
                stalled = Some((w.feed.clone(), w.timeout, w.heals, w.delivered));
            }
        }
        if let Some((feed, timeout, heals, delivered)) = stalled {
            if delivered {
                tracing::warn!(
                    feed,
                    silent_ms = timeout.as_millis() as u64,
                    attempt = heals,
                    "feed silent while connected: reconnecting and subscribing again"
                );
            } else {
                // mosquitto and most brokers grant a subscription their ACL denies and then
                // deliver nothing: the silence is the only sign.
                tracing::warn!(
                    feed,
                    silent_ms = timeout.as_millis() as u64,
                    attempt = heals,
                    "feed silent while connected, nothing delivered since the start: check that \
                     the broker's ACL lets this user read the feed's topics and that something \
                     publishes there; reconnecting and subscribing again"
                );
            }
            self.subscriber.reconnect_all();
        }
    }
}

/// Runs the receiver until `cancel` (or, retiring, until the sessions have delivered all they
/// had); then spools and acknowledges what arrived, disconnects, and tells the pipeline it
/// finished. Returns whether it ended because retiring was done.
fn receive(
    mut r: Receiver,
    mut events: tokio::sync::mpsc::Receiver<SubscriberEvent>,
    runtime: &tokio::runtime::Handle,
    cancel: &CancellationToken,
    failed: &AtomicBool,
) -> bool {
    let fail = |error: crate::spool::SpoolError| {
        tracing::error!(%error, "spool failed; acknowledging nothing more");
        failed.store(true, Ordering::SeqCst);
    };
    let mut last_watch = Instant::now();
    'run: while !cancel.is_cancelled() && !r.retired() {
        let first = runtime.block_on(async {
            tokio::select! {
                e = events.recv() => e,
                () = tokio::time::sleep(Duration::from_millis(50)) => None,
                () = cancel.cancelled() => None,
            }
        });
        if let Some(event) = first {
            r.take(event);
            if !r.sync_delay.is_zero() {
                std::thread::sleep(r.sync_delay);
            }
            // Everything that arrived meanwhile shares the sync.
            while let Ok(event) = events.try_recv() {
                r.take(event);
                if r.acks.len() >= 50_000 {
                    break;
                }
            }
        }
        if let Err(e) = r.sync_and_ack().and_then(|()| r.release()) {
            fail(e);
            break 'run;
        }
        if last_watch.elapsed() >= Duration::from_millis(200) {
            last_watch = Instant::now();
            r.watchdog();
        }
    }
    let retired = !cancel.is_cancelled() && !failed.load(Ordering::SeqCst) && r.retired();
    // Spool and acknowledge what already arrived, then disconnect (the sessions stay).
    while let Ok(event) = events.try_recv() {
        r.take(event);
    }
    if let Err(e) = r.sync_and_ack() {
        fail(e);
    }
    let durable = r.spool.durable_seq();
    r.durable.set(durable, true);
    r.metrics.mqtt_connections.set(0.0);
    r.metrics.mqtt_subscribed.set(0.0);
    r.mqtt_ready.set_ready(false);
    runtime.block_on(r.subscriber.shutdown(Duration::from_secs(2)));
    retired
}

/// Runs MQTT ingest until `cancel`: blocks the calling thread (the pipeline), runs the
/// receiver on its own thread and the writer on `runtime`. Returns once everything spooled is
/// stored, or the shutdown deadline passed (what is left stays in the spool for next time).
///
/// With `retire`, the sessions unsubscribe instead of subscribing; once they have received
/// what the broker queued for them and everything is stored, the run ends the sessions at the
/// broker and returns (`Summary::drained` says whether all of it happened).
pub fn run(
    config: &Config,
    clickhouse: ClickHouse,
    metrics: IngestMetrics,
    readiness: &Readiness,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    retire: bool,
) -> Result<Summary, Error> {
    let mut decoder = Decoder::new(config, SourceKind::Mqtt)?;
    let mqtt = &config.mqtt;
    let settings = &config.ingest;
    let filters: Vec<String> = decoder
        .feeds()
        .feeds()
        .iter()
        .filter(|f| f.config().source == SourceKind::Mqtt)
        .map(cityops_feeds::Feed::subscription)
        .collect();
    let tls = cityops_runtime::read_tls(mqtt).map_err(|e| Error::Mqtt(e.to_string()))?;
    let spool_settings = SpoolSettings {
        dir: mqtt.spool.dir.clone(),
        max_bytes: mqtt.spool.max_bytes,
        segment_bytes: mqtt.spool.segment_bytes,
        window: crate::resend::DEFAULT_WINDOW,
        connections: mqtt.connections,
    };
    let (spool, opened) = Spool::open(&spool_settings, new_spool_id())?;
    let spool_id = spool.id();
    let first_seq = spool.first_seq();
    tracing::info!(
        dir = %spool.dir().display(),
        spool_id,
        messages = opened.messages,
        truncated_bytes = opened.truncated_bytes,
        resend_table_bytes = spool.resend_table_bytes(),
        "spool opened"
    );
    let durable = Arc::new(Durable {
        state: Mutex::new((spool.durable_seq(), false)),
        changed: Condvar::new(),
    });
    let stored_seq = Arc::new(AtomicU64::new(first_seq.saturating_sub(1)));

    // The writer.
    // One generation for the whole run: the spool has no rebalances.
    let WriterTask {
        to_writer,
        from_writer,
        task: writer_task,
        ..
    } = start_writer(
        config,
        clickhouse.clone(),
        &metrics,
        readiness,
        &runtime,
        SOURCE,
    );

    // The sessions and the receiver.
    let window: usize = usize::from(mqtt.connections) * usize::from(mqtt.receive_maximum);
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(window + 1024);
    let subscriber_cancel = CancellationToken::new();
    let options = || {
        let mut options = cityops_runtime::subscriber_options(
            mqtt,
            &mqtt.client_id,
            mqtt.effective_shared_group(),
            filters.clone(),
            tls.clone(),
        );
        options.retire = retire;
        options
    };
    let subscriber = {
        let _enter = runtime.enter();
        Subscriber::start(options(), events_tx, subscriber_cancel.clone())
    };
    // A retiring process expects its feeds to fall silent.
    let watches = config
        .feeds
        .iter()
        .filter(|_| !retire)
        .enumerate()
        .filter_map(|(i, f)| {
            let timeout = f.stall_timeout_ms?;
            Some((
                i,
                Watch {
                    feed: f.name.clone(),
                    timeout: Duration::from_millis(timeout),
                    last_message: Instant::now(),
                    heals: 0,
                    delivered: false,
                },
            ))
        })
        .collect();
    let mqtt_ready = readiness.register("mqtt");
    let spool_ready = readiness.register("spool");
    spool_ready.set_ready(true);
    let receiver = Receiver {
        spool,
        subscriber,
        metrics: metrics.clone(),
        store_retained: mqtt.store_retained,
        subscribed: vec![false; usize::from(mqtt.connections)],
        held: Held::new(mqtt.spool.held_qos0_max_bytes),
        dropped_while_full: 0,
        acks: Vec::new(),
        durable: Arc::clone(&durable),
        stored_seq: Arc::clone(&stored_seq),
        released_to: 0,
        watches,
        feeds: decoder.feeds().clone(),
        broker_dropped: None,
        mqtt_ready,
        spool_ready,
        full_since: None,
        disk_full_retry: None,
        sync_delay: Duration::from_millis(mqtt.spool.sync_delay_ms),
        retire: retire.then(|| vec![false; usize::from(mqtt.connections)]),
        last_delivery: Instant::now(),
    };
    let receiver_failed = Arc::new(AtomicBool::new(false));
    let receiver_thread = {
        let runtime = runtime.clone();
        let cancel = cancel.clone();
        let failed = Arc::clone(&receiver_failed);
        std::thread::Builder::new()
            .name("cityops-mqtt-rx".into())
            .spawn(move || receive(receiver, events_rx, &runtime, &cancel, &failed))
            .map_err(|e| Error::Mqtt(format!("cannot start the receiver thread: {e}")))?
    };
    tracing::info!(
        filters = filters.join(","),
        host = mqtt.host,
        port = mqtt.port,
        connections = mqtt.connections,
        shared_group = mqtt.effective_shared_group().unwrap_or(""),
        "subscribing"
    );

    // What is already stored: the spool may hold messages a killed run stored but did not
    // get to delete.
    let filter = match stored_check(&clickhouse, &runtime, &cancel, spool_id, settings) {
        Some(filter) => filter,
        None => {
            // Cancelled before ClickHouse answered: nothing was read from the spool.
            let _ = receiver_thread.join();
            drop(to_writer);
            let _ = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), writer_task).await
            });
            return Ok(Summary {
                drained: true,
                ..Summary::default()
            });
        }
    };

    let mut pipeline = SpoolPipeline {
        reader: SpoolReader::new(&mqtt.spool.dir, first_seq),
        builder: BatchBuilder::by_partition(limits(settings)),
        filter,
        to_writer,
        from_writer,
        in_flight: 0,
        sent_seq: 0,
        done_seq: 0,
        read_seq: first_seq.saturating_sub(1),
        summary: Summary::default(),
        sequences: SequenceTracker::new(GAP_GRACE_MS),
        sequence_attrs: config
            .feeds
            .iter()
            .map(|f| f.sequence_attr.clone())
            .collect(),
        feed_names: config.feeds.iter().map(|f| f.name.clone()).collect(),
        gaps_by_feed: BTreeMap::new(),
        last_report: Instant::now(),
        last_sweep: Instant::now(),
        spool_id,
        metrics: metrics.clone(),
        stored_seq: Arc::clone(&stored_seq),
        paused: false,
    };
    let max_in_flight = settings.max_in_flight_bytes;
    let mut read_error = false;
    loop {
        let (durable_seq, finished) = durable.get();
        pipeline.collect(None);
        let now = Instant::now();
        if pipeline.builder.full() || pipeline.builder.due(now) {
            pipeline.send();
        }
        pipeline.report_gaps();
        let in_flight = pipeline.in_flight + pipeline.builder.bytes();
        if !pipeline.paused && in_flight >= max_in_flight {
            pipeline.paused = true;
            metrics.paused.set(1.0);
            tracing::info!(
                in_flight_bytes = in_flight,
                "in-flight bound reached; reading the spool paused until ClickHouse catches up"
            );
        } else if pipeline.paused && in_flight < max_in_flight / 4 * 3 {
            pipeline.paused = false;
            metrics.paused.set(0.0);
            tracing::info!(in_flight_bytes = in_flight, "reading the spool resumed");
        }
        // A retiring receiver finishes by itself; then the spool is stored as at a stop.
        let stopping = cancel.is_cancelled() || (retire && finished);
        if stopping && finished && pipeline.read_seq >= durable_seq {
            break;
        }
        if pipeline.paused || read_error {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut read = 0;
        while read < 10_000 && !pipeline.builder.full() {
            match pipeline.reader.next(durable_seq) {
                Ok(Some(message)) => {
                    pipeline.read_seq = message.seq;
                    pipeline.add(&mut decoder, &message);
                    read += 1;
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "cannot read the spool; stopping reading (what it holds stays for the next start)");
                    read_error = true;
                    break;
                }
            }
        }
        if read == 0 {
            if stopping && (finished || pipeline.read_seq >= durable_seq) {
                if finished {
                    break;
                }
                durable.wait_beyond(pipeline.read_seq, Duration::from_millis(50));
                continue;
            }
            let wait = pipeline
                .builder
                .until_due(Instant::now())
                .map_or(Duration::from_millis(100), |d| {
                    d.min(Duration::from_millis(100))
                });
            durable.wait_beyond(pipeline.read_seq, wait);
        }
    }
    tracing::info!("stopping: storing what was spooled");
    let deadline = Duration::from_millis(settings.shutdown_deadline_ms);
    pipeline.send();
    let target = pipeline.sent_seq;
    pipeline.collect(Some((target, Instant::now() + deadline)));
    let (durable_seq, _) = durable.get();
    pipeline.summary.drained = pipeline.done_seq >= target
        && pipeline.read_seq >= durable_seq
        && !read_error
        && !receiver_failed.load(Ordering::SeqCst);
    if pipeline.done_seq < target {
        tracing::warn!(
            batches = target - pipeline.done_seq,
            "batches not stored within the shutdown deadline stay in the spool for the next start"
        );
    }
    let retired = receiver_thread.join().unwrap_or(false);
    let summary = pipeline.summary.clone();
    drop(pipeline);
    let _ =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), writer_task).await });
    if retire {
        return Ok(end_retired_sessions(&runtime, options(), summary, retired));
    }
    Ok(summary)
}

/// How long a retiring session must receive nothing (with every session unsubscribed and
/// everything acknowledged) before what the broker queued for it counts as all delivered.
const RETIRE_QUIET: Duration = Duration::from_secs(3);

/// Ends a retired process's sessions at the broker once everything they delivered is stored;
/// otherwise keeps them (their messages are still owed) and says so.
fn end_retired_sessions(
    runtime: &tokio::runtime::Handle,
    options: cityops_mqtt::SubscriberOptions,
    mut summary: Summary,
    received_all: bool,
) -> Summary {
    if !received_all || !summary.drained {
        tracing::error!(
            received_all,
            stored_all = summary.drained,
            "not retired: stopped before the sessions delivered all they had, or before all of it was stored; the sessions stay at the broker, run --retire again"
        );
        summary.drained = false;
        return summary;
    }
    match runtime.block_on(cityops_mqtt::end_sessions(options)) {
        Ok(()) => tracing::info!(
            messages = summary.messages,
            "retired: everything the sessions received is stored and the broker ended them"
        ),
        Err(error) => {
            tracing::error!(%error, "not retired: the broker did not end the sessions; run --retire again");
            summary.drained = false;
        }
    }
    summary
}

/// Reads what ClickHouse already holds from this spool, retrying until it answers or
/// `cancel`. Waits first for ingest INSERTs still running (a killed run's last one).
fn stored_check(
    clickhouse: &ClickHouse,
    runtime: &tokio::runtime::Handle,
    cancel: &CancellationToken,
    spool_id: i32,
    settings: &cityops_config::IngestConfig,
) -> Option<ReplayFilter> {
    let mut backoff = crate::Backoff::new(
        Duration::from_millis(settings.retry_initial_ms),
        Duration::from_millis(settings.retry_max_ms),
        u64::from(std::process::id()),
    );
    let timeout = Duration::from_millis(settings.insert_timeout_ms);
    loop {
        if cancel.is_cancelled() {
            return None;
        }
        let checked = runtime.block_on(async {
            let running = clickhouse.running_ingest_queries().await?;
            let left = clickhouse.wait_until_finished(&running, timeout).await?;
            if !left.is_empty() {
                tracing::warn!(
                    queries = left.len(),
                    "ingest INSERTs still running after the insert timeout; reading stored offsets anyway"
                );
            }
            clickhouse.stored_partition_offsets(SOURCE, spool_id).await
        });
        match checked {
            Ok((events, rejects)) => {
                let key = (String::new(), spool_id);
                return Some(ReplayFilter::new(
                    &BTreeMap::from([(key.clone(), events)]),
                    &BTreeMap::from([(key, rejects)]),
                ));
            }
            Err(error) => {
                if backoff.attempts().is_multiple_of(10) {
                    tracing::warn!(%error, "cannot read what is stored; the spool is read once ClickHouse answers (messages are still received and acknowledged)");
                }
                let delay = backoff.next_delay();
                runtime.block_on(async {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                });
            }
        }
    }
}

/// The pipeline thread's state.
struct SpoolPipeline {
    reader: SpoolReader,
    builder: BatchBuilder,
    filter: ReplayFilter,
    to_writer: tokio::sync::mpsc::UnboundedSender<Batch>,
    from_writer: mpsc::Receiver<Done>,
    in_flight: usize,
    sent_seq: u64,
    done_seq: u64,
    /// Highest spool sequence read.
    read_seq: u64,
    summary: Summary,
    sequences: SequenceTracker,
    /// `sequence_attr` of each feed, by config position.
    sequence_attrs: Vec<Option<String>>,
    feed_names: Vec<String>,
    gaps_by_feed: BTreeMap<u16, crate::sequence::Gaps>,
    last_report: Instant,
    last_sweep: Instant,
    spool_id: i32,
    metrics: IngestMetrics,
    stored_seq: Arc<AtomicU64>,
    paused: bool,
}

impl SpoolPipeline {
    fn add(&mut self, decoder: &mut Decoder, m: &crate::spool::SpooledMessage) {
        let coordinates = SourceCoordinates::Spool {
            topic: m.topic.clone(),
            spool: self.spool_id,
            seq: m.seq,
        };
        let offset = i64::try_from(m.seq).unwrap_or(i64::MAX);
        let received = Received {
            topic: &m.topic,
            payload: &m.payload,
            received_at: Timestamp::from_millis(m.received_ms).unwrap_or(Timestamp::MIN),
            coordinates: &coordinates,
            partition: self.spool_id,
            offset,
            key_topic: "",
        };
        let sequences = &mut self.sequences;
        let attrs = &self.sequence_attrs;
        decoder.add(
            &received,
            &mut self.builder,
            &self.filter,
            &self.metrics,
            |feed, events| {
                let Some(Some(attr)) = attrs.get(usize::from(feed)) else {
                    return;
                };
                let Some(first) = events.first() else {
                    return;
                };
                if let Some(seq) = first.attrs.get(attr).and_then(|v| parse_sequence(v)) {
                    sequences.observe(feed, &first.entity_id, seq, m.received_ms);
                }
            },
        );
    }

    fn send(&mut self) {
        if !self.builder.has_messages() {
            return;
        }
        let batch = self.builder.take(1);
        self.in_flight += batch.bytes;
        self.metrics.in_flight_bytes.set(self.in_flight as f64);
        self.sent_seq = batch.seq;
        if self.to_writer.send(batch).is_err() {
            tracing::error!("the writer stopped; nothing more can be stored");
        }
    }

    /// Takes the writer's reports, waiting until `seq` is done or the deadline passes.
    fn collect(&mut self, wait_for: Option<(u64, Instant)>) {
        loop {
            let done = match wait_for {
                Some((seq, deadline)) if self.done_seq < seq => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    match self.from_writer.recv_timeout(left) {
                        Ok(done) => done,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                _ => match self.from_writer.try_recv() {
                    Ok(done) => done,
                    Err(_) => return,
                },
            };
            self.done_seq = done.seq;
            self.in_flight = self.in_flight.saturating_sub(done.bytes);
            self.metrics.in_flight_bytes.set(self.in_flight as f64);
            if done.stored {
                self.summary.batches += 1;
                self.summary.messages += done.messages;
                for (_, next) in done.next_offsets {
                    let stored = u64::try_from(next - 1).unwrap_or(0);
                    self.stored_seq.fetch_max(stored, Ordering::SeqCst);
                }
            }
        }
    }

    /// Counts gaps that stayed open (every second) and logs a summary now and then.
    fn report_gaps(&mut self) {
        if self.last_sweep.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_sweep = Instant::now();
        for (feed, gaps) in self.sequences.sweep(crate::pipeline::now().as_millis()) {
            let name = self
                .feed_names
                .get(usize::from(feed))
                .map_or(crate::NO_FEED, String::as_str);
            if gaps.missing > 0 {
                self.metrics
                    .mqtt_sequence_gaps
                    .with_label_values(&[name])
                    .inc_by(gaps.missing as f64);
            }
            if gaps.missing > 0 {
                let total = self.gaps_by_feed.entry(feed).or_default();
                total.missing += gaps.missing;
                total.resets += gaps.resets;
                total.late += gaps.late;
            }
        }
        if self.last_report.elapsed() >= REPORT_EVERY && !self.gaps_by_feed.is_empty() {
            self.last_report = Instant::now();
            for (feed, gaps) in std::mem::take(&mut self.gaps_by_feed) {
                let name = self
                    .feed_names
                    .get(usize::from(feed))
                    .map_or(crate::NO_FEED, String::as_str);
                tracing::warn!(
                    feed = name,
                    missing = gaps.missing,
                    device_restarts = gaps.resets,
                    late = gaps.late,
                    devices = self.sequences.devices(),
                    "sequence numbers never arrived (lost before or dropped by the broker)"
                );
            }
        }
    }
}

/// A sequence attribute as a number (`"17"`, `"17.0"`).
fn parse_sequence(value: &str) -> Option<u64> {
    value.parse::<u64>().ok().or_else(|| {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.fract() == 0.0 && *v >= 0.0)
            .map(|v| v as u64)
    })
}
