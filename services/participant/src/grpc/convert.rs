//! Proto ↔ model. Requests are checked field by field; a bad one is INVALID_ARGUMENT naming
//! its path in the request (e.g. `commands.commands[1].create.template_id`).

use std::collections::BTreeSet;
use std::time::Duration;

use syncline_proto::ledger as pb;
use syncline_sequencer_client::now_micros;

use crate::error::LedgerError;
use crate::grpc::status::retryable;
use crate::model::{
    ActiveContract, Command, Commands, Completion, CompletionItem, CreateCommand, CreatedEvent, DeduplicationPeriod,
    Event, ExerciseCommand, PartyDetails, Transaction,
};

type Result<T> = std::result::Result<T, LedgerError>;

fn invalid(field: &str, problem: impl Into<String>) -> LedgerError {
    LedgerError::invalid(field, problem)
}

/// A required message field.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| invalid(field, "missing"))
}

/// A party name: 1 to 255 bytes without control characters.
fn party(p: &str, field: &str) -> Result<String> {
    if p.is_empty() || p.len() > 255 || p.chars().any(char::is_control) {
        return Err(invalid(field, format!("{p:?} is not a party name")));
    }
    Ok(p.to_string())
}

fn parties(ps: &[String], field: &str) -> Result<Vec<String>> {
    ps.iter().enumerate().map(|(i, p)| party(p, &format!("{field}[{i}]"))).collect()
}

/// An identifier (command id, contract id, template, choice): 1 to 255 bytes.
fn ident(v: &str, field: &str) -> Result<String> {
    if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) {
        return Err(invalid(field, "must have 1 to 255 bytes without control characters"));
    }
    Ok(v.to_string())
}

/// An optional identifier: empty is absent.
fn optional_ident(v: &str, field: &str) -> Result<Option<String>> {
    if v.is_empty() {
        Ok(None)
    } else {
        ident(v, field).map(Some)
    }
}

/// The parties of a transaction filter: at least one.
pub fn filter(f: Option<pb::TransactionFilter>, field: &str) -> Result<Vec<String>> {
    let f = required(f, field)?;
    if f.parties.is_empty() {
        return Err(invalid(&format!("{field}.parties"), "empty (at least one is required)"));
    }
    parties(&f.parties, &format!("{field}.parties"))
}

/// The parties of a completion stream request: at least one.
pub fn stream_parties(ps: &[String], field: &str) -> Result<Vec<String>> {
    if ps.is_empty() {
        return Err(invalid(field, "empty (at least one is required)"));
    }
    parties(ps, field)
}

/// A user id: 1 to 255 bytes.
pub fn user_id(v: &str, field: &str) -> Result<String> {
    ident(v, field)
}

/// An offset: not negative.
pub fn offset(o: i64, field: &str) -> Result<i64> {
    if o < 0 {
        return Err(invalid(field, "must not be negative"));
    }
    Ok(o)
}

/// The commands of a submission (`field` names the `Commands` message).
pub fn commands(c: Option<pb::Commands>, field: &str) -> Result<Commands> {
    let c = required(c, field)?;
    let f = |name: &str| format!("{field}.{name}");
    let act_as = parties(&c.act_as, &f("act_as"))?;
    if act_as.is_empty() {
        return Err(invalid(&f("act_as"), "empty (at least one is required)"));
    }
    if c.commands.is_empty() {
        return Err(invalid(&f("commands"), "empty (at least one is required)"));
    }
    let commands = (c.commands.into_iter().enumerate())
        .map(|(i, cmd)| command(cmd, &format!("{field}.commands[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let deduplication_period = match c.deduplication_period {
        None => None,
        Some(pb::commands::DeduplicationPeriod::DeduplicationDurationMicros(d)) if d < 0 => {
            return Err(invalid(&f("deduplication_duration_micros"), "must not be negative"))
        }
        Some(pb::commands::DeduplicationPeriod::DeduplicationDurationMicros(d)) => {
            Some(DeduplicationPeriod::Duration(Duration::from_micros(d as u64)))
        }
        Some(pb::commands::DeduplicationPeriod::DeduplicationOffset(o)) => {
            Some(DeduplicationPeriod::Offset(offset(o, &f("deduplication_offset"))?))
        }
    };
    let abs = match c.min_ledger_time_abs_micros {
        0 => None,
        t if t < 0 => return Err(invalid(&f("min_ledger_time_abs_micros"), "must not be negative")),
        t => Some(t),
    };
    let rel = match c.min_ledger_time_rel_micros {
        0 => None,
        t if t < 0 => return Err(invalid(&f("min_ledger_time_rel_micros"), "must not be negative")),
        t => Some(now_micros().saturating_add(t)),
    };
    Ok(Commands {
        user_id: user_id(&c.user_id, &f("user_id"))?,
        command_id: ident(&c.command_id, &f("command_id"))?,
        submission_id: optional_ident(&c.submission_id, &f("submission_id"))?,
        act_as,
        read_as: parties(&c.read_as, &f("read_as"))?,
        workflow_id: optional_ident(&c.workflow_id, &f("workflow_id"))?,
        deduplication_period,
        min_ledger_time: abs.max(rel),
        commands,
    })
}

fn command(c: pb::Command, field: &str) -> Result<Command> {
    match required(c.command, &format!("{field}.command"))? {
        pb::command::Command::Create(c) => Ok(Command::Create(create(c, &format!("{field}.create"))?)),
        pb::command::Command::Archive(a) => {
            Ok(Command::Archive { contract_id: ident(&a.contract_id, &format!("{field}.archive.contract_id"))? })
        }
        pb::command::Command::Exercise(e) => {
            let f = |name: &str| format!("{field}.exercise.{name}");
            Ok(Command::Exercise(ExerciseCommand {
                contract_id: ident(&e.contract_id, &f("contract_id"))?,
                choice: ident(&e.choice, &f("choice"))?,
                consuming: e.consuming,
                creates: (e.creates.into_iter().enumerate())
                    .map(|(i, c)| create(c, &format!("{field}.exercise.creates[{i}]")))
                    .collect::<Result<_>>()?,
            }))
        }
    }
}

fn create(c: pb::CreateCommand, field: &str) -> Result<CreateCommand> {
    let f = |name: &str| format!("{field}.{name}");
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&c.create_arguments) {
        return Err(invalid(&f("create_arguments"), format!("not a JSON document: {e}")));
    }
    let signatories = parties(&c.signatories, &f("signatories"))?;
    if signatories.is_empty() {
        return Err(invalid(&f("signatories"), "empty (at least one is required)"));
    }
    Ok(CreateCommand {
        template: ident(&c.template_id, &f("template_id"))?,
        arguments: c.create_arguments,
        signatories,
        observers: parties(&c.observers, &f("observers"))?,
    })
}

/// A completion on the wire.
pub fn completion(c: Completion) -> pb::Completion {
    let code = c.status.code;
    pb::Completion {
        command_id: c.command_id,
        status: Some(pb::CompletionStatus {
            code: code as i32,
            message: c.status.message,
            error_id: if code == tonic::Code::Ok { String::new() } else { c.status.id },
            metadata: Default::default(),
            retryable: retryable(code),
        }),
        update_id: c.update_id.unwrap_or_default(),
        user_id: c.user_id,
        act_as: c.act_as,
        submission_id: c.submission_id.unwrap_or_default(),
        deduplication_period: c.deduplication_period.map(|p| match p {
            DeduplicationPeriod::Duration(d) => {
                pb::completion::DeduplicationPeriod::DeduplicationDurationMicros(d.as_micros() as i64)
            }
            DeduplicationPeriod::Offset(o) => pb::completion::DeduplicationPeriod::DeduplicationOffset(o),
        }),
        offset: c.offset,
        record_time_micros: c.record_time,
    }
}

/// An item of the completion stream on the wire.
pub fn completion_item(item: CompletionItem) -> pb::CompletionStreamResponse {
    use pb::completion_stream_response::CompletionResponse;
    let response = match item {
        CompletionItem::Completion(c) => CompletionResponse::Completion(completion(c)),
        CompletionItem::Checkpoint { offset, record_time } => {
            CompletionResponse::OffsetCheckpoint(pb::OffsetCheckpoint { offset, record_time_micros: record_time })
        }
    };
    pb::CompletionStreamResponse { completion_response: Some(response) }
}

/// A transaction on the wire, with the filter's parties as each event's witnesses.
pub fn transaction(t: Transaction, filter: &[String]) -> pb::Transaction {
    let filter: BTreeSet<&String> = filter.iter().collect();
    let offset = t.offset;
    let events = (t.events.into_iter())
        .map(|e| {
            let witnesses: Vec<String> = e.stakeholders().into_iter().filter(|p| filter.contains(p)).collect();
            let event = match e {
                Event::Created(c) => pb::event::Event::Created(created(c, offset, witnesses)),
                Event::Archived(a) => pb::event::Event::Archived(pb::ArchivedEvent {
                    contract_id: a.contract_id,
                    template_id: a.template,
                    witness_parties: witnesses,
                    offset,
                }),
            };
            pb::Event { event: Some(event) }
        })
        .collect();
    pb::Transaction {
        update_id: t.update_id,
        command_id: t.command_id.unwrap_or_default(),
        workflow_id: t.workflow_id.unwrap_or_default(),
        events,
        offset,
        record_time_micros: t.record_time,
    }
}

fn created(c: CreatedEvent, offset: i64, witness_parties: Vec<String>) -> pb::CreatedEvent {
    pb::CreatedEvent {
        contract_id: c.contract_id,
        template_id: c.template,
        create_arguments: c.arguments,
        signatories: c.signatories,
        observers: c.observers,
        witness_parties,
        offset,
    }
}

/// An active contract on the wire.
pub fn active_contract(c: ActiveContract, filter: &[String]) -> pb::GetActiveContractsResponse {
    let witnesses = (c.created.signatories.iter().chain(&c.created.observers))
        .filter(|p| filter.contains(p))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    pb::GetActiveContractsResponse { created_event: Some(created(c.created, c.created_offset, witnesses)) }
}

/// A party on the wire.
pub fn party_details(p: PartyDetails) -> pb::PartyDetails {
    pb::PartyDetails { party: p.party, is_local: p.is_local }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_cmd() -> pb::Command {
        pb::Command {
            command: Some(pb::command::Command::Create(pb::CreateCommand {
                template_id: "Iou".into(),
                create_arguments: r#"{"amount":1}"#.into(),
                signatories: vec!["alice".into()],
                observers: vec![],
            })),
        }
    }

    fn valid() -> pb::Commands {
        pb::Commands {
            user_id: "app".into(),
            command_id: "c1".into(),
            act_as: vec!["alice".into()],
            commands: vec![create_cmd()],
            ..Default::default()
        }
    }

    fn field_of(c: pb::Commands) -> String {
        match commands(Some(c), "commands").unwrap_err() {
            LedgerError::InvalidArgument { field, .. } => field,
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_valid_submission_converts() {
        let mut c = valid();
        c.deduplication_period = Some(pb::commands::DeduplicationPeriod::DeduplicationOffset(3));
        c.min_ledger_time_abs_micros = 5;
        let m = commands(Some(c), "commands").unwrap();
        assert_eq!((m.user_id.as_str(), m.command_id.as_str(), m.submission_id), ("app", "c1", None));
        assert_eq!(m.deduplication_period, Some(DeduplicationPeriod::Offset(3)));
        assert_eq!(m.min_ledger_time, Some(5));
        assert!(matches!(&m.commands[0], Command::Create(c) if c.template == "Iou"));
    }

    /// A change to a valid submission, and the field it makes invalid.
    type Case = (Box<dyn Fn(&mut pb::Commands)>, &'static str);

    #[test]
    fn every_invalid_field_is_named() {
        assert!(
            matches!(commands(None, "commands"), Err(LedgerError::InvalidArgument { field, .. }) if field == "commands")
        );
        let cases: Vec<Case> = vec![
            (Box::new(|c| c.user_id.clear()), "commands.user_id"),
            (Box::new(|c| c.command_id = "x".repeat(256)), "commands.command_id"),
            (Box::new(|c| c.act_as.clear()), "commands.act_as"),
            (Box::new(|c| c.act_as.push(String::new())), "commands.act_as[1]"),
            (Box::new(|c| c.read_as = vec!["a\nb".into()]), "commands.read_as[0]"),
            (Box::new(|c| c.commands.clear()), "commands.commands"),
            (Box::new(|c| c.commands.push(pb::Command { command: None })), "commands.commands[1].command"),
            (
                Box::new(|c| {
                    c.deduplication_period = Some(pb::commands::DeduplicationPeriod::DeduplicationDurationMicros(-1))
                }),
                "commands.deduplication_duration_micros",
            ),
            (
                Box::new(|c| c.deduplication_period = Some(pb::commands::DeduplicationPeriod::DeduplicationOffset(-1))),
                "commands.deduplication_offset",
            ),
            (Box::new(|c| c.min_ledger_time_abs_micros = -1), "commands.min_ledger_time_abs_micros"),
            (Box::new(|c| c.min_ledger_time_rel_micros = -1), "commands.min_ledger_time_rel_micros"),
            (
                Box::new(|c| {
                    let Some(pb::command::Command::Create(cr)) = &mut c.commands[0].command else { unreachable!() };
                    cr.create_arguments = "{not json".into();
                }),
                "commands.commands[0].create.create_arguments",
            ),
            (
                Box::new(|c| {
                    let Some(pb::command::Command::Create(cr)) = &mut c.commands[0].command else { unreachable!() };
                    cr.signatories.clear();
                }),
                "commands.commands[0].create.signatories",
            ),
            (
                Box::new(|c| {
                    let Some(pb::command::Command::Create(cr)) = &mut c.commands[0].command else { unreachable!() };
                    cr.template_id.clear();
                }),
                "commands.commands[0].create.template_id",
            ),
            (
                Box::new(|c| {
                    c.commands.push(pb::Command {
                        command: Some(pb::command::Command::Exercise(pb::ExerciseCommand {
                            contract_id: "k".into(),
                            choice: "Transfer".into(),
                            consuming: true,
                            creates: vec![pb::CreateCommand { template_id: "Iou".into(), ..Default::default() }],
                        })),
                    })
                }),
                "commands.commands[1].exercise.creates[0].create_arguments",
            ),
            (
                Box::new(|c| {
                    c.commands[0].command =
                        Some(pb::command::Command::Archive(pb::ArchiveCommand { contract_id: String::new() }))
                }),
                "commands.commands[0].archive.contract_id",
            ),
        ];
        for (mutate, field) in cases {
            let mut c = valid();
            mutate(&mut c);
            assert_eq!(field_of(c), field);
        }
    }

    #[test]
    fn filters_need_a_party() {
        let e = filter(Some(pb::TransactionFilter { parties: vec![] }), "filter").unwrap_err();
        assert!(matches!(e, LedgerError::InvalidArgument { field, .. } if field == "filter.parties"));
        let e = filter(None, "filter").unwrap_err();
        assert!(matches!(e, LedgerError::InvalidArgument { field, .. } if field == "filter"));
    }
}
