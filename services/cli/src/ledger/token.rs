//! Access tokens of `syncline ledger`: the one sent with every call (`--token`,
//! `--token-file`), and `syncline ledger token`, which mints an HS256 token with the
//! participant's shared secret for development.

use std::path::{Path, PathBuf};
use std::time::Duration;

use syncline_participant::auth::token::{hs256_secret, mint_hs256, now_secs, unverified_claims};
use syncline_participant::auth::{Claims, LedgerClaim};

use super::error::LedgerCliError;

/// Options of `syncline ledger token`.
#[derive(clap::Args, Debug, PartialEq)]
pub struct MintArgs {
    /// The participant's shared secret (its `ledger_api.auth.secret`).
    #[arg(long, env = "SYNCLINE_LEDGER_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// A file holding the shared secret (its `ledger_api.auth.secret_file`).
    #[arg(long, conflicts_with = "secret")]
    secret_file: Option<PathBuf>,
    /// A party the user may act as (repeat, or comma-separated).
    #[arg(long = "act-as", value_delimiter = ',')]
    act_as: Vec<String>,
    /// A party the user may read as (repeat, or comma-separated).
    #[arg(long = "read-as", value_delimiter = ',')]
    read_as: Vec<String>,
    /// May allocate parties.
    #[arg(long)]
    admin: bool,
    /// How long the token is valid (e.g. 1h, 7d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The audience (`aud`), if the participant checks it.
    #[arg(long)]
    audience: Option<String>,
    /// The issuer (`iss`), if the participant checks it.
    #[arg(long)]
    issuer: Option<String>,
}

/// The token `--token` or `--token-file` gives, if any.
pub fn given(token: Option<&str>, file: Option<&Path>) -> Result<Option<String>, LedgerCliError> {
    let token = match (token, file) {
        (Some(_), Some(_)) => {
            return Err(LedgerCliError::Usage(
                "give the access token with --token (SYNCLINE_LEDGER_TOKEN) or --token-file \
                 (SYNCLINE_LEDGER_TOKEN_FILE), not both"
                    .into(),
            ))
        }
        (Some(t), None) => t.to_string(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| LedgerCliError::Usage(format!("--token-file {}: {e}", path.display())))?,
        (None, None) => return Ok(None),
    };
    // The whole header value is accepted too.
    let token = token.trim();
    let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
    if token.is_empty() {
        return Err(LedgerCliError::Usage("the access token is empty".into()));
    }
    Ok(Some(token.to_string()))
}

/// The parties `token` may read as (actAs, then readAs), for the default of `--party`; none
/// when it cannot be read (the participant then says why).
pub fn parties(token: &str) -> Vec<String> {
    let Some(c) = unverified_claims(token) else { return Vec::new() };
    let mut parties = c.ledger.act_as;
    for p in c.ledger.read_as {
        if !parties.contains(&p) {
            parties.push(p);
        }
    }
    parties
}

/// An HS256 token for `user` with the rights `args` name.
pub fn mint(user: &str, args: &MintArgs) -> Result<String, LedgerCliError> {
    let secret = hs256_secret(args.secret.as_deref(), args.secret_file.as_deref())
        .map_err(|e| LedgerCliError::Usage(format!("{e}: give --secret or --secret-file")))?;
    let claims = Claims {
        sub: user.to_string(),
        exp: now_secs().saturating_add(args.ttl.as_secs()),
        nbf: None,
        aud: args.audience.clone().map(serde_json::Value::String),
        iss: args.issuer.clone(),
        ledger: LedgerClaim { act_as: args.act_as.clone(), read_as: args.read_as.clone(), admin: args.admin },
    };
    mint_hs256(&claims, secret.as_bytes()).map_err(|e| LedgerCliError::Usage(format!("cannot sign the token: {e}")))
}

#[cfg(test)]
mod tests {
    use syncline_participant::auth::Verifier;
    use syncline_participant::config::AuthConfig;

    use super::*;

    const SECRET: &str = "a development secret of 32 bytes or more";

    fn args(secret: &str) -> MintArgs {
        MintArgs {
            secret: Some(secret.into()),
            secret_file: None,
            act_as: vec!["alice".into()],
            read_as: vec!["bob".into()],
            admin: true,
            ttl: Duration::from_secs(3600),
            audience: None,
            issuer: None,
        }
    }

    #[test]
    fn a_minted_token_is_accepted_with_its_rights() {
        let token = mint("alice-app", &args(SECRET)).unwrap();
        let v = Verifier::from_config(&AuthConfig::hs256(SECRET)).unwrap().unwrap();
        let r = v.verify(&token).unwrap();
        assert_eq!(r.user_id, "alice-app");
        assert!(r.admin && r.act_as.contains("alice") && r.read_as.contains("bob"));
        assert_eq!(parties(&token), vec!["alice", "bob"]);
        assert!(parties("garbage").is_empty());
        let e = mint("u", &args("short")).unwrap_err().to_string();
        assert!(e.contains("at least 32 bytes"), "{e}");
    }

    #[test]
    fn the_token_comes_from_the_option_or_the_file_not_both() {
        assert_eq!(given(None, None).unwrap(), None);
        assert_eq!(given(Some(" t1 "), None).unwrap().as_deref(), Some("t1"));
        let dir = std::env::temp_dir().join(format!("syncline-token-{}", rand::random::<u64>()));
        std::fs::write(&dir, "t2\n").unwrap();
        assert_eq!(given(None, Some(&dir)).unwrap().as_deref(), Some("t2"));
        assert!(given(Some("t1"), Some(&dir)).unwrap_err().to_string().contains("not both"));
        std::fs::remove_file(&dir).unwrap();
        assert!(given(None, Some(&dir)).unwrap_err().to_string().starts_with("--token-file"));
        assert!(given(Some(" "), None).is_err());
        assert_eq!(given(Some("Bearer t3"), None).unwrap().as_deref(), Some("t3"));
    }
}
