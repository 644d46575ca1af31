//! An in-memory sequencer implementing [`SequencerApi`], for unit tests of services: members,
//! timestamps, idempotent sends, per-member event chains, and injected failures.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::BROADCAST_RECIPIENT as ALL;
use syncline_proto::sequencer::{DeliverError, DeliverErrorCode, Envelope, Event, SendRequest};
use tokio::sync::watch;
use tonic::Code;

use crate::request::now_micros;
use crate::send::Sent;
use crate::{AcknowledgeError, EventStream, SendError, SequencerApi, SubscribeError};

/// What the fake names as the endpoint in its errors.
pub const ENDPOINT: &str = "fake";

/// An in-memory sequencer. Cheap to clone: clones share the state.
#[derive(Clone, Default)]
pub struct FakeSequencer {
    state: Arc<Mutex<State>>,
    /// Bumped on every new event or injected subscription failure.
    changed: Arc<watch::Sender<u64>>,
}

#[derive(Default)]
struct State {
    members: HashMap<String, Member>,
    events: Vec<Stored>,
    /// (sender, message id) → (envelopes, timestamp).
    claims: HashMap<(String, String), (Vec<Envelope>, i64)>,
    last_ts: i64,
    send_failures: VecDeque<SendError>,
    /// Injected subscription failures, in order, each with the last timestamp at injection:
    /// a subscription fails with the first injected after it started, once it delivered
    /// the events up to that timestamp.
    subscription_failures: Vec<(SubscribeError, i64)>,
    acks: HashMap<String, i64>,
}

struct Member {
    enabled: bool,
    registered_at: i64,
}

struct Stored {
    timestamp: i64,
    sender: String,
    message_id: String,
    envelopes: Vec<Envelope>,
    error: Option<DeliverError>,
}

impl Stored {
    fn concerns(&self, member: &str) -> bool {
        self.sender == member || self.envelopes.iter().any(|e| e.recipients.iter().any(|r| r == member || r == ALL))
    }

    fn is_broadcast(&self) -> bool {
        self.envelopes.iter().any(|e| e.recipients.iter().any(|r| r == ALL))
    }

    /// The event as `member` receives it.
    fn event_for(&self, member: &str, previous: Option<i64>) -> Event {
        let is_sender = self.sender == member;
        Event {
            timestamp: self.timestamp,
            previous_timestamp: previous,
            sender: self.sender.clone(),
            message_id: is_sender.then(|| self.message_id.clone()),
            envelopes: self
                .envelopes
                .iter()
                .filter(|e| e.recipients.iter().any(|r| r == member || r == ALL))
                .cloned()
                .collect(),
            error: if is_sender { self.error.clone() } else { None },
        }
    }
}

impl State {
    fn next_ts(&mut self) -> i64 {
        self.last_ts = now_micros().max(self.last_ts + 1);
        self.last_ts
    }

    fn previous(&self, member: &str, at: i64) -> Option<i64> {
        self.events.iter().rev().find(|e| e.timestamp <= at && e.concerns(member)).map(|e| e.timestamp)
    }
}

impl FakeSequencer {
    /// An empty sequencer: no members, no events.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `member` (again: enable it); the timestamp after which it reads events.
    pub fn register(&self, member: &str) -> i64 {
        let mut s = self.state.lock().unwrap();
        let at = s.next_ts();
        let m = s.members.entry(member.to_string()).or_insert(Member { enabled: true, registered_at: at });
        m.enabled = true;
        m.registered_at
    }

    /// Disable `member`: its sends and new subscriptions are refused.
    pub fn disable(&self, member: &str) {
        if let Some(m) = self.state.lock().unwrap().members.get_mut(member) {
            m.enabled = false;
        }
    }

    /// The next send fails with `error`, without being sequenced (queued: one per call).
    pub fn fail_next_send(&self, error: SendError) {
        self.state.lock().unwrap().send_failures.push_back(error);
    }

    /// Every subscription open now yields `error`, once it delivered the events sequenced so
    /// far, and ends; later subscriptions are not affected.
    pub fn fail_subscriptions(&self, error: SubscribeError) {
        let mut s = self.state.lock().unwrap();
        let at = s.last_ts;
        s.subscription_failures.push((error, at));
        drop(s);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Every event `member` receives, in order, as a subscription from its registration would.
    pub fn events_of(&self, member: &str) -> Vec<Event> {
        let s = self.state.lock().unwrap();
        let mut previous = None;
        let mut out = Vec::new();
        for e in s.events.iter().filter(|e| e.concerns(member)) {
            out.push(e.event_for(member, previous));
            previous = Some(e.timestamp);
        }
        out
    }

    /// What `member` acknowledged last.
    pub fn acknowledged(&self, member: &str) -> Option<i64> {
        self.state.lock().unwrap().acks.get(member).copied()
    }

    fn send_now(&self, req: SendRequest) -> Result<Sent, SendError> {
        let mut s = self.state.lock().unwrap();
        if let Some(e) = s.send_failures.pop_front() {
            return Err(e);
        }
        let reject = |code, message: String| SendError::Rejected {
            sender: req.sender.clone(),
            message_id: req.message_id.clone(),
            endpoint: ENDPOINT.into(),
            code,
            message,
        };
        if req.message_id.is_empty() || req.message_id.len() > 128 {
            return Err(reject(Code::InvalidArgument, "message_id must be 1 to 128 characters".into()));
        }
        if req.envelopes.is_empty() || req.envelopes.iter().any(|e| e.recipients.is_empty()) {
            return Err(reject(Code::InvalidArgument, "a send needs envelopes, each with recipients".into()));
        }
        if req.max_sequencing_time < now_micros() {
            return Err(reject(
                Code::InvalidArgument,
                format!("max_sequencing_time {} is in the past", req.max_sequencing_time),
            ));
        }
        match s.members.get(&req.sender) {
            None => return Err(reject(Code::NotFound, format!("member {} is not registered", req.sender))),
            Some(m) if !m.enabled => {
                return Err(reject(Code::PermissionDenied, format!("member {} is disabled", req.sender)))
            }
            Some(_) => {}
        }
        let key = (req.sender.clone(), req.message_id.clone());
        if let Some((envelopes, ts)) = s.claims.get(&key) {
            if *envelopes == req.envelopes {
                return Ok(Sent { timestamp: *ts, resends: 0 });
            }
            return Err(SendError::AlreadyExists {
                sender: req.sender.clone(),
                message_id: req.message_id.clone(),
                endpoint: ENDPOINT.into(),
                message: format!("already used for a different send sequenced at {ts}"),
            });
        }
        let mut unknown: Vec<&str> = req
            .envelopes
            .iter()
            .flat_map(|e| &e.recipients)
            .map(String::as_str)
            .filter(|r| *r != ALL && !s.members.contains_key(*r))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        let ts = s.next_ts();
        let stored = if unknown.is_empty() {
            Stored {
                timestamp: ts,
                sender: req.sender.clone(),
                message_id: req.message_id.clone(),
                envelopes: req.envelopes.clone(),
                error: None,
            }
        } else {
            // As the sequencer does: only the sender learns, through an error event.
            let error = DeliverError {
                code: "UNKNOWN_RECIPIENTS".into(),
                message: unknown.join(", "),
                error_code: DeliverErrorCode::UnknownRecipients.into(),
            };
            Stored {
                timestamp: ts,
                sender: req.sender.clone(),
                message_id: req.message_id.clone(),
                envelopes: Vec::new(),
                error: Some(error),
            }
        };
        s.events.push(stored);
        s.claims.insert(key, (req.envelopes, ts));
        drop(s);
        self.changed.send_modify(|v| *v += 1);
        Ok(Sent { timestamp: ts, resends: 0 })
    }
}

impl SequencerApi for FakeSequencer {
    fn send(&self, request: SendRequest) -> impl Future<Output = Result<Sent, SendError>> + Send {
        std::future::ready(self.send_now(request))
    }

    fn subscribe(&self, member: &str, after: Option<i64>) -> EventStream {
        let refused = |code, message: String| SubscribeError::Refused {
            member: member.into(),
            endpoint: ENDPOINT.into(),
            code,
            message,
        };
        let s = self.state.lock().unwrap();
        let start = match s.members.get(member) {
            None => Err(refused(Code::NotFound, format!("member {member} is not registered"))),
            Some(m) if !m.enabled => Err(refused(Code::PermissionDenied, format!("member {member} is disabled"))),
            // As the sequencer does: broadcasts from the very first, own events after registration.
            Some(m) => Ok((after.unwrap_or(i64::MIN), m.registered_at)),
        };
        let (cursor, own_after) = match start {
            Ok(start) => start,
            Err(e) => return Box::pin(futures_util::stream::iter([Err(e)])),
        };
        let sub = Subscription {
            fake: self.clone(),
            member: member.to_string(),
            cursor,
            own_after,
            previous: s.previous(member, cursor),
            failures_seen: s.subscription_failures.len(),
            changed: self.changed.subscribe(),
            done: false,
        };
        drop(s);
        Box::pin(futures_util::stream::unfold(sub, |mut sub| async move {
            let item = sub.next().await?;
            Some((item, sub))
        }))
    }

    fn acknowledge(&self, member: &str, timestamp: i64) -> impl Future<Output = Result<(), AcknowledgeError>> + Send {
        let mut s = self.state.lock().unwrap();
        let r = if s.members.get(member).is_some_and(|m| m.enabled) {
            let ack = s.acks.entry(member.to_string()).or_insert(timestamp);
            *ack = (*ack).max(timestamp);
            Ok(())
        } else {
            Err(AcknowledgeError::Refused {
                member: member.into(),
                timestamp,
                endpoint: ENDPOINT.into(),
                code: Code::NotFound,
                message: format!("member {member} is not registered or disabled"),
            })
        };
        std::future::ready(r)
    }
}

/// One open subscription of the fake.
struct Subscription {
    fake: FakeSequencer,
    member: String,
    cursor: i64,
    /// The member's own events start after this (its registration); broadcasts do not.
    own_after: i64,
    previous: Option<i64>,
    failures_seen: usize,
    changed: watch::Receiver<u64>,
    done: bool,
}

impl Subscription {
    async fn next(&mut self) -> Option<Result<Event, SubscribeError>> {
        if self.done {
            return None;
        }
        loop {
            self.changed.borrow_and_update();
            {
                let state = self.fake.state.clone();
                let s = state.lock().unwrap();
                let failure = s.subscription_failures.get(self.failures_seen);
                let next = s.events.iter().find(|e| {
                    e.timestamp > self.cursor
                        && (e.timestamp > self.own_after || e.is_broadcast())
                        && e.concerns(&self.member)
                });
                match (next, failure) {
                    (Some(e), None) => return Some(Ok(self.deliver(e))),
                    (Some(e), Some((_, at))) if e.timestamp <= *at => return Some(Ok(self.deliver(e))),
                    (_, Some((error, _))) => {
                        self.done = true;
                        return Some(Err(error.clone()));
                    }
                    (None, None) => {}
                }
            }
            // The sender lives in `self.fake`: never closed while we wait.
            let _ = self.changed.changed().await;
        }
    }

    fn deliver(&mut self, e: &Stored) -> Event {
        let event = e.event_for(&self.member, self.previous);
        self.cursor = e.timestamp;
        self.previous = Some(e.timestamp);
        event
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;
    use crate::RequestBuilder;

    /// A service written against the trait: answers each message to `member` with its content
    /// reversed, to the sender. What a mediator's or participant's unit test looks like.
    async fn echo<S: SequencerApi>(api: &S, member: &str, count: usize) -> Result<Vec<i64>, String> {
        let mut events = api.subscribe(member, None);
        let mut answered = Vec::new();
        while answered.len() < count {
            let event = events.next().await.ok_or("the stream ended")?.map_err(|e| e.to_string())?;
            if event.sender == member {
                continue; // our own receipt
            }
            let mut body = event.envelopes[0].content.clone();
            body.reverse();
            let req = RequestBuilder::new(member, format!("re-{}", event.timestamp)).to([event.sender], body).build();
            answered.push(api.send(req).await.map_err(|e| e.to_string())?.timestamp);
        }
        Ok(answered)
    }

    #[tokio::test]
    async fn a_broadcast_reaches_members_registered_later_as_the_sequencer_does() {
        let fake = FakeSequencer::new();
        fake.register("alice");
        fake.register("bob");
        let b = fake.send(RequestBuilder::new("alice", "b").to([ALL], "topology").build()).await.unwrap().timestamp;
        fake.send(RequestBuilder::new("alice", "p").to(["bob"], "private").build()).await.unwrap();
        fake.register("carol");
        let own = fake.send(RequestBuilder::new("bob", "c").to(["carol"], "hi").build()).await.unwrap().timestamp;
        let carol: Vec<Event> = fake.subscribe("carol", None).take(2).map(|e| e.unwrap()).collect().await;
        assert_eq!(carol.iter().map(|e| e.timestamp).collect::<Vec<_>>(), [b, own]);
        assert_eq!((carol[0].envelopes[0].content.as_slice(), carol[0].previous_timestamp), (&b"topology"[..], None));
        assert_eq!(carol[1].previous_timestamp, Some(b));
    }

    #[tokio::test]
    async fn a_service_runs_against_the_fake() {
        let fake = FakeSequencer::new();
        fake.register("alice");
        fake.register("bob");
        let service = tokio::spawn({
            let fake = fake.clone();
            async move { echo(&fake, "bob", 2).await }
        });
        for (id, body) in [("m1", "abc"), ("m2", "xyz")] {
            fake.send(RequestBuilder::new("alice", id).to(["bob"], body).build()).await.unwrap();
        }
        let replies = tokio::time::timeout(Duration::from_secs(5), service).await.unwrap().unwrap().unwrap();
        let alice = fake.events_of("alice");
        let bodies: Vec<&[u8]> =
            alice.iter().filter(|e| e.sender == "bob").map(|e| &e.envelopes[0].content[..]).collect();
        assert_eq!(bodies, [b"cba", b"zyx"]);
        assert_eq!(alice.iter().filter(|e| e.sender == "bob").map(|e| e.timestamp).collect::<Vec<_>>(), replies);
        // alice's receipts carry her message ids and no envelopes addressed to others.
        assert_eq!(alice[0].message_id.as_deref(), Some("m1"));
        assert!(alice[0].envelopes.is_empty());
        assert_eq!(alice[2].previous_timestamp, Some(alice[1].timestamp), "each event names the one before");
    }

    #[tokio::test]
    async fn resends_get_the_first_timestamp_and_reused_ids_are_refused() {
        let fake = FakeSequencer::new();
        fake.register("alice");
        fake.register("bob");
        let req = RequestBuilder::new("alice", "m1").to(["bob"], "x").build();
        let first = fake.send(req.clone()).await.unwrap();
        assert_eq!(fake.send(req).await.unwrap(), first);
        let other = fake.send(RequestBuilder::new("alice", "m1").to(["bob"], "y").build()).await.unwrap_err();
        assert!(matches!(other, SendError::AlreadyExists { .. }), "{other:?}");
        let late = fake.send(RequestBuilder::new("alice", "m2").to(["bob"], "x").until(1).build()).await.unwrap_err();
        assert!(matches!(late, SendError::Rejected { code: Code::InvalidArgument, .. }), "{late:?}");
        let unknown = fake.send(RequestBuilder::new("carol", "m3").to(["bob"], "x").build()).await.unwrap_err();
        assert!(matches!(unknown, SendError::Rejected { code: Code::NotFound, .. }), "{unknown:?}");
        assert_eq!(fake.events_of("bob").len(), 1, "sequenced once");
    }

    #[tokio::test]
    async fn unknown_recipients_are_reported_to_the_sender_only() {
        let fake = FakeSequencer::new();
        fake.register("alice");
        fake.register("bob");
        fake.send(RequestBuilder::new("alice", "m1").to(["bob", "zed"], "x").build()).await.unwrap();
        let alice = fake.events_of("alice");
        let error = alice[0].error.as_ref().expect("an error event");
        assert_eq!((error.code.as_str(), error.message.as_str()), ("UNKNOWN_RECIPIENTS", "zed"));
        assert_eq!(error.error_code(), DeliverErrorCode::UnknownRecipients);
        assert!(fake.events_of("bob").is_empty());
    }

    #[tokio::test]
    async fn injected_failures_reach_the_caller() {
        let fake = FakeSequencer::new();
        fake.register("alice");
        fake.register("bob");
        let unconfirmed = SendError::Unconfirmed {
            sender: "alice".into(),
            message_id: "m1".into(),
            attempts: 3,
            last: "test".into(),
        };
        fake.fail_next_send(unconfirmed.clone());
        let req = RequestBuilder::new("alice", "m1").to(["bob"], "x").build();
        assert_eq!(fake.send(req.clone()).await.unwrap_err(), unconfirmed);
        assert!(fake.events_of("bob").is_empty(), "a failed send is not sequenced");
        let ts = fake.send(req).await.unwrap().timestamp;

        let mut stream = fake.subscribe("bob", None);
        let broken = SubscribeError::ChainBroken {
            member: "bob".into(),
            endpoint: ENDPOINT.into(),
            timestamp: 2,
            previous: Some(1),
            expected: None,
        };
        fake.fail_subscriptions(broken.clone());
        fake.send(RequestBuilder::new("alice", "m2").to(["bob"], "x").build()).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().timestamp, ts, "events before the failure first");
        assert_eq!(stream.next().await.unwrap().unwrap_err(), broken);
        assert!(stream.next().await.is_none(), "then the end");
        let later: Vec<i64> = fake.subscribe("bob", Some(ts)).take(1).map(|e| e.unwrap().timestamp).collect().await;
        assert_eq!(later.len(), 1, "a new subscription is not affected");
    }

    #[tokio::test]
    async fn disabled_and_unknown_members_cannot_subscribe_or_acknowledge() {
        let fake = FakeSequencer::new();
        fake.register("bob");
        fake.acknowledge("bob", 5).await.unwrap();
        assert_eq!(fake.acknowledged("bob"), Some(5));
        fake.disable("bob");
        let e = fake.subscribe("bob", None).next().await.unwrap().unwrap_err();
        assert!(matches!(e, SubscribeError::Refused { code: Code::PermissionDenied, .. }), "{e:?}");
        let e = fake.subscribe("nobody", None).next().await.unwrap().unwrap_err();
        assert!(matches!(e, SubscribeError::Refused { code: Code::NotFound, .. }), "{e:?}");
        assert!(fake.acknowledge("bob", 6).await.is_err());
    }
}
