//! `CommandService`: submit, then wait for that submission's completion. The completion
//! stream is opened at the ledger end before submitting, so the completion cannot be missed;
//! a rejection is the call's error (the completion's id and code), a replica that stops
//! leading meanwhile answers NODE_IS_PASSIVE_REPLICA, and the call's deadline (grpc-timeout,
//! at most [`DEFAULT_TIMEOUT`]) answers REQUEST_TIME_OUT: the outcome is then unknown.

use std::time::Duration;

use futures_util::StreamExt;
use syncline_proto::ledger::command_service_server::CommandService;
use syncline_proto::ledger::{
    SubmitAndWaitForTransactionRequest, SubmitAndWaitForTransactionResponse, SubmitAndWaitRequest,
    SubmitAndWaitResponse,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::error::LedgerError;
use crate::grpc::{convert, status};
use crate::model::{Commands, Completion, CompletionItem};
use crate::LedgerApi;

/// How long SubmitAndWait waits without a deadline of the call (Canton's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The service over one replica's ledger API.
pub struct SubmitAndWait(pub LedgerApi);

impl SubmitAndWait {
    /// Submit and wait for the accepting completion (an error otherwise).
    async fn wait(&self, metadata: &MetadataMap, commands: Commands) -> Result<Completion, Status> {
        let api = &self.0;
        let deadline = tokio::time::Instant::now() + wait_time(metadata);
        let end = api.ledger_end().await?;
        let mut completions = api.completions(&commands.user_id, &commands.act_as, end.offset).await?;
        let command_id = commands.command_id.clone();
        let submitted = api.submit(commands).await?;
        let timed_out = || {
            Status::from(LedgerError::RequestTimeout {
                what: format!("the completion of command {command_id} (submission {})", submitted.submission_id),
            })
        };
        loop {
            let item = tokio::time::timeout_at(deadline, completions.next()).await.map_err(|_| timed_out())?;
            match item {
                Some(Ok(CompletionItem::Completion(c)))
                    if c.command_id == command_id && c.submission_id.as_ref() == Some(&submitted.submission_id) =>
                {
                    return if c.status.is_ok() { Ok(c) } else { Err(status::rejection(&c)) };
                }
                Some(Ok(_)) => {}
                // The replica stopped leading: NODE_IS_PASSIVE_REPLICA.
                Some(Err(e)) => return Err(e.into()),
                None => return Err(api.ensure_active().err().map_or_else(timed_out, Status::from)),
            }
        }
    }
}

/// How long to wait: the call's deadline less a margin for the answer to reach the client
/// before it gives up itself, at most [`DEFAULT_TIMEOUT`].
fn wait_time(metadata: &MetadataMap) -> Duration {
    let Some(timeout) = metadata.get("grpc-timeout").and_then(|v| parse_grpc_timeout(v.to_str().ok()?)) else {
        return DEFAULT_TIMEOUT;
    };
    let margin = (timeout / 10).min(Duration::from_millis(100));
    timeout.saturating_sub(margin).min(DEFAULT_TIMEOUT)
}

/// The `grpc-timeout` header: up to 8 digits and a unit (H M S m u n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl CommandService for SubmitAndWait {
    async fn submit_and_wait(
        &self,
        request: Request<SubmitAndWaitRequest>,
    ) -> Result<Response<SubmitAndWaitResponse>, Status> {
        let rights = auth::rights(&request)?;
        self.0.ensure_active()?;
        let (metadata, _, mut r) = request.into_parts();
        rights.authorize_commands(r.commands.as_mut(), "commands")?;
        let commands = convert::commands(r.commands, "commands")?;
        let c = SubmitAndWait::wait(self, &metadata, commands).await?;
        Ok(Response::new(SubmitAndWaitResponse {
            update_id: c.update_id.unwrap_or_default(),
            completion_offset: c.offset,
        }))
    }

    async fn submit_and_wait_for_transaction(
        &self,
        request: Request<SubmitAndWaitForTransactionRequest>,
    ) -> Result<Response<SubmitAndWaitForTransactionResponse>, Status> {
        let rights = auth::rights(&request)?;
        self.0.ensure_active()?;
        let (metadata, _, mut r) = request.into_parts();
        rights.authorize_commands(r.commands.as_mut(), "commands")?;
        let commands = convert::commands(r.commands, "commands")?;
        let parties = commands.act_as.clone();
        let c = SubmitAndWait::wait(self, &metadata, commands).await?;
        let update_id = c.update_id.unwrap_or_default();
        // The submitters see every event of their transaction.
        let t = self.0.update_by_id(&update_id, &parties).await?;
        Ok(Response::new(SubmitAndWaitForTransactionResponse { transaction: Some(convert::transaction(t, &parties)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_leave_a_margin() {
        assert_eq!(parse_grpc_timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        let mut m = MetadataMap::new();
        assert_eq!(wait_time(&m), DEFAULT_TIMEOUT);
        m.insert("grpc-timeout", "1000m".parse().unwrap());
        assert_eq!(wait_time(&m), Duration::from_millis(900));
        m.insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(wait_time(&m), DEFAULT_TIMEOUT);
    }
}
