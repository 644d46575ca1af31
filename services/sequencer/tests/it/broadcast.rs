//! Broadcast (recipient `*`) through the public API: a member registered later gets every
//! broadcast still stored from a fresh subscription, merged in order with its own events;
//! pruning keeps broadcasts; acknowledgements of broadcasts before a member's registration
//! do not drag the pruning point back; and across two nodes each broadcast reaches a late
//! member once, in timestamp order.

use crate::harness::*;
use std::time::Duration;

use syncline_proto::sequencer::{AcknowledgeRequest, PruneRequest, PruningStatusRequest, RegisterMemberRequest};
use syncline_sequencer_client::BROADCAST_RECIPIENT as ALL;
use syncline_testkit::fresh_database;
use tonic::Code;

async fn ack(node: &Node, member: &str, timestamp: i64) {
    node.client().await.acknowledge(AcknowledgeRequest { member: member.into(), timestamp }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_registered_later_gets_the_broadcasts_first_and_pruning_keeps_them() {
    let tdb = fresh_database().await;
    let n = Node::serving(&tdb.url, "s", &["alice", "bob"]).await;
    let refused = n.admin().await.register_member(RegisterMemberRequest { member: ALL.into() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{}", refused.message());
    let mut c = n.client().await;
    let m0 = c.send(send("alice", "m0", &["bob"], "to bob")).await.unwrap().into_inner().timestamp;
    let b1 = c.send(send("alice", "b1", &[ALL], "topology")).await.unwrap().into_inner().timestamp;
    let m2 = c.send(send("alice", "m2", &["bob"], "to bob again")).await.unwrap().into_inner().timestamp;
    let bob = collect(&n, "bob", None, 3, Duration::from_secs(20)).await;
    assert_eq!(bob.iter().map(|e| e.timestamp).collect::<Vec<_>>(), vec![m0, b1, m2]);
    assert_eq!(bob[1].envelopes[0].content, b"topology");
    // The sender is a member too: it gets its broadcast with its message id.
    let alice = collect(&n, "alice", None, 3, Duration::from_secs(20)).await;
    assert_eq!((alice[1].timestamp, alice[1].message_id.as_deref()), (b1, Some("b1")));
    assert_eq!(alice[1].envelopes.len(), 1);

    // Prune everything before m2: the member-addressed m0 goes, the broadcast stays.
    ack(&n, "alice", m2).await;
    ack(&n, "bob", m2).await;
    let mut admin = n.admin().await;
    let pruned = admin.prune(PruneRequest { before: m2 }).await.unwrap().into_inner();
    assert_eq!(pruned.events_removed, 1, "only the member-addressed event before m2");
    let bound = admin.pruning_status(PruningStatusRequest {}).await.unwrap().into_inner().lower_bound.unwrap();
    assert!(bound >= m0 && bound < m2 && bound > b1, "bound {bound}");
    // Bob resumes after the bound with the chain unbroken.
    let rest = collect(&n, "bob", Some(bound), 1, Duration::from_secs(10)).await;
    assert_eq!((rest[0].timestamp, rest[0].previous_timestamp), (m2, Some(b1)));

    // Carol registers after all that: a fresh subscription starts with the broadcast, then
    // her own events since registration; nothing addressed to others.
    n.register(&["carol"]).await;
    let m3 = c.send(send("bob", "m3", &["carol"], "to carol")).await.unwrap().into_inner().timestamp;
    let carol = collect(&n, "carol", None, 2, Duration::from_secs(20)).await;
    assert_eq!(carol.iter().map(|e| e.timestamp).collect::<Vec<_>>(), vec![b1, m3]);
    assert_eq!(carol[0].previous_timestamp, None, "the broadcast is her first event");
    assert_eq!(carol[1].previous_timestamp, Some(b1));
    assert_eq!((carol[0].sender.as_str(), carol[0].envelopes[0].content.as_slice()), ("alice", &b"topology"[..]));
    assert_eq!(carol[0].message_id, None, "only the sender sees the message id");
    // From a timestamp, broadcasts after it as usual.
    let after_b1 = collect(&n, "carol", Some(b1), 1, Duration::from_secs(10)).await;
    assert_eq!(after_b1[0].timestamp, m3);

    // Carol acknowledges the broadcast from before her registration as she catches up: that
    // is accepted and does not move the pruning point back below what was pruned already.
    ack(&n, "carol", b1).await;
    let st = admin.pruning_status(PruningStatusRequest {}).await.unwrap().into_inner();
    assert!(st.safe_pruning_timestamp >= bound, "safe point {} below the bound {bound}", st.safe_pruning_timestamp);
    ack(&n, "carol", m3).await;
    ack(&n, "alice", m3).await;
    ack(&n, "bob", m3).await;
    admin.prune(PruneRequest { before: m3 }).await.unwrap();
    // A member registered after the second prune still starts with the broadcast.
    n.register(&["dave"]).await;
    let dave = collect(&n, "dave", None, 1, Duration::from_secs(10)).await;
    assert_eq!((dave[0].timestamp, dave[0].previous_timestamp), (b1, None), "still there after a second prune");
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_from_two_nodes_reach_a_late_member_once_in_order() {
    let tdb = fresh_database().await;
    let a = Node::start(&tdb.url, "a", |_| {}).await;
    let b = Node::start(&tdb.url, "b", |_| {}).await;
    a.wait_serving().await;
    b.wait_serving().await;
    a.register(&["alice", "bob"]).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mut broadcasts = Vec::new();
    for i in 0..6 {
        let (c, sender) = if i % 2 == 0 { (&mut ca, "alice") } else { (&mut cb, "bob") };
        let ts = c.send(send(sender, &format!("b{i}"), &[ALL], format!("t{i}"))).await.unwrap().into_inner().timestamp;
        broadcasts.push(ts);
        c.send(send(sender, &format!("p{i}"), &["alice", "bob"], "private")).await.unwrap();
    }
    // A resend on the other node is the same event, not a second broadcast.
    let again = cb.send(send("alice", "b0", &[ALL], "t0")).await.unwrap().into_inner().timestamp;
    assert_eq!(again, broadcasts[0]);
    a.register(&["carol"]).await;
    for node in [&a, &b] {
        let got = collect(node, "carol", None, 6, Duration::from_secs(20)).await;
        let ts: Vec<i64> = got.iter().map(|e| e.timestamp).collect();
        let mut sorted = broadcasts.clone();
        sorted.sort_unstable();
        assert_eq!(ts, sorted, "each broadcast once, in timestamp order");
        assert!(got.iter().all(|e| e.envelopes.iter().all(|env| env.recipients == vec![ALL.to_string()])));
        // The chain of previous timestamps is unbroken.
        for w in got.windows(2) {
            assert_eq!(w[1].previous_timestamp, Some(w[0].timestamp));
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}
