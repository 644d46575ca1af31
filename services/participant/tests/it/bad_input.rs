//! Bad input to the ledger API: each gets a definite error naming the problem, the
//! participant keeps serving, and nothing already accepted is lost.

use syncline_participant::model::Command;

use crate::harness::*;
use crate::ledger::setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_or_huge_json_and_unknown_parties_are_refused_clearly_and_nothing_is_lost() {
    let s = setup().await;
    let a1 = s.p1.api();
    let end = a1.ledger_end().await.unwrap().offset;
    a1.submit(commands("alice", "before", vec![Command::Create(iou(&["alice"], &["bob"], 1))])).await.unwrap();
    assert!(completion_of(&a1, "alice", end, "before").await.status.is_ok());

    let refused = |what: &str, c: Command, id: &str| {
        let a1 = a1.clone();
        let (what, id) = (what.to_string(), id.to_string());
        async move {
            let e = a1.submit(commands("alice", &id, vec![c])).await.expect_err(&what);
            (e.code(), e.error_id().to_string(), e.to_string())
        }
    };
    // Nested far deeper than any parser's stack allows: refused, not a crash.
    let mut deep = iou(&["alice"], &[], 1);
    deep.arguments = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (code, id, message) = refused("deep JSON", Command::Create(deep), "deep").await;
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("arguments") && message.contains("not JSON"), "{id}: {message}");

    // Not JSON at all.
    let mut garbage = iou(&["alice"], &[], 1);
    garbage.arguments = "{\"amount\": ".into();
    let (code, _, message) = refused("truncated JSON", Command::Create(garbage), "garbage").await;
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");

    // A party nobody hosts, as signatory and as observer.
    let (code, _, message) = refused("unknown party", Command::Create(iou(&["alice", "zed"], &[], 1)), "zed-1").await;
    assert!(
        matches!(code, tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::PermissionDenied),
        "{message}"
    );
    assert!(message.contains("zed"), "names the party: {message}");
    let (code, _, message) = refused("unknown observer", Command::Create(iou(&["alice"], &["zed"], 1)), "zed-2").await;
    assert!(matches!(code, tonic::Code::InvalidArgument | tonic::Code::NotFound), "{message}");
    assert!(message.contains("zed"), "names the party: {message}");

    // Still serving; what was accepted before is still there.
    let end = a1.ledger_end().await.unwrap().offset;
    a1.submit(commands("alice", "after", vec![Command::Create(iou(&["alice"], &["bob"], 2))])).await.unwrap();
    assert!(completion_of(&a1, "alice", end, "after").await.status.is_ok());
    assert_eq!(a1.active_contracts(&["alice".into()], None).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_sequencer_refuses_completes_at_once_naming_why() {
    let s = setup().await;
    let a1 = s.p1.api();
    let end = a1.ledger_end().await.unwrap().offset;
    // Valid JSON of 6 MiB: the confirmation request is larger than the sequencer takes.
    let mut huge = iou(&["alice"], &["bob"], 1);
    huge.arguments = format!("{{\"blob\":\"{}\"}}", "x".repeat(6 * 1024 * 1024));
    a1.submit(commands("alice", "huge", vec![Command::Create(huge)])).await.unwrap();
    let c = completion_of(&a1, "alice", end, "huge").await;
    // Not NOT_SEQUENCED_TIMEOUT at the max-sequencing-time: the sequencer's refusal, at once.
    assert_eq!(c.status.id, "SEQUENCER_SUBMISSION_REQUEST_REFUSED", "{c:?}");
    assert_eq!(c.status.code, tonic::Code::InvalidArgument, "{c:?}");
    assert!(c.status.message.contains("the sequencer refused the submission"), "{c:?}");
    assert_eq!(c.offset, end + 1, "at the next offset");
    // Still serving; the next command goes through.
    a1.submit(commands("alice", "after", vec![Command::Create(iou(&["alice"], &["bob"], 2))])).await.unwrap();
    assert!(completion_of(&a1, "alice", end + 1, "after").await.status.is_ok());
}
