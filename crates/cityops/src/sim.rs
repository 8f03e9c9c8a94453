//! `cityops sim`: run the city simulator and write what it sends to files (JSON lines, or
//! payload samples per feed), with the ground truth of an injected scenario.

use anyhow::{Context, bail};
use cityops_event::Timestamp;
use cityops_sim::{
    DISTRICTS, FeedKind, ScenarioKind, ScenarioSpec, SimMessage, SimOptions, Simulator,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Arguments of `cityops sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seed: the same seed and start give byte-identical output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Virtual start time (RFC 3339); default now.
    #[arg(long)]
    start: Option<String>,
    /// How much virtual time to simulate (e.g. `90s`, `10m`, `6h`, `2d`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    duration: Duration,
    /// Stop after this many messages, whatever the duration.
    #[arg(long)]
    count: Option<u64>,
    /// Events per second of virtual time (as the shipped config decodes the messages; one
    /// message carries one or more events); devices report faster to reach it. Default: the
    /// city's natural rate, about 70 events/s at scale 1.
    #[arg(long, conflicts_with = "speed")]
    rate: Option<f64>,
    /// A multiple of the city's natural rate (e.g. `10` for ten times as many reports from
    /// the same devices); the alternative to --rate.
    #[arg(long)]
    speed: Option<f64>,
    /// Multiply device counts (e.g. 10 for ten times the sensors).
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// Only these feeds (comma-separated names from the example config).
    #[arg(long, value_delimiter = ',')]
    feeds: Vec<FeedKind>,
    /// Inject an incident: flood, pollution, outage, complaint-spike, overdue, pipeline-stall.
    #[arg(long)]
    scenario: Option<ScenarioKind>,
    /// When the incident starts, after the simulation start.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    scenario_at: Duration,
    /// How long the incident lasts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    scenario_duration: Duration,
    /// District of the incident (name or slug); default the scenario's own.
    #[arg(long)]
    scenario_district: Option<String>,
    /// Send this fraction of messages broken (cut short, or not the feed's format), as real
    /// feeds do: they land in `rejects` (e.g. 0.002).
    #[arg(long, default_value_t = 0.0)]
    faulty_fraction: f64,
    /// Write the scenario's ground truth (JSON) here.
    #[arg(long)]
    ground_truth: Option<PathBuf>,
    /// Write every message as a JSON line (feed, transport, topic, key, sent_at, payload) here;
    /// `-` for stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write payload samples per feed into this directory, with a samples.toml manifest that
    /// `cityops decode` and the decoder tests read.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Samples per feed for --dump.
    #[arg(long, default_value_t = 5)]
    dump_samples: usize,
    /// Produce the Kafka feeds to this broker (`host:port`, e.g. the local stack's
    /// `127.0.0.1:19092`).
    #[arg(long)]
    to_kafka: Option<String>,
    /// Publish the MQTT feeds at QoS 1 to this broker (`host:port`, e.g. `127.0.0.1:11883`).
    #[arg(long)]
    to_mqtt: Option<String>,
    /// MQTT connections to publish over (more connections, more messages in flight).
    #[arg(long, default_value_t = 4)]
    mqtt_connections: usize,
    /// Send as fast as possible instead of pacing virtual time to the wall clock (benchmarks).
    #[arg(long)]
    unpaced: bool,
    /// Simulate this much history up to now (e.g. `7d`) as fast as possible, up to the moment
    /// it finishes (what the city sent meanwhile included); with --to-clickhouse it fills the
    /// tables for dashboards and backtests.
    #[arg(long, value_parser = humantime::parse_duration)]
    backfill: Option<Duration>,
    /// Decode every message with the config's feeds and insert the events (and any rejects)
    /// into its ClickHouse, with a progress bar.
    #[arg(long, requires = "config")]
    to_clickhouse: bool,
    /// The config file for --to-clickhouse (its feeds, labels and `[clickhouse]`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics (`/metrics`, `/healthz`, `/readyz`) on this address while
    /// running, e.g. `127.0.0.1:9465`.
    #[arg(long)]
    listen_addr: Option<std::net::SocketAddr>,
}

/// The simulator's own metrics (see docs/metrics.md).
struct SimMetrics {
    messages: prometheus::CounterVec,
    bytes: prometheus::CounterVec,
    behind: prometheus::Gauge,
}

impl SimMetrics {
    fn new(registry: &prometheus::Registry) -> anyhow::Result<Self> {
        let m = cityops_telemetry::Metrics::new(registry, "sim");
        Ok(SimMetrics {
            messages: m.counter_vec(
                "messages_sent_total",
                "Messages the simulator sent, by feed",
                &["feed"],
            )?,
            bytes: m.counter_vec(
                "payload_bytes_sent_total",
                "Payload bytes the simulator sent, by feed",
                &["feed"],
            )?,
            behind: m.gauge(
                "behind_clock_seconds",
                "How far a paced run is behind the wall clock",
            )?,
        })
    }
}

#[derive(Serialize)]
struct Line<'a> {
    feed: &'static str,
    transport: &'static str,
    topic: &'a str,
    key: Option<&'a str>,
    sent_at: Timestamp,
    payload: std::borrow::Cow<'a, str>,
}

/// Exit 0 when the run completed, 2 for usage errors, 1 for I/O failures.
pub fn run(args: &Args) -> ExitCode {
    match simulate(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cityops sim: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn options(args: &Args) -> anyhow::Result<SimOptions> {
    let start = match &args.start {
        Some(text) => {
            Timestamp::parse_rfc3339(text).with_context(|| format!("--start {text:?}"))?
        }
        None => {
            // A backfill ends now: it starts its span before now.
            let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
            let back = args.backfill.map(millis).transpose()?.unwrap_or(0);
            Timestamp::from_millis(now - back).context("--backfill reaches before 1970")?
        }
    };
    if args.scale == 0 {
        bail!("--scale must be at least 1");
    }
    let mut options = SimOptions::new(args.seed, start);
    options.scale = args.scale;
    if !(0.0..=1.0).contains(&args.faulty_fraction) {
        bail!("--faulty-fraction must be between 0 and 1");
    }
    options.faulty_fraction = args.faulty_fraction;
    options.feeds = args.feeds.iter().copied().collect();
    if let Some(kind) = args.scenario {
        let mut spec = ScenarioSpec::new(
            kind,
            millis(args.scenario_at)?,
            millis(args.scenario_duration)?,
        );
        if let Some(wanted) = &args.scenario_district {
            spec.district = DISTRICTS
                .iter()
                .position(|d| d.name == wanted || d.slug == wanted)
                .with_context(|| {
                    format!(
                        "--scenario-district {wanted:?}: not one of {}",
                        DISTRICTS.map(|d| d.slug).join(", ")
                    )
                })?;
        }
        options.scenario = Some(spec);
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number");
        }
        let natural = Simulator::new(options.clone()).natural_event_rate();
        options.speed = rate / natural;
    }
    if let Some(speed) = args.speed {
        if !(speed > 0.0 && speed.is_finite()) {
            bail!("--speed must be a positive number");
        }
        options.speed = speed;
    }
    Ok(options)
}

fn now_ms() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

fn millis(d: Duration) -> anyhow::Result<i64> {
    Ok(i64::try_from(d.as_millis())?)
}

fn simulate(args: &Args) -> anyhow::Result<()> {
    if args.output.is_none()
        && args.dump.is_none()
        && args.to_kafka.is_none()
        && args.to_mqtt.is_none()
        && !args.to_clickhouse
    {
        bail!(
            "say where messages go: --output FILE (or -), --dump DIR, --to-kafka HOST:PORT, --to-mqtt HOST:PORT and/or --to-clickhouse"
        );
    }
    let options = options(args)?;
    let publishing = args.to_kafka.is_some() || args.to_mqtt.is_some();
    if publishing {
        let selected: Vec<FeedKind> = if options.feeds.is_empty() {
            FeedKind::ALL.to_vec()
        } else {
            options.feeds.iter().copied().collect()
        };
        let unrouted: Vec<&str> = selected
            .iter()
            .filter(|f| match f.transport() {
                cityops_sim::Transport::Kafka => args.to_kafka.is_none(),
                cityops_sim::Transport::Mqtt => args.to_mqtt.is_none(),
            })
            .map(|f| f.name())
            .collect();
        if !unrouted.is_empty() {
            bail!(
                "no broker for {}: add --to-kafka / --to-mqtt, or choose --feeds",
                unrouted.join(", ")
            );
        }
    }
    let sim = Simulator::new(options.clone());
    if let (Some(path), Some(truth)) = (&args.ground_truth, sim.ground_truth()) {
        std::fs::write(path, serde_json::to_string_pretty(&truth)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    let span = millis(args.backfill.unwrap_or(args.duration))?;
    let mut end = options.start.as_millis().saturating_add(span);
    let mut output: Option<Box<dyn Write>> = match &args.output {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(BufWriter::new(std::io::stdout().lock()))),
        Some(p) => Some(Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?,
        ))),
    };
    let mut dump = args
        .dump
        .as_ref()
        .map(|dir| Dump::new(dir, args.dump_samples))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut brokers = if publishing {
        Some(runtime.block_on(Brokers::connect(args))?)
    } else {
        None
    };
    // SIGTERM or SIGINT ends the run like its end time: every message sent so far is flushed
    // and acknowledged, and the summary written.
    let stop = tokio_util::sync::CancellationToken::new();
    runtime.spawn(crate::ingest::stop_on_signal(stop.clone()));
    let registry = prometheus::Registry::new();
    let metrics = SimMetrics::new(&registry)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = args.listen_addr {
        cityops_telemetry::register_process_metrics(&registry, env!("CARGO_PKG_VERSION"))?;
        let server = runtime.block_on(cityops_telemetry::TelemetryServer::bind(addr))?;
        runtime.spawn(server.run(
            registry.clone(),
            cityops_telemetry::Readiness::default(),
            shutdown.clone(),
        ));
    }
    let wall_start = Instant::now();
    let pace = publishing && !args.unpaced && args.backfill.is_none();
    let mut store = if args.to_clickhouse {
        let path = args
            .config
            .as_ref()
            .context("--to-clickhouse needs --config")?;
        Some(runtime.block_on(Store::open(path, options.start, span))?)
    } else {
        None
    };
    let mut max_lag = Duration::ZERO;
    let mut sent: BTreeMap<FeedKind, (u64, u64)> = BTreeMap::new();
    let limit = args.count.unwrap_or(u64::MAX);
    for (n, message) in sim.enumerate() {
        if message.sent_at.as_millis() >= end {
            // A backfill reaches the moment it finishes, not the moment it began: what the
            // city sent while it ran is simulated too, so that live feeds started next follow
            // on without a gap (a gap looks like every sensor falling silent).
            let now = now_ms()?;
            let up_to_now = args.backfill.is_some() && args.start.is_none();
            if !up_to_now || message.sent_at.as_millis() >= now {
                break;
            }
            end = now;
        }
        if n as u64 >= limit || stop.is_cancelled() {
            break;
        }
        if pace {
            // Virtual time is anchored to the wall clock: a message is sent when it is due.
            let offset = message.sent_at.as_millis() - options.start.as_millis();
            let due = wall_start + Duration::from_millis(u64::try_from(offset).unwrap_or(0));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                max_lag = max_lag.max(now - due);
                metrics.behind.set((now - due).as_secs_f64());
            }
        }
        if let Some(brokers) = brokers.as_mut() {
            runtime.block_on(brokers.send(&message))?;
        }
        let entry = sent.entry(message.feed).or_default();
        entry.0 += 1;
        entry.1 += message.payload.len() as u64;
        metrics
            .messages
            .with_label_values(&[message.feed.name()])
            .inc();
        metrics
            .bytes
            .with_label_values(&[message.feed.name()])
            .inc_by(message.payload.len() as f64);
        if let Some(out) = output.as_mut() {
            let line = Line {
                feed: message.feed.name(),
                transport: message.feed.transport().as_str(),
                topic: &message.topic,
                key: message.key.as_deref(),
                sent_at: message.sent_at,
                payload: String::from_utf8_lossy(&message.payload),
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        if let Some(dump) = dump.as_mut() {
            dump.add(&message)?;
        }
        if let Some(store) = store.as_mut() {
            store.add(&message);
            if store.full() {
                runtime.block_on(store.flush())?;
            }
        }
    }
    let stored = match store {
        Some(mut store) => {
            runtime.block_on(store.flush())?;
            Some(store.finish())
        }
        None => None,
    };
    if let Some(mut out) = output {
        out.flush()?;
    }
    if let Some(dump) = dump {
        dump.finish()?;
    }
    let delivery = match brokers {
        Some(brokers) => Some(runtime.block_on(brokers.finish())?),
        None => None,
    };
    shutdown.cancel();
    let elapsed = wall_start.elapsed().as_secs_f64();
    let mut summary = std::io::stderr().lock();
    let (messages, bytes) = sent
        .values()
        .fold((0, 0), |(m, b), (m2, b2)| (m + m2, b + b2));
    writeln!(
        summary,
        "sim: {messages} messages, {bytes} bytes (seed {}, scale {}, speed {:.3})",
        options.seed, options.scale, options.speed
    )?;
    let lag = if pace {
        format!(", at most {:.1} s behind the clock", max_lag.as_secs_f64())
    } else {
        String::new()
    };
    writeln!(
        summary,
        "  {elapsed:.1} s, {:.0} messages/s{lag}",
        messages as f64 / elapsed.max(1e-9)
    )?;
    if let Some(delivery) = delivery {
        writeln!(summary, "  {delivery}")?;
    }
    if let Some(stored) = stored {
        writeln!(summary, "  {stored}")?;
    }
    for (feed, (m, b)) in &sent {
        writeln!(
            summary,
            "  {:<24} {:>9} messages {:>12} bytes",
            feed.name(),
            m,
            b
        )?;
    }
    Ok(())
}

/// Payload samples per feed plus a manifest.
struct Dump {
    dir: PathBuf,
    per_feed: usize,
    written: BTreeMap<FeedKind, usize>,
    manifest: String,
}

impl Dump {
    fn new(dir: &Path, per_feed: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Dump {
            dir: dir.to_path_buf(),
            per_feed,
            written: BTreeMap::new(),
            manifest: "# Written by `cityops sim --dump`: one entry per payload sample, with the topic it was sent on\n# and its send time, in the format of deploy/config/samples/samples.toml.\n".into(),
        })
    }

    fn add(&mut self, message: &SimMessage) -> anyhow::Result<()> {
        let count = self.written.entry(message.feed).or_default();
        if *count >= self.per_feed {
            return Ok(());
        }
        *count += 1;
        let relative = format!(
            "{}/{:04}.{}",
            message.feed.name(),
            count,
            message.feed.extension()
        );
        let path = self.dir.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &message.payload)
            .with_context(|| format!("write {}", path.display()))?;
        self.manifest.push_str(&format!(
            "\n[[sample]]\nfile = \"{relative}\"\nsource = \"{}\"\ntopic = \"{}\"\nreceived_at = \"{}\"\n",
            message.feed.transport().as_str(),
            message.topic,
            message.sent_at
        ));
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        let path = self.dir.join("samples.toml");
        std::fs::write(&path, self.manifest).with_context(|| format!("write {}", path.display()))
    }
}

/// The brokers messages are published to, with delivery accounting.
struct Brokers {
    kafka: Option<cityops_kafka::Producer>,
    mqtt: Option<cityops_mqtt::Publisher>,
}

impl Brokers {
    async fn connect(args: &Args) -> anyhow::Result<Self> {
        let kafka = args
            .to_kafka
            .as_ref()
            .map(|bootstrap| {
                cityops_kafka::Producer::new(&cityops_kafka::ProducerSettings::new(
                    bootstrap.clone(),
                ))
            })
            .transpose()?;
        let mqtt = match &args.to_mqtt {
            Some(address) => {
                let (host, port) = address
                    .rsplit_once(':')
                    .with_context(|| format!("--to-mqtt {address:?}: expected host:port"))?;
                let port: u16 = port
                    .parse()
                    .with_context(|| format!("--to-mqtt {address:?}: bad port"))?;
                let id = format!("cityops-sim-{}", std::process::id());
                Some(cityops_mqtt::Publisher::connect(
                    host,
                    port,
                    &id,
                    args.mqtt_connections,
                ))
            }
            None => None,
        };
        Ok(Brokers { kafka, mqtt })
    }

    async fn send(&mut self, message: &SimMessage) -> anyhow::Result<()> {
        match message.feed.transport() {
            cityops_sim::Transport::Kafka => {
                if let Some(kafka) = self.kafka.as_mut() {
                    kafka.send(&message.topic, message.key.as_deref(), &message.payload)?;
                }
            }
            cityops_sim::Transport::Mqtt => {
                if let Some(mqtt) = self.mqtt.as_mut() {
                    mqtt.publish(&message.topic, &message.payload).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits for every acknowledgement (60 s at most) and describes the deliveries.
    async fn finish(self) -> anyhow::Result<String> {
        let mut parts = Vec::new();
        if let Some(kafka) = self.kafka {
            let flushed = kafka.flush(Duration::from_secs(60));
            parts.push(format!(
                "kafka: {} produced, {} acknowledged, {} failed",
                kafka.sent(),
                kafka.deliveries().acked(),
                kafka.deliveries().failed()
            ));
            flushed?;
        }
        if let Some(mqtt) = self.mqtt {
            let (sent, errors) = (mqtt.sent(), mqtt.connection_errors());
            let result = mqtt.finish(Duration::from_secs(60)).await;
            parts.push(format!(
                "mqtt: {sent} published at QoS 1, {} connection error(s){}",
                errors,
                if result.is_ok() {
                    ", all acknowledged"
                } else {
                    ""
                }
            ));
            result?;
        }
        Ok(parts.join("; "))
    }
}

/// Decodes messages with a config's feeds and inserts the events into its ClickHouse in
/// batches, showing progress through the simulated span.
struct Store {
    feeds: cityops_feeds::FeedSet,
    clickhouse: cityops_clickhouse::ClickHouse,
    events: Vec<cityops_clickhouse::EventRow>,
    rejects: Vec<cityops_clickhouse::RejectRow>,
    inserted: (u64, u64),
    start_ms: i64,
    progress: indicatif::ProgressBar,
}

/// Rows per INSERT: large batches are what ClickHouse handles best.
const BATCH_ROWS: usize = 100_000;

impl Store {
    async fn open(config: &Path, start: Timestamp, span_ms: i64) -> anyhow::Result<Self> {
        let config = cityops_config::Config::load(config)?;
        let feeds = cityops_feeds::FeedSet::new(&config.feeds, config.rejects.max_raw_bytes)
            .map_err(anyhow::Error::msg)?
            .with_label_names(&config.labels);
        let clickhouse = cityops_clickhouse::ClickHouse::connect(&config.clickhouse)
            .await
            .with_context(|| format!("cannot reach ClickHouse at {}", config.clickhouse.url))?;
        let progress = indicatif::ProgressBar::new(u64::try_from(span_ms / 1000).unwrap_or(0));
        progress.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {percent:>3}% of the simulated span, {msg}, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Ok(Store {
            feeds,
            clickhouse,
            events: Vec::with_capacity(BATCH_ROWS),
            rejects: Vec::new(),
            inserted: (0, 0),
            start_ms: start.as_millis(),
            progress,
        })
    }

    fn add(&mut self, message: &SimMessage) {
        let source = match message.feed.transport() {
            cityops_sim::Transport::Kafka => cityops_config::SourceKind::Kafka,
            cityops_sim::Transport::Mqtt => cityops_config::SourceKind::Mqtt,
        };
        let decoded = self.feeds.decode(&cityops_feeds::Message {
            source,
            topic: &message.topic,
            payload: &message.payload,
            received_at: message.sent_at,
            coordinates: None,
        });
        let row_source = cityops_clickhouse::RowSource {
            kind: "sim",
            topic: &message.topic,
            partition: -1,
            offset: -1,
        };
        match decoded {
            cityops_feeds::Outcome::Events(events) => {
                self.events.extend(
                    events
                        .iter()
                        .map(|e| cityops_clickhouse::EventRow::new(e, &row_source)),
                );
            }
            cityops_feeds::Outcome::Reject(reject) => {
                // Deterministic, like event ids: the same simulated message gives the same id.
                let reject_id = cityops_event::EventId {
                    feed: reject.feed.as_deref().unwrap_or(""),
                    coordinates: None,
                    entity_id: &message.topic,
                    metric: reject.reason.as_str(),
                    ts_millis: message.sent_at.as_millis(),
                    index: 0,
                }
                .derive();
                self.rejects.push(cityops_ingest::reject_row(
                    reject,
                    reject_id,
                    message.sent_at,
                    &row_source,
                ));
            }
        }
        self.progress.set_position(
            u64::try_from((message.sent_at.as_millis() - self.start_ms) / 1000).unwrap_or(0),
        );
    }

    fn full(&self) -> bool {
        self.events.len() >= BATCH_ROWS
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.events.is_empty() {
            self.clickhouse.insert("events", &self.events).await?;
            self.inserted.0 += self.events.len() as u64;
            self.events.clear();
        }
        if !self.rejects.is_empty() {
            self.clickhouse.insert("rejects", &self.rejects).await?;
            self.inserted.1 += self.rejects.len() as u64;
            self.rejects.clear();
        }
        self.progress
            .set_message(format!("{} events inserted", self.inserted.0));
        Ok(())
    }

    fn finish(self) -> String {
        self.progress.finish_and_clear();
        format!(
            "clickhouse: {} events and {} rejects inserted",
            self.inserted.0, self.inserted.1
        )
    }
}
