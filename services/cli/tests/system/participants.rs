//! Participant replicas behind real HAProxy (`ops/haproxy/participants.cfg`), all real
//! `syncline daemon` processes: a sequencer, a mediator, participant p1 as two replicas (one
//! member, one database) and p2. An application that knows only HAProxy's address submits
//! and waits with unique command ids, resubmitting the same id after any error; p1's leader
//! is killed with SIGKILL mid-run. Afterwards every command id has exactly one accepted
//! completion, nothing ran twice, and both participants' offsets are gap-free. TLS everywhere:
//! every node's listeners, the nodes' connections to the sequencer, HAProxy's frontends and
//! backends, `syncline admin`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use syncline_proto::ledger as pb;
use syncline_proto::ledger::command_completion_service_client::CommandCompletionServiceClient;
use syncline_proto::ledger::command_service_client::CommandServiceClient;
use syncline_proto::ledger::party_management_service_client::PartyManagementServiceClient;
use syncline_proto::ledger::state_service_client::StateServiceClient;
use syncline_proto::ledger::update_service_client::UpdateServiceClient;
use syncline_testkit::{free_port, fresh_database, wait_for, Kind, NodeSpec, TempDir, Topology};
use tonic::transport::Channel;
use tonic::Code;

use crate::support::{dev_certs, node_tls, syncline_bin};
use crate::synchronizer::{admin, is_active, participant, sequencer_section, wait_node, MEDIATOR};
use syncline_node::tls::dev::DevCerts;
use syncline_sequencer_client::ClientTls;

/// Commands the application submits.
const COMMANDS: usize = 40;
/// After how many accepted commands p1's leader is killed.
const KILL_AFTER: usize = 12;

struct Haproxy(Child);

impl Haproxy {
    /// `participants.cfg` with the ledger API on `ledger` and the admin API on `admin`, in
    /// front of `replicas`.
    fn start(ledger: SocketAddr, admin: SocketAddr, replicas: &[&NodeSpec], certs: &DevCerts, log: PathBuf) -> Haproxy {
        let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ops/haproxy/participants.cfg");
        let mut cmd = Command::new("/usr/sbin/haproxy");
        cmd.arg("-db").arg("-f").arg(cfg);
        cmd.env("TLS_CERT", certs.bundle("haproxy")).env("TLS_CA", &certs.ca);
        cmd.env("LEDGER_FRONTEND", ledger.to_string()).env("ADMIN_FRONTEND", admin.to_string());
        for (i, r) in replicas.iter().enumerate() {
            cmd.env(format!("R{}", i + 1), r.public.to_string())
                .env(format!("R{}_ADMIN", i + 1), r.admin.to_string())
                .env(format!("R{}_HEALTH", i + 1), r.health.port().to_string());
        }
        let out = std::fs::File::create(log).unwrap();
        let child =
            cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().expect("starting haproxy");
        Haproxy(child)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A lazily connecting channel over TLS trusting `ca`: it reconnects by itself after HAProxy
/// or a node drops it.
fn channel(url: &str, ca: &Path) -> Channel {
    let tls = ClientTls::load(ca, None).unwrap().tonic_config();
    let endpoint = Channel::from_shared(url.to_string()).unwrap().tls_config(tls).unwrap();
    endpoint.connect_timeout(Duration::from_secs(2)).connect_lazy()
}

fn iou(command_id: &str) -> pb::Commands {
    pb::Commands {
        user_id: "app".into(),
        command_id: command_id.into(),
        act_as: vec!["alice".into()],
        commands: vec![pb::Command {
            command: Some(pb::command::Command::Create(pb::CreateCommand {
                template_id: "Iou".into(),
                create_arguments: format!(r#"{{"command":"{command_id}"}}"#),
                signatories: vec!["alice".into()],
                observers: vec!["bob".into()],
            })),
        }],
        ..Default::default()
    }
}

/// Submit-and-wait `command_id` until it is accepted (now or, DUPLICATE_COMMAND, earlier),
/// resubmitting the same command id after any other answer; the errors seen on the way.
async fn until_accepted(ledger: &Channel, command_id: &str) -> Vec<String> {
    let mut client = CommandServiceClient::new(ledger.clone());
    let mut errors = Vec::new();
    let start = Instant::now();
    loop {
        let mut request = tonic::Request::new(pb::SubmitAndWaitRequest { commands: Some(iou(command_id)) });
        request.set_timeout(Duration::from_secs(10));
        match client.submit_and_wait(request).await {
            Ok(_) => return errors,
            Err(e) if e.code() == Code::AlreadyExists && e.message().starts_with("DUPLICATE_COMMAND(") => {
                errors.push("DUPLICATE_COMMAND".into());
                return errors;
            }
            Err(e) => {
                let id = e.message().split('(').next().unwrap_or_default().to_string();
                errors.push(format!("{:?} {id}", e.code()));
                assert!(start.elapsed() < Duration::from_secs(40), "{command_id} never accepted: {errors:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Every completion of user `app` acting as alice, through HAProxy, up to the ledger end.
async fn completions(ledger: &Channel) -> (Vec<pb::Completion>, i64) {
    let mut state = StateServiceClient::new(ledger.clone());
    let end = state.get_ledger_end(pb::GetLedgerEndRequest {}).await.unwrap().into_inner().offset;
    let mut client = CommandCompletionServiceClient::new(ledger.clone());
    let r = pb::CompletionStreamRequest { user_id: "app".into(), parties: vec!["alice".into()], begin_exclusive: 0 };
    let mut stream = client.completion_stream(r).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap() {
        match item.unwrap().completion_response.unwrap() {
            pb::completion_stream_response::CompletionResponse::Completion(c) => out.push(c),
            pb::completion_stream_response::CompletionResponse::OffsetCheckpoint(cp) if cp.offset >= end => break,
            pb::completion_stream_response::CompletionResponse::OffsetCheckpoint(_) => {}
        }
    }
    (out, end)
}

/// The transactions of `party` at `url`, up to its ledger end, and that end.
async fn transactions(url: &str, ca: &Path, party: &str) -> (Vec<pb::Transaction>, i64) {
    let ch = channel(url, ca);
    let end = StateServiceClient::new(ch.clone()).get_ledger_end(pb::GetLedgerEndRequest {}).await.unwrap();
    let end = end.into_inner().offset;
    let r = pb::GetUpdatesRequest {
        begin_exclusive: 0,
        end_inclusive: Some(end),
        filter: Some(pb::TransactionFilter { parties: vec![party.into()] }),
    };
    let stream = UpdateServiceClient::new(ch).get_updates(r).await.unwrap().into_inner();
    let items: Vec<_> = tokio::time::timeout(Duration::from_secs(10), stream.collect()).await.unwrap();
    let txs = (items.into_iter())
        .map(|u| match u.unwrap().update {
            Some(pb::get_updates_response::Update::Transaction(t)) => t,
            None => panic!("an empty update"),
        })
        .collect();
    (txs, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_to_participant_replicas_kill9_of_the_leader_every_command_accepted_exactly_once() {
    let (seq_db, med_db, p1_db, p2_db) =
        (fresh_database().await, fresh_database().await, fresh_database().await, fresh_database().await);
    let dir = TempDir::new("syncline-participants");
    let mut t = Topology::new(&syncline_bin(), dir.path(), &seq_db.url);
    let certs = dev_certs(dir.path(), &["seq1", "med1", "p1a", "p1b", "p2", "haproxy"]);
    let ca = certs.ca.clone();
    let seq = t.add(NodeSpec::new(Kind::Sequencer, "seq1").with_tls(node_tls(&certs, "seq1")));
    let med = t.add(NodeSpec::new(Kind::Mediator, "med1").with_tls(node_tls(&certs, "med1")).with(&format!(
        "member = \"{MEDIATOR}\"\nstorage = {{ url = \"{}\" }}\n{}\n\
         mediator = {{ time_proof_delay = \"50ms\" }}",
        med_db.url,
        sequencer_section(&[&seq], dir.path(), MEDIATOR)
    )));
    let participant = |name: &str, member: &str, db: &str| {
        participant(name, member, db, &seq, dir.path()).with_tls(node_tls(&certs, name))
    };
    let p1a = t.add(participant("p1a", "p1", &p1_db.url));
    let p1b = t.add(participant("p1b", "p1", &p1_db.url));
    let p2 = t.add(participant("p2", "p2", &p2_db.url));
    let remote = t.remote_config();
    t.start("seq1");
    wait_node("seq1 healthy", &seq, true).await;
    t.start("med1");
    wait_node("med1 active", &med, true).await;
    let (ok, out) = admin(&remote, &["bootstrap", "--mediator", MEDIATOR, "--confirmation-response-timeout", "10s"]);
    assert!(ok, "bootstrap:\n{out}");
    for p in ["p1", "p2"] {
        let (ok, out) = admin(&remote, &["join-participant", p]);
        assert!(ok && out.contains("accepted"), "join-participant {p}:\n{out}");
    }
    t.start("p1a");
    wait_node("p1a active", &p1a, true).await;
    t.start("p1b");
    t.start("p2");
    wait_node("p1b live", &p1b, false).await;
    wait_node("p2 active", &p2, true).await;
    assert!(!is_active(&p1b).await, "two active replicas of p1");

    let (ledger, admin_fe) =
        (SocketAddr::from(([127, 0, 0, 1], free_port())), SocketAddr::from(([127, 0, 0, 1], free_port())));
    let _haproxy = Haproxy::start(ledger, admin_fe, &[&p1a, &p1b], &certs, dir.path().join("haproxy.log"));
    let ledger_addr = ledger;
    let ledger = channel(&format!("https://{ledger}"), &ca);
    // The parties, each through its participant's ledger API (p1's through HAProxy).
    let parties = PartyManagementServiceClient::new(ledger.clone());
    // HAProxy settles while its first checks mark the standby down (cutting its sessions):
    // set-up calls retry until they get an answer.
    wait_for(Duration::from_secs(15), "p1 answering through HAProxy", || {
        let mut parties = parties.clone();
        async move {
            let id = parties.get_participant_id(pb::GetParticipantIdRequest {}).await;
            id.is_ok_and(|id| id.into_inner().participant_id == "p1")
        }
    })
    .await;
    let bob = PartyManagementServiceClient::new(channel(&p2.public_url(), &ca));
    for (client, party) in [(&parties, "alice"), (&bob, "bob")] {
        let client = client.clone();
        wait_for(Duration::from_secs(15), &format!("{party} allocated"), || {
            let mut client = client.clone();
            async move {
                let r = client.allocate_party(pb::AllocatePartyRequest { party_id_hint: party.into() }).await;
                // An allocation whose answer was lost is there already.
                r.is_ok() || r.is_err_and(|e| e.message().starts_with("PARTY_ALREADY_EXISTS"))
            }
        })
        .await;
    }
    for (client, who) in [(&parties, "p1"), (&bob, "p2")] {
        let client = client.clone();
        wait_for(Duration::from_secs(15), &format!("{who} knows alice and bob"), || {
            let mut client = client.clone();
            async move {
                let known = client.list_known_parties(pb::ListKnownPartiesRequest {}).await;
                known.is_ok_and(|k| k.into_inner().party_details.len() >= 2)
            }
        })
        .await;
    }

    // `syncline ledger` through HAProxy over TLS: with the CA of its certificate, and refused
    // with a clear error when trusting another CA.
    let cli = |ca: &Path| {
        let out = Command::new(syncline_bin())
            .args(["ledger", "--participant", &format!("https://{ledger_addr}"), "--wait", "2", "--ca-cert"])
            .arg(ca)
            .arg("parties")
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, out) = cli(&ca);
    assert!(ok && out.contains("alice") && out.contains("bob"), "syncline ledger parties over TLS:\n{out}");
    let other = syncline_node::tls::dev::write_dev_certs(&dir.path().join("other"), &[], &[]).unwrap();
    let (ok, out) = cli(&other.ca);
    assert!(!ok && out.contains("UnknownIssuer"), "syncline ledger trusting another CA:\n{out}");

    // The application; p1's leader dies after KILL_AFTER acceptances.
    let accepted = Arc::new(AtomicUsize::new(0));
    let app = {
        let (ledger, accepted) = (ledger.clone(), accepted.clone());
        tokio::spawn(async move {
            let mut seen = BTreeMap::new();
            for k in 0..COMMANDS {
                let id = format!("cmd-{k:03}");
                let errors = until_accepted(&ledger, &id).await;
                accepted.fetch_add(1, Ordering::SeqCst);
                seen.insert(id, errors);
            }
            seen
        })
    };
    let a = accepted.clone();
    wait_for(Duration::from_secs(30), "the first acceptances", || {
        let a = a.clone();
        async move { a.load(Ordering::SeqCst) >= KILL_AFTER }
    })
    .await;
    t.kill9("p1a");
    let killed = Instant::now();
    let errors = tokio::time::timeout(Duration::from_secs(50), app).await.expect("the application finished").unwrap();
    assert!(is_active(&p1b).await, "p1b leads after the kill");
    let with_errors: BTreeMap<_, _> = errors.iter().filter(|(_, e)| !e.is_empty()).collect();
    eprintln!("all {COMMANDS} accepted {:?} after the kill; answers on the way: {with_errors:?}", killed.elapsed());

    // Exactly one acceptance per command id, at gap-free offsets, and nothing twice.
    let (completions, end1) = completions(&ledger).await;
    let mut accepted_ids: BTreeMap<&str, usize> = BTreeMap::new();
    for c in completions.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.code == 0)) {
        *accepted_ids.entry(&c.command_id).or_default() += 1;
    }
    let expected: BTreeSet<String> = (0..COMMANDS).map(|k| format!("cmd-{k:03}")).collect();
    assert_eq!(accepted_ids.keys().map(|s| s.to_string()).collect::<BTreeSet<_>>(), expected);
    let twice: Vec<_> = accepted_ids.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "commands accepted more than once: {twice:?}");
    let offsets: Vec<i64> = completions.iter().map(|c| c.offset).collect();
    assert_eq!(offsets, (1..=end1).collect::<Vec<_>>(), "p1's completions are not gap-free up to its ledger end");
    // p1's transactions (through HAProxy's new leader) and p2's: one per command, gap-free.
    for (url, party) in [(p1b.public_url(), "alice"), (p2.public_url(), "bob")] {
        // p2 learns of each verdict on its own: it may still be a moment behind p1's completions.
        let started = Instant::now();
        let (txs, end) = loop {
            let (txs, end) = transactions(&url, &ca, party).await;
            if txs.len() >= COMMANDS || started.elapsed() > Duration::from_secs(30) {
                break (txs, end);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(txs.len(), COMMANDS, "{party}'s transactions");
        let ids: BTreeSet<&str> = txs.iter().map(|t| t.update_id.as_str()).collect();
        assert_eq!(ids.len(), COMMANDS, "an update twice at {party}'s participant");
        if party == "bob" {
            let offsets: Vec<i64> = txs.iter().map(|t| t.offset).collect();
            assert_eq!(offsets, (1..=end).collect::<Vec<_>>(), "p2's offsets are not gap-free");
        }
    }
}
