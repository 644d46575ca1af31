//! `syncline ledger`: a client of a participant's ledger API for people and scripts, against
//! one or more endpoints of the participant (its replicas, or HAProxy in front of them).

mod client;
mod error;
mod render;
mod stream;
mod submit;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use syncline_proto::ledger as pb;
use syncline_proto::ledger::party_management_service_client::PartyManagementServiceClient;
use syncline_proto::ledger::state_service_client::StateServiceClient;

use client::Endpoints;
pub use error::LedgerCliError;

/// Options of `syncline ledger`.
#[derive(clap::Args, Debug)]
pub struct LedgerArgs {
    /// The participant's ledger API: its replicas' endpoints, or HAProxy's (tried in order; the
    /// next one after an UNAVAILABLE answer).
    #[arg(long, short, global = true, value_delimiter = ',', env = "SYNCLINE_PARTICIPANT")]
    participant: Vec<String>,
    /// The application user id of submissions and completions (default: the access token's
    /// user, or `syncline-cli` without a token); for `token`, the user the token is for.
    #[arg(long, global = true, env = "SYNCLINE_USER")]
    user: Option<String>,
    /// The access token (a JWT) sent with every call, for a participant that checks tokens.
    #[arg(long, global = true, env = "SYNCLINE_LEDGER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the access token.
    #[arg(long, global = true, env = "SYNCLINE_LEDGER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The CA certificate (PEM) of the participant's TLS certificate: connect over TLS
    /// (`host:port` endpoints become `https://`).
    #[arg(long, global = true, env = "SYNCLINE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Print one JSON object per line (errors too, on stderr) instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds a call may take (a submission: until its outcome).
    #[arg(long, global = true, default_value = "30", value_parser = seconds)]
    timeout: Duration,
    /// Seconds to keep trying while every endpoint is unavailable (e.g. during a takeover).
    #[arg(long, global = true, default_value = "15", value_parser = seconds)]
    wait: Duration,
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(clap::Subcommand, Debug, PartialEq)]
enum LedgerCommand {
    /// The parties known on the synchronizer (local: hosted by this participant).
    Parties,
    /// Allocate a party hosted by this participant.
    AllocateParty {
        /// The party's name (generated when absent).
        hint: Option<String>,
    },
    /// Create a contract.
    Create {
        /// The template name.
        #[arg(long)]
        template: String,
        /// The arguments, a JSON document.
        #[arg(long, default_value = "{}")]
        arguments: String,
        /// A signatory (repeat, or comma-separated); at least one.
        #[arg(long = "signatory", required = true, value_delimiter = ',')]
        signatories: Vec<String>,
        /// An observer (repeat, or comma-separated).
        #[arg(long = "observer", value_delimiter = ',')]
        observers: Vec<String>,
        #[command(flatten)]
        submission: Submission,
    },
    /// Exercise a choice on a contract: archive it with --consuming, and create --create-json
    /// contracts in the same transaction (a transfer: consuming, creating it for the new owner).
    Exercise {
        /// The contract.
        #[arg(long)]
        contract_id: String,
        /// The choice's name.
        #[arg(long)]
        choice: String,
        /// Archive the contract.
        #[arg(long)]
        consuming: bool,
        /// A contract to create: {"template":..,"arguments":..,"signatories":[..],"observers":[..]} (repeat).
        #[arg(long = "create-json")]
        creates: Vec<String>,
        #[command(flatten)]
        submission: Submission,
    },
    /// Archive a contract (acting as one of its signatories).
    Archive {
        /// The contract.
        #[arg(long)]
        contract_id: String,
        #[command(flatten)]
        submission: Submission,
    },
    /// The active contracts the parties see.
    Acs {
        #[command(flatten)]
        parties: Parties,
    },
    /// The transactions the parties see, after an offset.
    Updates {
        #[command(flatten)]
        stream: StreamArgs,
    },
    /// The outcomes of the user's submissions acting as the parties, after an offset.
    Completions {
        #[command(flatten)]
        stream: StreamArgs,
    },
    /// The participant's ledger end offset.
    LedgerEnd,
    /// Print an HS256 access token for `--user` signed with the participant's shared secret
    /// (for development; production tokens come from an identity provider).
    Token(token::MintArgs),
}

/// Who submits, and the command id.
#[derive(clap::Args, Debug, PartialEq)]
struct Submission {
    /// A party acting (repeat, or comma-separated); default for create: the signatories.
    #[arg(long = "party", value_delimiter = ',')]
    act_as: Vec<String>,
    /// The command id: unique per intended change; run a command again with the same id after
    /// an unknown outcome (generated when absent).
    #[arg(long)]
    command_id: Option<String>,
}

/// Whose view.
#[derive(clap::Args, Debug, PartialEq)]
struct Parties {
    /// A party (repeat, or comma-separated); default: the access token's parties, or without
    /// a token every party hosted by the participant.
    #[arg(long = "party", value_delimiter = ',')]
    parties: Vec<String>,
}

/// A stream from an offset.
#[derive(clap::Args, Debug, PartialEq)]
struct StreamArgs {
    #[command(flatten)]
    parties: Parties,
    /// Start after this offset (0: from the beginning).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    from: i64,
    /// Keep following new ones (until interrupted); otherwise stop at the ledger end.
    #[arg(long)]
    follow: bool,
}

/// A positive number of seconds.
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a number of seconds between 0 and 86400")),
    }
}

/// Run `syncline ledger`; errors are printed here (one line, or one JSON object with --json).
pub async fn run(args: LedgerArgs) -> ExitCode {
    let json = args.json;
    match execute(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                eprintln!("{}", e.to_json());
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// The user id without a token: what the participant then calls the submitter.
const DEFAULT_USER: &str = "syncline-cli";

async fn execute(args: LedgerArgs) -> Result<(), LedgerCliError> {
    let out = Out { json: args.json };
    let command = match args.command {
        // Needs no participant.
        LedgerCommand::Token(mint) => {
            let token = token::mint(args.user.as_deref().unwrap_or(DEFAULT_USER), &mint)?;
            out.print(serde_json::json!({ "token": token }), || token.clone());
            return Ok(());
        }
        command => command,
    };
    let tls = match &args.ca_cert {
        Some(ca) => Some(
            syncline_sequencer_client::ClientTls::load(ca, None)
                .map_err(|e| LedgerCliError::Usage(format!("--ca-cert {e}")))?,
        ),
        None => None,
    };
    let urls = client::parse_urls(&args.participant, tls.is_some())?;
    let mut ledger = Endpoints::new(urls, tls.as_ref(), args.timeout, args.wait)?;
    let given = token::given(args.token.as_deref(), args.token_file.as_deref())?;
    if let Some(t) = &given {
        ledger = ledger.with_token(t)?;
    }
    let token_parties = given.as_deref().map(token::parties);
    // With a token, an empty user id stands for the token's user.
    let user = args.user.unwrap_or_else(|| if given.is_some() { String::new() } else { DEFAULT_USER.into() });
    match command {
        LedgerCommand::Parties => {
            let r = ledger
                .call(|ch| {
                    let r = ledger.request(pb::ListKnownPartiesRequest {});
                    async move { PartyManagementServiceClient::new(ch).list_known_parties(r).await }
                })
                .await?;
            for p in r.into_inner().party_details {
                out.print(render::party_json(&p), || render::party_line(&p));
            }
        }
        LedgerCommand::AllocateParty { hint } => {
            let hint = hint.unwrap_or_default();
            let r = ledger
                .call(|ch| {
                    let r = ledger.request(pb::AllocatePartyRequest { party_id_hint: hint.clone() });
                    async move { PartyManagementServiceClient::new(ch).allocate_party(r).await }
                })
                .await?;
            let p = r.into_inner().party_details.unwrap_or_default();
            out.print(render::party_json(&p), || format!("allocated party {}", p.party));
        }
        LedgerCommand::Create { template, arguments, signatories, observers, submission } => {
            let create = pb::CreateCommand {
                template_id: template,
                create_arguments: submit::parse_arguments(&arguments)?,
                signatories: signatories.clone(),
                observers,
            };
            let act_as = if submission.act_as.is_empty() { signatories } else { submission.act_as.clone() };
            let command = pb::command::Command::Create(create);
            submit_and_print(&ledger, &out, &user, submission, act_as, command).await?;
        }
        LedgerCommand::Exercise { contract_id, choice, consuming, creates, submission } => {
            let creates = creates.iter().map(|c| submit::parse_create(c)).collect::<Result<_, _>>()?;
            let act_as = required_party(&submission)?;
            let command =
                pb::command::Command::Exercise(pb::ExerciseCommand { contract_id, choice, consuming, creates });
            submit_and_print(&ledger, &out, &user, submission, act_as, command).await?;
        }
        LedgerCommand::Archive { contract_id, submission } => {
            let act_as = required_party(&submission)?;
            let command = pb::command::Command::Archive(pb::ArchiveCommand { contract_id });
            submit_and_print(&ledger, &out, &user, submission, act_as, command).await?;
        }
        LedgerCommand::Acs { parties } => {
            let parties = stream::parties_or_local(&ledger, parties.parties, token_parties.as_deref()).await?;
            let filter = pb::TransactionFilter { parties };
            let contracts = ledger
                .call(|ch| {
                    let r = pb::GetActiveContractsRequest { filter: Some(filter.clone()), active_at_offset: 0 };
                    let r = ledger.request(r);
                    async move {
                        let s = StateServiceClient::new(ch).get_active_contracts(r).await?.into_inner();
                        s.collect::<Vec<_>>().await.into_iter().collect::<Result<Vec<_>, _>>()
                    }
                })
                .await?;
            for c in contracts.into_iter().filter_map(|c| c.created_event) {
                out.print(render::created_json(&c), || render::created_line(&c));
            }
        }
        LedgerCommand::Updates { stream: s } => {
            let parties = stream::parties_or_local(&ledger, s.parties.parties, token_parties.as_deref()).await?;
            stream::updates(&ledger, &out, parties, s.from, s.follow).await?;
        }
        LedgerCommand::Completions { stream: s } => {
            let parties = stream::parties_or_local(&ledger, s.parties.parties, token_parties.as_deref()).await?;
            stream::completions(&ledger, &out, &user, parties, s.from, s.follow).await?;
        }
        LedgerCommand::LedgerEnd => {
            let end = stream::ledger_end(&ledger).await?;
            out.print(serde_json::json!({ "offset": end }), || end.to_string());
        }
        LedgerCommand::Token(_) => {} // answered above
    }
    Ok(())
}

fn required_party(s: &Submission) -> Result<Vec<String>, LedgerCliError> {
    if s.act_as.is_empty() {
        return Err(LedgerCliError::Usage("--party: which party acts (one of the contract's signatories)?".into()));
    }
    Ok(s.act_as.clone())
}

async fn submit_and_print(
    ledger: &Endpoints,
    out: &Out,
    user: &str,
    submission: Submission,
    act_as: Vec<String>,
    command: pb::command::Command,
) -> Result<(), LedgerCliError> {
    let command_id = submission.command_id.unwrap_or_else(submit::new_command_id);
    let t = submit::submit(ledger, submit::commands(user, &command_id, act_as, command)).await?;
    out.print(render::submission_json(&command_id, &t), || render::submission_lines(&command_id, &t));
    Ok(())
}

/// Where results go: JSON lines or text.
pub(crate) struct Out {
    json: bool,
}

impl Out {
    /// Print `json` or `text()` as one record.
    fn print(&self, json: serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            render::print_json(&json);
        } else {
            println!("{}", text());
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ledger: LedgerArgs,
    }

    fn parse(args: &[&str]) -> Result<LedgerArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ledger").chain(args.iter().copied())).map(|c| c.ledger)
    }

    #[test]
    fn endpoints_and_options_go_before_or_after_the_subcommand() {
        let a = parse(&["--participant", "http://a:1,http://b:2", "ledger-end", "--json"]).unwrap();
        assert_eq!(a.participant, vec!["http://a:1", "http://b:2"]);
        assert!(a.json);
        assert_eq!(a.command, LedgerCommand::LedgerEnd);
        let a = parse(&["parties", "-p", "a:1", "--user", "app", "--timeout", "2.5"]).unwrap();
        assert_eq!(
            (a.participant, a.user.as_deref(), a.timeout),
            (vec!["a:1".into()], Some("app"), Duration::from_millis(2500))
        );
        let a = parse(&["parties", "--token", "t"]).unwrap();
        assert_eq!((a.token.as_deref(), a.token_file), (Some("t"), None));
    }

    #[test]
    fn create_takes_repeated_or_comma_separated_parties() {
        let a = parse(&[
            "create",
            "--template",
            "Iou",
            "--arguments",
            r#"{"amount":1}"#,
            "--signatory",
            "alice",
            "--observer",
            "bob,carol",
            "--observer",
            "dave",
            "--command-id",
            "c1",
        ])
        .unwrap();
        let LedgerCommand::Create { template, signatories, observers, submission, .. } = a.command else {
            panic!("not create")
        };
        assert_eq!((template.as_str(), signatories), ("Iou", vec!["alice".to_string()]));
        assert_eq!(observers, vec!["bob", "carol", "dave"]);
        assert_eq!(submission, Submission { act_as: vec![], command_id: Some("c1".into()) });
        assert!(parse(&["create", "--template", "Iou"]).is_err(), "a signatory is required");
    }

    #[test]
    fn exercise_collects_its_creates() {
        let a = parse(&[
            "exercise",
            "--contract-id",
            "c1",
            "--choice",
            "Transfer",
            "--consuming",
            "--party",
            "alice",
            "--create-json",
            r#"{"template":"Iou","signatories":["bob"]}"#,
        ])
        .unwrap();
        let LedgerCommand::Exercise { contract_id, choice, consuming, creates, submission } = a.command else {
            panic!("not exercise")
        };
        assert_eq!((contract_id.as_str(), choice.as_str(), consuming, creates.len()), ("c1", "Transfer", true, 1));
        assert_eq!(submission.act_as, vec!["alice"]);
        let none = Submission { act_as: vec![], command_id: None };
        assert!(required_party(&none).unwrap_err().to_string().starts_with("--party"));
    }

    #[test]
    fn streams_start_at_an_offset_and_may_follow() {
        let a = parse(&["updates", "--from", "12", "--follow", "--party", "alice"]).unwrap();
        let want = StreamArgs { parties: Parties { parties: vec!["alice".into()] }, from: 12, follow: true };
        assert_eq!(a.command, LedgerCommand::Updates { stream: want });
        let a = parse(&["completions"]).unwrap();
        let want = StreamArgs { parties: Parties { parties: vec![] }, from: 0, follow: false };
        assert_eq!(a.command, LedgerCommand::Completions { stream: want });
        assert!(parse(&["updates", "--from", "-1"]).is_err());
        assert!(parse(&["acs", "--timeout", "0"]).is_err());
    }

    #[test]
    fn allocate_party_takes_an_optional_hint() {
        assert_eq!(
            parse(&["allocate-party", "alice"]).unwrap().command,
            LedgerCommand::AllocateParty { hint: Some("alice".into()) }
        );
        assert_eq!(parse(&["allocate-party"]).unwrap().command, LedgerCommand::AllocateParty { hint: None });
    }
}
