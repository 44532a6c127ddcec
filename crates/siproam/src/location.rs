//! The location store shared by several registrar processes, in Redis
//! (`siproam registrar --store redis://HOST:PORT`).
//!
//! The sans-IO [`Registrar`] stays the authority of its decisions and
//! keeps a local replica of every binding in its [`MemoryStore`](crate::edge::MemoryStore), so
//! lookups stay synchronous. This module only moves records:
//!
//! - **writes**: each [`StoreOp`] the registrar emits (an AoR's bindings
//!   changed) becomes, in one `MULTI`/`EXEC` with the others queued at that
//!   moment, `SET siproam:loc:AOR RECORD PX lifetime` (or `DEL` when the
//!   set is empty) and `PUBLISH siproam:loc "AOR\nRECORD"`; Redis expires a
//!   key when its last binding lapses. The outcome goes back into the
//!   endpoint task as a [`StoreDone`] command and the waiting REGISTER
//!   gets its 2xx — or 503 when Redis failed or did not answer within
//!   [`RedisConfig::op_timeout`] (the typed [`RedisStoreError`] is
//!   logged). A lost connection is opened anew at the next write.
//! - **reads**: a subscription to `siproam:loc` applies every change (this
//!   process's own included, so the replica follows Redis's order), after
//!   a full load (`SCAN` + `GET`) at start and after each reconnection.
//!
//! Records are [`encode_shared`]'s text: lifetimes as wall-clock
//! milliseconds (processes do not share an `Instant` base), the flow only
//! meaningful to the process that holds it (another one reaches the
//! binding along its Path or at its Contact). Everything read from Redis
//! is bounded: record and message sizes, bindings per AoR, keys loaded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::edge::{decode_shared, merge_shared, Registrar, SharedRecordError, StoreOp};
use crate::AppCommander;

/// The key prefix of an AoR's record.
pub const KEY_PREFIX: &str = "siproam:loc:";
/// The channel every change is published on.
pub const CHANNEL: &str = "siproam:loc";
/// The longest record or message read (bigger ones are ignored).
const MAX_RECORD: usize = 64 * 1024;
/// The longest AoR key read.
const MAX_AOR: usize = 1024;
/// Most writes put in one transaction.
const MAX_BATCH: usize = 256;
/// Most tries of one batch whose records another process changed between
/// our read and our write.
const MAX_ATTEMPTS: usize = 16;

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// How long a connection or a write may take before it counts as
    /// failed (the REGISTER waiting for it gets 503).
    pub op_timeout: Duration,
    /// Most writes queued for Redis (the registrar waits for at most
    /// 4096; more than this and the newest fail at once).
    pub queue: usize,
    /// Most keys loaded at start.
    pub max_keys: usize,
}

impl RedisConfig {
    /// Defaults for `url`: 2 s per operation, a queue of 4096 writes,
    /// at most 1,000,000 AoRs loaded.
    pub fn new(url: &str) -> RedisConfig {
        RedisConfig {
            url: url.to_owned(),
            op_timeout: Duration::from_secs(2),
            queue: 4096,
            max_keys: 1_000_000,
        }
    }
}

/// What went wrong with the Redis store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The URL is not a Redis URL.
    #[error("bad Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// Connecting failed.
    #[error("connecting to Redis: {0}")]
    Connect(#[source] redis::RedisError),
    /// A command failed.
    #[error("Redis command: {0}")]
    Command(#[source] redis::RedisError),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The queue of writes is full (Redis too slow or away).
    #[error("the queue of writes to Redis is full")]
    QueueFull,
    /// A record in Redis could not be read.
    #[error("a record in Redis: {0}")]
    Record(#[from] SharedRecordError),
    /// Other processes changed the records at every try.
    #[error("the records changed under every one of {0} tries")]
    Contended(usize),
}

/// A write's outcome, handed to the registrar in the endpoint task
/// ([`crate::edge::RegistrarApp`] takes it as a command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreDone {
    /// The [`StoreOp`]'s id.
    pub id: u64,
    /// True when Redis acknowledged it.
    pub stored: bool,
}

/// Wall-clock milliseconds now, with the `Instant` they correspond to.
fn clocks() -> (Instant, u64) {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    (Instant::now(), unix)
}

async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisStoreError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RedisStoreError::Command(e)),
        Err(_) => Err(RedisStoreError::Timeout(limit)),
    }
}

/// The Redis store of one registrar process: the writer's queue, and the
/// task keeping the local replica fresh.
#[derive(Debug)]
pub struct RedisStore {
    config: RedisConfig,
    client: redis::Client,
    registrar: Arc<Mutex<Registrar>>,
    origin: u64,
    ops: Option<mpsc::Receiver<StoreOp>>,
    sender: mpsc::Sender<StoreOp>,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisStore {
    /// Connects to Redis, subscribes to the changes and loads every
    /// binding into `registrar`'s replica (fails when Redis cannot be
    /// reached within the timeout). `origin` names this process in its
    /// records (random per process).
    pub async fn connect(
        config: RedisConfig,
        registrar: Arc<Mutex<Registrar>>,
        origin: u64,
    ) -> Result<RedisStore, RedisStoreError> {
        let client = redis::Client::open(config.url.as_str()).map_err(RedisStoreError::Url)?;
        let (sender, ops) = mpsc::channel(config.queue.max(1));
        let mut store = RedisStore {
            config,
            client,
            registrar,
            origin,
            ops: Some(ops),
            sender,
            tasks: Vec::new(),
        };
        // subscribed before the load, so no change is missed in between
        let ready = store.subscribe_and_load().await?;
        store.tasks.push(ready);
        Ok(store)
    }

    /// Where the registrar's [`StoreOp`]s go (for
    /// [`crate::edge::RegistrarApp::with_shared_store`]).
    pub fn sender(&self) -> mpsc::Sender<StoreOp> {
        self.sender.clone()
    }

    /// Starts writing: each write's outcome goes to the endpoint through
    /// `commander` as a [`StoreDone`].
    pub fn start(&mut self, commander: AppCommander) {
        let Some(ops) = self.ops.take() else {
            return;
        };
        let cap = self
            .registrar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .config()
            .max_bindings_per_aor;
        let writer = Writer {
            client: self.client.clone(),
            conn: None,
            timeout: self.config.op_timeout,
            origin: self.origin,
            cap,
            commander,
        };
        self.tasks.push(tokio::spawn(writer.run(ops)));
    }

    async fn subscribe_and_load(&self) -> Result<JoinHandle<()>, RedisStoreError> {
        let limit = self.config.op_timeout;
        let mut pubsub = match tokio::time::timeout(limit, self.client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(RedisStoreError::Connect(e)),
            Err(_) => return Err(RedisStoreError::Timeout(limit)),
        };
        within(limit, pubsub.subscribe(CHANNEL)).await?;
        let mut conn =
            match tokio::time::timeout(limit, self.client.get_multiplexed_async_connection()).await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(RedisStoreError::Connect(e)),
                Err(_) => return Err(RedisStoreError::Timeout(limit)),
            };
        let seen = Arc::new(Mutex::new(Some(HashSet::new())));
        let reader = Reader {
            registrar: self.registrar.clone(),
            origin: self.origin,
            seen: seen.clone(),
        };
        let task = tokio::spawn(reader.clone().run(
            pubsub,
            self.client.clone(),
            self.config.clone(),
        ));
        let loaded = load_all(&mut conn, &reader, &self.config).await;
        // from now on every change applies as it comes
        seen.lock().unwrap_or_else(PoisonError::into_inner).take();
        match loaded {
            Ok(n) => {
                info!(aors = n, "loaded the shared location store");
                Ok(task)
            }
            Err(e) => {
                task.abort();
                Err(e)
            }
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Applies records read from Redis to the registrar's replica.
#[derive(Debug, Clone)]
struct Reader {
    registrar: Arc<Mutex<Registrar>>,
    origin: u64,
    /// While a full load runs: the AoRs a published change already set
    /// (the load must not put an older record over them).
    seen: Arc<Mutex<Option<HashSet<String>>>>,
}

impl Reader {
    /// One record (`None`: the AoR has no bindings). `from_load` marks the
    /// full load's records.
    fn apply(&self, aor: &str, record: Option<&str>, from_load: bool) {
        if aor.is_empty() || aor.len() > MAX_AOR {
            return;
        }
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(seen) = seen.as_mut() {
                if from_load {
                    if seen.contains(aor) {
                        return;
                    }
                } else if seen.len() < MAX_BATCH * 64 {
                    seen.insert(aor.to_owned());
                }
            }
        }
        let mut registrar = self
            .registrar
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cap = registrar.config().max_bindings_per_aor;
        let bindings = match record {
            None => Vec::new(),
            Some(text) => {
                let (now, unix) = clocks();
                match decode_shared(text, now, unix, self.origin, cap) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!("{}", RedisStoreError::Record(e));
                        return;
                    }
                }
            }
        };
        registrar.apply_shared(aor, bindings);
    }

    /// Follows the published changes; after a lost subscription,
    /// subscribes again and reloads everything.
    async fn run(self, mut pubsub: redis::aio::PubSub, client: redis::Client, config: RedisConfig) {
        loop {
            {
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let payload = msg.get_payload_bytes();
                    if payload.len() > MAX_RECORD + MAX_AOR {
                        warn!(len = payload.len(), "oversized location change ignored");
                        continue;
                    }
                    let Ok(text) = std::str::from_utf8(payload) else {
                        continue;
                    };
                    let (aor, record) = text.split_once('\n').unwrap_or((text, ""));
                    self.apply(aor, Some(record).filter(|r| !r.is_empty()), false);
                }
            }
            warn!("the location store's subscription ended; subscribing again");
            // 1 s, doubling up to 30 s while Redis stays away
            let mut wait = Duration::from_secs(1);
            pubsub = loop {
                tokio::time::sleep(wait).await;
                match self.resubscribe(&client, &config).await {
                    Ok(p) => break p,
                    Err(e) => warn!(retry_in = ?wait, "location store subscription: {e}"),
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            };
        }
    }

    async fn resubscribe(
        &self,
        client: &redis::Client,
        config: &RedisConfig,
    ) -> Result<redis::aio::PubSub, RedisStoreError> {
        let limit = config.op_timeout;
        let mut pubsub = match tokio::time::timeout(limit, client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(RedisStoreError::Connect(e)),
            Err(_) => return Err(RedisStoreError::Timeout(limit)),
        };
        within(limit, pubsub.subscribe(CHANNEL)).await?;
        let mut conn =
            match tokio::time::timeout(limit, client.get_multiplexed_async_connection()).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(RedisStoreError::Connect(e)),
                Err(_) => return Err(RedisStoreError::Timeout(limit)),
            };
        // changes missed while away: a full load (nothing to guard against
        // here, the subscription's messages wait in its stream)
        load_all(&mut conn, self, config).await?;
        Ok(pubsub)
    }
}

/// Loads every AoR's record (at most `max_keys`); returns how many.
async fn load_all(
    conn: &mut MultiplexedConnection,
    reader: &Reader,
    config: &RedisConfig,
) -> Result<usize, RedisStoreError> {
    let limit = config.op_timeout;
    let mut cursor: u64 = 0;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = within(
            limit,
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{KEY_PREFIX}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(conn),
        )
        .await?;
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|k| k.len() <= KEY_PREFIX.len() + MAX_AOR)
            .collect();
        if !keys.is_empty() {
            let values: Vec<Option<Vec<u8>>> =
                within(limit, redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
            for (key, value) in keys.iter().zip(values) {
                let Some(value) = value.filter(|v| v.len() <= MAX_RECORD) else {
                    continue;
                };
                let (Some(aor), Ok(text)) =
                    (key.strip_prefix(KEY_PREFIX), std::str::from_utf8(&value))
                else {
                    continue;
                };
                reader.apply(aor, Some(text), true);
                n += 1;
            }
        }
        if next == 0 || n >= config.max_keys {
            if n >= config.max_keys {
                warn!(n, "location store load stopped at max_keys");
            }
            return Ok(n);
        }
        cursor = next;
    }
}

/// Performs the registrar's writes, in order, batched.
struct Writer {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    timeout: Duration,
    origin: u64,
    /// Most bindings kept per AoR.
    cap: usize,
    commander: AppCommander,
}

impl Writer {
    async fn run(mut self, mut ops: mpsc::Receiver<StoreOp>) {
        let mut batch = Vec::new();
        while let Some(op) = ops.recv().await {
            batch.push(op);
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let stored = match self.write(&batch).await {
                Ok(()) => true,
                Err(e) => {
                    warn!(writes = batch.len(), "location store: {e}");
                    // a connection that failed is opened anew next time
                    self.conn = None;
                    false
                }
            };
            for op in batch.drain(..) {
                let done = StoreDone { id: op.id, stored };
                if self.commander.command(done).await.is_err() {
                    debug!("endpoint gone; location writer stops");
                    return;
                }
            }
        }
    }

    async fn write(&mut self, batch: &[StoreOp]) -> Result<(), RedisStoreError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = match tokio::time::timeout(
                    self.timeout,
                    self.client.get_multiplexed_async_connection(),
                )
                .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return Err(RedisStoreError::Connect(e)),
                    Err(_) => return Err(RedisStoreError::Timeout(self.timeout)),
                };
                self.conn.insert(c)
            }
        };
        // each op changes only what its REGISTER changed: read the
        // records (WATCHed), merge, write them in one transaction; another
        // process writing one of them in between aborts it, and we read
        // again
        let mut keys: Vec<&str> = batch.iter().map(|op| op.aor.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let redis_keys: Vec<String> = keys.iter().map(|a| format!("{KEY_PREFIX}{a}")).collect();
        for _ in 0..MAX_ATTEMPTS {
            within(
                self.timeout,
                redis::cmd("WATCH").arg(&redis_keys).query_async::<()>(conn),
            )
            .await?;
            let current: Vec<Option<String>> = within(
                self.timeout,
                redis::cmd("MGET").arg(&redis_keys).query_async(conn),
            )
            .await?;
            // each AoR's record, then what it becomes and how long it lives
            let mut records: Vec<(Option<String>, Duration)> = current
                .into_iter()
                .map(|r| (r.filter(|t| t.len() <= MAX_RECORD), Duration::ZERO))
                .collect();
            let (now, unix) = clocks();
            for op in batch {
                let Ok(i) = keys.binary_search(&op.aor.as_str()) else {
                    continue;
                };
                let Some(slot) = records.get_mut(i) else {
                    continue;
                };
                let (merged, error) = merge_shared(
                    slot.0.as_deref(),
                    &op.previous,
                    &op.bindings,
                    now,
                    unix,
                    self.origin,
                    self.cap,
                );
                if let Some(e) = error {
                    warn!("{}; replaced", RedisStoreError::Record(e));
                }
                *slot = match merged {
                    Some(m) => (Some(m.text), m.lifetime),
                    None => (None, Duration::ZERO),
                };
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            for ((aor, key), (record, life)) in keys.iter().zip(&redis_keys).zip(&records) {
                match record {
                    Some(text) => {
                        let ms = u64::try_from(life.as_millis()).unwrap_or(u64::MAX).max(1);
                        pipe.cmd("SET")
                            .arg(key)
                            .arg(text)
                            .arg("PX")
                            .arg(ms)
                            .ignore();
                        pipe.cmd("PUBLISH")
                            .arg(CHANNEL)
                            .arg(format!("{aor}\n{text}"))
                            .ignore();
                    }
                    None => {
                        pipe.cmd("DEL").arg(key).ignore();
                        pipe.cmd("PUBLISH")
                            .arg(CHANNEL)
                            .arg(format!("{aor}\n"))
                            .ignore();
                    }
                }
            }
            // None: a WATCHed key changed, nothing was written
            if within(self.timeout, pipe.query_async::<Option<()>>(conn))
                .await?
                .is_some()
            {
                return Ok(());
            }
            debug!("location store: a record changed meanwhile; merging again");
        }
        Err(RedisStoreError::Contended(MAX_ATTEMPTS))
    }
}

/// Hands the registrar's queued writes to the Redis writer; a write that
/// cannot be queued fails at once (its REGISTER gets 503).
pub(crate) fn queue_ops(
    registrar: &mut Registrar,
    core: &mut crate::core::Endpoint,
    now: Instant,
    sender: &mpsc::Sender<StoreOp>,
) {
    while let Some(op) = registrar.poll_store_op() {
        let id = op.id;
        if sender.try_send(op).is_err() {
            warn!("location store: {}", RedisStoreError::QueueFull);
            registrar.store_done(core, now, id, false);
        }
    }
}
