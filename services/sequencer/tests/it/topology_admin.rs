//! The operator's topology goes through the admin API only: PublishTopology checks each
//! transaction, registers the operator and broadcasts each once (a repeat is answered from the
//! first send), and the public Send refuses the operator.

use crate::harness::*;
use std::time::Duration;

use prost::Message as _;
use syncline_protocol::messages::{
    self, ConfirmationResult, Hash, Mapping, MediatorState, Message, Operation, SynchronizerParameters,
    TopologyTransaction, Verdict,
};
use syncline_protocol::topology::OPERATOR;
use syncline_sequencer_client::{AdminClient, ClientConfig, BROADCAST_RECIPIENT as ALL};
use syncline_testkit::fresh_database;
use tonic::Code;

fn add(serial: u32, mapping: Mapping) -> TopologyTransaction {
    TopologyTransaction { operation: Operation::AddReplace, serial, mapping }
}

fn bootstrap_txs() -> Vec<TopologyTransaction> {
    vec![
        add(1, Mapping::SynchronizerParameters(SynchronizerParameters::default())),
        add(1, Mapping::MediatorState(MediatorState { mediator: "mediator".into() })),
    ]
}

fn encoded(txs: &[TopologyTransaction]) -> Vec<Vec<u8>> {
    txs.iter().map(|tx| messages::encode(&Message::Topology(tx.clone()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_topology_is_published_once_through_the_admin_api_and_refused_on_the_public_port() {
    let tdb = fresh_database().await;
    let n = Node::serving(&tdb.url, "s", &["bob"]).await;
    let admin = AdminClient::new(format!("http://{}", n.addr), ClientConfig::default()).unwrap();

    // Nobody publishes as the operator through the public port, registered or not.
    let mut c = n.client().await;
    let topo = encoded(&bootstrap_txs()).remove(0);
    for attempt in 0..2 {
        let refused = c.send(send(OPERATOR, &format!("forged-{attempt}"), &[ALL], &topo)).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{}", refused.message());
        assert!(
            refused.message().contains("syncline-operator sends only through the admin API"),
            "{}",
            refused.message()
        );
        n.register(&[OPERATOR]).await;
    }

    let txs = bootstrap_txs();
    let ts = admin.publish_topology(encoded(&txs)).await.unwrap();
    assert_eq!(ts.len(), 2);
    assert!(ts[0] < ts[1], "published in order: {ts:?}");
    // Every member gets each once, as a broadcast from the operator.
    let bob = collect(&n, "bob", None, 2, Duration::from_secs(20)).await;
    assert_eq!(bob.iter().map(|e| e.timestamp).collect::<Vec<_>>(), ts);
    for (event, tx) in bob.iter().zip(&txs) {
        assert_eq!(event.sender, OPERATOR);
        assert_eq!(event.envelopes[0].recipients, [ALL]);
        assert_eq!(messages::decode(&event.envelopes[0].content).unwrap(), Message::Topology(tx.clone()));
    }

    // A repeated bootstrap is answered from the first send, not sequenced again; a new
    // transaction after it is sequenced.
    assert_eq!(admin.publish_topology(encoded(&txs)).await.unwrap(), ts);
    let next = add(2, Mapping::MediatorState(MediatorState { mediator: "mediator2".into() }));
    let again = admin.publish_topology(encoded(&[txs[1].clone(), next])).await.unwrap();
    assert_eq!(again[0], ts[1]);
    assert!(again[1] > ts[1]);
    let bob = collect(&n, "bob", None, 3, Duration::from_secs(20)).await;
    assert_eq!(bob.iter().map(|e| e.timestamp).collect::<Vec<_>>(), [ts[0], ts[1], again[1]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_topology_refuses_anything_but_topology_transactions_naming_index_and_field() {
    let tdb = fresh_database().await;
    let n = Node::serving(&tdb.url, "s", &["bob"]).await;
    let admin = AdminClient::new(format!("http://{}", n.addr), ClientConfig::default()).unwrap();
    let good = encoded(&bootstrap_txs());

    let mut serial_zero = messages::to_proto(&Message::Topology(bootstrap_txs().remove(1)));
    if let Some(syncline_proto::protocol::protocol_message::Message::TopologyTransaction(t)) = &mut serial_zero.message
    {
        t.serial = 0;
    }
    let result = messages::encode(&Message::Result(ConfirmationResult {
        request_id: 1,
        root_hash: Hash([7; 32]),
        verdict: Verdict::Approve,
    }));
    for (batch, want) in [
        (vec![good[0].clone(), b"not protobuf at all \xff\xff".to_vec()], "transactions[1]: not a protocol message"),
        (vec![serial_zero.encode_to_vec()], "transactions[0]: malformed field topology_transaction.serial"),
        (vec![good[0].clone(), good[1].clone(), result], "transactions[2]: a confirmation_result message"),
        (vec![], "transactions: empty"),
    ] {
        let e = admin.publish_topology(batch).await.unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument, "{e}");
        assert!(e.message.contains(want), "{want:?} not in: {e}");
    }
    // Nothing of a refused batch was sent, not even its valid transactions.
    let mut stream = n
        .client()
        .await
        .subscribe(syncline_proto::sequencer::SubscribeRequest { member: "bob".into(), after: None })
        .await
        .unwrap()
        .into_inner();
    let got = tokio::time::timeout(Duration::from_millis(1500), stream.message()).await;
    assert!(got.is_err(), "bob received something from a refused batch: {got:?}");
}
