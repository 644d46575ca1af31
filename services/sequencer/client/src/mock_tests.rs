//! The client against scripted in-process gRPC servers: what it resends, where, and what it
//! makes of each answer, without a database.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use syncline_proto::sequencer::sequencer_service_server::{SequencerService, SequencerServiceServer};
use syncline_proto::sequencer::{
    AcknowledgeRequest, AcknowledgeResponse, Event, SendRequest, SendResponse, SubscribeRequest, SubscribeResponse,
};
use tonic::{Code, Request, Response, Status};

use crate::{ClientConfig, RequestBuilder, SendError, SequencerApi, SequencerClient, SubscribeError};

/// A scripted sequencer: answers sends from a queue (then hangs), streams scripted items
/// (then stays open), and records what it was asked.
#[derive(Default)]
struct Script {
    sends: Mutex<VecDeque<Result<i64, Status>>>,
    received: Mutex<Vec<SendRequest>>,
    stream: Mutex<Vec<Result<SubscribeResponse, Status>>>,
    subscribed: Mutex<Vec<SubscribeRequest>>,
}

#[derive(Clone)]
struct Mock(Arc<Script>);

type Items = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SequencerService for Mock {
    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        self.0.received.lock().unwrap().push(request.into_inner());
        let answer = self.0.sends.lock().unwrap().pop_front();
        match answer {
            Some(r) => r.map(|timestamp| Response::new(SendResponse { timestamp })),
            None => futures_util::future::pending().await,
        }
    }

    type SendStreamStream =
        Pin<Box<dyn Stream<Item = Result<syncline_proto::sequencer::SendStreamResponse, Status>> + Send>>;

    async fn send_stream(
        &self,
        _: Request<tonic::Streaming<SendRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        Err(Status::unimplemented("the client sends unary"))
    }

    type SubscribeStream = Items;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<Items>, Status> {
        self.0.subscribed.lock().unwrap().push(request.into_inner());
        let items = std::mem::take(&mut *self.0.stream.lock().unwrap());
        let ends = items.last().is_some_and(|i| i.is_err());
        let s = futures_util::stream::iter(items);
        Ok(Response::new(if ends { Box::pin(s) } else { Box::pin(s.chain(futures_util::stream::pending())) }))
    }

    async fn acknowledge(&self, _: Request<AcknowledgeRequest>) -> Result<Response<AcknowledgeResponse>, Status> {
        Ok(Response::new(AcknowledgeResponse {}))
    }
}

/// Serve a script on a loopback port; its URL.
async fn serve(script: Script) -> (String, Arc<Script>) {
    let script = Arc::new(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = tonic::transport::Server::builder().add_service(SequencerServiceServer::new(Mock(script.clone())));
    tokio::spawn(router.serve_with_incoming(syncline_node::host::plaintext(listener)));
    (url, script)
}

fn answers(a: impl IntoIterator<Item = Result<i64, Status>>) -> Script {
    Script { sends: Mutex::new(a.into_iter().collect()), ..Default::default() }
}

/// A URL where nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn config() -> ClientConfig {
    ClientConfig {
        attempt_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(20),
        ..Default::default()
    }
}

fn request(id: &str) -> SendRequest {
    RequestBuilder::new("alice", id).to(["bob"], id.as_bytes()).within(Duration::from_secs(10)).build()
}

fn event(ts: i64, previous: Option<i64>) -> Result<SubscribeResponse, Status> {
    Ok(SubscribeResponse { event: Some(Event { timestamp: ts, previous_timestamp: previous, ..Default::default() }) })
}

/// Everything a subscription yields until it ends (after an error), within 5 s.
async fn to_end(stream: crate::EventStream) -> Vec<Result<Event, SubscribeError>> {
    tokio::time::timeout(Duration::from_secs(5), stream.collect()).await.expect("the stream ends after an error")
}

#[tokio::test]
async fn unknown_outcomes_are_resent_unchanged_on_the_next_endpoint_until_one_answers() {
    let (a, sa) =
        serve(answers([Err(Status::unavailable("writer down")), Err(Status::resource_exhausted("queue full"))])).await;
    let (b, sb) = serve(answers([Err(Status::deadline_exceeded("slow")), Ok(42)])).await;
    let client = SequencerClient::new([a, b, dead_url()], config()).unwrap();
    let req = request("m1");
    let sent = client.send(req.clone()).await.unwrap();
    assert_eq!(sent.timestamp, 42);
    let received: Vec<SendRequest> =
        sa.received.lock().unwrap().iter().chain(sb.received.lock().unwrap().iter()).cloned().collect();
    assert!(received.iter().all(|r| *r == req), "every attempt is the identical request");
    assert_eq!(received.len(), 4, "two attempts on each live endpoint, the last one answered");
    // Plus at least one on the dead endpoint: every attempt but the last is a resend.
    assert!(sent.resends >= 4, "{sent:?}");
}

#[tokio::test]
async fn an_attempt_that_gets_no_answer_is_resent_elsewhere() {
    let (silent, s1) = serve(answers([])).await; // never answers
    let (ok, s2) = serve(answers([Ok(7)])).await;
    let client = SequencerClient::new([silent, ok], config()).unwrap();
    let sent = client.send(request("m1")).await.unwrap();
    assert_eq!(sent, crate::Sent { timestamp: 7, resends: 1 });
    assert_eq!(s1.received.lock().unwrap().len(), 1);
    assert_eq!(s2.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn final_answers_are_typed_and_not_resent() {
    let (a, sa) = serve(answers([
        Err(Status::already_exists("message id \"m1\" was already used")),
        Err(Status::failed_precondition("its max_sequencing_time passed first")),
        Err(Status::not_found("member alice is not registered")),
    ]))
    .await;
    let client = SequencerClient::new([a.clone()], config()).unwrap();
    let e = client.send(request("m1")).await.unwrap_err();
    assert!(matches!(e, SendError::AlreadyExists { .. }), "{e:?}");
    let e = client.send(request("m2")).await.unwrap_err();
    assert!(matches!(e, SendError::NotSequenced { .. }), "{e:?}");
    let e = client.send(request("m3")).await.unwrap_err();
    assert!(matches!(e, SendError::Rejected { code: Code::NotFound, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("sequencer at {a} refused message \"m3\" of alice: NOT_FOUND (member alice is not registered)")
    );
    assert_eq!(sa.received.lock().unwrap().len(), 3, "one attempt each");
}

#[tokio::test]
async fn a_refusal_of_a_resend_leaves_the_outcome_unknown() {
    // The first attempt may have been sequenced; the resend's refusal (here: too late) does
    // not say it was not.
    let (a, _) = serve(answers([
        Err(Status::unavailable("no answer")),
        Err(Status::invalid_argument("max_sequencing_time is in the past")),
    ]))
    .await;
    let client = SequencerClient::new([a], config()).unwrap();
    let e = client.send(request("m1")).await.unwrap_err();
    let SendError::Unconfirmed { attempts, last, .. } = &e else { panic!("{e:?}") };
    assert_eq!(*attempts, 2);
    assert!(last.contains("INVALID_ARGUMENT (max_sequencing_time is in the past)"), "{last}");
}

#[tokio::test]
async fn no_answer_until_the_max_sequencing_time_is_unconfirmed_with_the_last_cause() {
    let dead = dead_url();
    let client = SequencerClient::new([dead.clone()], config()).unwrap();
    let req = RequestBuilder::new("alice", "m1").to(["bob"], "x").within(Duration::from_millis(600)).build();
    let started = std::time::Instant::now();
    let e = client.send(req).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "gave up at the max-sequencing-time");
    let SendError::Unconfirmed { attempts, .. } = &e else { panic!("{e:?}") };
    assert!(*attempts >= 2, "resent while time was left: {e}");
    let text = e.to_string();
    assert!(text.starts_with("message \"m1\" of alice is unconfirmed after"), "{text}");
    assert!(text.contains(&format!("last attempt: {dead}: UNAVAILABLE")), "{text}");
    assert!(!text.contains("Status {"), "no raw status dump: {text}");
}

#[tokio::test]
async fn a_subscription_resumes_after_its_last_event_on_another_endpoint() {
    let a_items = vec![event(10, None), event(20, Some(10)), Err(Status::unavailable("node going away"))];
    let (a, sa) = serve(Script { stream: Mutex::new(a_items), ..Default::default() }).await;
    let (b, sb) =
        serve(Script { stream: Mutex::new(vec![event(30, Some(20)), event(40, Some(30))]), ..Default::default() })
            .await;
    let client = SequencerClient::new([a, b], config()).unwrap();
    let got: Vec<i64> = client.subscribe("bob", None).take(4).map(|e| e.unwrap().timestamp).collect().await;
    assert_eq!(got, [10, 20, 30, 40]);
    assert_eq!(sa.subscribed.lock().unwrap()[0].after, None);
    assert_eq!(sb.subscribed.lock().unwrap()[0].after, Some(20), "resumed after the last event");
}

#[tokio::test]
async fn a_gap_in_the_previous_timestamp_chain_is_an_error_not_skipped() {
    let a_items = vec![event(10, None), event(20, Some(10)), Err(Status::unavailable("node going away"))];
    let (a, _) = serve(Script { stream: Mutex::new(a_items), ..Default::default() }).await;
    // The second node skips 30: its 40 names 30 as the previous event.
    let (b, _) = serve(Script { stream: Mutex::new(vec![event(40, Some(30))]), ..Default::default() }).await;
    let client = SequencerClient::new([a, b.clone()], config()).unwrap();
    let got = to_end(client.subscribe("bob", None)).await;
    assert_eq!(got.len(), 3, "two events, the error, then the end: {got:?}");
    let e = got[2].clone().unwrap_err();
    assert_eq!(
        e,
        SubscribeError::ChainBroken {
            member: "bob".into(),
            endpoint: b.clone(),
            timestamp: 40,
            previous: Some(30),
            expected: Some(20)
        }
    );
    assert!(e.to_string().contains("event 40 names 30 as the member's previous event"), "{e}");
}

#[tokio::test]
async fn a_repeated_event_and_a_bad_first_event_break_the_chain() {
    let (a, _) =
        serve(Script { stream: Mutex::new(vec![event(10, None), event(10, Some(10))]), ..Default::default() }).await;
    let client = SequencerClient::new([a], config()).unwrap();
    let got = to_end(client.subscribe("bob", None)).await;
    assert!(matches!(got[1], Err(SubscribeError::ChainBroken { timestamp: 10, .. })), "{got:?}");
    // Asked for events after 50, the first event must be later and follow something before.
    let (b, _) = serve(Script { stream: Mutex::new(vec![event(60, Some(55))]), ..Default::default() }).await;
    let client = SequencerClient::new([b], config()).unwrap();
    let got = to_end(client.subscribe("bob", Some(50))).await;
    assert!(
        matches!(
            got[0],
            Err(SubscribeError::ChainBroken { timestamp: 60, previous: Some(55), expected: Some(50), .. })
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_final_refusal_ends_the_subscription_with_an_error() {
    let items = vec![event(10, None), Err(Status::out_of_range("events up to 15 have been pruned"))];
    let (a, _) = serve(Script { stream: Mutex::new(items), ..Default::default() }).await;
    let client = SequencerClient::new([a.clone()], config()).unwrap();
    let got = to_end(client.subscribe("bob", None)).await;
    assert_eq!(got.len(), 2);
    let e = got[1].clone().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("sequencer at {a} refused the subscription of bob: OUT_OF_RANGE (events up to 15 have been pruned)")
    );
}

#[tokio::test]
async fn a_subscription_leaves_an_endpoint_removed_from_the_list() {
    let (a, _) = serve(Script { stream: Mutex::new(vec![event(10, None)]), ..Default::default() }).await;
    let (b, sb) = serve(Script { stream: Mutex::new(vec![event(20, Some(10))]), ..Default::default() }).await;
    let client = SequencerClient::new([a], config()).unwrap();
    let mut stream = client.subscribe("bob", None);
    assert_eq!(stream.next().await.unwrap().unwrap().timestamp, 10);
    client.set_endpoints([b]).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("moved to the new endpoint");
    assert_eq!(next.unwrap().unwrap().timestamp, 20);
    assert_eq!(sb.subscribed.lock().unwrap()[0].after, Some(10));
}
