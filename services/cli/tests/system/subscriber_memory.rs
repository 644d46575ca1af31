//! A subscriber that stops reading costs a `syncline daemon` a bounded amount of memory,
//! however much is sent to it, and a node serves at most its configured number of
//! subscriptions.

use std::time::{Duration, Instant};

use crate::support::*;
use syncline_proto::sequencer::sequencer_service_client::SequencerServiceClient;
use syncline_proto::sequencer::SubscribeRequest;
use syncline_sequencer_client::{ClientConfig, RequestBuilder, SequencerApi, SequencerClient};
use syncline_testkit::{fresh_database, http_status, wait_for, write_file, Daemon, TempDir};
use tonic::Code;

/// Sends of this many bytes each, just below the default 4 MiB request limit.
const BODY: usize = 4_000_000;
const SENDS: usize = 400;
/// Most sends in flight at once.
const PARALLEL: usize = 4;
/// The node's peak resident memory must stay below this. Without a byte budget one stalled
/// subscription alone holds 256 queued + 100 paged events (~1.4 GB here).
const RSS_LIMIT_MIB: u64 = 512;

/// `field` (e.g. VmRSS, VmHWM) of process `pid`, in MiB.
fn memory_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon runs");
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).expect("a memory line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_under_400_sends_of_4_mib_keeps_the_node_small() {
    let tdb = fresh_database().await;
    let dir = TempDir::new("syncline-submem");
    let node = sequencer_node("seq1");
    let storage = write_file(dir.path(), "storage.toml", &format!("[storage]\nurl = \"{}\"\n", tdb.url));
    // A short writer queue keeps the send path's own memory small (sends beyond it are
    // refused and retried), so that what is measured is the subscription's.
    let extra = "[sequencers.seq1.writer]\nqueue_size = 8\n\
                 [sequencers.seq1.reader]\nmax_subscriptions = 3\nsubscription_buffer_bytes = 8388608\n";
    let cfg = write_file(dir.path(), "seq1.toml", &node.section(extra));
    let daemon = Daemon::start(&syncline_bin(), dir.path(), "seq1", &[storage, cfg]);
    wait_for(Duration::from_secs(60), "seq1 healthy", || async {
        http_status(node.health, "/health").await == Some(200)
    })
    .await;
    let tokens = register(&admin_of(&node), &["alice", "bob"]).await;
    // The raw subscriptions carry their member's token like the client's do.
    let authed = |m: &str, r: SubscribeRequest| {
        let mut r = tonic::Request::new(r);
        r.metadata_mut().insert("authorization", format!("Bearer {}", tokens[m]).parse().unwrap());
        r
    };
    // Raw subscriptions: the test holds them open without reading, which the client does not do.
    let connect = || async {
        SequencerServiceClient::connect(node.public_url()).await.unwrap().max_decoding_message_size(8 << 20)
    };
    // Subscribes, then reads nothing: flow control leaves everything on the node's side.
    let mut stalled = connect()
        .await
        .subscribe(authed("bob", SubscribeRequest { member: "bob".into(), after: None }))
        .await
        .unwrap()
        .into_inner();
    let before = memory_mib(daemon.pid(), "VmRSS");

    let start = Instant::now();
    let mut senders = Vec::new();
    // One client (connection) per sender; an overloaded answer is retried after a short back-off.
    let config = ClientConfig {
        backoff_max: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    for w in 0..PARALLEL {
        let c = SequencerClient::new([node.public_url()], config.clone())
            .unwrap()
            .with_token("alice", TokenSource::Token(tokens["alice"].clone()));
        senders.push(tokio::spawn(async move {
            for i in (w..SENDS).step_by(PARALLEL) {
                let mut body = vec![0u8; BODY];
                body[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let req =
                    RequestBuilder::new("alice", format!("m{i}")).to(["bob"], body).within(Duration::from_secs(300));
                if let Err(e) = c.send(req.build()).await {
                    panic!("{e}");
                }
            }
        }));
    }
    let mut peak = before;
    while !senders.iter().all(|s| s.is_finished()) {
        peak = peak.max(memory_mib(daemon.pid(), "VmRSS"));
        assert!(start.elapsed() < Duration::from_secs(600), "400 sends took over 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in senders {
        s.await.unwrap();
    }
    // Give the stalled subscription's reader time to fill whatever it would buffer.
    for _ in 0..50 {
        peak = peak.max(memory_mib(daemon.pid(), "VmRSS"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hwm = memory_mib(daemon.pid(), "VmHWM");
    println!(
        "RSS before {before} MiB, sampled peak {peak} MiB, VmHWM {hwm} MiB; {SENDS} sends in {:?}",
        start.elapsed()
    );
    assert!(hwm < RSS_LIMIT_MIB, "the node peaked at {hwm} MiB (limit {RSS_LIMIT_MIB} MiB)");

    // The stalled subscription was alive all along: it delivers from the first event on.
    let first = tokio::time::timeout(Duration::from_secs(10), stalled.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.event.unwrap().previous_timestamp, None, "bob's first event");

    // With three subscriptions open, a fourth is refused.
    let _second = connect()
        .await
        .subscribe(authed("alice", SubscribeRequest { member: "alice".into(), after: None }))
        .await
        .unwrap();
    let _third = connect()
        .await
        .subscribe(authed("alice", SubscribeRequest { member: "alice".into(), after: None }))
        .await
        .unwrap();
    let e = connect()
        .await
        .subscribe(authed("alice", SubscribeRequest { member: "alice".into(), after: None }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("maximum of 3 subscriptions"), "{}", e.message());
    drop(daemon);
}
