//! The key set: keys from a JWKS URL (fetched, cached, refetched within limits) or a file.
//!
//! Readers take the current snapshot without waiting; one fetch runs at a time. A fetch is
//! made when a token names a key id the snapshot lacks, or when the snapshot is older than
//! the maximum age, and never twice within the minimum refresh interval, so a burst of
//! tokens with made-up key ids costs one request to the identity provider per interval.
//! A failed fetch keeps the keys already cached; tokens needing a key that is not cached are
//! then refused as "keys unavailable", never accepted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::algorithm::jwk_algorithms;
use crate::error::{JwtError, JwtErrorCode};

/// Largest JWKS document accepted, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One usable key of the set.
#[derive(Clone)]
pub(crate) struct SetKey {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for SetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The keys as of one load.
#[derive(Debug)]
struct Snapshot {
    /// Bumped by every fetch attempt, so that callers queued behind a fetch use its result
    /// instead of fetching again.
    generation: u64,
    keys: Arc<Vec<SetKey>>,
    /// When the keys were last loaded successfully.
    loaded_at: Option<Instant>,
    /// Why the latest fetch failed; `None` after a success.
    failure: Option<String>,
}

#[derive(Debug)]
enum Source {
    Url {
        client: reqwest::Client,
        url: String,
    },
    File(PathBuf),
}

#[derive(Debug)]
pub(crate) struct KeySet {
    source: Source,
    min_refresh: Duration,
    max_age: Duration,
    current: RwLock<Arc<Snapshot>>,
    /// Held while fetching; holds when the last fetch started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl KeySet {
    /// Reads the file now (an error stops start-up), or makes the first fetch of the URL (a
    /// failure is logged and retried on demand: the identity provider may come up later).
    pub(crate) async fn open(
        url: Option<&str>,
        file: Option<&Path>,
        timeout: Duration,
        min_refresh: Duration,
        max_age: Duration,
    ) -> Result<Self, String> {
        let source = match (url, file) {
            (Some(url), _) => Source::Url {
                client: reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .build()
                    .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?,
                url: url.to_owned(),
            },
            (None, Some(file)) => Source::File(file.to_owned()),
            (None, None) => return Err("no JWKS URL or file".to_owned()),
        };
        let initial = Snapshot {
            generation: 0,
            keys: Arc::new(Vec::new()),
            loaded_at: None,
            failure: Some("the key set has not been fetched yet".to_owned()),
        };
        let set = Self {
            source,
            min_refresh,
            max_age,
            current: RwLock::new(Arc::new(initial)),
            fetching: tokio::sync::Mutex::new(None),
        };
        match &set.source {
            Source::File(path) => {
                let keys = read_file(path).await?;
                set.publish(Ok(keys));
            }
            Source::Url { .. } => set.refresh(0).await,
        }
        Ok(set)
    }

    /// The key that verifies a token with this `kid` and `alg`.
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, JwtError> {
        let mut snapshot = self.snapshot();
        if self.is_stale(&snapshot) {
            self.refresh(snapshot.generation).await;
            snapshot = self.snapshot();
        }
        if let Some(found) = pick(&snapshot.keys, kid, alg)? {
            return Ok(found);
        }
        if matches!(self.source, Source::Url { .. }) {
            self.refresh(snapshot.generation).await;
            snapshot = self.snapshot();
            if let Some(found) = pick(&snapshot.keys, kid, alg)? {
                return Ok(found);
            }
        }
        let which = kid.map_or_else(
            || "the token has no kid and".to_owned(),
            |kid| format!("key id `{kid}`:"),
        );
        match &snapshot.failure {
            Some(failure) => Err(JwtError::new(
                JwtErrorCode::KeysUnavailable,
                format!("{which} no cached key fits, and the key set cannot be loaded: {failure}"),
            )),
            None => Err(JwtError::new(
                JwtErrorCode::UnknownKey,
                format!("{which} not in the key set ({} keys)", snapshot.keys.len()),
            )),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn is_stale(&self, snapshot: &Snapshot) -> bool {
        matches!(self.source, Source::Url { .. })
            && snapshot
                .loaded_at
                .is_none_or(|at| at.elapsed() >= self.max_age)
    }

    /// Fetches the URL unless another caller already did since `seen_generation`, or the
    /// last fetch started less than the minimum refresh interval ago.
    async fn refresh(&self, seen_generation: u64) {
        let Source::Url { client, url } = &self.source else {
            return;
        };
        let mut last_started = self.fetching.lock().await;
        if self.snapshot().generation != seen_generation {
            return;
        }
        if last_started.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return;
        }
        *last_started = Some(Instant::now());
        let result = fetch(client, url).await;
        match &result {
            Ok(keys) => tracing::info!(jwks_url = %url, keys = keys.len(), "JWKS loaded"),
            Err(e) => tracing::warn!(jwks_url = %url, error = %e, "JWKS fetch failed"),
        }
        self.publish(result);
    }

    fn publish(&self, result: Result<Vec<SetKey>, String>) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let generation = current.generation + 1;
        let next = match result {
            Ok(keys) => Snapshot {
                generation,
                keys: Arc::new(keys),
                loaded_at: Some(Instant::now()),
                failure: None,
            },
            Err(failure) => Snapshot {
                generation,
                keys: Arc::clone(&current.keys),
                loaded_at: current.loaded_at,
                failure: Some(failure),
            },
        };
        *current = Arc::new(next);
    }
}

/// The key for `kid` that allows `alg`. A key with that id but of another type is a refusal
/// (the algorithm comes from the key); a token without a kid uses the only key of a
/// one-key set.
fn pick(
    keys: &[SetKey],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Option<DecodingKey>, JwtError> {
    let candidates: Vec<&SetKey> = match kid {
        Some(kid) => keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .collect(),
        None if keys.len() == 1 => keys.iter().collect(),
        None => Vec::new(),
    };
    if candidates.is_empty() {
        return Ok(None);
    }
    match candidates.iter().find(|k| k.algorithms.contains(&alg)) {
        Some(key) => Ok(Some(key.key.clone())),
        None => Err(JwtError::new(
            JwtErrorCode::AlgorithmNotAllowed,
            format!(
                "the key {} allows {:?}, not {alg:?}",
                kid.map_or_else(String::new, |kid| format!("`{kid}`")),
                candidates[0].algorithms
            ),
        )),
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<SetKey>, String> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered HTTP {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the response failed: {e}"))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!(
                "the response is larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    parse_key_set(&body)
}

async fn read_file(path: &Path) -> Result<Vec<SetKey>, String> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
    parse_key_set(&bytes).map_err(|e| format!("JWKS file {}: {e}", path.display()))
}

/// The usable keys of a JWKS document (`{"keys": [...]}`). Keys that cannot verify tokens
/// here are skipped (and logged); a set with none usable is an error.
pub(crate) fn parse_key_set(bytes: &[u8]) -> Result<Vec<SetKey>, String> {
    let document: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Some(Value::Array(entries)) = document.get("keys") else {
        return Err("not a JWKS: no \"keys\" array".to_owned());
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
        let name = kid.clone().unwrap_or_else(|| format!("#{i}"));
        let parsed = serde_json::from_value::<Jwk>(entry.clone())
            .map_err(|e| format!("not a JWK: {e}"))
            .and_then(|jwk| {
                let algorithms = jwk_algorithms(&jwk)?;
                let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad key: {e}"))?;
                Ok((algorithms, key))
            });
        match parsed {
            Ok((algorithms, key)) => keys.push(SetKey {
                kid,
                algorithms,
                key,
            }),
            Err(why) => {
                tracing::debug!(key = %name, reason = %why, "JWKS key skipped");
                skipped.push(format!("{name}: {why}"));
            }
        }
    }
    if keys.is_empty() {
        return Err(if skipped.is_empty() {
            "the key set is empty".to_owned()
        } else {
            format!("no usable signing key ({})", skipped.join("; "))
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unusable_keys_are_skipped_and_a_set_of_none_is_an_error() {
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let oct = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        let keys = parse_key_set(json!({"keys": [ed, oct.clone()]}).to_string().as_bytes())
            .expect("one usable key");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ed"));

        let err = parse_key_set(json!({"keys": [oct]}).to_string().as_bytes()).expect_err("none");
        assert!(err.contains("hmac") && err.contains("symmetric"), "{err}");
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"keys": []}"#,
            br#"{"keys": {}}"#,
        ] {
            assert!(parse_key_set(bad).is_err());
        }
    }

    #[test]
    fn a_key_is_picked_by_kid_and_must_allow_the_algorithm() {
        let set = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        ]});
        let keys = parse_key_set(set.to_string().as_bytes()).expect("parses");
        assert!(matches!(
            pick(&keys, Some("ed"), Algorithm::EdDSA),
            Ok(Some(_))
        ));
        assert!(matches!(
            pick(&keys, Some("other"), Algorithm::EdDSA),
            Ok(None)
        ));
        // Without a kid, the only key of the set.
        assert!(matches!(pick(&keys, None, Algorithm::EdDSA), Ok(Some(_))));
        let err = pick(&keys, Some("ed"), Algorithm::RS256).expect_err("wrong type");
        assert_eq!(err.code, JwtErrorCode::AlgorithmNotAllowed);
    }
}
