//! Clients of the ledger API against a running topology of real processes (a sequencer, a
//! mediator, participant p1 as two replicas p1a/p1b on one database, participant p2): the
//! `syncline ledger` commands, and the Python example application (examples/python) when
//! python3 with grpcio is installed; with access tokens checked by the participants (HS256),
//! `syncline ledger` and the example send them, and are refused without the rights.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use syncline_testkit::{fresh_database, wait_for, Kind, NodeSpec, TempDir, TestDb, Topology};

use crate::support::{dev_certs, node_tls, syncline_bin};
use crate::synchronizer::{admin, is_active, participant, sequencer_section, wait_node, MEDIATOR};

/// The topology of these tests; its processes stop when it is dropped.
pub struct LedgerTopology {
    /// The processes.
    pub t: Topology,
    /// p1's replicas: p1a (started first, so it leads) and p1b.
    pub p1: [NodeSpec; 2],
    /// p2.
    pub p2: NodeSpec,
    /// Their logs and configs.
    pub dir: TempDir,
    /// The CA of the nodes' certificates, when they serve TLS.
    pub ca: Option<PathBuf>,
    _dbs: Vec<TestDb>,
}

impl LedgerTopology {
    /// Start and bootstrap the synchronizer, join p1 and p2, start p1a (until it leads), p1b
    /// and p2.
    pub async fn start(prefix: &str) -> LedgerTopology {
        LedgerTopology::start_with(prefix, "").await
    }

    /// [`LedgerTopology::start`] with `participant_lines` added to each participant's section.
    pub async fn start_with(prefix: &str, participant_lines: &str) -> LedgerTopology {
        LedgerTopology::start_opts(prefix, participant_lines, false).await
    }

    /// [`LedgerTopology::start_with`], with TLS on every listener and connection when `tls`.
    pub async fn start_opts(prefix: &str, participant_lines: &str, tls: bool) -> LedgerTopology {
        let dbs = vec![fresh_database().await, fresh_database().await, fresh_database().await, fresh_database().await];
        let dir = TempDir::new(prefix);
        let certs = tls.then(|| dev_certs(dir.path(), &["seq1", "med1", "p1a", "p1b", "p2"]));
        let with_tls = |n: NodeSpec| match &certs {
            Some(c) => {
                let tls = node_tls(c, &n.name);
                n.with_tls(tls)
            }
            None => n,
        };
        let mut t = Topology::new(&syncline_bin(), dir.path(), &dbs[0].url);
        let seq = t.add(with_tls(NodeSpec::new(Kind::Sequencer, "seq1")));
        let med = t.add(with_tls(NodeSpec::new(Kind::Mediator, "med1")).with(&format!(
            "member = \"{MEDIATOR}\"\nstorage = {{ url = \"{}\" }}\n{}\n\
             mediator = {{ time_proof_delay = \"50ms\" }}",
            dbs[1].url,
            sequencer_section(&[&seq], dir.path(), MEDIATOR)
        )));
        let p1a = t.add(with_tls(participant("p1a", "p1", &dbs[2].url, &seq, dir.path()).with(participant_lines)));
        let p1b = t.add(with_tls(participant("p1b", "p1", &dbs[2].url, &seq, dir.path()).with(participant_lines)));
        let p2 = t.add(with_tls(participant("p2", "p2", &dbs[3].url, &seq, dir.path()).with(participant_lines)));
        let remote = t.remote_config();
        t.start("seq1");
        wait_node("seq1 healthy", &seq, true).await;
        t.start("med1");
        wait_node("med1 active", &med, true).await;
        let (ok, out) =
            admin(&remote, &["bootstrap", "--mediator", MEDIATOR, "--confirmation-response-timeout", "10s"]);
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
        let ca = certs.map(|c| c.ca);
        LedgerTopology { t, p1: [p1a, p1b], p2, dir, ca, _dbs: dbs }
    }

    /// p1's endpoints for `--participant`, the passive replica first (so every call shows
    /// that the client moves on after UNAVAILABLE).
    pub fn p1_endpoints(&self) -> String {
        format!("{},{}", self.p1[1].public_url(), self.p1[0].public_url())
    }
}

/// The participants' HS256 secret in the tests with access tokens.
const SECRET: &str = "the system tests' ledger API secret, 32+ bytes";

/// The participant config lines that make it check HS256 tokens signed with [`SECRET`].
fn hs256_auth() -> String {
    format!("ledger_api = {{ auth = {{ kind = \"hs256\", secret = \"{SECRET}\" }} }}")
}

/// `syncline ledger token ARGS` (signed with [`SECRET`]): the token.
fn mint(args: &[&str]) -> String {
    let out = ledger(&[&["token", "--secret", SECRET], args].concat());
    assert!(out.status.success(), "ledger token {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `syncline ledger ARGS`.
fn ledger(args: &[&str]) -> Output {
    ledger_env(args, &[])
}

/// `syncline ledger ARGS` with the environment variables `env` set (and no inherited token).
fn ledger_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(syncline_bin());
    cmd.arg("ledger").args(args).env_remove("SYNCLINE_LEDGER_TOKEN").env_remove("SYNCLINE_LEDGER_TOKEN_FILE");
    cmd.envs(env.iter().copied()).output().expect("running syncline ledger")
}

/// The one line a failing `syncline ledger` printed on stderr, checking its exit code 1.
fn refused(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr.trim_end().to_string()
}

/// `syncline ledger --json ARGS`, which must succeed: its output lines as JSON.
fn ledger_json(args: &[&str]) -> Vec<Value> {
    let out = ledger(&[&["--json"], args].concat());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "syncline ledger {args:?} failed ({:?}):\n{stderr}{stdout}", out.status);
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// The one JSON object a command printed.
fn one(args: &[&str]) -> Value {
    let mut lines = ledger_json(args);
    assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
    lines.remove(0)
}

/// The id of the contract a submission created (its only created event).
fn created_id(submission: &Value) -> String {
    let created: Vec<&Value> =
        (submission["events"].as_array().unwrap().iter()).filter_map(|e| e.get("created")).collect();
    assert_eq!(created.len(), 1, "{submission}");
    created[0]["contract_id"].as_str().unwrap().to_string()
}

/// A client process (`syncline ledger … --follow --json`, the Python example) and its output
/// lines, as they come.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(args: &[&str]) -> Follower {
        let mut cmd = Command::new(syncline_bin());
        cmd.arg("ledger").arg("--json").args(args);
        Follower::spawn(cmd)
    }

    /// `cmd` with its output lines read as they come; killed when dropped.
    fn spawn(mut cmd: Command) -> Follower {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("starting a client");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next transaction printed, within `limit`.
    fn next(&self, limit: Duration) -> Value {
        let line = self.lines.recv_timeout(limit).expect("the follower printed nothing in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The contract ids of an `acs --json` answer.
fn acs(endpoints: &str, party: &str) -> Vec<String> {
    let mut ids: Vec<String> = ledger_json(&["-p", endpoints, "acs", "--party", party])
        .iter()
        .map(|c| c["contract_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_cli_creates_transfers_and_archives_across_participants_and_follows_through_a_takeover() {
    let mut top = LedgerTopology::start("syncline-ledger-cli").await;
    let p1 = top.p1_endpoints();
    let p2 = top.p2.public_url();
    let iou = |owner: &str, amount: u32| json!({ "issuer": "alice", "owner": owner, "amount": amount }).to_string();

    // Parties: alice on p1 (through its passive replica first), bob on p2.
    assert_eq!(one(&["-p", &p1, "allocate-party", "alice"]), json!({ "party": "alice", "is_local": true }));
    assert_eq!(one(&["-p", &p2, "allocate-party", "bob"])["party"], "bob");
    for (endpoints, who) in [(&p1, "p1"), (&p2, "p2")] {
        let endpoints = endpoints.clone();
        wait_for(Duration::from_secs(20), &format!("{who} knows alice and bob"), || {
            let endpoints = endpoints.clone();
            async move { ledger_json(&["-p", &endpoints, "parties"]).len() >= 2 }
        })
        .await;
    }
    let parties = ledger_json(&["-p", &p1, "parties"]);
    assert!(parties.contains(&json!({ "party": "bob", "is_local": false })), "{parties:?}");

    // bob's view of p2, followed from the start.
    let bob_follows = Follower::start(&["-p", &p2, "updates", "--follow", "--party", "bob"]);

    // Two IOUs of alice; the first transferred to bob, the second archived.
    let a = one(&["-p", &p1, "create", "--template", "Iou", "--arguments", &iou("alice", 10), "--signatory", "alice"]);
    let b = one(&[
        "-p",
        &p1,
        "create",
        "--template",
        "Iou",
        "--arguments",
        &iou("alice", 5),
        "--signatory",
        "alice",
        "--command-id",
        "iou-b",
    ]);
    assert_eq!(b["command_id"], "iou-b");
    let (a_id, b_id) = (created_id(&a), created_id(&b));
    let transfer = json!({ "template": "Iou", "arguments": iou("bob", 10).parse::<Value>().unwrap(),
                           "signatories": ["alice"], "observers": ["bob"] });
    let t = one(&[
        "-p",
        &p1,
        "exercise",
        "--contract-id",
        &a_id,
        "--choice",
        "Transfer",
        "--consuming",
        "--party",
        "alice",
        "--create-json",
        &transfer.to_string(),
    ]);
    let bobs_id = created_id(&t);
    assert!(t["events"].as_array().unwrap().iter().any(|e| e["archived"]["contract_id"] == a_id.as_str()), "{t}");
    let archived = one(&["-p", &p1, "archive", "--contract-id", &b_id, "--party", "alice"]);
    assert_eq!(archived["events"][0]["archived"]["contract_id"], b_id.as_str());

    // Both participants' views: the transferred IOU only, with the same contract id.
    assert_eq!(acs(&p1, "alice"), vec![bobs_id.clone()]);
    assert_eq!(acs(&p2, "bob"), vec![bobs_id.clone()]);
    let contract = &ledger_json(&["-p", &p2, "acs"])[0];
    assert_eq!((contract["arguments"]["owner"].as_str(), contract["observers"].clone()), (Some("bob"), json!(["bob"])));

    // bob saw exactly the transfer's create, live; `updates` replays it.
    let seen = bob_follows.next(Duration::from_secs(20));
    assert_eq!(seen["update_id"], t["update_id"]);
    assert_eq!(seen["events"], json!([{ "created": contract }]));
    assert_eq!(ledger_json(&["-p", &p2, "updates", "--party", "bob"]), vec![seen]);
    // alice's updates: the four transactions, in offset order, each with its command id.
    let alice = ledger_json(&["-p", &p1, "updates", "--party", "alice"]);
    let updates: Vec<&Value> = alice.iter().map(|u| &u["update_id"]).collect();
    assert_eq!(updates, [&a, &b, &t, &archived].map(|s| &s["update_id"]));
    assert_eq!(alice[1]["command_id"], "iou-b");
    let from = alice[1]["offset"].as_i64().unwrap().to_string();
    assert_eq!(ledger_json(&["-p", &p1, "updates", "--from", &from]).len(), 2, "updates after an offset");
    // The completions of the CLI's user: four accepted commands.
    let completions = ledger_json(&["-p", &p1, "completions", "--party", "alice"]);
    assert_eq!(completions.len(), 4, "{completions:?}");
    assert!(completions.iter().all(|c| c["status"]["code"] == 0 && c["user_id"] == "syncline-cli"), "{completions:?}");
    let end = one(&["-p", &p1, "ledger-end"])["offset"].as_i64().unwrap();
    assert_eq!(end, archived["offset"].as_i64().unwrap());

    // Errors: one line with the error id, exit code 1 (definite), and JSON with --json.
    let out = ledger(&["-p", &p1, "archive", "--contract-id", &b_id, "--party", "alice"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: CONTRACT_NOT_FOUND: "), "{stderr}");
    let again = &["--json", "-p", &p1, "create", "--template", "Iou", "--signatory", "alice", "--command-id", "iou-b"];
    let out = ledger(again);
    let err: Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        (err["error"]["error_id"].as_str(), err["error"]["code"].as_str()),
        (Some("DUPLICATE_COMMAND"), Some("ALREADY_EXISTS"))
    );
    assert_eq!(err["error"]["metadata"]["completion_offset"], b["offset"].to_string());

    // p1's leader dies while alice's updates are followed through both replicas: the
    // follower resumes on p1b after its last offset, and the next command (failing over to
    // p1b once it leads) is printed once.
    let alice_follows = Follower::start(&["-p", &top.p1_endpoints(), "--wait", "60", "updates", "--follow"]);
    for u in &alice {
        assert_eq!(alice_follows.next(Duration::from_secs(20))["update_id"], u["update_id"]);
    }
    top.t.kill9("p1a");
    let after = one(&[
        "-p",
        &format!("{},{}", top.p1[0].public_url(), top.p1[1].public_url()),
        "--wait",
        "60",
        "--timeout",
        "20",
        "create",
        "--template",
        "Iou",
        "--arguments",
        &iou("alice", 1),
        "--signatory",
        "alice",
    ]);
    assert!(is_active(&top.p1[1]).await, "p1b leads");
    let resumed = alice_follows.next(Duration::from_secs(60));
    assert_eq!(resumed["update_id"], after["update_id"], "the follower printed {resumed}");
    assert_eq!(resumed["offset"].as_i64().unwrap(), end + 1, "gap-free, nothing twice");
    assert!(alice_follows.lines.recv_timeout(Duration::from_secs(1)).is_err(), "nothing else");
}

/// The example application's directory.
fn python_example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/python")
}

/// A python3 (SYNCLINE_PYTHON, python3, /usr/bin/python3) with grpcio that can generate the
/// stubs from the project's protos, or why there is none.
fn python_with_grpc(dir: &std::path::Path) -> Result<String, String> {
    let mut why = Vec::new();
    let candidates = std::env::var("SYNCLINE_PYTHON").into_iter().chain(["python3".into(), "/usr/bin/python3".into()]);
    for py in candidates {
        let stubs = dir.join("stubs-probe");
        let probe = Command::new(&py).arg("-c").arg("import grpc").output();
        match probe {
            Err(e) => why.push(format!("{py}: {e}")),
            Ok(o) if !o.status.success() => why.push(format!("{py}: no grpcio")),
            Ok(_) => {
                let gen = Command::new(&py).arg(python_example().join("gen_stubs.py")).arg(&stubs).output().unwrap();
                if gen.status.success() {
                    return Ok(py);
                }
                why.push(format!("{py}: {}", String::from_utf8_lossy(&gen.stderr).trim()));
            }
        }
    }
    Err(why.join("; "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_issues_transfers_and_archives_exactly_once_through_a_takeover() {
    let probe_dir = TempDir::new("syncline-python-probe");
    let py = match python_with_grpc(probe_dir.path()) {
        Ok(py) => py,
        Err(why) => {
            eprintln!(
                "SKIPPED python_example_…: needs python3 with grpcio and grpcio-tools (or protoc with \
                 grpc_python_plugin; ./dev test installs python3-grpcio and protobuf-compiler-grpc as root): {why}"
            );
            return;
        }
    };
    // The participants check tokens: the application sends one that lets its user act as
    // alice, read as bob and allocate them.
    // Over TLS: the application trusts the nodes' CA (--ca-cert).
    let mut top = LedgerTopology::start_opts("syncline-ledger-python", &hs256_auth(), true).await;
    let token = mint(&["--user", "iou-example", "--act-as", "alice", "--read-as", "bob", "--admin"]);
    const ROUNDS: usize = 6;
    let mut cmd = Command::new(&py);
    cmd.env("SYNCLINE_LEDGER_TOKEN", &token)
        .arg(python_example().join("iou.py"))
        .args([
            "--p1",
            &top.p1_endpoints(),
            "--p2",
            &top.p2.public_url(),
            "--rounds",
            &ROUNDS.to_string(),
            "--pause",
            "1",
        ])
        .arg("--stubs")
        .arg(top.dir.path().join("stubs"))
        .arg("--ca-cert")
        .arg(top.ca.as_ref().expect("a TLS topology"));
    let app = Follower::spawn(cmd);
    // p1's leader dies once the application is under way (it pauses a second after each round,
    // so rounds 2.. run after the kill).
    let mut out = Vec::new();
    while !out.iter().any(|l: &String| l.starts_with("round 1:")) {
        out.push(app.lines.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|_| panic!("no round 1: {out:?}")));
    }
    top.t.kill9("p1a");
    while let Ok(line) = app.lines.recv_timeout(Duration::from_secs(150)) {
        out.push(line);
    }
    let mut app = app;
    let status = app.child.wait().unwrap();
    let text = out.join("\n");
    eprintln!("{text}");
    assert!(status.success(), "the example failed ({status}):\n{text}");
    let summary: Value = serde_json::from_str(out.last().unwrap()).expect("the summary line");
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["bob_saw"], ROUNDS + ROUNDS / 2, "every transfer and every archive of bob's IOUs");
    assert!(summary["resubmissions"].as_u64().unwrap() >= 1, "the kill made it resubmit: {text}");

    // Every command id of the application has exactly one accepted completion.
    let p1b = top.p1[1].public_url();
    let ca = top.ca.as_ref().unwrap().display().to_string();
    let completions =
        ledger_json(&["-p", &p1b, "--ca-cert", &ca, "--token", &token, "completions", "--party", "alice"]);
    let mut accepted = std::collections::BTreeMap::<String, usize>::new();
    for c in completions.iter().filter(|c| c["status"]["code"] == 0) {
        *accepted.entry(c["command_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(accepted.len(), 2 * ROUNDS + ROUNDS / 2, "{accepted:?}");
    assert!(accepted.values().all(|n| *n == 1), "a command accepted twice: {accepted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_cli_sends_its_token_and_is_refused_without_the_rights() {
    let top = LedgerTopology::start_with("syncline-ledger-auth", &hs256_auth()).await;
    let (p1, p2) = (top.p1_endpoints(), top.p2.public_url());

    // Without a token, or with one signed by another secret: UNAUTHENTICATED, exit 1.
    let e = refused(ledger(&["-p", &p1, "ledger-end"]));
    assert!(
        e.starts_with(
            "error: UNAUTHENTICATED: the request has no access token: send the metadata `authorization: Bearer <JWT>` ("
        ),
        "{e}"
    );
    let forged = ledger(&["token", "--secret", "another secret, also of 32 bytes or more", "--admin"]);
    let forged = String::from_utf8(forged.stdout).unwrap();
    let e = refused(ledger(&["-p", &p1, "--token", forged.trim(), "ledger-end"]));
    assert!(e.starts_with("error: UNAUTHENTICATED: the access token's signature is invalid ("), "{e}");
    // gRPC health stays open.
    let channel = tonic::transport::Channel::from_shared(p2.clone()).unwrap().connect().await.unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: syncline_participant::HEALTH_SERVICE.into() })
        .await
        .expect("health without a token");
    assert_eq!(health.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    // An admin token (from the environment) allocates; one without the admin claim may not.
    let admin = mint(&["--user", "ops", "--admin"]);
    for (endpoints, party) in [(&p1, "alice"), (&p1, "carol"), (&p2, "bob")] {
        let out = ledger_env(&["-p", endpoints, "allocate-party", party], &[("SYNCLINE_LEDGER_TOKEN", &admin)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let alice_token = mint(&["--user", "alice-app", "--act-as", "alice"]);
    let e = refused(ledger(&["-p", &p1, "--token", &alice_token, "allocate-party", "mallory"]));
    assert!(
        e.starts_with(
            "error: PERMISSION_DENIED: AllocateParty needs an admin token; the access token of user alice-app has no \
             admin claim ("
        ),
        "{e}"
    );

    // alice's token (from a file): her commands and views, as her user; not bob's.
    let file = top.dir.path().join("alice.jwt");
    std::fs::write(&file, format!("{alice_token}\n")).unwrap();
    let alice = ["-p", &p1, "--token-file", file.to_str().unwrap()];
    let created = one(&[&alice[..], &["create", "--template", "Iou", "--signatory", "alice"]].concat());
    let completions = ledger_json(&[&alice[..], &["completions", "--party", "alice"]].concat());
    assert_eq!(completions.len(), 1, "{completions:?}");
    assert_eq!(
        (&completions[0]["user_id"], &completions[0]["update_id"]),
        (&json!("alice-app"), &created["update_id"])
    );
    // Without --party: the token's parties (not every party p1 hosts, which it may not read).
    assert_eq!(ledger_json(&[&alice[..], &["acs"]].concat()).len(), 1);
    let e = refused(ledger(&[&alice[..], &["create", "--template", "Iou", "--signatory", "bob"]].concat()));
    assert!(
        e.starts_with(
            r#"error: PERMISSION_DENIED: commands.act_as: the access token of user alice-app does not allow acting as ["bob"] ("#
        ),
        "{e}"
    );
    let e = refused(ledger(&[&alice[..], &["updates", "--party", "alice,bob"]].concat()));
    assert!(
        e.starts_with(
            r#"error: PERMISSION_DENIED: filter.parties: the access token of user alice-app does not allow reading as ["bob"] ("#
        ),
        "{e}"
    );
    let e = refused(ledger(&[&alice[..], &["--user", "bob-app", "completions", "--party", "alice"]].concat()));
    assert!(
        e.starts_with(r#"error: PERMISSION_DENIED: user_id: "bob-app" is not the access token's user "alice-app" ("#),
        "{e}"
    );
    let e = refused(ledger(&["-p", &p1, "--token", "x", "--token-file", file.to_str().unwrap(), "ledger-end"]));
    assert!(e.contains("not both"), "{e}");
}
