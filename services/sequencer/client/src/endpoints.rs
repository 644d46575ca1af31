//! The endpoint list: lazily connected channels, per-endpoint health with back-off, round
//! robin over the healthy ones, replaceable at runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::token::Tokens;
use crate::ClientConfig;

/// An endpoint list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No endpoint at all.
    #[error("no sequencer endpoint given")]
    Empty,
    /// An `https://` URL but no CA to check the server's certificate with.
    #[error("sequencer endpoint {url:?} is https:// but no CA is configured to check its certificate (ca)")]
    NoCa {
        /// The URL as given.
        url: String,
    },
    /// A URL that is not a valid `http://host:port` URI.
    #[error("sequencer endpoint {url:?} is not a valid URL: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// One sequencer endpoint: its channel (reconnected by tonic) and its health.
#[derive(Debug)]
pub(crate) struct Endpoint {
    url: String,
    channel: Channel,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    /// Failures since the last success.
    failures: u32,
    /// Skipped until then.
    until: Option<Instant>,
}

impl Endpoint {
    pub(crate) fn new(url: String, config: &ClientConfig) -> Result<Endpoint, EndpointError> {
        let invalid = |reason: String| EndpointError::InvalidUrl { url: url.clone(), reason };
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).map_err(|e| invalid(e.to_string()))?;
        if endpoint.uri().host().is_none() {
            return Err(invalid("it has no host".into()));
        }
        let endpoint = if url.starts_with("https://") {
            let tls = config.tls.as_ref().ok_or_else(|| EndpointError::NoCa { url: url.clone() })?;
            endpoint.tls_config(tls.tonic_config()).map_err(|e| invalid(e.to_string()))?
        } else {
            endpoint
        };
        let channel = endpoint
            .connect_timeout(config.connect_timeout)
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Endpoint { url, channel, health: Mutex::default() })
    }

    /// Its URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Its channel (cheap to clone).
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// It answered: use it again at once.
    pub(crate) fn succeeded(&self) {
        let mut h = self.health.lock().unwrap();
        if h.failures > 0 {
            tracing::info!(endpoint = %self.url, "sequencer endpoint answers again");
        }
        *h = Health::default();
    }

    /// It failed: skip it for a back-off that doubles with each consecutive failure.
    pub(crate) fn failed(&self, config: &ClientConfig, cause: &str) {
        let mut h = self.health.lock().unwrap();
        h.failures = h.failures.saturating_add(1);
        let backoff = config.backoff_min.saturating_mul(1 << (h.failures - 1).min(16)).min(config.backoff_max);
        h.until = Some(Instant::now() + backoff);
        if h.failures == 1 {
            tracing::warn!(endpoint = %self.url, cause, "sequencer endpoint failed; skipping it for {backoff:?}");
        } else {
            tracing::debug!(endpoint = %self.url, cause, failures = h.failures, "sequencer endpoint failed again; skipping it for {backoff:?}");
        }
    }

    /// When it may be used again (`None`: now).
    fn ready_at(&self, now: Instant) -> Option<Instant> {
        self.health.lock().unwrap().until.filter(|u| *u > now)
    }
}

/// The shared endpoint list of a client.
#[derive(Clone)]
pub(crate) struct Endpoints {
    shared: Arc<Shared>,
}

struct Shared {
    list: RwLock<Vec<Arc<Endpoint>>>,
    cursor: AtomicUsize,
    /// Bumped on every change of the list, so subscriptions can leave removed endpoints.
    version: watch::Sender<u64>,
    config: ClientConfig,
    tokens: Tokens,
}

/// The endpoint to try next.
pub(crate) struct Pick {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// How long to wait first: every endpoint is backing off and this one is due soonest.
    pub wait: Duration,
}

impl Endpoints {
    /// The endpoints at `urls`.
    pub(crate) fn new(
        urls: impl IntoIterator<Item = impl Into<String>>,
        config: ClientConfig,
    ) -> Result<Self, EndpointError> {
        let list = build(urls, &config, &[])?;
        let shared = Shared {
            list: RwLock::new(list),
            cursor: AtomicUsize::new(0),
            version: watch::Sender::new(0),
            config,
            tokens: Tokens::default(),
        };
        Ok(Endpoints { shared: Arc::new(shared) })
    }

    /// Replace the list; endpoints that stay keep their channel and health.
    pub(crate) fn set(&self, urls: impl IntoIterator<Item = impl Into<String>>) -> Result<(), EndpointError> {
        let old = self.shared.list.read().unwrap().clone();
        let new = build(urls, &self.shared.config, &old)?;
        tracing::info!(endpoints = ?new.iter().map(|e| e.url()).collect::<Vec<_>>(), "sequencer endpoints changed");
        *self.shared.list.write().unwrap() = new;
        self.shared.version.send_modify(|v| *v += 1);
        Ok(())
    }

    /// The URLs in order.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.shared.list.read().unwrap().iter().map(|e| e.url.clone()).collect()
    }

    /// The client's settings.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// The members' tokens.
    pub(crate) fn tokens(&self) -> &Tokens {
        &self.shared.tokens
    }

    /// Number of endpoints.
    pub(crate) fn len(&self) -> usize {
        self.shared.list.read().unwrap().len()
    }

    /// The next endpoint in round-robin order that is not backing off; if all are, the one
    /// due soonest, with the wait.
    pub(crate) fn next(&self) -> Pick {
        let list = self.shared.list.read().unwrap();
        let start = self.shared.cursor.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut soonest: Option<(Instant, &Arc<Endpoint>)> = None;
        for i in 0..list.len() {
            let e = &list[(start + i) % list.len()];
            match e.ready_at(now) {
                None => return Pick { endpoint: e.clone(), wait: Duration::ZERO },
                Some(at) if soonest.is_none_or(|(s, _)| at < s) => soonest = Some((at, e)),
                Some(_) => {}
            }
        }
        let (at, e) = soonest.expect("the list is never empty");
        Pick { endpoint: e.clone(), wait: at - now }
    }

    /// Whether `endpoint` is still in the list.
    pub(crate) fn contains(&self, endpoint: &Arc<Endpoint>) -> bool {
        self.shared.list.read().unwrap().iter().any(|e| Arc::ptr_eq(e, endpoint))
    }

    /// Notified on every change of the list.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }
}

/// Endpoints for `urls`, reusing those of `old` with the same URL.
fn build(
    urls: impl IntoIterator<Item = impl Into<String>>,
    config: &ClientConfig,
    old: &[Arc<Endpoint>],
) -> Result<Vec<Arc<Endpoint>>, EndpointError> {
    let mut list: Vec<Arc<Endpoint>> = Vec::new();
    for url in urls {
        let url = url.into();
        if list.iter().any(|e| e.url == url) {
            continue;
        }
        match old.iter().find(|e| e.url == url) {
            Some(e) => list.push(e.clone()),
            None => list.push(Arc::new(Endpoint::new(url, config)?)),
        }
    }
    if list.is_empty() {
        return Err(EndpointError::Empty);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_skips_failed_endpoints_until_their_backoff_ends() {
        let e = Endpoints::new(["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"], config()).unwrap();
        let picks: Vec<String> = (0..6).map(|_| e.next().endpoint.url().to_string()).collect();
        assert_eq!(picks[..3], ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]);
        assert_eq!(picks[3..], picks[..3]);
        let second = e.next().endpoint;
        let second = if second.url().ends_with(":1") { e.next().endpoint } else { second };
        second.failed(e.config(), "test");
        for _ in 0..6 {
            let p = e.next();
            assert_ne!(p.endpoint.url(), second.url(), "a failed endpoint is skipped");
            assert_eq!(p.wait, Duration::ZERO);
        }
        tokio::time::advance(Duration::from_millis(101)).await;
        assert!((0..3).any(|_| e.next().endpoint.url() == second.url()), "used again after its back-off");
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_endpoint_failed_the_one_due_soonest_is_picked_with_its_wait() {
        let e = Endpoints::new(["http://127.0.0.1:1", "http://127.0.0.1:2"], config()).unwrap();
        let a = e.next().endpoint;
        let b = e.next().endpoint;
        a.failed(e.config(), "test");
        a.failed(e.config(), "test"); // 200 ms
        b.failed(e.config(), "test"); // 100 ms
        let p = e.next();
        assert_eq!(p.endpoint.url(), b.url());
        assert_eq!(p.wait, Duration::from_millis(100));
        for _ in 0..5 {
            a.failed(e.config(), "test");
        }
        assert_eq!(
            a.ready_at(Instant::now()),
            Some(Instant::now() + Duration::from_millis(400)),
            "capped at backoff_max"
        );
        a.succeeded();
        assert_eq!(a.ready_at(Instant::now()), None);
    }

    #[tokio::test]
    async fn set_keeps_the_health_of_remaining_endpoints_and_refuses_bad_lists() {
        let e = Endpoints::new(["http://127.0.0.1:1", "http://127.0.0.1:2"], config()).unwrap();
        let a = e.next().endpoint;
        a.failed(e.config(), "test");
        let changes = e.changes();
        e.set(["http://127.0.0.1:3", a.url(), a.url()].map(String::from)).unwrap();
        assert!(changes.has_changed().unwrap());
        assert_eq!(e.urls(), ["http://127.0.0.1:3", a.url()]);
        assert!(e.contains(&a), "the same endpoint, health and all");
        assert!(a.ready_at(Instant::now()).is_some());
        assert_eq!(e.set(Vec::<String>::new()), Err(EndpointError::Empty));
        let bad = e.set(["not a url"]).unwrap_err();
        assert!(bad.to_string().starts_with("sequencer endpoint \"not a url\" is not a valid URL"), "{bad}");
        assert_eq!(e.urls().len(), 2, "a refused list changes nothing");
    }
}
