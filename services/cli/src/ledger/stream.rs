//! The streams of `syncline ledger`: updates and completions from an offset, up to the ledger
//! end or following it. A stream that breaks because its replica went away or became passive
//! is opened again after the last offset printed, on whichever endpoint answers; offsets are
//! the same on every replica of a participant, so nothing is skipped or printed twice.

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use syncline_proto::ledger as pb;
use syncline_proto::ledger::command_completion_service_client::CommandCompletionServiceClient;
use syncline_proto::ledger::party_management_service_client::PartyManagementServiceClient;
use syncline_proto::ledger::state_service_client::StateServiceClient;
use syncline_proto::ledger::update_service_client::UpdateServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Status;

use super::client::{resumable, Endpoints};
use super::error::{CallError, LedgerCliError};
use super::{render, Out};

/// Pause before opening a broken stream again.
const REOPEN_PAUSE: Duration = Duration::from_millis(200);

/// The participant's ledger end.
pub async fn ledger_end(ledger: &Endpoints) -> Result<i64, CallError> {
    let r = ledger
        .call(|ch| {
            let r = ledger.request(pb::GetLedgerEndRequest {});
            async move { StateServiceClient::new(ch).get_ledger_end(r).await }
        })
        .await?;
    Ok(r.into_inner().offset)
}

/// `parties`; when none are given those the access token names (`token_parties`), or without
/// a token every party the participant hosts.
pub async fn parties_or_local(
    ledger: &Endpoints,
    parties: Vec<String>,
    token_parties: Option<&[String]>,
) -> Result<Vec<String>, LedgerCliError> {
    if !parties.is_empty() {
        return Ok(parties);
    }
    if let Some(t) = token_parties {
        if t.is_empty() {
            return Err(LedgerCliError::Usage("the access token names no party: name some with --party".into()));
        }
        return Ok(t.to_vec());
    }
    let r = ledger
        .call(|ch| {
            let r = ledger.request(pb::ListKnownPartiesRequest {});
            async move { PartyManagementServiceClient::new(ch).list_known_parties(r).await }
        })
        .await?;
    let local: Vec<String> = r.into_inner().party_details.into_iter().filter(|p| p.is_local).map(|p| p.party).collect();
    if local.is_empty() {
        return Err(LedgerCliError::Usage(
            "the participant hosts no party yet: allocate one (allocate-party) or name some with --party".into(),
        ));
    }
    Ok(local)
}

/// Print the transactions `parties` see after `from`: up to the ledger end, or following it.
pub async fn updates(
    ledger: &Endpoints,
    out: &Out,
    parties: Vec<String>,
    from: i64,
    follow: bool,
) -> Result<(), LedgerCliError> {
    let end = if follow { None } else { Some(ledger_end(ledger).await?) };
    let filter = pb::TransactionFilter { parties };
    let open = |after: i64| {
        let r = pb::GetUpdatesRequest { begin_exclusive: after, end_inclusive: end, filter: Some(filter.clone()) };
        move |ch: Channel| {
            let r = ledger.stream_request(r.clone());
            async move { Ok(UpdateServiceClient::new(ch).get_updates(r).await?.into_inner()) }
        }
    };
    let print = |u: pb::GetUpdatesResponse| match u.update {
        Some(pb::get_updates_response::Update::Transaction(t)) => {
            out.print(render::transaction_json(&t), || render::transaction_lines(&t));
            Some(t.offset)
        }
        None => None,
    };
    resuming(ledger, from, end, open, print).await
}

/// Print the completions of `user`'s commands acting as `parties` after `from`: up to the
/// ledger end, or following it.
pub async fn completions(
    ledger: &Endpoints,
    out: &Out,
    user: &str,
    parties: Vec<String>,
    from: i64,
    follow: bool,
) -> Result<(), LedgerCliError> {
    let end = if follow { None } else { Some(ledger_end(ledger).await?) };
    let open = |after: i64| {
        let r =
            pb::CompletionStreamRequest { user_id: user.to_string(), parties: parties.clone(), begin_exclusive: after };
        move |ch: Channel| {
            let r = ledger.stream_request(r.clone());
            async move { Ok(CommandCompletionServiceClient::new(ch).completion_stream(r).await?.into_inner()) }
        }
    };
    let print = |c: pb::CompletionStreamResponse| match c.completion_response {
        Some(pb::completion_stream_response::CompletionResponse::Completion(c)) => {
            out.print(render::completion_json(&c), || render::completion_line(&c));
            Some(c.offset)
        }
        // Nothing of ours up to there: resume after it.
        Some(pb::completion_stream_response::CompletionResponse::OffsetCheckpoint(cp)) => Some(cp.offset),
        None => None,
    };
    resuming(ledger, from, end, open, print).await
}

/// Open a stream after `from` with `open(offset)`, pass its items to `print` (which answers
/// the offset it reached), and open it again after that offset when it breaks resumably,
/// until `end` (if any) is reached. Fails when it cannot be opened again within the
/// endpoints' `wait`.
async fn resuming<T, S, Open, Call, Fut, Print>(
    ledger: &Endpoints,
    from: i64,
    end: Option<i64>,
    open: Open,
    mut print: Print,
) -> Result<(), LedgerCliError>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
    Open: Fn(i64) -> Call,
    Call: FnMut(Channel) -> Fut,
    Fut: Future<Output = Result<S, Status>>,
    Print: FnMut(T) -> Option<i64>,
{
    let mut last = from;
    // Since when the stream has been breaking without serving anything.
    let mut failing_since = Instant::now();
    loop {
        if end.is_some_and(|end| last >= end) {
            return Ok(());
        }
        let mut stream = ledger.call(open(last)).await?;
        let (opened, mut served) = (Instant::now(), false);
        let broken = loop {
            match stream.next().await {
                Some(Ok(item)) => {
                    served = true;
                    if let Some(offset) = print(item) {
                        last = last.max(offset);
                    }
                    if end.is_some_and(|end| last >= end) {
                        return Ok(());
                    }
                }
                Some(Err(status)) => {
                    let e = CallError::from_status(ledger.current_url(), &status, ledger.timeout);
                    if !resumable(&status, &e) {
                        return Err(e.into());
                    }
                    break e;
                }
                // A bounded stream is complete; a followed one was closed by the server.
                None if end.is_some() => return Ok(()),
                None => break CallError::from_status(ledger.current_url(), &Status::unavailable(""), ledger.timeout),
            }
        };
        // A stream that served (or stayed open a while) broke afresh.
        if served || opened.elapsed() >= Duration::from_secs(1) {
            failing_since = Instant::now();
        }
        if failing_since.elapsed() > ledger.wait {
            return Err(broken.into());
        }
        tracing::debug!(error = %broken, after = last, "stream broken; opening it again");
        tokio::time::sleep(REOPEN_PAUSE).await;
    }
}
