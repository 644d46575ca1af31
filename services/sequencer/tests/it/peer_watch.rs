//! A sequencer learns of a peer's death from its wait on the peer's index lock, within
//! milliseconds, not at its next periodic online check.

use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;
use syncline_sequencer::store::{node_index, watermarks};
use syncline_testkit::fresh_database;

use crate::harness::{Node, TOTAL_NODES};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_is_knocked_offline_at_once_not_at_the_next_periodic_check() {
    let tdb = fresh_database().await;
    let cfg = DbConfig::new(&tdb.url);
    db::migrate(&cfg).await.unwrap();
    let mut c = db::connect(&cfg, SessionKind::Pooled).await.unwrap();
    // The peer: a node index online before the node starts, so the node's first check sees it.
    let mut peer = node_index::acquire(&cfg, TOTAL_NODES).await.unwrap();
    let index = peer.index();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    watermarks::go_online(peer.conn(), index, now).await.unwrap();
    // The periodic check runs once at start, then not for a minute: only the lock wait can
    // notice the peer's death in time. A peer's old watermark counts only after two minutes.
    let node = Node::start(&tdb.url, "a", |s| {
        s.online_check_interval = Duration::from_secs(60);
        s.offline_duration = Duration::from_secs(120);
    })
    .await;
    node.wait_serving().await;
    // The node waits on the peer's lock (an advisory lock request not granted).
    let start = Instant::now();
    loop {
        let q = "select count(*)::bigint as n from pg_locks where locktype = 'advisory' and not granted";
        if diesel::sql_query(q).get_result::<Count>(&mut c).await.unwrap().n > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the node never waits on its peer's index lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(peer); // kill -9: PostgreSQL ends the session, its lock goes
    let killed = Instant::now();
    while watermarks::get(&mut c, index).await.unwrap().unwrap().online {
        assert!(killed.elapsed() < Duration::from_secs(10), "the dead peer is still online after 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("dead peer knocked offline {:?} after its session ended", killed.elapsed());
    node.shutdown().await;
}
