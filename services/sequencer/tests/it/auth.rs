//! Member authentication of the public API (`member_auth = "required"`): a member's token
//! lets it send, subscribe and acknowledge as itself only; a missing, malformed or unknown
//! token is UNAUTHENTICATED, another member's PERMISSION_DENIED, each with its message and
//! counted; a rotated token stops working; only the token's hash is stored.

use std::time::Duration;

use diesel::sql_types::{Binary, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_proto::sequencer::{
    AcknowledgeRequest, RegisterMemberRequest, RotateMemberTokenRequest, SubscribeRequest,
};
use syncline_sequencer::MemberAuth;
use syncline_testkit::fresh_database;
use tonic::{Code, Request, Status};

use crate::harness::*;

/// `message` carrying `authorization: <value>`.
fn with_auth<T>(message: T, value: Option<&str>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(v) = value {
        r.metadata_mut().insert("authorization", v.parse().unwrap());
    }
    r
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Register `member` at `n`; its token.
async fn register(n: &Node, member: &str) -> String {
    let r = n.admin().await.register_member(RegisterMemberRequest { member: member.into() }).await.unwrap();
    let token = r.into_inner().token;
    assert!(!token.is_empty(), "a new member gets a token");
    token
}

async fn started(url: &str, name: &str) -> Node {
    let n = Node::start(url, name, |s| s.member_auth = MemberAuth::Required).await;
    n.wait_serving().await;
    n
}

fn failures(node: &str, reason: &str) -> f64 {
    sample(&format!("syncline_sequencer_auth_failures_total{{node=\"{node}\",reason=\"{reason}\"}}"))
}

fn refused(s: Status, code: Code, message: &str) {
    assert_eq!((s.code(), s.message()), (code, message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_acts_only_as_itself_and_every_refusal_says_why_and_is_counted() {
    metrics();
    let tdb = fresh_database().await;
    let n = started(&tdb.url, "auth1").await;
    let alice = register(&n, "alice").await;
    let bob = register(&n, "bob").await;
    let mut c = n.client().await;

    // The right token: send, subscribe, acknowledge.
    let ts = c
        .send(with_auth(send("alice", "m1", &["bob"], "hi"), Some(&bearer(&alice))))
        .await
        .unwrap()
        .into_inner()
        .timestamp;
    let mut stream = c
        .subscribe(with_auth(SubscribeRequest { member: "bob".into(), after: None }, Some(&bearer(&bob))))
        .await
        .unwrap()
        .into_inner();
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(event.event.unwrap().timestamp, ts);
    c.acknowledge(with_auth(AcknowledgeRequest { member: "bob".into(), timestamp: ts }, Some(&bearer(&bob))))
        .await
        .unwrap();

    // No token.
    let before = failures("auth1", "missing_token");
    let e = c.send(with_auth(send("alice", "m2", &["bob"], "x"), None)).await.unwrap_err();
    refused(
        e,
        Code::Unauthenticated,
        "no member token: a call to send as member alice must carry the gRPC metadata \
         `authorization: Bearer <token>` with alice's token (issued at its registration)",
    );
    assert_eq!(failures("auth1", "missing_token"), before + 1.0);

    // A token of the right form that no member has.
    let before = failures("auth1", "unknown_token");
    let stranger = format!("sltok_{}", "0".repeat(64));
    let e = c
        .subscribe(with_auth(SubscribeRequest { member: "alice".into(), after: None }, Some(&bearer(&stranger))))
        .await
        .unwrap_err();
    refused(
        e,
        Code::Unauthenticated,
        "the bearer token of this call to subscribe as member alice belongs to no member \
         (it was never issued here, or it was rotated since)",
    );
    assert_eq!(failures("auth1", "unknown_token"), before + 1.0);

    // Not a bearer token of this form: refused without a database lookup, never echoed.
    let before = failures("auth1", "malformed_token");
    for value in [alice.clone(), format!("Basic {alice}"), bearer("secret-guess")] {
        let e = c
            .acknowledge(with_auth(AcknowledgeRequest { member: "alice".into(), timestamp: ts }, Some(&value)))
            .await
            .unwrap_err();
        assert!(!e.message().contains("secret-guess") && !e.message().contains(&alice), "{}", e.message());
        refused(
            e,
            Code::Unauthenticated,
            "the authorization metadata of this call to acknowledge for member alice is not `Bearer <token>` \
             with a token issued by these sequencers",
        );
    }
    assert_eq!(failures("auth1", "malformed_token"), before + 3.0);

    // bob's token replayed to act as alice: send, subscribe, acknowledge.
    let before = failures("auth1", "wrong_member");
    let e = c.send(with_auth(send("alice", "m3", &["bob"], "forged"), Some(&bearer(&bob)))).await.unwrap_err();
    refused(
        e,
        Code::PermissionDenied,
        "authenticated as member bob, which may not send as member alice: a member's token acts only for that member",
    );
    let e = c
        .subscribe(with_auth(SubscribeRequest { member: "alice".into(), after: None }, Some(&bearer(&bob))))
        .await
        .unwrap_err();
    refused(
        e,
        Code::PermissionDenied,
        "authenticated as member bob, which may not subscribe as member alice: a member's token acts only for that member",
    );
    let e = c
        .acknowledge(with_auth(AcknowledgeRequest { member: "alice".into(), timestamp: ts }, Some(&bearer(&bob))))
        .await
        .unwrap_err();
    refused(
        e,
        Code::PermissionDenied,
        "authenticated as member bob, which may not acknowledge for member alice: a member's token acts only for that member",
    );
    assert_eq!(failures("auth1", "wrong_member"), before + 3.0);
    // An unregistered name is no way around it.
    let e = c.send(with_auth(send("carol", "m4", &["bob"], "x"), Some(&bearer(&bob)))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    // Nothing forged reached bob: the next event of his stream is alice's next real send.
    let ts2 = c
        .send(with_auth(send("alice", "m5", &["bob"], "real"), Some(&bearer(&alice))))
        .await
        .unwrap()
        .into_inner()
        .timestamp;
    let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.event.unwrap().timestamp, ts2);
    n.shutdown().await;
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    member: String,
    #[diesel(sql_type = Nullable<Binary>)]
    token_sha256: Option<Vec<u8>>,
    #[diesel(sql_type = Text)]
    whole: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_stops_working_on_every_node_and_tokens_are_stored_hashed_only() {
    let tdb = fresh_database().await;
    let a = started(&tdb.url, "rot-a").await;
    let b = started(&tdb.url, "rot-b").await;
    let old = register(&a, "alice").await;
    register(&a, "bob").await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // Both nodes know (and cache) the old token.
    for (c, id) in [(&mut ca, "a1"), (&mut cb, "b1")] {
        c.send(with_auth(send("alice", id, &["bob"], "x"), Some(&bearer(&old)))).await.unwrap();
    }

    // Registering again keeps the token and hands out none.
    let again = a.admin().await.register_member(RegisterMemberRequest { member: "alice".into() }).await.unwrap();
    assert_eq!(again.into_inner().token, "");
    ca.send(with_auth(send("alice", "a2", &["bob"], "x"), Some(&bearer(&old)))).await.unwrap();

    let new = a
        .admin()
        .await
        .rotate_member_token(RotateMemberTokenRequest { member: "alice".into() })
        .await
        .unwrap()
        .into_inner()
        .token;
    assert_ne!(new, old);
    // At once on the rotating node, within its cache lifetime (a second) on the other.
    let e = ca.send(with_auth(send("alice", "a3", &["bob"], "x"), Some(&bearer(&old)))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    assert!(e.message().contains("rotated since"), "{}", e.message());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = cb.send(with_auth(send("alice", "b3", &["bob"], "x"), Some(&bearer(&old)))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    for (c, id) in [(&mut ca, "a4"), (&mut cb, "b4")] {
        c.send(with_auth(send("alice", id, &["bob"], "x"), Some(&bearer(&new)))).await.unwrap();
    }
    let e =
        a.admin().await.rotate_member_token(RotateMemberTokenRequest { member: "nobody".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());

    // The table holds each token's SHA-256, never the token.
    let mut conn = db::connect(&DbConfig::new(&tdb.url), SessionKind::Pooled).await.unwrap();
    let rows: Vec<Row> = diesel::sql_query(
        "select member::text as member, token_sha256, m::text as whole from sequencer_members m order by member",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let alice = rows.iter().find(|r| r.member == "alice").unwrap();
    assert_eq!(alice.token_sha256.as_deref(), Some(Sha256::digest(new.as_bytes()).as_slice()));
    for r in &rows {
        for t in [&old, &new, &old["sltok_".len()..].to_string(), &new["sltok_".len()..].to_string()] {
            assert!(!r.whole.contains(t.as_str()), "a token in clear in {}", r.whole);
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_member_auth_off_calls_need_no_token() {
    let tdb = fresh_database().await;
    let n = Node::serving(&tdb.url, "open", &["alice", "bob"]).await;
    n.client().await.send(send("alice", "m1", &["bob"], "x")).await.unwrap();
    n.shutdown().await;
}
