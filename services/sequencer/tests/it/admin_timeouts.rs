//! Admin calls answer within their own short timeout while the database is unreachable,
//! instead of waiting out the pool's connection retries (~19 s before).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use syncline_coordination::DbConfig;
use syncline_proto::sequencer::sequencer_admin_service_client::SequencerAdminServiceClient;
use syncline_proto::sequencer::{PruneRequest, PruningStatusRequest, RegisterMemberRequest, SequencerStatusRequest};
use syncline_sequencer::store::timestamps::now_micros;
use syncline_sequencer::{Sequencer, SequencerSettings};
use syncline_testkit::{fresh_database, FaultProxy};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Well below the old ~19 s, well above the 5 s the node allows itself (noisy machine).
const BOUND: Duration = Duration::from_secs(8);

async fn serve(seq: &Sequencer, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = tonic::transport::Server::builder().add_service(seq.admin_service());
    tokio::spawn(async move {
        let incoming = syncline_node::host::plaintext(listener);
        router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await.unwrap();
    });
    addr
}

/// Run `call` and check it fails UNAVAILABLE within [`BOUND`], saying what it could not do.
async fn unavailable_in_time<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, Status>>,
) {
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(60), call).await.expect("no answer within 60 s");
    let took = started.elapsed();
    let status = r.expect_err(what);
    assert!(took < BOUND, "{what} took {took:?} (bound {BOUND:?}): {status:?}");
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert!(
        status.message().contains("database"),
        "{what}: the message says what is unreachable: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_answer_unavailable_in_time_while_the_database_is_blackholed() {
    let tdb = fresh_database().await;
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let mut db = DbConfig::new(tdb.url_via(proxy.addr()));
    db.application_name = "admin-timeouts".into();
    let settings = SequencerSettings { name: "s1".into(), total_node_count: 4, ..Default::default() };
    let seq = Sequencer::start(db, settings).await.unwrap();
    let stop = CancellationToken::new();
    let addr = serve(&seq, stop.clone()).await;
    let started = Instant::now();
    while !seq.health().serving {
        assert!(started.elapsed() < Duration::from_secs(30), "not serving: {}", seq.health().detail);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let admin = || SequencerAdminServiceClient::new(channel.clone());
    admin().register_member(RegisterMemberRequest { member: "alice".into() }).await.unwrap();
    admin().status(SequencerStatusRequest {}).await.unwrap();

    // Connections stay open and no byte moves: every pooled connection and every new one hangs.
    proxy.blackhole();
    let (mut a, mut b, mut c, mut d) = (admin(), admin(), admin(), admin());
    tokio::join!(
        unavailable_in_time("sequencer status", c.status(SequencerStatusRequest {})),
        unavailable_in_time("pruning status", a.pruning_status(PruningStatusRequest {})),
        unavailable_in_time("register member", b.register_member(RegisterMemberRequest { member: "bob".into() })),
        unavailable_in_time("prune", d.prune(PruneRequest { before: now_micros() - 60_000_000 })),
    );

    // Once the database is back, the same calls work again.
    proxy.restore();
    let started = Instant::now();
    while admin().status(SequencerStatusRequest {}).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "admin status never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin().register_member(RegisterMemberRequest { member: "bob".into() }).await.unwrap();
    stop.cancel();
    seq.shutdown().await;
}
