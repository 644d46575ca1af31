//! The synchronizer from the operator's seat, with real processes: `syncline admin bootstrap`
//! (and join-participant, host-party, topology) against a sequencer and two mediator replica
//! processes; `syncline admin status` with one active replica and a passive one that refuses
//! its mediator status; and kill -9 of the leading mediator process with pending requests.

use std::time::Duration;

use syncline_proto::mediator::mediator_admin_service_client::MediatorAdminServiceClient;
use syncline_proto::mediator::MediatorStatusRequest;
use syncline_protocol::messages::Verdict;
use syncline_testkit::{fresh_database, wait_for, TempDir};
use tonic::Code;

use crate::synchronizer::*;

async fn mediator_admin(m: &syncline_testkit::NodeSpec) -> MediatorAdminServiceClient<tonic::transport::Channel> {
    MediatorAdminServiceClient::connect(format!("http://{}", m.admin)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_through_syncline_admin_and_status_shows_one_active_mediator_replica() {
    let (seq_db, med_db) = (fresh_database().await, fresh_database().await);
    let dir = TempDir::new("syncline-bootstrap");
    let s = Synchronizer::start(dir.path(), &seq_db.url, &med_db.url).await;

    let (ok, out) = s.admin(&["topology"]);
    assert!(ok && out.contains("mediator:     none") && out.contains("none published yet"), "{out}");

    let (ok, out) = s.admin(&["bootstrap", "--mediator", MEDIATOR, "--confirmation-response-timeout", "15s"]);
    assert!(ok, "{out}");
    assert!(out.contains("registered mediator member mediator"), "{out}");
    assert!(out.contains("published synchronizer parameters (confirmation response timeout 15s"), "{out}");
    assert!(out.contains("published mediator state mediator (serial 1)"), "{out}");
    assert_eq!(out.matches("accepted: in effect from").count(), 2, "{out}");
    // Again: nothing new is published.
    let (ok, again) = s.admin(&["bootstrap", "--mediator", MEDIATOR, "--confirmation-response-timeout", "15s"]);
    assert!(ok && again.contains("nothing to publish") && !again.contains("published "), "{again}");
    // Differently: refused, naming what exists.
    let (ok, other) = s.admin(&["bootstrap", "--mediator", "other-mediator"]);
    assert!(!ok, "{other}");
    assert!(other.contains("already bootstrapped differently"), "{other}");
    assert!(other.contains("synchronizer parameters (confirmation response timeout 15s"), "{other}");
    assert!(other.contains("mediator state mediator (serial 1"), "{other}");

    let (ok, out) = s.admin(&["join-participant", "p1"]);
    assert!(ok && out.contains("registered participant member p1") && out.contains("accepted"), "{out}");
    let (ok, out) = s.admin(&["join-participant", "p1"]);
    assert!(ok && out.contains("already in effect"), "{out}");
    let (ok, out) = s.admin(&["join-participant", "p3", "--serial", "2"]);
    assert!(
        !ok && out.contains("participant join of p3 does not exist yet") && out.contains("first serial is 1"),
        "{out}"
    );
    let (ok, out) = s.admin(&["host-party", "alice", "--participant", "p1", "--participant", "p2:observation"]);
    assert!(
        ok && out.contains("party alice hosted by p1:submission, p2:observation") && out.contains("accepted"),
        "{out}"
    );
    let (ok, out) = s.admin(&["host-party", "alice", "--participant", "p1:confirmation"]);
    assert!(!ok && out.contains("already exists with serial 1") && out.contains("--serial 2"), "{out}");
    let (ok, out) = s.admin(&["host-party", "alice", "--participant", "p1:sometimes"]);
    assert!(!ok && out.contains("unknown permission"), "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The topology as each replica sees it (the passive one reads the shared store too).
    for node in ["med1", "med2"] {
        let (ok, out) = s.admin(&["topology", "--node", node]);
        assert!(ok, "{out}");
        assert!(out.contains(&format!("as mediator replica {node} sees it")), "{out}");
        assert!(out.contains("mediator:     mediator") && out.contains("participants: p1"), "{out}");
        assert!(out.lines().any(|l| l.trim_start().starts_with("alice") && l.contains("p1:submission")), "{out}");
        assert!(out.contains("confirmation response timeout 15s"), "{out}");
    }
    let (ok, out) = s.admin(&["topology", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["snapshot"]["mediator"], MEDIATOR);
    assert_eq!(v["snapshot"]["parameters"]["published"], true);
    assert_eq!(v["snapshot"]["participants"], serde_json::json!(["p1"]));
    assert_eq!(v["transactions"].as_array().unwrap().len(), 4, "{out}");
    assert!(v["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["accepted"] == true && t["sender"] == "syncline-operator"));
    // Before the bootstrap, nothing was in effect.
    let first = v["transactions"][0]["sequenced_at"].as_i64().unwrap();
    let (ok, out) = s.admin(&["topology", "--at", &(first - 1).to_string()]);
    assert!(ok && out.contains("mediator:     none"), "{out}");

    // Status: one active mediator replica, the other passive.
    let (_, out) = s.admin(&["status"]);
    let line = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}:\n{out}"));
    assert!(line("med1").contains("mediator") && line("med1").contains(" active "), "{out}");
    assert!(line("med2").contains("mediator") && line("med2").contains(" passive "), "{out}");
    assert!(line("seq1").contains("sequencer"), "{out}");
    // The passive replica's mediator status: UNAVAILABLE, saying where to ask.
    let e = mediator_admin(&s.meds[1]).await.status(MediatorStatusRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("mediator replica med2 is passive: ask the active replica"), "{}", e.message());
    let st = mediator_admin(&s.meds[0]).await.status(MediatorStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.member, MEDIATOR);
    assert!(st.processed_timestamp.is_some_and(|p| p >= first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leading_mediator_with_pending_requests_every_request_gets_one_verdict() {
    let (seq_db, med_db) = (fresh_database().await, fresh_database().await);
    let dir = TempDir::new("syncline-mediator-kill");
    let mut s = Synchronizer::start(dir.path(), &seq_db.url, &med_db.url).await;
    s.bootstrap("20s").await;
    let (p1, p2) = (Participant::new(s.client(), "p1"), Participant::new(s.client(), "p2"));

    // Ten requests needing alice (p1) and bob (p2): p1 approves at once, p2 holds back.
    let mut requests = Vec::new();
    for _ in 0..10 {
        let r = alice_and_bob_request();
        let id = p1.submit(&r).await;
        p1.approve(id, r.root_hash(), &["alice"]).await;
        requests.push((id, r.root_hash()));
    }
    let leader = s.meds[0].clone();
    wait_for(Duration::from_secs(20), "med1 holding 10 pending requests", || {
        let leader = leader.clone();
        async move {
            let st = mediator_admin(&leader).await.status(MediatorStatusRequest {}).await;
            st.is_ok_and(|st| st.into_inner().outstanding_requests == 10)
        }
    })
    .await;

    s.kill9(0);
    let standby = s.meds[1].clone();
    wait_for(Duration::from_secs(20), "med2 active after the kill", || {
        let standby = standby.clone();
        async move { is_active(&standby).await }
    })
    .await;
    // The new leader rebuilt the pending requests from the database; nobody has a verdict.
    let st = mediator_admin(&standby).await.status(MediatorStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.outstanding_requests, 10, "{st:?}");
    assert!(verdicts_in(&events_of(&s.client(), "p1").await).is_empty());

    for (id, root_hash) in &requests {
        p2.approve(*id, *root_hash, &["bob"]).await;
    }
    let client = s.client();
    wait_for(Duration::from_secs(30), "10 verdicts at p1 and p2", || {
        let client = client.clone();
        async move {
            let (a, b) = (verdicts_in(&events_of(&client, "p1").await), verdicts_in(&events_of(&client, "p2").await));
            a.len() >= 10 && b.len() >= 10
        }
    })
    .await;
    for member in ["p1", "p2"] {
        let verdicts = one_verdict_each(&client, member).await;
        assert_eq!(verdicts.keys().copied().collect::<Vec<_>>(), requests.iter().map(|r| r.0).collect::<Vec<_>>());
        for (id, r) in &verdicts {
            assert_eq!(r.verdict, Verdict::Approve, "{member}, request {id}");
        }
    }
    let st = mediator_admin(&standby).await.status(MediatorStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.outstanding_requests, 0, "{st:?}");
}
