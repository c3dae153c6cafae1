//! Test helpers (feature `test-support`): real Redis servers for tests, never mocks.
//!
//! - [`test_redis`]: the Redis of this test run. `VERDICT_TEST_REDIS_URL` if set; else
//!   `127.0.0.1:6379` if it answers `PING`; else a `redis-server` child on a free port,
//!   shared by the tests running at the same time and stopped when the last one ends.
//! - [`RedisServer`]: a `redis-server` child of the test's own (to kill and restart it),
//!   on a free port, killed on drop.
//! - [`random_prefix`] and [`PrefixCleanup`]: an isolated key prefix per test, and its keys
//!   deleted afterwards.
//! - [`contract`]: the suite every [`Cache`](crate::Cache) implementation passes.
//!
//! Without `redis-server` installed and no Redis reachable these helpers panic with what to
//! install: a Redis test never skips silently.

pub mod contract;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use time::macros::datetime;
use verdict_domain::{PolicyMode, Status, WinnerPolicy, WinnerSnapshot};

/// The environment variable naming the Redis tests use (`redis://host:port`).
pub const REDIS_URL_ENV: &str = "VERDICT_TEST_REDIS_URL";

const STARTUP_LIMIT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on `127.0.0.1`, without persistence, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Start a server on a free port and wait until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not come up within 10 s.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Start a server on `port` and wait until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not come up within 10 s.
    pub fn start_on(port: u16) -> Self {
        let mut server = Self { port, child: None };
        server.spawn();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL: no goodbye to clients) and wait for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again on the same port (killing it first if it runs). It comes back
    /// empty: nothing is persisted.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freeze the server (SIGSTOP): connections stay open and accept commands, but nothing
    /// is answered until [`RedisServer::thaw`]. A frozen server is still killed on drop.
    pub fn freeze(&mut self) {
        self.signal("-STOP");
    }

    /// Let a frozen server run again (SIGCONT); it answers what it was sent meanwhile.
    pub fn thaw(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, signal: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let dir = std::env::temp_dir();
        let spawned = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed, and the Redis tests need it: install it \
                 (`apt-get install -y redis-server`) or set {REDIS_URL_ENV}"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let started = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "redis-server on port {} exited at start-up ({status}); is the port taken?",
                    self.port
                );
            }
            if redis_answers(addr) {
                break;
            }
            if started.elapsed() > STARTUP_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-server on port {} did not answer PING within {STARTUP_LIMIT:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Redis of a test; keep it alive for the whole test (it may own the server).
#[derive(Debug)]
pub struct TestRedis {
    url: String,
    _server: Option<Arc<RedisServer>>,
}

impl TestRedis {
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The Redis of this test run; see the [module docs](self) for where it comes from.
///
/// # Panics
/// When no Redis is configured or reachable and `redis-server` is not installed.
pub fn test_redis() -> TestRedis {
    if let Ok(url) = std::env::var(REDIS_URL_ENV)
        && !url.trim().is_empty()
    {
        return TestRedis { url, _server: None };
    }
    static LOCAL_ANSWERS: OnceLock<bool> = OnceLock::new();
    if *LOCAL_ANSWERS.get_or_init(|| redis_answers(SocketAddr::from(([127, 0, 0, 1], 6379)))) {
        return TestRedis {
            url: "redis://127.0.0.1:6379".to_owned(),
            _server: None,
        };
    }
    // One server for the tests running now; the last one to finish stops it (a static
    // would outlive the test binary's tests and leak the process).
    static SHARED: Mutex<Weak<RedisServer>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    let server = match shared.upgrade() {
        Some(server) => server,
        None => {
            let server = Arc::new(RedisServer::start());
            *shared = Arc::downgrade(&server);
            server
        }
    };
    TestRedis {
        url: server.url(),
        _server: Some(server),
    }
}

/// `true` when something at `addr` answers `PING` with `+PONG` within a short timeout.
pub fn redis_answers(addr: SocketAddr) -> bool {
    let limit = Duration::from_millis(300);
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, limit) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(limit));
    let _ = stream.set_write_timeout(Some(limit));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// A port of 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// A key prefix no other test uses: `verdict-test:<uuid>:`.
pub fn random_prefix() -> String {
    format!("verdict-test:{}:", uuid::Uuid::new_v4().simple())
}

/// Deletes every key under a prefix when dropped, so tests against a shared Redis leave
/// nothing behind. Best effort: a Redis that is down is left alone.
#[derive(Debug)]
pub struct PrefixCleanup {
    pub url: String,
    pub prefix: String,
}

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = match redis::cmd("KEYS").arg(&pattern).query(&mut conn) {
            Ok(keys) => keys,
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
    }
}

/// A snapshot for tests: experiment `experiment_id` in `environment` at `version`, with a
/// winner and details, so a round trip checks every field.
pub fn snapshot(environment: &str, experiment_id: &str, version: u64) -> WinnerSnapshot {
    WinnerSnapshot {
        experiment: format!("key-{experiment_id}"),
        experiment_id: experiment_id.to_owned(),
        environment: environment.to_owned(),
        organization: Some("acme".to_owned()),
        status: Status::Completed,
        winner: Some("treatment".to_owned()),
        decided_at: Some(datetime!(2026-01-02 03:04:05.123 UTC)),
        source: Some(PolicyMode::Automatic),
        policy: WinnerPolicy::default(),
        details: serde_json::json!({"p_best": {"control": 0.02, "treatment": 0.98}, "version": version}),
        version,
    }
}
