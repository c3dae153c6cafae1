//! [`RedisCache`]: the cache shared by every API replica.
//!
//! # Keys and messages
//! - `{prefix}snapshot:{environment}:{experiment_id}`: the snapshot as JSON (a plain string,
//!   no expiry). Environment keys and experiment ids cannot contain `:`, so keys never collide.
//! - Channel `{prefix}changes`: `{"origin": "<replica id>", "change": <Change>}` per message.
//!
//! # Failing fast
//! Commands go through one multiplexed [`ConnectionManager`] with bounded connect and response
//! timeouts and a single reconnect retry, and every operation also has a hard deadline
//! ([`RedisCacheOptions::operation_timeout`]). When Redis is down an operation returns
//! [`CacheError::Unavailable`] within about a second instead of waiting for it; the manager
//! reconnects on a later command once Redis is back. [`RedisCache::connect`] does not talk to
//! Redis at all (only parses the URL), so start-up never depends on Redis being up.
//!
//! # Pub/sub
//! A background task per cache holds a dedicated subscriber connection on `{prefix}changes`,
//! forwards decoded messages into a local broadcast channel ([`Cache::subscribe`]) and, when
//! the connection drops (Redis restarted) or stops answering pings, reconnects with jittered
//! exponential backoff (up to [`RedisCacheOptions::listener_max_backoff`]). Messages published
//! while it is disconnected are lost (pub/sub is at most once): a consumer that must not miss
//! a change watches [`RedisCache::listener_state`] and re-reads after a reconnect.
//!
//! [`Cache::publish`] hands the change to this replica's own subscribers directly (so they
//! get it even when Redis is down) and publishes it for the others; the listener skips
//! messages carrying its own origin id, so nobody receives a change twice.
//!
//! The task ends when the last clone of the cache is dropped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use verdict_domain::WinnerSnapshot;

use crate::{CHANGES_CAPACITY, Cache, CacheError, Change};

/// Timeouts and retries of a [`RedisCache`]. The defaults keep every operation under about
/// a second when Redis is down or unreachable.
#[derive(Debug, Clone)]
pub struct RedisCacheOptions {
    /// Limit on opening one TCP connection (and its handshake).
    pub connect_timeout: Duration,
    /// Limit on waiting for the answer to one command.
    pub response_timeout: Duration,
    /// Connection attempts after the first one when (re)connecting for a command.
    pub reconnect_retries: usize,
    /// Hard deadline on a whole operation, reconnects included.
    pub operation_timeout: Duration,
    /// Longest pause between two reconnect attempts of the pub/sub listener.
    pub listener_max_backoff: Duration,
    /// How often the listener pings its connection to notice a silent network failure.
    pub listener_ping_interval: Duration,
}

impl Default for RedisCacheOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            reconnect_retries: 1,
            operation_timeout: Duration::from_millis(1500),
            listener_max_backoff: Duration::from_secs(2),
            listener_ping_interval: Duration::from_secs(5),
        }
    }
}

/// Store a snapshot unless a higher version is held. `cjson` decodes numbers as doubles:
/// versions are exact up to 2^53. A held value that is not a snapshot is overwritten (the
/// write repairs it).
const PUT_SNAPSHOT_LUA: &str = r#"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, doc = pcall(cjson.decode, held)
  if ok and type(doc) == 'table' and type(doc.version) == 'number'
     and doc.version > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

/// [`Cache`] on Redis. Clones share one connection, one listener task and one channel.
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    channel: String,
    /// This replica's id in published messages, so its listener can skip its own.
    origin: String,
    options: RedisCacheOptions,
    put_script: redis::Script,
    changes: broadcast::Sender<Change>,
    listening: watch::Receiver<bool>,
    listener: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for RedisCache {
    // No URL: it may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.inner.prefix)
            .field("origin", &self.inner.origin)
            .field("listening", &*self.inner.listening.borrow())
            .finish()
    }
}

/// What travels on the changes channel.
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    change: Change,
}

impl RedisCache {
    /// A cache on the Redis at `url` (`redis://[:password@]host:port[/db]`), keys and channel
    /// prefixed with `key_prefix` (e.g. `verdict:`), with the default [`RedisCacheOptions`].
    ///
    /// Does not talk to Redis (so start-up never waits for it or fails because of it): it
    /// only fails on an invalid URL. The first command connects (or fails fast), and
    /// [`Cache::ping`] reports whether Redis answers. Must be called within a Tokio runtime
    /// (it spawns the pub/sub listener).
    pub fn connect(url: &str, key_prefix: &str) -> Result<RedisCache, CacheError> {
        Self::connect_with(url, key_prefix, RedisCacheOptions::default())
    }

    /// [`RedisCache::connect`] with explicit timeouts.
    pub fn connect_with(
        url: &str,
        key_prefix: &str,
        options: RedisCacheOptions,
    ) -> Result<RedisCache, CacheError> {
        let client = redis::Client::open(url)
            .map_err(|e| CacheError::unavailable("invalid Redis URL", e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(options.reconnect_retries)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(250));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| CacheError::unavailable("cannot set up the Redis connection", e))?;

        let channel = format!("{key_prefix}changes");
        let origin = uuid::Uuid::new_v4().to_string();
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let (state_tx, listening) = watch::channel(false);
        let listener = tokio::spawn(listen(Listener {
            client,
            channel: channel.clone(),
            origin: origin.clone(),
            changes: changes.clone(),
            state: state_tx,
            options: options.clone(),
        }))
        .abort_handle();

        Ok(RedisCache {
            inner: Arc::new(Inner {
                conn,
                prefix: key_prefix.to_owned(),
                channel,
                origin,
                options,
                put_script: redis::Script::new(PUT_SNAPSHOT_LUA),
                changes,
                listening,
                listener,
            }),
        })
    }

    /// The key prefix this cache was opened with.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The Redis key holding the snapshot of (environment, experiment).
    pub fn snapshot_key(&self, environment: &str, experiment_id: &str) -> String {
        format!(
            "{}snapshot:{environment}:{experiment_id}",
            self.inner.prefix
        )
    }

    /// The pub/sub channel of this prefix.
    pub fn changes_channel(&self) -> &str {
        &self.inner.channel
    }

    /// `true` while the pub/sub listener is subscribed. It turns `false` when the connection
    /// drops and `true` again after resubscribing; changes published in between were missed.
    pub fn listener_state(&self) -> watch::Receiver<bool> {
        self.inner.listening.clone()
    }

    /// Wait until the pub/sub listener is subscribed; `false` if it is not within `timeout`.
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let mut state = self.listener_state();
        tokio::time::timeout(timeout, state.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Run one command against the manager under the operation deadline.
    async fn run<T, F>(&self, what: &str, command: F) -> Result<T, CacheError>
    where
        F: AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    {
        let mut conn = self.inner.conn.clone();
        let deadline = self.inner.options.operation_timeout;
        match tokio::time::timeout(deadline, command(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CacheError::unavailable(format!("redis {what}"), e)),
            Err(_) => Err(CacheError::timed_out(format!(
                "redis {what}: no answer within {} ms",
                deadline.as_millis()
            ))),
        }
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.run("PING", async |conn| {
            redis::cmd("PING").query_async::<()>(conn).await
        })
        .await
    }

    async fn get_snapshot(
        &self,
        environment: &str,
        experiment_id: &str,
    ) -> Result<Option<WinnerSnapshot>, CacheError> {
        let key = self.snapshot_key(environment, experiment_id);
        let raw: Option<Vec<u8>> = self
            .run("GET", async |conn| {
                redis::cmd("GET").arg(&key).query_async(conn).await
            })
            .await?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CacheError::corrupt(key, e)),
        }
    }

    async fn put_snapshot(&self, snapshot: &WinnerSnapshot) -> Result<(), CacheError> {
        let key = self.snapshot_key(&snapshot.environment, &snapshot.experiment_id);
        let json =
            serde_json::to_string(snapshot).map_err(|e| CacheError::corrupt(key.clone(), e))?;
        let script = &self.inner.put_script;
        // 1 = stored, 0 = a higher version is held (not an error: the newer one stays).
        let _stored: i64 = self
            .run("put snapshot", async |conn| {
                script
                    .key(&key)
                    .arg(&json)
                    .arg(snapshot.version)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn invalidate(&self, environment: &str, experiment_id: &str) -> Result<(), CacheError> {
        let key = self.snapshot_key(environment, experiment_id);
        self.run("DEL", async |conn| {
            redis::cmd("DEL").arg(&key).query_async::<()>(conn).await
        })
        .await
    }

    async fn publish(&self, change: &Change) -> Result<(), CacheError> {
        // Local subscribers first, whatever happens to Redis.
        let _ = self.inner.changes.send(change.clone());
        let message = serde_json::to_string(&Envelope {
            origin: self.inner.origin.clone(),
            change: change.clone(),
        })
        .map_err(|e| CacheError::corrupt(self.inner.channel.clone(), e))?;
        let channel = &self.inner.channel;
        self.run("PUBLISH", async |conn| {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(&message)
                .query_async::<()>(conn)
                .await
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }
}

// ---- the pub/sub listener --------------------------------------------------------------

/// What the listener task owns. Deliberately not the cache itself: the task must not keep
/// the cache alive, or dropping the last handle would never stop it.
struct Listener {
    client: redis::Client,
    channel: String,
    origin: String,
    changes: broadcast::Sender<Change>,
    state: watch::Sender<bool>,
    options: RedisCacheOptions,
}

const LISTENER_MIN_BACKOFF: Duration = Duration::from_millis(100);

async fn listen(listener: Listener) {
    let mut backoff = LISTENER_MIN_BACKOFF;
    // Log the first failure of a series, not every retry.
    let mut failing = false;
    loop {
        match listener.subscribe().await {
            Ok((sink, stream)) => {
                if failing {
                    tracing::info!(channel = %listener.channel, "cache change listener subscribed again");
                }
                failing = false;
                backoff = LISTENER_MIN_BACKOFF;
                listener.state.send_replace(true);
                let why = listener.forward(sink, stream).await;
                listener.state.send_replace(false);
                tracing::warn!(
                    channel = %listener.channel,
                    reason = %why,
                    "cache change listener lost its Redis connection; reconnecting"
                );
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        channel = %listener.channel,
                        error = %verdict_domain::ErrorChain(&e),
                        "cache change listener cannot subscribe; retrying with backoff"
                    );
                }
                failing = true;
            }
        }
        // Full jitter in [backoff/2, backoff]: replicas do not reconnect in lockstep.
        let half = backoff / 2;
        let pause = half + half.mul_f64(rand::rng().random::<f64>());
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(listener.options.listener_max_backoff);
    }
}

impl Listener {
    async fn subscribe(&self) -> Result<(PubSubSink, PubSubStream), CacheError> {
        let limit = self.options.connect_timeout + self.options.response_timeout;
        let attempt = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub.split())
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(parts)) => Ok(parts),
            Ok(Err(e)) => Err(CacheError::unavailable("redis SUBSCRIBE", e)),
            Err(_) => Err(CacheError::timed_out("redis SUBSCRIBE: timed out")),
        }
    }

    /// Forward messages until the connection fails; returns why it stopped.
    async fn forward(&self, mut sink: PubSubSink, mut stream: PubSubStream) -> String {
        let mut ping = tokio::time::interval(self.options.listener_ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return "connection closed".to_owned();
                    };
                    self.deliver(message.get_payload_bytes());
                }
                _ = ping.tick() => {
                    let answer = tokio::time::timeout(
                        self.options.response_timeout,
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    match answer {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("ping failed: {e}"),
                        Err(_) => return "ping timed out".to_owned(),
                    }
                }
            }
        }
    }

    fn deliver(&self, payload: &[u8]) {
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(envelope) if envelope.origin == self.origin => {} // delivered when published
            Ok(envelope) => {
                // An error only means nobody is subscribed on this replica right now.
                let _ = self.changes.send(envelope.change);
            }
            Err(e) => tracing::warn!(
                channel = %self.channel,
                error = %verdict_domain::ErrorChain(&e),
                "ignoring an undecodable message on the cache change channel"
            ),
        }
    }
}
