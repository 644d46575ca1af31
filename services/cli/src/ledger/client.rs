//! The participant endpoints of `syncline ledger`: a call goes to the endpoint that answered
//! last and moves on to the next one when it answers UNAVAILABLE (a passive replica, a
//! replica that is down, HAProxy between two leaders), round after round, until `wait`
//! has passed. So one list works with replicas listed directly or with HAProxy in front.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use syncline_sequencer_client::ClientTls;
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::error::{CallError, LedgerCliError};

/// Pause between two rounds over endpoints that were all unavailable.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// A participant's ledger API at one or more endpoints (its replicas, or HAProxy).
pub struct Endpoints {
    endpoints: Vec<(String, Channel)>,
    /// The endpoint that answered last: the next call starts there.
    current: AtomicUsize,
    /// Deadline of a unary call (SubmitAndWait waits for its outcome until then).
    pub timeout: Duration,
    /// How long to keep trying while every endpoint is unavailable.
    pub wait: Duration,
    /// `authorization: Bearer <token>` of every call, if a token was given.
    authorization: Option<AsciiMetadataValue>,
}

/// `--participant` URLs: `http://host:port` (or `host:port`: `https://` when `tls`), in order.
pub fn parse_urls(list: &[String], tls: bool) -> Result<Vec<String>, LedgerCliError> {
    let scheme = if tls { "https" } else { "http" };
    let urls: Vec<String> = list
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| if s.contains("://") { s.to_string() } else { format!("{scheme}://{s}") })
        .collect();
    if urls.is_empty() {
        return Err(LedgerCliError::Usage(
            "no participant endpoint: give --participant URL[,URL...] or set SYNCLINE_PARTICIPANT".into(),
        ));
    }
    for u in &urls {
        if !(u.starts_with("http://") || u.starts_with("https://")) || u.parse::<tonic::transport::Uri>().is_err() {
            return Err(LedgerCliError::Usage(format!("--participant: {u:?} is not an http:// URL")));
        }
        if u.starts_with("https://") && !tls {
            return Err(LedgerCliError::Usage(format!(
                "--participant: {u:?} is https://: give the CA of its certificate with --ca-cert"
            )));
        }
    }
    Ok(urls)
}

impl Endpoints {
    /// Lazily connecting channels to `urls` (checked by [`parse_urls`]); `https://` ones
    /// over `tls`.
    pub fn new(
        urls: Vec<String>,
        tls: Option<&ClientTls>,
        timeout: Duration,
        wait: Duration,
    ) -> Result<Endpoints, LedgerCliError> {
        let endpoints = urls
            .into_iter()
            .map(|u| {
                let usage = |e: &dyn std::fmt::Display| LedgerCliError::Usage(format!("--participant {u}: {e}"));
                let mut endpoint = Channel::from_shared(u.clone()).map_err(|e| usage(&e))?;
                if let (true, Some(tls)) = (u.starts_with("https://"), tls) {
                    endpoint = endpoint.tls_config(tls.tonic_config()).map_err(|e| usage(&e))?;
                }
                let channel = endpoint.connect_timeout(Duration::from_secs(3)).connect_lazy();
                Ok((u, channel))
            })
            .collect::<Result<_, LedgerCliError>>()?;
        Ok(Endpoints { endpoints, current: AtomicUsize::new(0), timeout, wait, authorization: None })
    }

    /// Send `token` (a JWT) as the bearer token of every call.
    pub fn with_token(mut self, token: &str) -> Result<Endpoints, LedgerCliError> {
        let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            LedgerCliError::Usage("the access token has characters not allowed in gRPC metadata".into())
        })?;
        self.authorization = Some(value);
        Ok(self)
    }

    /// `call` on the current endpoint, then the next ones while they answer UNAVAILABLE;
    /// another error (or the last UNAVAILABLE once `wait` has passed) is the answer.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let give_up = Instant::now() + self.wait;
        let n = self.endpoints.len();
        loop {
            let start = self.current.load(Ordering::Relaxed);
            let mut last = None;
            for k in 0..n {
                let i = (start + k) % n;
                let (url, channel) = &self.endpoints[i];
                match call(channel.clone()).await {
                    Ok(v) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Err(s) if s.code() == Code::Unavailable => {
                        tracing::debug!(endpoint = %url, status = %s.message(), "unavailable; trying the next endpoint");
                        last = Some(CallError::from_status(url, &s, self.timeout));
                    }
                    Err(s) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Err(CallError::from_status(url, &s, self.timeout));
                    }
                }
            }
            let last = last.expect("at least one endpoint");
            if Instant::now() + ROUND_PAUSE >= give_up {
                return Err(last);
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    /// A request with the unary deadline (and the token).
    pub fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut r = self.stream_request(message);
        r.set_timeout(self.timeout);
        r
    }

    /// A request opening a stream: the token, no deadline.
    pub fn stream_request<M>(&self, message: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(message);
        if let Some(a) = &self.authorization {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }

    /// The endpoint a stream was opened on last (for errors of a stream item).
    pub fn current_url(&self) -> &str {
        &self.endpoints[self.current.load(Ordering::Relaxed)].0
    }
}

/// Whether a stream that ended with `status` may be resumed on another endpoint: the replica
/// became passive or went away (the participant's own errors carry an error id; a broken
/// connection does not).
pub fn resumable(status: &Status, error: &CallError) -> bool {
    status.code() == Code::Unavailable
        || (error.error_id.is_none() && matches!(status.code(), Code::Unknown | Code::Internal | Code::Cancelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_urls_default_to_http_and_reject_garbage() {
        let urls = parse_urls(&["127.0.0.1:4021".into(), " http://b:1 ".into()], false).unwrap();
        assert_eq!(urls, vec!["http://127.0.0.1:4021", "http://b:1"]);
        assert!(matches!(parse_urls(&[], false), Err(LedgerCliError::Usage(m)) if m.contains("SYNCLINE_PARTICIPANT")));
        assert!(parse_urls(&["ftp://x".into()], false).is_err());
        assert!(parse_urls(&["http://a b".into()], false).is_err());
        assert_eq!(parse_urls(&["127.0.0.1:4021".into()], true).unwrap(), vec!["https://127.0.0.1:4021"]);
        let e = parse_urls(&["https://a:1".into()], false).unwrap_err().to_string();
        assert!(e.contains("--ca-cert"), "{e}");
    }

    #[tokio::test]
    async fn unavailable_endpoints_are_skipped_and_the_answering_one_is_kept() {
        let e = Endpoints::new(
            vec!["http://a:1".into(), "http://b:1".into(), "http://c:1".into()],
            None,
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
        .unwrap();
        let calls = std::sync::Mutex::new(Vec::new());
        // Endpoint 0 and 1 unavailable, 2 answers: the answer comes from 2, and the next call
        // starts there.
        let answer = e
            .call(|_| {
                let mut c = calls.lock().unwrap();
                c.push(());
                let k = c.len();
                async move {
                    if k < 3 {
                        Err(Status::unavailable("passive"))
                    } else {
                        Ok(k)
                    }
                }
            })
            .await;
        assert_eq!(answer, Ok(3));
        assert_eq!(e.current_url(), "http://c:1");
        // Another error is the answer at once.
        let r: Result<(), _> = e.call(|_| async { Err(Status::not_found("no")) }).await;
        assert_eq!(r.unwrap_err().code, Code::NotFound);
    }

    #[tokio::test]
    async fn all_unavailable_gives_up_after_wait_with_the_last_error() {
        let e = Endpoints::new(vec!["http://a:1".into()], None, Duration::from_secs(1), Duration::from_millis(500))
            .unwrap();
        let start = std::time::Instant::now();
        let r: Result<(), _> = e.call(|_| async { Err(Status::unavailable("NODE_IS_PASSIVE_REPLICA")) }).await;
        let err = r.unwrap_err();
        assert_eq!((err.code, err.endpoint.as_str()), (Code::Unavailable, "http://a:1"));
        assert!(start.elapsed() >= Duration::from_millis(200) && start.elapsed() < Duration::from_secs(3));
    }
}
