//! The demo's application: it knows only the ledger API. Each IOU goes through three commands,
//! each with its own command id: Alice creates it on participant1 (Bob observes), Alice
//! transfers it to Bob (a consuming exercise that creates Bob's IOU, which Bob's participant
//! confirms), Bob archives it on participant2. After an error whose outcome is unknown or
//! transient it resubmits the same command id, as applications are told to: the participant
//! deduplicates, answering DUPLICATE_COMMAND if an earlier submission was accepted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use syncline_proto::ledger as pb;
use syncline_proto::ledger::command_completion_service_client::CommandCompletionServiceClient;
use syncline_proto::ledger::command_service_client::CommandServiceClient;
use syncline_proto::ledger::state_service_client::StateServiceClient;
use syncline_proto::ledger::update_service_client::UpdateServiceClient;
use syncline_sequencer_client::ClientConfig;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Status;
use tonic_types::StatusExt;
use tracing::Instrument;

/// Alice, hosted on participant1.
pub const ALICE: &str = "alice";
/// Bob, hosted on participant2.
pub const BOB: &str = "bob";
/// The application's user id.
pub const USER: &str = "demo";
/// IOUs in progress at most (each is one command at a time).
const MAX_IOUS_IN_FLIGHT: usize = 128;

/// A lazily connecting channel to `url` (over TLS with `tls` when it is `https://`): it
/// reconnects by itself after a node or HAProxy drops it.
pub fn channel(url: &str, tls: &ClientConfig) -> Result<Channel> {
    let mut endpoint = Channel::from_shared(url.to_string())?;
    if let (true, Some(tls)) = (url.starts_with("https://"), &tls.tls) {
        endpoint = endpoint.tls_config(tls.tonic_config())?;
    }
    Ok(endpoint.connect_timeout(Duration::from_secs(2)).connect_lazy())
}

/// One participant's ledger API as the application reaches it: one HAProxy endpoint, or the
/// replicas' endpoints, of which it uses one until that one fails or is passive.
pub struct Ledger {
    channels: Vec<Channel>,
    current: AtomicUsize,
}

impl Ledger {
    /// A client of `endpoints` (URLs), over TLS with `tls`.
    pub fn new(endpoints: &[String], tls: &ClientConfig) -> Result<Ledger> {
        Ok(Ledger {
            channels: endpoints.iter().map(|e| channel(e, tls)).collect::<Result<_>>()?,
            current: AtomicUsize::new(0),
        })
    }

    /// The endpoint in use (its index and channel).
    pub fn pick(&self) -> (usize, Channel) {
        let i = self.current.load(Ordering::Relaxed) % self.channels.len();
        (i, self.channels[i].clone())
    }

    /// Endpoint `i` failed or is passive: use the next one (unless another task already moved).
    pub fn failed(&self, i: usize) {
        let next = (i + 1) % self.channels.len();
        let _ = self.current.compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// How a command ended for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (by this submission or, DUPLICATE_COMMAND, an earlier one).
    Accepted,
    /// Definitely rejected, with the error id.
    Rejected(String),
    /// Given up when the demo ended.
    Unfinished,
}

/// What the application counts and remembers, shared with the live lines and the checks.
#[derive(Default)]
pub struct Stats {
    /// Command ids submitted.
    pub submitted: AtomicU64,
    /// Commands accepted.
    pub accepted: AtomicU64,
    /// Commands definitely rejected.
    pub rejected: AtomicU64,
    /// Resubmissions of a command id after an error.
    pub resubmitted: AtomicU64,
    /// Why commands were resubmitted: error id (or transport failure) → count.
    pub retry_reasons: Mutex<BTreeMap<String, u64>>,
    /// Each command id's outcome.
    pub outcomes: Mutex<BTreeMap<String, Outcome>>,
    /// Each IOU's active contract as the application knows it (None once archived).
    pub active: Mutex<BTreeMap<u64, Option<String>>>,
    /// Successful submissions: participant index, when the submission started, when it ended.
    successes: Mutex<Vec<(usize, Instant, Instant)>>,
    /// Problems other than a command's outcome (a created contract not found, say).
    pub problems: Mutex<Vec<String>>,
}

impl Stats {
    /// Commands submitted but not finished.
    pub fn in_flight(&self) -> u64 {
        let done = self.accepted.load(Ordering::Relaxed) + self.rejected.load(Ordering::Relaxed);
        self.submitted.load(Ordering::Relaxed).saturating_sub(done)
    }

    /// How long after `at` the first submission started at or after `at` succeeded (on
    /// participant `on` only, if given).
    pub fn first_success_after(&self, at: Instant, on: Option<usize>) -> Option<Duration> {
        let s = self.successes.lock().unwrap();
        s.iter().filter(|(p, start, _)| *start >= at && on.is_none_or(|o| o == *p)).map(|(_, _, end)| *end - at).min()
    }
}

/// The application: both participants' ledger APIs, its counters and its stop signals.
pub struct App {
    ledgers: [Ledger; 2],
    /// Counters and outcomes.
    pub stats: Stats,
    /// Cancelled when the run ends: no new IOU, no next step of one.
    stop: CancellationToken,
    /// Cancelled when the demo gives up waiting: commands still unanswered stay unfinished.
    abandon: CancellationToken,
}

/// The answer to one submission, as an application reads it.
enum Answer {
    /// Accepted now (the update id) or earlier (DUPLICATE_COMMAND: the completion's offset).
    Accepted(String),
    Duplicate(i64),
    /// A definite rejection (error id): resubmitting cannot help.
    Rejected(String),
    /// Outcome unknown or a transient failure (why): resubmit the same command id.
    Retry(String),
}

/// Canton's rule for clients: an error with RetryInfo may succeed when resubmitted; one
/// without is definite; a failure without an error id (a cut connection) left the outcome
/// unknown, so the same command id is resubmitted and deduplication sorts it out.
fn classify(s: &Status) -> Answer {
    match s.get_details_error_info() {
        Some(info) if info.reason == "DUPLICATE_COMMAND" => {
            match info.metadata.get("completion_offset").and_then(|o| o.parse().ok()) {
                Some(offset) => Answer::Duplicate(offset),
                None => Answer::Retry("DUPLICATE_COMMAND without completion_offset".into()),
            }
        }
        Some(info) if s.get_details_retry_info().is_none() => Answer::Rejected(info.reason),
        Some(info) => Answer::Retry(info.reason),
        None => Answer::Retry(format!("{:?} (connection)", s.code())),
    }
}

impl App {
    /// The application of the participants' ledger APIs at `endpoints`, over TLS with `tls`.
    pub fn new(endpoints: &[Vec<String>; 2], tls: &ClientConfig) -> Result<Arc<App>> {
        Ok(Arc::new(App {
            ledgers: [Ledger::new(&endpoints[0], tls)?, Ledger::new(&endpoints[1], tls)?],
            stats: Stats::default(),
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
        }))
    }

    /// The ledger API of participant `p` (0 or 1).
    pub fn ledger(&self, p: usize) -> &Ledger {
        &self.ledgers[p]
    }

    /// Start IOUs at `rate` commands per second (three commands each) until [`App::stop`].
    pub fn run(self: &Arc<App>, rate: u32) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        let every = Duration::from_secs_f64(3.0 / f64::from(rate.max(1)));
        tokio::spawn(
            async move {
                let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IOUS_IN_FLIGHT));
                let mut tasks = tokio::task::JoinSet::new();
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for n in 0u64.. {
                    tokio::select! {
                        _ = app.stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let slot = tokio::select! {
                        _ = app.stop.cancelled() => break,
                        s = slots.clone().acquire_owned() => s.expect("never closed"),
                    };
                    let app = app.clone();
                    tasks.spawn(async move {
                        app.iou(n).await;
                        drop(slot);
                    });
                }
                while tasks.join_next().await.is_some() {}
            }
            .instrument(tracing::info_span!("demo_workload")),
        )
    }

    /// End the run: IOUs finish the command they are at and go no further.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Give up on commands still unanswered.
    pub fn abandon(&self) {
        self.abandon.cancel();
    }

    /// One IOU: create, transfer, archive; each step only while the run goes on.
    async fn iou(&self, n: u64) {
        let id = |step: &str| format!("iou-{n:05}-{step}");
        let amount = 10 + n % 90;
        let iou = |owner: &str, other: &str| pb::CreateCommand {
            template_id: "Iou".into(),
            create_arguments: format!(r#"{{"iou":{n},"owner":"{owner}","amount":{amount}}}"#),
            signatories: vec![owner.into()],
            observers: vec![other.into()],
        };
        let create = pb::command::Command::Create(iou(ALICE, BOB));
        let Some(c1) = self.step(n, (0, ALICE), &id("create"), create, Some((0, ALICE))).await else { return };
        if self.stop.is_cancelled() {
            return;
        }
        // Bob becomes the signatory of the new IOU: participant2 confirms for him. Bob acts on
        // it once his own participant shows it (it may commit there a little later).
        let transfer = pb::command::Command::Exercise(pb::ExerciseCommand {
            contract_id: c1,
            choice: "Transfer".into(),
            consuming: true,
            creates: vec![iou(BOB, ALICE)],
        });
        let Some(c2) = self.step(n, (0, ALICE), &id("transfer"), transfer, Some((1, BOB))).await else { return };
        if self.stop.is_cancelled() {
            return;
        }
        let archive = pb::command::Command::Archive(pb::ArchiveCommand { contract_id: c2 });
        self.step(n, (1, BOB), &id("archive"), archive, None).await;
    }

    /// Submit one command of IOU `n` as `party` on participant `p` until it has an outcome and
    /// record it; for an accepted command that creates the IOU's next contract, that contract
    /// as `next` (participant, party) sees it (waiting until it does), else Some("").
    async fn step(
        &self,
        n: u64,
        (p, party): (usize, &str),
        command_id: &str,
        command: pb::command::Command,
        next: Option<(usize, &str)>,
    ) -> Option<String> {
        let outcome = self.submit(p, party, command_id, command).await;
        let s = &self.stats;
        let update_id = match outcome {
            Ok(update_id) => update_id,
            Err(outcome) => {
                if matches!(outcome, Outcome::Rejected(_)) {
                    s.rejected.fetch_add(1, Ordering::Relaxed);
                }
                s.outcomes.lock().unwrap().insert(command_id.into(), outcome);
                return None;
            }
        };
        s.accepted.fetch_add(1, Ordering::Relaxed);
        s.outcomes.lock().unwrap().insert(command_id.into(), Outcome::Accepted);
        let contract = match next {
            Some((q, reader)) => match self.created(q, reader, &update_id).await {
                Some(c) => Some(c),
                None => {
                    let problem = format!("{command_id}: its contract never showed in update {update_id} for {reader}");
                    s.problems.lock().unwrap().push(problem);
                    return None;
                }
            },
            None => None,
        };
        s.active.lock().unwrap().insert(n, contract.clone());
        Some(contract.unwrap_or_default())
    }

    /// SubmitAndWait `command` under `command_id` until accepted (the update id) or definitely
    /// rejected, resubmitting the same command id after any other answer.
    async fn submit(
        &self,
        p: usize,
        party: &str,
        command_id: &str,
        command: pb::command::Command,
    ) -> Result<String, Outcome> {
        let s = &self.stats;
        s.submitted.fetch_add(1, Ordering::Relaxed);
        let commands = pb::Commands {
            user_id: USER.into(),
            command_id: command_id.into(),
            act_as: vec![party.into()],
            commands: vec![pb::Command { command: Some(command) }],
            ..Default::default()
        };
        let mut first = true;
        loop {
            if !first {
                s.resubmitted.fetch_add(1, Ordering::Relaxed);
            }
            let (i, ch) = self.ledgers[p].pick();
            let start = Instant::now();
            let mut request = tonic::Request::new(pb::SubmitAndWaitRequest { commands: Some(commands.clone()) });
            // The participant answers REQUEST_TIME_OUT by then: outcome unknown, resubmit.
            request.set_timeout(Duration::from_secs(15));
            let mut client = CommandServiceClient::new(ch);
            let answer = tokio::select! {
                _ = self.abandon.cancelled() => return Err(Outcome::Unfinished),
                r = client.submit_and_wait(request) => r,
            };
            let answer = match answer {
                Ok(r) => Answer::Accepted(r.into_inner().update_id),
                Err(e) => classify(&e),
            };
            match answer {
                Answer::Accepted(update_id) => {
                    s.successes.lock().unwrap().push((p, start, Instant::now()));
                    return Ok(update_id);
                }
                Answer::Duplicate(offset) => {
                    // Accepted by an earlier submission of this command id.
                    *s.retry_reasons
                        .lock()
                        .unwrap()
                        .entry("DUPLICATE_COMMAND (accepted before)".into())
                        .or_default() += 1;
                    match self.update_at(p, party, offset).await {
                        Some(update_id) => return Ok(update_id),
                        None => return Err(Outcome::Unfinished),
                    }
                }
                // A resubmission can be refused because an earlier submission of it was
                // accepted meanwhile (the participant interprets before it deduplicates, so a
                // consuming command finds its input archived): the completion stream tells.
                Answer::Rejected(id) if !first => match self.accepted_before(p, party, command_id).await {
                    Some(Some(update_id)) => {
                        let why = format!("{id} (accepted before: on the completion stream)");
                        *s.retry_reasons.lock().unwrap().entry(why).or_default() += 1;
                        return Ok(update_id);
                    }
                    Some(None) => return Err(Outcome::Rejected(id)),
                    None => return Err(Outcome::Unfinished),
                },
                Answer::Rejected(id) => return Err(Outcome::Rejected(id)),
                Answer::Retry(why) => {
                    first = false;
                    *s.retry_reasons.lock().unwrap().entry(why).or_default() += 1;
                    self.ledgers[p].failed(i);
                    tokio::select! {
                        _ = self.abandon.cancelled() => return Err(Outcome::Unfinished),
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }

    /// The update id of `party`'s completion at `offset` on participant `p` (from the
    /// completion stream), retrying until found or abandoned.
    async fn update_at(&self, p: usize, party: &str, offset: i64) -> Option<String> {
        self.retrying(p, |ch| async move {
            let r = pb::CompletionStreamRequest {
                user_id: USER.into(),
                parties: vec![party.into()],
                begin_exclusive: offset - 1,
            };
            let mut stream = CommandCompletionServiceClient::new(ch).completion_stream(r).await?.into_inner();
            while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .map_err(|_| Status::deadline_exceeded("no completion within 10 s"))?
            {
                if let Some(pb::completion_stream_response::CompletionResponse::Completion(c)) =
                    item?.completion_response
                {
                    if c.offset == offset {
                        return Ok(c.update_id);
                    }
                }
            }
            Err(Status::unavailable("the completion stream ended"))
        })
        .await
    }

    /// Whether `command_id` has an accepted completion of `party` on participant `p` (its update
    /// id); None when abandoned.
    async fn accepted_before(&self, p: usize, party: &str, command_id: &str) -> Option<Option<String>> {
        self.retrying(p, |ch| async move {
            let all = completions(ch, party).await?;
            let ok =
                all.into_iter().find(|c| c.command_id == command_id && c.status.as_ref().is_some_and(|s| s.code == 0));
            Ok(ok.map(|c| c.update_id))
        })
        .await
    }

    /// The contract created by update `update_id` as `party` sees it on participant `p`.
    async fn created(&self, p: usize, party: &str, update_id: &str) -> Option<String> {
        self.retrying(p, |ch| async move {
            let r = pb::GetUpdateByIdRequest {
                update_id: update_id.into(),
                filter: Some(pb::TransactionFilter { parties: vec![party.into()] }),
            };
            let tx = UpdateServiceClient::new(ch).get_update_by_id(r).await?.into_inner().transaction;
            let mut created = tx.into_iter().flat_map(|t| t.events).filter_map(|e| match e.event {
                Some(pb::event::Event::Created(c)) => Some(c.contract_id),
                _ => None,
            });
            created.next_back().ok_or_else(|| Status::not_found("no created event"))
        })
        .await
    }

    /// Call `f` on participant `p` until it succeeds (failing over between endpoints) or the
    /// demo gives up.
    async fn retrying<T, F, Fut>(&self, p: usize, f: F) -> Option<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        loop {
            let (i, ch) = self.ledgers[p].pick();
            tokio::select! {
                _ = self.abandon.cancelled() => return None,
                r = f(ch) => match r {
                    Ok(v) => return Some(v),
                    Err(_) => self.ledgers[p].failed(i),
                },
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The application's completions acting as `party`, up to the ledger end.
pub async fn completions(ch: Channel, party: &str) -> Result<Vec<pb::Completion>, Status> {
    let end = StateServiceClient::new(ch.clone()).get_ledger_end(pb::GetLedgerEndRequest {}).await?.into_inner().offset;
    let r = pb::CompletionStreamRequest { user_id: USER.into(), parties: vec![party.into()], begin_exclusive: 0 };
    let mut stream = CommandCompletionServiceClient::new(ch).completion_stream(r).await?.into_inner();
    let mut out = Vec::new();
    if end == 0 {
        return Ok(out);
    }
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| Status::deadline_exceeded("the completion stream stalled"))?
            .ok_or_else(|| Status::unavailable("the completion stream ended"))??;
        let reached = match item.completion_response {
            Some(pb::completion_stream_response::CompletionResponse::Completion(c)) => {
                let at = c.offset;
                out.push(c);
                at
            }
            Some(pb::completion_stream_response::CompletionResponse::OffsetCheckpoint(cp)) => cp.offset,
            None => 0,
        };
        if reached >= end {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic::Code;
    use tonic_types::ErrorDetails;

    fn status(code: Code, id: &str, retry: bool, metadata: &[(&str, &str)]) -> Status {
        let metadata: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut d = ErrorDetails::with_error_info(id, "syncline", metadata);
        if retry {
            d.set_retry_info(Some(Duration::from_secs(1)));
        }
        Status::with_error_details(code, format!("{id}(x,y): z"), d)
    }

    #[test]
    fn answers_are_read_the_way_canton_tells_applications_to() {
        let dup = status(Code::AlreadyExists, "DUPLICATE_COMMAND", false, &[("completion_offset", "17")]);
        assert!(matches!(classify(&dup), Answer::Duplicate(17)));
        let gone = status(Code::NotFound, "CONTRACT_NOT_FOUND", false, &[]);
        assert!(matches!(classify(&gone), Answer::Rejected(id) if id == "CONTRACT_NOT_FOUND"));
        let passive = status(Code::Unavailable, "NODE_IS_PASSIVE_REPLICA", true, &[]);
        assert!(matches!(classify(&passive), Answer::Retry(id) if id == "NODE_IS_PASSIVE_REPLICA"));
        let timeout = status(Code::Aborted, "MEDIATOR_SAYS_TX_TIMED_OUT", true, &[]);
        assert!(matches!(classify(&timeout), Answer::Retry(_)));
        // A cut connection carries no error id: the outcome is unknown, resubmit.
        assert!(matches!(classify(&Status::unavailable("connection reset")), Answer::Retry(_)));
        assert!(matches!(classify(&Status::unknown("h2 protocol error")), Answer::Retry(_)));
    }

    #[test]
    fn the_first_success_after_a_kill_counts_only_submissions_started_after_it() {
        let s = Stats::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        s.successes.lock().unwrap().extend([(0, at(0), at(1500)), (1, at(1200), at(1300)), (0, at(1100), at(2000))]);
        assert_eq!(s.first_success_after(at(1000), None), Some(Duration::from_millis(300)));
        assert_eq!(s.first_success_after(at(1000), Some(0)), Some(Duration::from_millis(1000)));
        assert_eq!(s.first_success_after(at(3000), None), None);
    }
}
