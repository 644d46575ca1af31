//! What every test of this binary uses: an in-process node behind its own gRPC server, sends,
//! collecting a member's events, and waiting for a condition.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use syncline_coordination::DbConfig;
use syncline_proto::sequencer::sequencer_admin_service_client::SequencerAdminServiceClient;
use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_proto::sequencer::{Envelope, Event, RegisterMemberRequest, SendRequest, SubscribeRequest};
use syncline_sequencer::store::timestamps::now_micros;
use syncline_sequencer::{MemberAuth, Sequencer, SequencerSettings};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Total node count of every test node: timestamps of index i are ≡ i (mod 8). Every writer
/// lane takes an index: room for three nodes of two lanes and indexes tests lock themselves.
pub const TOTAL_NODES: u32 = 8;

/// A sequencer node serving its public and admin APIs on a free loopback port.
pub struct Node {
    seq: Option<Sequencer>,
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Node {
    /// Start node `name` on `db_url` with default settings changed by `tweak`. Member
    /// authentication is off unless `tweak` turns it on: these tests are about sequencing, and
    /// tests/it/auth.rs about authentication.
    pub async fn start(db_url: &str, name: &str, tweak: impl FnOnce(&mut SequencerSettings)) -> Node {
        let mut settings = SequencerSettings {
            name: name.into(),
            total_node_count: TOTAL_NODES,
            member_auth: MemberAuth::Off,
            ..Default::default()
        };
        tweak(&mut settings);
        let mut db = DbConfig::new(db_url);
        db.application_name = name.into();
        let seq = Sequencer::start(db, settings).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let router =
            tonic::transport::Server::builder().add_service(seq.public_service()).add_service(seq.admin_service());
        let s = stop.clone();
        tokio::spawn(async move {
            let incoming = syncline_node::host::plaintext(listener);
            router.serve_with_incoming_shutdown(incoming, s.cancelled_owned()).await.unwrap();
        });
        Node { seq: Some(seq), addr, stop }
    }

    /// Start node `name` with default settings, wait until it serves, and register `members`.
    pub async fn serving(db_url: &str, name: &str, members: &[&str]) -> Node {
        let n = Node::start(db_url, name, |_| {}).await;
        n.wait_serving().await;
        n.register(members).await;
        n
    }

    /// The running sequencer.
    pub fn seq(&self) -> &Sequencer {
        self.seq.as_ref().unwrap()
    }

    /// Wait (up to 20 s) until the node serves.
    pub async fn wait_serving(&self) {
        self.wait_serving_within(Duration::from_secs(20)).await
    }

    /// Wait up to `limit` until the node serves.
    pub async fn wait_serving_within(&self, limit: Duration) {
        let start = Instant::now();
        while !self.seq().health().serving {
            assert!(start.elapsed() < limit, "not serving within {limit:?}: {}", self.seq().health().detail);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client of the public API.
    pub async fn client(&self) -> SequencerServiceClient<Channel> {
        SequencerServiceClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    /// A client of the admin API.
    pub async fn admin(&self) -> SequencerAdminServiceClient<Channel> {
        SequencerAdminServiceClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    /// Register `members`.
    pub async fn register(&self, members: &[&str]) {
        let mut admin = self.admin().await;
        for m in members {
            admin.register_member(RegisterMemberRequest { member: m.to_string() }).await.unwrap();
        }
    }

    /// Shut the sequencer down cleanly (it answers every send it holds and ends its streams),
    /// then stop serving: in the other order the transport would cut calls still waiting.
    pub async fn shutdown(mut self) {
        self.seq.take().unwrap().shutdown().await;
        self.stop.cancel();
    }
}

/// Wait up to `limit` for `f` to hold.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "condition not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A send from `sender` to `to` with one envelope carrying `body`, valid for a minute.
pub fn send(sender: &str, id: &str, to: &[&str], body: impl AsRef<[u8]>) -> SendRequest {
    SendRequest {
        sender: sender.into(),
        message_id: id.into(),
        max_sequencing_time: now_micros() + 60_000_000,
        envelopes: vec![Envelope {
            recipients: to.iter().map(|s| s.to_string()).collect(),
            content: body.as_ref().to_vec(),
        }],
    }
}

/// Collect `n` events of `member` from `node` (after `after`), failing after `limit` or on
/// any extra event.
pub async fn collect(node: &Node, member: &str, after: Option<i64>, n: usize, limit: Duration) -> Vec<Event> {
    let mut stream =
        node.client().await.subscribe(SubscribeRequest { member: member.into(), after }).await.unwrap().into_inner();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(r))) => out.push(r.event.unwrap()),
            Ok(other) => panic!("{member}: stream ended after {} events: {other:?}", out.len()),
            Err(_) => panic!("{member}: only {} of {n} events within {limit:?}", out.len()),
        }
    }
    if let Ok(Ok(Some(extra))) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("{member}: unexpected extra event {:?}", extra.event);
    }
    out
}

/// The metrics recorder of this test binary (process-wide, installed once).
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of the sample whose line starts with `line_start` (name and labels), 0 if absent.
pub fn sample(line_start: &str) -> f64 {
    metrics().render().lines().find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok()).unwrap_or(0.0)
}

/// `count(*) as n`.
#[derive(diesel::QueryableByName)]
pub struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

/// A node with one writer lane (the tests below hold that lane's watermark row, and their sends
/// must go to it) and keep-alives far apart (its writer sits idle until a send arrives), serving,
/// with alice and bob registered.
pub async fn idle_one_lane_node(url: &str) -> Node {
    let a = Node::start(url, "a", |s| {
        s.writer_lanes = 1;
        s.write_timeout = Duration::from_secs(20);
        s.keep_alive_interval = Duration::from_secs(5);
    })
    .await;
    a.wait_serving().await;
    a.register(&["alice", "bob"]).await;
    a
}

/// Lock `node`'s watermark row in an open transaction of a second session: its writer blocks on
/// its next commit until the returned session commits.
pub async fn lock_watermark_row(cfg: &DbConfig, node: &Node) -> diesel_async::AsyncPgConnection {
    use diesel_async::SimpleAsyncConnection;
    let index = node.seq().writer().node_index().expect("an index once serving");
    let mut holder =
        syncline_coordination::db::connect(cfg, syncline_coordination::db::SessionKind::Pooled).await.unwrap();
    holder
        .batch_execute(&format!("begin; select * from sequencer_watermarks where node_index = {index} for update"))
        .await
        .unwrap();
    holder
}

/// Wait (up to 20 s) until a session of this database waits on a lock (a writer on a row
/// [`lock_watermark_row`] holds).
pub async fn wait_for_a_lock_wait(c: &mut diesel_async::AsyncPgConnection) {
    use diesel_async::RunQueryDsl;
    let waiting =
        "select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'";
    let start = Instant::now();
    while diesel::sql_query(waiting).get_result::<Count>(c).await.unwrap().n == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the writer never waited on the locked row");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
