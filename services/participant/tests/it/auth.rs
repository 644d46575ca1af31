//! Ledger API authorization over gRPC: p1 checks HS256 tokens, p2 ES256 and p1 RS256 tokens
//! against a JWKS file. A missing, malformed, wrongly signed or expired token is UNAUTHENTICATED; a command
//! acting as a party the token does not name, a stream or query of parties it does not cover, a
//! completion stream of another user and a party allocation without the admin claim are
//! PERMISSION_DENIED; each with Canton's error id and counted in the metric.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use syncline_participant::auth::token::{mint_hs256, now_secs};
use syncline_participant::auth::{Claims, LedgerClaim};
use syncline_participant::config::{AuthConfig, AuthKind};
use syncline_participant::Participant;
use syncline_proto::ledger as pb;
use syncline_proto::ledger::command_completion_service_client::CommandCompletionServiceClient;
use syncline_proto::ledger::command_service_client::CommandServiceClient;
use syncline_proto::ledger::party_management_service_client::PartyManagementServiceClient;
use syncline_proto::ledger::state_service_client::StateServiceClient;
use syncline_proto::ledger::update_service_client::UpdateServiceClient;
use syncline_proto::ledger::version_service_client::VersionServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::harness::*;

const SECRET: &str = "a test secret of at least 32 bytes, for HS256";

fn claims(user: &str, act_as: &[&str], read_as: &[&str], admin: bool) -> Claims {
    Claims {
        sub: user.into(),
        exp: now_secs() + 600,
        ledger: LedgerClaim {
            act_as: act_as.iter().map(|s| s.to_string()).collect(),
            read_as: read_as.iter().map(|s| s.to_string()).collect(),
            admin,
        },
        ..Default::default()
    }
}

fn hs256(c: &Claims) -> String {
    mint_hs256(c, SECRET.as_bytes()).unwrap()
}

/// `message` with `token` as its bearer token (none for `None`).
fn req<M>(message: M, token: Option<&str>) -> Request<M> {
    let mut r = Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// The status's code, error id (which the message starts with) and the cause after it.
fn refusal(s: &Status) -> (Code, String, String) {
    let info = s.get_error_details().error_info().unwrap_or_else(|| panic!("no ErrorInfo in {s:?}")).clone();
    assert_eq!(info.domain, "syncline");
    let (head, cause) = s.message().split_once("): ").unwrap_or_else(|| panic!("not `ID(..): cause`: {}", s.message()));
    assert!(head.starts_with(&format!("{}(", info.reason)), "{}", s.message());
    (s.code(), info.reason, cause.to_string())
}

fn create_cmds(user: &str, act_as: &[&str], read_as: &[&str], command_id: &str) -> pb::Commands {
    pb::Commands {
        user_id: user.into(),
        command_id: command_id.into(),
        act_as: act_as.iter().map(|s| s.to_string()).collect(),
        read_as: read_as.iter().map(|s| s.to_string()).collect(),
        commands: vec![pb::Command {
            command: Some(pb::command::Command::Create(pb::CreateCommand {
                template_id: "Iou".into(),
                create_arguments: r#"{"amount":1}"#.into(),
                signatories: act_as.iter().map(|s| s.to_string()).collect(),
                observers: vec![],
            })),
        }],
        ..Default::default()
    }
}

async fn ledger_end(ch: &Channel, token: Option<&str>) -> Result<i64, Status> {
    let mut c = StateServiceClient::new(ch.clone());
    c.get_ledger_end(req(pb::GetLedgerEndRequest {}, token)).await.map(|r| r.into_inner().offset)
}

async fn submit(ch: &Channel, token: &str, c: pb::Commands) -> Result<pb::SubmitAndWaitResponse, Status> {
    let mut client = CommandServiceClient::new(ch.clone());
    client
        .submit_and_wait(req(pb::SubmitAndWaitRequest { commands: Some(c) }, Some(token)))
        .await
        .map(|r| r.into_inner())
}

fn filter(parties: &[&str]) -> Option<pb::TransactionFilter> {
    Some(pb::TransactionFilter { parties: parties.iter().map(|s| s.to_string()).collect() })
}

async fn start_with(sync: &Synchronizer, member: &str, auth: AuthConfig) -> (Participant, syncline_testkit::TestDb) {
    let db = syncline_testkit::fresh_database().await;
    let mut cfg = participant_config(member, sync.seq.connection(member, &sync.seq.url()));
    cfg.ledger_api.auth = auth;
    let mut dbc = syncline_coordination::DbConfig::new(&db.url);
    dbc.application_name = format!("{member}-r1");
    let p = Participant::start(&format!("{member}-r1"), &cfg, dbc).await.unwrap();
    wait_active(&p).await;
    (p, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_authenticate_and_their_parties_and_admin_claim_authorize() {
    syncline_test_synchronizer::metrics();
    let sync = Synchronizer::start(short_timeouts()).await;
    let (p1, _db) = start_with(&sync, "p1", AuthConfig::hs256(SECRET)).await;
    let (url, _serving) = serve_grpc(&p1).await;
    let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let api = p1.api();
    api.allocate_party(Some("carol")).await.unwrap();

    // Missing, malformed, wrongly signed, expired: UNAUTHENTICATED.
    let e = ledger_end(&ch, None).await.unwrap_err();
    assert_eq!(
        refusal(&e),
        (
            Code::Unauthenticated,
            "UNAUTHENTICATED".into(),
            "the request has no access token: send the metadata `authorization: Bearer <JWT>`".into()
        )
    );
    assert!(e.message().starts_with("UNAUTHENTICATED(6,"), "{}", e.message());
    let (code, id, cause) = refusal(&ledger_end(&ch, Some("not-a-jwt")).await.unwrap_err());
    assert_eq!((code, id.as_str()), (Code::Unauthenticated, "UNAUTHENTICATED"));
    assert!(cause.starts_with("the access token is not a JWT: "), "{cause}");
    let forged = mint_hs256(&claims("app", &["alice"], &[], true), b"not the participant's secret, 32+ bytes").unwrap();
    assert_eq!(
        refusal(&ledger_end(&ch, Some(&forged)).await.unwrap_err()),
        (Code::Unauthenticated, "UNAUTHENTICATED".into(), "the access token's signature is invalid".into())
    );
    let expired = hs256(&Claims { exp: now_secs() - 60, ..claims("app", &["alice"], &[], true) });
    assert_eq!(
        refusal(&ledger_end(&ch, Some(&expired)).await.unwrap_err()),
        (Code::Unauthenticated, "ACCESS_TOKEN_EXPIRED".into(), "the access token has expired".into())
    );

    // Any valid token, even one without parties, reads the ledger end, the parties, the
    // participant id and the version.
    let nobody = hs256(&claims("nobody", &[], &[], false));
    ledger_end(&ch, Some(&nobody)).await.unwrap();
    let mut parties = PartyManagementServiceClient::new(ch.clone());
    parties.list_known_parties(req(pb::ListKnownPartiesRequest {}, Some(&nobody))).await.unwrap();
    parties.get_participant_id(req(pb::GetParticipantIdRequest {}, Some(&nobody))).await.unwrap();
    let mut version = VersionServiceClient::new(ch.clone());
    version.get_ledger_api_version(req(pb::GetLedgerApiVersionRequest {}, Some(&nobody))).await.unwrap();

    // Party allocation needs the admin claim.
    let e = parties
        .allocate_party(req(pb::AllocatePartyRequest { party_id_hint: "mallory".into() }, Some(&nobody)))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&e),
        (
            Code::PermissionDenied,
            "PERMISSION_DENIED".into(),
            "AllocateParty needs an admin token; the access token of user nobody has no admin claim".into()
        )
    );
    assert!(e.message().starts_with("PERMISSION_DENIED(7,"), "{}", e.message());
    let admin = hs256(&claims("admin", &[], &[], true));
    parties
        .allocate_party(req(pb::AllocatePartyRequest { party_id_hint: "alice".into() }, Some(&admin)))
        .await
        .unwrap();

    // alice's application: its user id comes from the token when the command has none.
    let alice = hs256(&claims("alice-app", &["alice"], &["carol"], false));
    let end = ledger_end(&ch, Some(&alice)).await.unwrap();
    let done = submit(&ch, &alice, create_cmds("", &["alice"], &["carol"], "c1")).await.unwrap();
    let mut completions = CommandCompletionServiceClient::new(ch.clone());
    let r = pb::CompletionStreamRequest { user_id: String::new(), parties: vec!["alice".into()], begin_exclusive: end };
    let mut stream = completions.completion_stream(req(r, Some(&alice))).await.unwrap().into_inner();
    let first = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap();
    match first.completion_response {
        Some(pb::completion_stream_response::CompletionResponse::Completion(c)) => {
            assert_eq!((c.user_id.as_str(), c.update_id.as_str()), ("alice-app", done.update_id.as_str()))
        }
        other => panic!("not the completion: {other:?}"),
    }

    // Acting as a party the token does not name; another user's command; reading as one.
    let e = submit(&ch, &alice, create_cmds("", &["alice", "carol"], &[], "c2")).await.unwrap_err();
    assert_eq!(
        refusal(&e),
        (
            Code::PermissionDenied,
            "PERMISSION_DENIED".into(),
            r#"commands.act_as: the access token of user alice-app does not allow acting as ["carol"]"#.into()
        )
    );
    let e = submit(&ch, &alice, create_cmds("bob-app", &["alice"], &[], "c3")).await.unwrap_err();
    assert_eq!(refusal(&e).2, r#"commands.user_id: "bob-app" is not the access token's user "alice-app""#);
    let e = submit(&ch, &alice, create_cmds("", &["alice"], &["mallory"], "c4")).await.unwrap_err();
    assert_eq!(
        refusal(&e).2,
        r#"commands.read_as: the access token of user alice-app does not allow reading as ["mallory"]"#
    );

    // Streams and queries of parties the token does not cover.
    let not_reading = r#"filter.parties: the access token of user alice-app does not allow reading as ["mallory"]"#;
    let mut updates = UpdateServiceClient::new(ch.clone());
    let r = pb::GetUpdatesRequest { begin_exclusive: 0, end_inclusive: None, filter: filter(&["alice", "mallory"]) };
    let e = updates.get_updates(req(r, Some(&alice))).await.expect_err("refused");
    assert_eq!(refusal(&e), (Code::PermissionDenied, "PERMISSION_DENIED".into(), not_reading.into()));
    let r = pb::GetUpdateByIdRequest { update_id: done.update_id.clone(), filter: filter(&["mallory"]) };
    assert_eq!(refusal(&updates.get_update_by_id(req(r, Some(&alice))).await.unwrap_err()).2, not_reading);
    let mut state = StateServiceClient::new(ch.clone());
    let r = pb::GetActiveContractsRequest { filter: filter(&["mallory"]), active_at_offset: 0 };
    assert_eq!(refusal(&state.get_active_contracts(req(r, Some(&alice))).await.expect_err("refused")).2, not_reading);
    let r = pb::CompletionStreamRequest { user_id: String::new(), parties: vec!["mallory".into()], begin_exclusive: 0 };
    let e = completions.completion_stream(req(r, Some(&alice))).await.expect_err("refused");
    assert_eq!(refusal(&e).2, r#"parties: the access token of user alice-app does not allow reading as ["mallory"]"#);
    let r =
        pb::CompletionStreamRequest { user_id: "bob-app".into(), parties: vec!["alice".into()], begin_exclusive: 0 };
    let e = completions.completion_stream(req(r, Some(&alice))).await.expect_err("refused");
    assert_eq!(refusal(&e).2, r#"user_id: "bob-app" is not the access token's user "alice-app""#);

    // Covered reads work: readAs (carol) and actAs (alice).
    let r = pb::GetActiveContractsRequest { filter: filter(&["alice", "carol"]), active_at_offset: 0 };
    let acs: Vec<_> = state.get_active_contracts(req(r, Some(&alice))).await.unwrap().into_inner().collect().await;
    assert_eq!(acs.len(), 1, "alice's IOU");
    let r = pb::GetUpdateByIdRequest { update_id: done.update_id.clone(), filter: filter(&["alice"]) };
    updates.get_update_by_id(req(r, Some(&alice))).await.unwrap();

    let m = syncline_test_synchronizer::metrics();
    for reason in ["missing_token", "malformed_token", "invalid_signature", "expired", "permission_denied"] {
        let line = format!("syncline_participant_auth_failures_total{{reason=\"{reason}\"}}");
        assert!(syncline_test_synchronizer::sample(&m, &line).is_some_and(|v| v >= 1.0), "{line}:\n{m}");
    }
    p1.shutdown().await;
    drop(sync);
}

/// An ES256 key pair: the JWKS file holding its public key (kid `k1`) and the signing key.
fn es256_jwks(dir: &std::path::Path) -> (std::path::PathBuf, jsonwebtoken::EncodingKey) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // Uncompressed point: 0x04 ‖ x ‖ y.
    let point = pair.public_key().as_ref();
    let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..65]));
    let jwks = serde_json::json!({ "keys": [
        { "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256", "x": x, "y": y },
        // An unusable key is skipped, not fatal.
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
    ]});
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    (path, jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_are_checked_against_the_jwks_file() {
    let sync = Synchronizer::start(short_timeouts()).await;
    let dir = std::env::temp_dir().join(format!("syncline-jwks-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let (jwks, key) = es256_jwks(&dir);
    let auth = AuthConfig {
        kind: AuthKind::Jwks,
        jwks_file: Some(jwks),
        audience: Some("https://p2.example".into()),
        issuer: Some("https://idp.example".into()),
        ..Default::default()
    };
    let (p2, _db) = start_with(&sync, "p2", auth).await;
    let (url, _serving) = serve_grpc(&p2).await;
    let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut good = claims("app", &["alice"], &[], false);
    good.aud = Some("https://p2.example".into());
    good.iss = Some("https://idp.example".into());
    let sign = |c: &Claims, kid: Option<&str>| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = kid.map(String::from);
        jsonwebtoken::encode(&h, c, &key).unwrap()
    };
    ledger_end(&ch, Some(&sign(&good, Some("k1")))).await.unwrap();
    let cause = |s: Status| refusal(&s).2;
    assert_eq!(
        cause(ledger_end(&ch, Some(&sign(&good, Some("k2")))).await.unwrap_err()),
        r#"the access token's key id "k2" is not a configured key"#
    );
    let wrong_aud = Claims { aud: Some("https://p1.example".into()), ..good.clone() };
    assert_eq!(
        cause(ledger_end(&ch, Some(&sign(&wrong_aud, Some("k1")))).await.unwrap_err()),
        "the access token is not for this audience"
    );
    let wrong_iss = Claims { iss: Some("https://other.example".into()), ..good.clone() };
    assert_eq!(
        cause(ledger_end(&ch, Some(&sign(&wrong_iss, Some("k1")))).await.unwrap_err()),
        "the access token is not from the accepted issuer"
    );
    // An HS256 token (e.g. signed with the public key as its secret) is not accepted.
    let hs = mint_hs256(&good, SECRET.as_bytes()).unwrap();
    let e = ledger_end(&ch, Some(&hs)).await.unwrap_err();
    assert_eq!(refusal(&e).0, Code::Unauthenticated);
    assert!(refusal(&e).2.contains("algorithm HS256 is not accepted"), "{e:?}");
    p2.shutdown().await;
    drop(sync);
    let _ = std::fs::remove_dir_all(dir);
}

/// An RS256 key pair made by `openssl`: the JWKS file holding its public key (kid `r1`) and the
/// signing key.
fn rs256_jwks(dir: &std::path::Path) -> (std::path::PathBuf, jsonwebtoken::EncodingKey) {
    let key = dir.join("rsa.pem");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl makes this test's RSA key (./dev test installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key.to_str().unwrap()]);
    let modulus = openssl(&["rsa", "-in", key.to_str().unwrap(), "-noout", "-modulus"]);
    let hex = modulus.trim().strip_prefix("Modulus=").expect("openssl prints Modulus=HEX");
    let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let jwks = serde_json::json!({ "keys": [
        { "kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB" },
    ]});
    let path = dir.join("jwks-rsa.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    // PKCS#1 DER, as the signing key takes it.
    let der = dir.join("rsa.der");
    openssl(&["rsa", "-in", key.to_str().unwrap(), "-traditional", "-outform", "DER", "-out", der.to_str().unwrap()]);
    (path, jsonwebtoken::EncodingKey::from_rsa_der(&std::fs::read(&der).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_are_checked_against_the_jwks_file() {
    let sync = Synchronizer::start(short_timeouts()).await;
    let dir = std::env::temp_dir().join(format!("syncline-jwks-rsa-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let (jwks, key) = rs256_jwks(&dir);
    let auth = AuthConfig { kind: AuthKind::Jwks, jwks_file: Some(jwks), ..Default::default() };
    let (p1, _db) = start_with(&sync, "p1", auth).await;
    let (url, _serving) = serve_grpc(&p1).await;
    let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let good = claims("app", &["alice"], &[], false);
    let sign = |c: &Claims, kid: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, c, &key).unwrap()
    };
    ledger_end(&ch, Some(&sign(&good, "r1"))).await.unwrap();
    // A token signed by the key but altered on the way: the signature no longer matches.
    let token = sign(&good, "r1");
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_claims = Claims { sub: "mallory".into(), ..good.clone() };
    let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
    let e = ledger_end(&ch, Some(&format!("{head}.{forged_body}.{signature}"))).await.unwrap_err();
    assert_eq!(refusal(&e).0, Code::Unauthenticated, "{e:?}");
    // Expired.
    let expired = Claims { exp: now_secs() - 3600, ..good.clone() };
    let e = ledger_end(&ch, Some(&sign(&expired, "r1"))).await.unwrap_err();
    assert_eq!((refusal(&e).0, refusal(&e).1.as_str()), (Code::Unauthenticated, "ACCESS_TOKEN_EXPIRED"), "{e:?}");
    p1.shutdown().await;
    drop(sync);
    let _ = std::fs::remove_dir_all(dir);
}

/// Authentication off (the default): no token needed, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_configured_no_token_is_needed() {
    assert_eq!(AuthConfig::default().kind, AuthKind::None);
    let sync = Synchronizer::start(short_timeouts()).await;
    let node = Node::start("p1", &sync.seq).await;
    let (url, _serving) = serve_grpc(&node.p).await;
    let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
    ledger_end(&ch, None).await.unwrap();
    let mut parties = PartyManagementServiceClient::new(ch.clone());
    parties.allocate_party(req(pb::AllocatePartyRequest { party_id_hint: "alice".into() }, None)).await.unwrap();
    drop(sync);
}
