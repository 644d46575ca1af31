//! `syncline daemon` from config files, administered with `syncline admin`.

use std::process::Command;
use std::time::Duration;

use tonic::Code;

use crate::support::*;
use syncline_sequencer_client::{RequestBuilder, SendError, SequencerApi};
use syncline_testkit::{fresh_database, http_get, http_status, wait_for, write_file, Daemon, TempDir};

fn admin(remote: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(syncline_bin()).arg("admin").arg("--config").arg(remote).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_from_config_files_are_administered_remotely() {
    let tdb = fresh_database().await;
    let dir = TempDir::new("syncline-admin");
    // Shared storage with the URL taken from the environment, as operators do.
    let storage = write_file(dir.path(), "storage.toml", "[storage]\nurl = \"${SYNCLINE_TEST_DB}\"\npool_size = 4\n");
    let (a, b) = (sequencer_node("seqa"), sequencer_node("seqb"));
    // Two nodes in one process, one in another.
    // seqa writes through two lanes, each with an index of its own.
    let lanes = "[sequencers.seqa.writer]\nwriter_lanes = 2\n";
    let both = write_file(dir.path(), "ab.toml", &format!("{}{}", a.section(lanes), b.section("")));
    let c = sequencer_node("seqc");
    let cfg_c =
        write_file(dir.path(), "c.toml", &c.section("[sequencers.seqc.high_availability]\ntotal_node_count = 10\n"));
    std::env::set_var("SYNCLINE_TEST_DB", &tdb.url);
    let mut d1 = Daemon::start(&syncline_bin(), dir.path(), "ab", &[storage.clone(), both]);
    let mut d2 = Daemon::start(&syncline_bin(), dir.path(), "c", &[storage, cfg_c]);
    for n in [&a, &b, &c] {
        let h = n.health;
        wait_for(Duration::from_secs(60), &format!("{} healthy", n.name), || async move {
            http_status(h, "/health").await == Some(200)
        })
        .await;
    }
    let remote = write_file(
        dir.path(),
        "remote.toml",
        &format!(
            "[sequencers.seqa]\nadmin_api = \"{}\"\n[sequencers.seqb]\nadmin_api = \"{}\"\n[sequencers.seqc]\nadmin_api = \"{}\"\n",
            a.admin, b.admin, c.admin
        ),
    );
    let (ok, out) = admin(&remote, &["status"]);
    assert!(ok, "{out}");
    for name in ["seqa", "seqb", "seqc"] {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
        assert!(line.contains("sequencer") && line.contains("active") && line.contains("OK"), "{line}");
    }
    let (ok, out) = admin(&remote, &["register-member", "alice"]);
    assert!(ok && out.contains("registered alice"), "{out}");
    let (ok, out) = admin(&remote, &["sequencer-status"]);
    assert!(ok, "{out}");
    assert!(out.contains("3 members") || out.contains("1 members"), "{out}");
    // seqa's two lanes, seqb's and seqc's one each.
    assert_eq!(
        out.lines().filter(|l| l.split_whitespace().nth(1) == Some("yes")).count(),
        4,
        "four online indexes:\n{out}"
    );
    let asked = out.lines().next().unwrap_or_default();
    assert!(asked.contains("node index ") && asked.contains(", total node count"), "{out}");
    assert_eq!(
        asked.split("node index ").nth(1).unwrap().split(", total").next().unwrap().split(", ").count(),
        2,
        "{out}"
    );
    let (ok, out) = admin(&remote, &["set-passive", "seqa"]);
    assert!(!ok && out.contains("all sequencers are active"), "{out}");
    let (ok, out) = admin(&remote, &["pruning-status"]);
    assert!(ok && out.contains("alice"), "{out}");
    // Metrics are served on the health port.
    let metrics = http_get(a.health, "/metrics").await.unwrap();
    for name in [
        "syncline_sequencer_watermark_delay_seconds",
        "syncline_sequencer_safe_watermark_lag_seconds",
        "syncline_sequencer_node_index",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    assert!(metrics.contains("syncline_sequencer_serving{node=\"seqa\"} 1"), "{metrics}");

    // A clean stop takes its nodes offline; status then reports them unreachable.
    let st = d2.terminate();
    assert!(st.success(), "daemon exit status {st:?}\n{}", d2.log_text());
    let (ok, out) = admin(&remote, &["sequencer-status", "--node", "seqa"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.split_whitespace().nth(1) == Some("no")).count(),
        1,
        "seqc's index went offline:\n{out}"
    );
    let (ok, out) = admin(&remote, &["status"]);
    assert!(!ok, "status fails while a node is down:\n{out}");
    assert!(out.lines().any(|l| l.starts_with("seqc") && l.contains("UNREACHABLE")), "{out}");
    assert!(d1.terminate().success());
}

#[test]
fn bad_configuration_is_refused_with_the_file_and_key() {
    let dir = TempDir::new("syncline-badcfg");
    let a = sequencer_node("s1");
    let cfg = write_file(
        dir.path(),
        "bad.toml",
        &format!(
            "[storage]\nurl = \"postgres://x@127.0.0.1:1/db\"\n{}[sequencers.s1.high_availability]\ntotal_nodes = 4\n",
            a.section("")
        ),
    );
    let out = Command::new(syncline_bin()).args(["daemon", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sequencers.s1.high_availability") && err.contains("total_nodes") && err.contains("bad.toml"),
        "{err}"
    );
    let unset = write_file(dir.path(), "unset.toml", "[storage]\nurl = \"${SYNCLINE_SURELY_UNSET_VAR}\"\n");
    let out = Command::new(syncline_bin()).args(["daemon", "--config"]).arg(&unset).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("SYNCLINE_SURELY_UNSET_VAR is not set") && err.contains("unset.toml"),
        "{err}"
    );
    // A key that does not belong to its certificate: one line naming the key, both files and
    // the config file, before anything starts.
    let certs = dev_certs(dir.path(), &["s2", "other"]);
    let wrong = NodeTls { key: certs.key("other"), ..node_tls(&certs, "s2") };
    let b = sequencer_node("s2").with_tls(wrong);
    let tls_cfg =
        write_file(dir.path(), "tls.toml", &format!("[storage]\nurl = \"postgres://x@127.0.0.1:1/db\"\n{}", b.toml()));
    let out = Command::new(syncline_bin()).args(["daemon", "--config"]).arg(&tls_cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "error: sequencers.s2.public_api.tls.key: {}: the private key does not belong to the certificate in {} (in {})",
            certs.key("other").display(),
            certs.cert("s2").display(),
            tls_cfg.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_while_the_database_is_down_serves_once_it_is_up() {
    let tdb = fresh_database().await;
    let proxy = syncline_testkit::FaultProxy::start(tdb.server_addr()).await;
    proxy.down();
    let dir = TempDir::new("syncline-dbdown");
    let a = sequencer_node("s1");
    let cfg = write_file(
        dir.path(),
        "s1.toml",
        &format!("[storage]\nurl = \"{}\"\n{}", tdb.url_via(proxy.addr()), a.section("")),
    );
    let _d = Daemon::start(&syncline_bin(), dir.path(), "s1", &[cfg]);
    wait_for(Duration::from_secs(20), "health answers 503 while the database is down", || async {
        http_status(a.health, "/health").await == Some(503)
    })
    .await;
    proxy.restore();
    wait_for(Duration::from_secs(30), "healthy after the database returns", || async {
        http_status(a.health, "/health").await == Some(200)
    })
    .await;
}

/// The token in `admin`'s output line "token of M (...): TOKEN".
fn printed_token(out: &str) -> String {
    let line = out.lines().find(|l| l.starts_with("token of ")).unwrap_or_else(|| panic!("no token printed:\n{out}"));
    line.rsplit(' ').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_tokens_are_issued_once_rotated_and_enforced_by_a_daemon() {
    let tdb = fresh_database().await;
    let dir = TempDir::new("syncline-tokens");
    let storage = write_file(dir.path(), "storage.toml", &format!("[storage]\nurl = \"{}\"\n", tdb.url));
    let node = sequencer_node("seqt");
    // The default configuration: member_auth = "required".
    let cfg = write_file(dir.path(), "seqt.toml", &node.section(""));
    let _daemon = Daemon::start(&syncline_bin(), dir.path(), "seqt", &[storage, cfg]);
    let h = node.health;
    wait_for(Duration::from_secs(60), "seqt healthy", || async move { http_status(h, "/health").await == Some(200) })
        .await;
    let remote = write_file(dir.path(), "remote.toml", &format!("[sequencers.seqt]\nadmin_api = \"{}\"\n", node.admin));

    // Printed once at the first registration; written to a private file with --token-file.
    let (ok, out) = admin(&remote, &["register-member", "alice"]);
    assert!(ok && out.contains("registered alice"), "{out}");
    let alice = printed_token(&out);
    let bob_file = dir.path().join("bob.token");
    let (ok, out) = admin(&remote, &["register-member", "bob", "--token-file", bob_file.to_str().unwrap()]);
    assert!(ok && out.contains(&format!("wrote the token of bob to {}", bob_file.display())), "{out}");
    let bob = std::fs::read_to_string(&bob_file).unwrap().trim().to_string();
    assert!(bob.starts_with("sltok_") && bob != alice, "{bob}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&bob_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Registering again keeps the token: nothing printed, the file untouched.
    let (ok, out) = admin(&remote, &["register-member", "bob", "--token-file", bob_file.to_str().unwrap()]);
    assert!(ok && out.contains("bob was registered before and keeps its token") && !out.contains("sltok_"), "{out}");
    assert_eq!(std::fs::read_to_string(&bob_file).unwrap().trim(), bob);

    // bob's node reads its token file; alice's client has her printed token.
    let client = client_of([&node], &Tokens::from([("alice".to_string(), alice.clone())]))
        .with_token("bob", TokenSource::File(bob_file.clone()));
    let send = |sender: &str, id: &str| RequestBuilder::new(sender, id).to(["alice", "bob"], id).build();
    client.send(send("alice", "a1")).await.unwrap();
    client.send(send("bob", "b1")).await.unwrap();
    // bob's token replayed as alice: refused and counted on the node's /metrics (published at
    // zero before, so an alert on its increase sees the first one).
    let metrics = http_get(node.health, "/metrics").await.unwrap();
    assert!(
        metrics.contains("syncline_sequencer_auth_failures_total{node=\"seqt\",reason=\"wrong_member\"} 0"),
        "{metrics}"
    );
    let forged = client_of([&node], &Tokens::from([("alice".to_string(), bob.clone())]));
    let e = forged.send(send("alice", "forged")).await.unwrap_err();
    assert!(
        matches!(&e, SendError::Rejected { code: Code::PermissionDenied, message, .. }
            if message.starts_with("authenticated as member bob, which may not send as member alice")),
        "{e}"
    );
    let metrics = http_get(node.health, "/metrics").await.unwrap();
    assert!(
        metrics.contains("syncline_sequencer_auth_failures_total{node=\"seqt\",reason=\"wrong_member\"} 1"),
        "{metrics}"
    );

    // Rotation: the old token stops working; the node reading the file picks up the new one.
    let (ok, out) = admin(&remote, &["rotate-member-token", "bob", "--token-file", bob_file.to_str().unwrap()]);
    assert!(ok && out.contains("the previous token of bob no longer works"), "{out}");
    let rotated = std::fs::read_to_string(&bob_file).unwrap().trim().to_string();
    assert_ne!(rotated, bob);
    let old = client_of([&node], &Tokens::from([("bob".to_string(), bob.clone())]));
    let e = old.send(send("bob", "old")).await.unwrap_err();
    assert!(matches!(&e, SendError::Rejected { code: Code::Unauthenticated, .. }), "{e}");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the client re-reads its file
    client.send(send("bob", "b2")).await.unwrap();
    let (ok, out) = admin(&remote, &["rotate-member-token", "nobody"]);
    assert!(!ok && out.contains("member nobody is not registered at this sequencer"), "{out}");
}
