//! Submissions of `syncline ledger`: the commands built from the arguments, submitted and
//! waited for (SubmitAndWaitForTransaction: SubmitAndWait answering with the transaction, so
//! the new contract ids can be printed). After an UNAVAILABLE answer the same command id is
//! submitted again (to the next endpoint), as a new submission (id); a DUPLICATE_COMMAND
//! naming an earlier attempt's submission id means that attempt was accepted (its answer was
//! lost), and its transaction is looked up and printed as the outcome. Any other
//! DUPLICATE_COMMAND (the command id was used before) is an error.

use futures_util::StreamExt;
use serde::Deserialize;
use syncline_proto::ledger as pb;
use syncline_proto::ledger::command_completion_service_client::CommandCompletionServiceClient;
use syncline_proto::ledger::command_service_client::CommandServiceClient;
use syncline_proto::ledger::update_service_client::UpdateServiceClient;
use tonic::Code;

use super::client::Endpoints;
use super::error::{CallError, LedgerCliError};

/// A contract to create, as `--create-json` gives it.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateJson {
    /// The template name.
    pub template: String,
    /// The contract's arguments (any JSON value; default `{}`).
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
    /// At least one.
    pub signatories: Vec<String>,
    #[serde(default)]
    /// Further parties that see the contract.
    pub observers: Vec<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// A create command from `--create-json`'s text.
pub fn parse_create(text: &str) -> Result<pb::CreateCommand, LedgerCliError> {
    let c: CreateJson = serde_json::from_str(text).map_err(|e| {
        LedgerCliError::Usage(format!(
            "--create-json {text:?}: {e} (expected {{\"template\":..,\"arguments\":..,\"signatories\":[..],\"observers\":[..]}})"
        ))
    })?;
    if c.signatories.is_empty() {
        return Err(LedgerCliError::Usage(format!("--create-json {text:?}: no signatories")));
    }
    Ok(pb::CreateCommand {
        template_id: c.template,
        create_arguments: c.arguments.to_string(),
        signatories: c.signatories,
        observers: c.observers,
    })
}

/// Contract arguments from `--arguments`: JSON, stored in its compact form.
pub fn parse_arguments(text: &str) -> Result<String, LedgerCliError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| LedgerCliError::Usage(format!("--arguments {text:?} is not JSON: {e}")))?;
    Ok(v.to_string())
}

/// A fresh command id: unique per intended change (and so per run of the command).
pub fn new_command_id() -> String {
    format!("cli-{:032x}", rand::random::<u128>())
}

/// One command as a batch: for `user`, acting as `act_as`, with `command_id`.
pub fn commands(user: &str, command_id: &str, act_as: Vec<String>, command: pb::command::Command) -> pb::Commands {
    pb::Commands {
        user_id: user.to_string(),
        command_id: command_id.to_string(),
        act_as,
        commands: vec![pb::Command { command: Some(command) }],
        ..Default::default()
    }
}

/// Submit `commands` and wait for the transaction; resubmitted with the same command id
/// after UNAVAILABLE (and, once resubmitted, after SUBMISSION_ALREADY_IN_FLIGHT from the
/// attempt before) until the endpoints' `wait` has passed.
pub async fn submit(ledger: &Endpoints, commands: pb::Commands) -> Result<pb::Transaction, CallError> {
    let command_id = commands.command_id.clone();
    // The submission id of every attempt: a DUPLICATE_COMMAND naming one of them is ours.
    let attempts = std::sync::Mutex::new(Vec::<String>::new());
    let give_up = tokio::time::Instant::now() + ledger.wait;
    let with_id = |mut e: CallError| {
        e.command_id = Some(command_id.clone());
        e
    };
    loop {
        let answer = ledger
            .call(|ch| {
                let mut commands = commands.clone();
                commands.submission_id = format!("{:016x}", rand::random::<u64>());
                attempts.lock().unwrap().push(commands.submission_id.clone());
                let r = ledger.request(pb::SubmitAndWaitForTransactionRequest { commands: Some(commands) });
                async move { CommandServiceClient::new(ch).submit_and_wait_for_transaction(r).await }
            })
            .await;
        let ours = |e: &CallError| {
            e.metadata.get("existing_submission_id").is_some_and(|s| attempts.lock().unwrap().contains(s))
        };
        let retried = attempts.lock().unwrap().len() > 1;
        match answer {
            Ok(r) => {
                return r.into_inner().transaction.ok_or_else(|| {
                    with_id(CallError::from_status(
                        ledger.current_url(),
                        &tonic::Status::internal("the participant answered without the transaction"),
                        ledger.timeout,
                    ))
                })
            }
            // An earlier attempt of ours was accepted (its answer was lost).
            Err(e) if e.is("DUPLICATE_COMMAND") && ours(&e) => return earlier_outcome(ledger, &commands, e).await,
            // An earlier attempt of ours is still being decided: ask again shortly.
            Err(e)
                if retried
                    && e.code == Code::Aborted
                    && e.is("SUBMISSION_ALREADY_IN_FLIGHT")
                    && tokio::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(with_id(e)),
        }
    }
}

/// The transaction of an earlier accepted attempt, from DUPLICATE_COMMAND's completion offset:
/// its completion gives the update id, the update service the transaction.
async fn earlier_outcome(
    ledger: &Endpoints,
    commands: &pb::Commands,
    duplicate: CallError,
) -> Result<pb::Transaction, CallError> {
    let Some(offset) = duplicate.metadata.get("completion_offset").and_then(|o| o.parse::<i64>().ok()) else {
        return Err(duplicate);
    };
    let request = pb::CompletionStreamRequest {
        user_id: commands.user_id.clone(),
        parties: commands.act_as.clone(),
        begin_exclusive: offset - 1,
    };
    let update_id = ledger
        .call(|ch| {
            let r = ledger.stream_request(request.clone());
            let command_id = commands.command_id.clone();
            async move {
                let mut s = CommandCompletionServiceClient::new(ch).completion_stream(r).await?.into_inner();
                while let Some(item) = s.next().await {
                    if let Some(pb::completion_stream_response::CompletionResponse::Completion(c)) =
                        item?.completion_response
                    {
                        if c.command_id == command_id && c.status.as_ref().is_some_and(|s| s.code == 0) {
                            return Ok(c.update_id);
                        }
                        if c.offset > offset {
                            break;
                        }
                    }
                }
                Err(tonic::Status::not_found(format!("no accepted completion of {command_id} at offset {offset}")))
            }
        })
        .await?;
    let filter = pb::TransactionFilter { parties: commands.act_as.clone() };
    let r = ledger
        .call(|ch| {
            let r =
                ledger.request(pb::GetUpdateByIdRequest { update_id: update_id.clone(), filter: Some(filter.clone()) });
            async move { UpdateServiceClient::new(ch).get_update_by_id(r).await }
        })
        .await?;
    r.into_inner().transaction.ok_or(duplicate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_json_parses_with_defaults_and_rejects_unknown_fields() {
        let c =
            parse_create(r#"{"template":"Iou","arguments":{"amount":5},"signatories":["bob"],"observers":["alice"]}"#)
                .unwrap();
        assert_eq!(c.template_id, "Iou");
        assert_eq!(c.create_arguments, r#"{"amount":5}"#);
        assert_eq!((c.signatories, c.observers), (vec!["bob".to_string()], vec!["alice".to_string()]));
        let c = parse_create(r#"{"template":"T","signatories":["a"]}"#).unwrap();
        assert_eq!((c.create_arguments.as_str(), c.observers.len()), ("{}", 0));
        let e = parse_create(r#"{"template":"T","signatories":["a"],"owner":"x"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `owner`"), "{e}");
        assert!(parse_create(r#"{"template":"T","signatories":[]}"#)
            .unwrap_err()
            .to_string()
            .contains("no signatories"));
        assert!(parse_create("{").is_err());
    }

    #[test]
    fn arguments_must_be_json_and_are_compacted() {
        assert_eq!(parse_arguments(r#"{ "amount" : 10 }"#).unwrap(), r#"{"amount":10}"#);
        let e = parse_arguments("amount=10").unwrap_err().to_string();
        assert!(e.starts_with("--arguments \"amount=10\" is not JSON"), "{e}");
    }

    #[test]
    fn command_ids_are_fresh() {
        let (a, b) = (new_command_id(), new_command_id());
        assert_ne!(a, b);
        assert!(a.starts_with("cli-") && a.len() == 36, "{a}");
    }
}
