//! What `syncline ledger` prints: lines for people, or one JSON object per line (`--json`)
//! with the proto's field names and the contract arguments as JSON values.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use syncline_proto::ledger as pb;

/// Contract arguments as a JSON value (the string itself if it is not JSON).
fn arguments(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// A record time for people (RFC 3339, milliseconds, UTC).
fn time(micros: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn list(ps: &[String]) -> String {
    if ps.is_empty() {
        "-".into()
    } else {
        ps.join(",")
    }
}

/// A party.
pub fn party_json(p: &pb::PartyDetails) -> Value {
    json!({ "party": p.party, "is_local": p.is_local })
}

/// A party for people.
pub fn party_line(p: &pb::PartyDetails) -> String {
    format!("{}\t{}", p.party, if p.is_local { "local" } else { "remote" })
}

/// A created event.
pub fn created_json(c: &pb::CreatedEvent) -> Value {
    json!({
        "contract_id": c.contract_id,
        "template_id": c.template_id,
        "arguments": arguments(&c.create_arguments),
        "signatories": c.signatories,
        "observers": c.observers,
        "witness_parties": c.witness_parties,
        "offset": c.offset,
    })
}

/// A created event (or active contract) for people.
pub fn created_line(c: &pb::CreatedEvent) -> String {
    format!(
        "{}  {}  {}  signatories: {}  observers: {}",
        c.contract_id,
        c.template_id,
        c.create_arguments,
        list(&c.signatories),
        list(&c.observers)
    )
}

fn event_json(e: &pb::Event) -> Value {
    match &e.event {
        Some(pb::event::Event::Created(c)) => json!({ "created": created_json(c) }),
        Some(pb::event::Event::Archived(a)) => json!({ "archived": {
            "contract_id": a.contract_id,
            "template_id": a.template_id,
            "witness_parties": a.witness_parties,
            "offset": a.offset,
        }}),
        None => Value::Null,
    }
}

fn event_line(e: &pb::Event) -> String {
    match &e.event {
        Some(pb::event::Event::Created(c)) => format!("  created   {}", created_line(c)),
        Some(pb::event::Event::Archived(a)) => format!("  archived  {}  {}", a.contract_id, a.template_id),
        None => "  (an empty event)".into(),
    }
}

/// A transaction.
pub fn transaction_json(t: &pb::Transaction) -> Value {
    json!({
        "update_id": t.update_id,
        "offset": t.offset,
        "command_id": t.command_id,
        "workflow_id": t.workflow_id,
        "record_time_micros": t.record_time_micros,
        "events": t.events.iter().map(event_json).collect::<Vec<_>>(),
    })
}

/// A transaction for people: a header line, then one line per event.
pub fn transaction_lines(t: &pb::Transaction) -> String {
    let mut out = format!("offset {}  update {}  {}", t.offset, t.update_id, time(t.record_time_micros));
    if !t.command_id.is_empty() {
        out.push_str(&format!("  command {}", t.command_id));
    }
    for e in &t.events {
        out.push('\n');
        out.push_str(&event_line(e));
    }
    out
}

/// An accepted submission: its command id and transaction.
pub fn submission_json(command_id: &str, t: &pb::Transaction) -> Value {
    let mut v = transaction_json(t);
    v["command_id"] = json!(command_id);
    v
}

/// An accepted submission for people.
pub fn submission_lines(command_id: &str, t: &pb::Transaction) -> String {
    let mut out = format!("command {command_id} accepted: update {} at offset {}", t.update_id, t.offset);
    for e in &t.events {
        out.push('\n');
        out.push_str(&event_line(e));
    }
    out
}

/// A completion.
pub fn completion_json(c: &pb::Completion) -> Value {
    let s = c.status.clone().unwrap_or_default();
    json!({
        "offset": c.offset,
        "command_id": c.command_id,
        "submission_id": c.submission_id,
        "user_id": c.user_id,
        "act_as": c.act_as,
        "update_id": c.update_id,
        "record_time_micros": c.record_time_micros,
        "status": {
            "code": s.code,
            "error_id": s.error_id,
            "message": s.message,
            "metadata": s.metadata.iter().collect::<std::collections::BTreeMap<_, _>>(),
            "retryable": s.retryable,
        },
    })
}

/// A completion for people.
pub fn completion_line(c: &pb::Completion) -> String {
    let s = c.status.clone().unwrap_or_default();
    let outcome = if s.code == 0 {
        format!("accepted  update {}", c.update_id)
    } else {
        format!("rejected  {}: {}{}", s.error_id, s.message, if s.retryable { " (retryable)" } else { "" })
    };
    format!("offset {}  command {}  {outcome}", c.offset, c.command_id)
}

/// Print a JSON value as one line.
pub fn print_json(v: &Value) {
    println!("{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx() -> pb::Transaction {
        pb::Transaction {
            update_id: "ab12".into(),
            command_id: "cmd-1".into(),
            workflow_id: String::new(),
            events: vec![
                pb::Event {
                    event: Some(pb::event::Event::Archived(pb::ArchivedEvent {
                        contract_id: "c1".into(),
                        template_id: "Iou".into(),
                        witness_parties: vec!["alice".into()],
                        offset: 7,
                    })),
                },
                pb::Event {
                    event: Some(pb::event::Event::Created(pb::CreatedEvent {
                        contract_id: "c2".into(),
                        template_id: "Iou".into(),
                        create_arguments: r#"{"amount":10}"#.into(),
                        signatories: vec!["bob".into()],
                        observers: vec![],
                        witness_parties: vec!["alice".into(), "bob".into()],
                        offset: 7,
                    })),
                },
            ],
            offset: 7,
            record_time_micros: 1_700_000_000_123_000,
        }
    }

    #[test]
    fn transactions_as_json_have_arguments_as_values() {
        let v = transaction_json(&tx());
        assert_eq!(v["offset"], 7);
        assert_eq!(v["events"][0]["archived"]["contract_id"], "c1");
        assert_eq!(v["events"][1]["created"]["arguments"]["amount"], 10);
        assert_eq!(v["events"][1]["created"]["signatories"], json!(["bob"]));
        assert!(!v.to_string().contains('\n'), "one line per object");
        let s = submission_json("cmd-1", &tx());
        assert_eq!((s["command_id"].as_str(), s["update_id"].as_str()), (Some("cmd-1"), Some("ab12")));
    }

    #[test]
    fn transactions_for_people() {
        assert_eq!(
            transaction_lines(&tx()),
            "offset 7  update ab12  2023-11-14T22:13:20.123Z  command cmd-1\n  archived  c1  Iou\n  \
             created   c2  Iou  {\"amount\":10}  signatories: bob  observers: -"
        );
        assert!(submission_lines("cmd-1", &tx()).starts_with("command cmd-1 accepted: update ab12 at offset 7\n"));
    }

    #[test]
    fn arguments_that_are_not_json_stay_strings() {
        assert_eq!(arguments("not json"), json!("not json"));
    }

    #[test]
    fn completions_accepted_and_rejected() {
        let mut c = pb::Completion {
            command_id: "c1".into(),
            status: Some(pb::CompletionStatus::default()),
            update_id: "u1".into(),
            offset: 3,
            ..Default::default()
        };
        assert_eq!(completion_line(&c), "offset 3  command c1  accepted  update u1");
        c.status = Some(pb::CompletionStatus {
            code: 10,
            message: "contract c9 is locked".into(),
            error_id: "LOCAL_VERDICT_LOCKED_CONTRACTS".into(),
            metadata: Default::default(),
            retryable: true,
        });
        assert_eq!(
            completion_line(&c),
            "offset 3  command c1  rejected  LOCAL_VERDICT_LOCKED_CONTRACTS: contract c9 is locked (retryable)"
        );
        let j = completion_json(&c);
        assert_eq!(j["status"]["error_id"], "LOCAL_VERDICT_LOCKED_CONTRACTS");
        assert_eq!(j["status"]["retryable"], true);
    }

    #[test]
    fn parties() {
        let p = pb::PartyDetails { party: "alice".into(), is_local: true };
        assert_eq!(party_line(&p), "alice\tlocal");
        assert_eq!(party_json(&p), json!({"party": "alice", "is_local": true}));
    }
}
