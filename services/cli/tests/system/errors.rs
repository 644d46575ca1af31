//! Errors as users see them: malformed requests on the wire are INVALID_ARGUMENT on every
//! service of a daemon (sequencer, node admin, ledger API); configuration and CLI errors are
//! one clear line, without a backtrace even with RUST_BACKTRACE=1; `syncline admin` against a
//! node in trouble names the node and what failed, in time, without gRPC status dumps.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::{Buf, BufMut};
use syncline_testkit::{fresh_database, http_status, write_file, Daemon, FaultProxy, TempDir};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Sends its bytes as the message, whatever they are.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Field 1, length-delimited, 5 bytes long, followed by only one: no message type decodes it.
const MALFORMED: &[u8] = &[0x0a, 0x05, 0x01];

async fn call_raw(url: String, path: &'static str, streaming: bool) -> Status {
    call_with(url, path, streaming, MALFORMED.to_vec()).await
}

/// Call `path` with `bytes` as the request message; the error status it answers with.
async fn call_with(url: String, path: &'static str, streaming: bool, bytes: Vec<u8>) -> Status {
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 * 1024 * 1024);
    grpc.ready().await.unwrap();
    let req = Request::new(bytes);
    if streaming {
        match grpc.server_streaming(req, PathAndQuery::from_static(path), Raw).await {
            Ok(r) => r.into_inner().message().await.expect_err(&format!("{path}: answered")),
            Err(s) => s,
        }
    } else {
        grpc.unary(req, PathAndQuery::from_static(path), Raw).await.expect_err("answered")
    }
}

/// Run `syncline <command> --config <configs> args…` with RUST_BACKTRACE=1, as an operator
/// debugging something might.
fn syncline(command: &str, configs: &[&Path], args: &[&str]) -> (Output, Duration) {
    let list: Vec<String> = configs.iter().map(|p| p.display().to_string()).collect();
    let started = Instant::now();
    let child = Command::new(syncline_bin())
        .args([command, "--config", &list.join(",")])
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A daemon that accepts a bad configuration runs forever: fail instead of hanging.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => (out.unwrap(), started.elapsed()),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("syncline {command} {args:?} did not exit within 60 s");
        }
    }
}

/// The one line a failed command printed on stderr, checked for dumps and backtraces.
fn one_clean_line(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{err}");
    let lower = err.to_lowercase();
    for dump in ["backtrace", "status {", "code:", "metadata", "details:"] {
        assert!(!lower.contains(dump), "{dump:?} in:\n{err}");
    }
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

async fn wait_healthy(n: &SequencerAddrs, d: &Daemon) {
    let started = Instant::now();
    while http_status(n.health, "/health").await != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(60), "{} not healthy:\n{}", n.name, d.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument_on_every_service() {
    let tdb = fresh_database().await;
    let dir = TempDir::new("syncline-malformed");
    let a = sequencer_node("s1");
    let cfg = write_file(dir.path(), "s1.toml", &format!("[storage]\nurl = \"{}\"\n{}", tdb.url, a.section("")));
    let d = Daemon::start(&syncline_bin(), dir.path(), "s1", &[cfg]);
    wait_healthy(&a, &d).await;
    for (url, path, streaming) in [
        (a.public_url(), "/syncline.sequencer.v1.SequencerService/Send", false),
        (a.public_url(), "/syncline.sequencer.v1.SequencerService/Subscribe", true),
        (a.public_url(), "/syncline.sequencer.v1.SequencerService/SendStream", true),
        (a.public_url(), "/grpc.health.v1.Health/Check", false),
        (a.admin_url(), "/syncline.sequencer.v1.SequencerAdminService/RegisterMember", false),
        (a.admin_url(), "/syncline.admin.v1.NodeAdminService/Status", false),
    ] {
        let s = call_raw(url, path, streaming).await;
        assert_eq!(s.code(), Code::InvalidArgument, "{path}: {s:?}");
        assert!(
            s.message().starts_with("malformed request: failed to decode Protobuf message"),
            "{path}: {}",
            s.message()
        );
    }
    // Still serving afterwards.
    assert_eq!(http_status(a.health, "/health").await, Some(200));
}

#[test]
fn config_and_cli_errors_are_one_line_without_a_backtrace() {
    let dir = TempDir::new("syncline-errline");
    let a = sequencer_node("s1");
    for (key, value) in [("online_check_interval", "0s"), ("keep_alive_interval", "0ms")] {
        let cfg = write_file(
            dir.path(),
            "zero.toml",
            &format!("[storage]\nurl = \"postgres://x@127.0.0.1:1/db\"\n{}[sequencers.s1.high_availability]\n{key} = \"{value}\"\n", a.section("")),
        );
        let (out, _) = syncline("daemon", &[&cfg], &[]);
        let line = one_clean_line(&out);
        assert!(line.contains(&format!("sequencers.s1.high_availability.{key}: must be positive")), "{line}");
        assert!(line.contains(&cfg.display().to_string()), "names the file: {line}");
    }
    let missing = dir.path().join("missing.toml");
    let (out, _) = syncline("admin", &[&missing], &["status"]);
    let line = one_clean_line(&out);
    assert!(line.contains(&missing.display().to_string()), "{line}");
    let unset = write_file(dir.path(), "unset.toml", "[storage]\nurl = \"${SYNCLINE_SURELY_UNSET_VAR}\"\n");
    let (out, _) = syncline("daemon", &[&unset], &[]);
    assert!(one_clean_line(&out).contains("SYNCLINE_SURELY_UNSET_VAR is not set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_against_a_node_in_trouble_names_it_and_what_failed_in_time() {
    let tdb = fresh_database().await;
    let proxy = FaultProxy::start(tdb.server_addr()).await;
    let dir = TempDir::new("syncline-trouble");
    let a = sequencer_node("s1");
    let cfg = write_file(
        dir.path(),
        "s1.toml",
        &format!("[storage]\nurl = \"{}\"\n{}", tdb.url_via(proxy.addr()), a.section("")),
    );
    let d = Daemon::start(&syncline_bin(), dir.path(), "s1", &[cfg]);
    wait_healthy(&a, &d).await;
    let remote = write_file(dir.path(), "remote.toml", &format!("[sequencers.s1]\nadmin_api = \"{}\"\n", a.admin));
    let (out, _) = syncline("admin", &[&remote], &["register-member", "alice"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let node = format!("error: s1 ({}): ", a.admin);

    // The database refuses connections: the node answers within its timeout, with the cause.
    proxy.down();
    let (out, _) = syncline("admin", &[&remote], &["sequencer-status"]);
    let line = one_clean_line(&out);
    assert!(line.starts_with(&node) && line.contains("could not read the sequencer status"), "{line}");
    assert!(line.contains("writer: ") && line.contains("database unavailable"), "names the likely cause: {line}");

    // The database swallows every byte: the node gives up after its own short timeout.
    proxy.blackhole();
    for (args, what) in [
        (&["sequencer-status"][..], "could not read the sequencer status within 5s"),
        (&["pruning-status"][..], "could not read the pruning status within 5s"),
        (&["register-member", "bob"][..], "could not register the member within 5s"),
        (&["prune", "--before", "1"][..], "could not read the pruning status within 5s"),
    ] {
        let (out, took) = syncline("admin", &[&remote], args);
        let line = one_clean_line(&out);
        assert!(line.starts_with(&node) && line.contains(what), "{args:?}: {line}");
        assert!(took < Duration::from_secs(9), "{args:?} took {took:?}");
    }
    proxy.restore();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_to_the_ledger_api_are_refused_and_the_participant_keeps_serving() {
    let lt = crate::ledger_clients::LedgerTopology::start("syncline-malformed-ledger").await;
    let p1 = &lt.p1[0];
    for (path, streaming) in [
        ("/syncline.ledger.v1.CommandService/SubmitAndWait", false),
        ("/syncline.ledger.v1.CommandSubmissionService/Submit", false),
        ("/syncline.ledger.v1.UpdateService/GetUpdates", true),
        ("/syncline.ledger.v1.CommandCompletionService/CompletionStream", true),
        ("/syncline.ledger.v1.StateService/GetActiveContracts", true),
        ("/syncline.ledger.v1.PartyManagementService/AllocateParty", false),
    ] {
        let s = call_raw(p1.public_url(), path, streaming).await;
        assert_eq!(s.code(), Code::InvalidArgument, "{path}: {s:?}");
        assert!(
            s.message().starts_with("malformed request: failed to decode Protobuf message"),
            "{path}: {}",
            s.message()
        );
    }
    // A request beyond the public API's max_request_size (4 MiB by default), refused before
    // it is decoded.
    let huge = vec![0u8; 5 * 1024 * 1024];
    let s = call_with(p1.public_url(), "/syncline.ledger.v1.CommandService/SubmitAndWait", false, huge).await;
    assert!(matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted), "{s:?}");
    assert!(s.message().contains("too large"), "{}", s.message());
    // Still the leader, still serving.
    assert_eq!(http_status(p1.health, "/health").await, Some(200));
}
