//! Ledger API authorization, like Canton's: a caller sends a JWT (`authorization: Bearer …`)
//! whose claims name its user and the parties it may act and read as ([`token`]); an
//! interceptor in front of every ledger service checks the token and leaves the caller's
//! [`Rights`] in the request's extensions, and each service checks the request against them
//! (a command's `act_as` and `read_as`, a stream's parties, the admin claim for party
//! allocation). A missing or invalid token is UNAUTHENTICATED, a right the token lacks
//! PERMISSION_DENIED; both are counted in `syncline_participant_auth_failures_total{reason}`.

pub mod token;

use std::collections::BTreeSet;
use std::sync::Arc;

use syncline_proto::ledger as pb;
use tonic::service::Interceptor;
use tonic::{Code, Status};

pub use token::{Claims, LedgerClaim, Verifier, VerifierError, LEDGER_CLAIM};

/// What the caller of one request may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rights {
    /// Authentication is off (`kind = "none"`): everything.
    Unrestricted,
    /// What a valid token grants.
    Token(Arc<TokenRights>),
}

/// The rights of a valid token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRights {
    /// The user (`sub`).
    pub user_id: String,
    /// The parties it may act as (and read as).
    pub act_as: BTreeSet<String>,
    /// The parties it may read as.
    pub read_as: BTreeSet<String>,
    /// Whether it may use the admin services (party allocation).
    pub admin: bool,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No valid token: UNAUTHENTICATED.
    #[error("{message}")]
    Unauthenticated {
        /// What is wrong with the token (the metric's label).
        failure: Failure,
        /// For the caller.
        message: String,
    },
    /// The token does not grant what the request needs: PERMISSION_DENIED.
    #[error("{message}")]
    PermissionDenied {
        /// For the caller.
        message: String,
    },
}

/// What is wrong with a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No `authorization` metadata.
    Missing,
    /// Not `Bearer <JWT>`, or not a JWT with the claims needed.
    Malformed,
    /// Not signed by an accepted key (or with an algorithm not accepted).
    Signature,
    /// Past its `exp`.
    Expired,
    /// Before its `nbf`.
    NotYetValid,
    /// Not for this audience or not from this issuer.
    AudienceOrIssuer,
}

impl Failure {
    /// The label of `syncline_participant_auth_failures_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Missing => "missing_token",
            Failure::Malformed => "malformed_token",
            Failure::Signature => "invalid_signature",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::AudienceOrIssuer => "audience_or_issuer",
        }
    }
}

impl AuthError {
    fn unauthenticated(failure: Failure, message: impl Into<String>) -> AuthError {
        AuthError::Unauthenticated { failure, message: message.into() }
    }

    fn denied(message: impl Into<String>) -> AuthError {
        AuthError::PermissionDenied { message: message.into() }
    }

    /// Canton's error id.
    pub fn error_id(&self) -> &'static str {
        match self {
            AuthError::Unauthenticated { failure: Failure::Expired, .. } => "ACCESS_TOKEN_EXPIRED",
            AuthError::Unauthenticated { .. } => "UNAUTHENTICATED",
            AuthError::PermissionDenied { .. } => "PERMISSION_DENIED",
        }
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        match self {
            AuthError::Unauthenticated { .. } => Code::Unauthenticated,
            AuthError::PermissionDenied { .. } => Code::PermissionDenied,
        }
    }

    /// The label of `syncline_participant_auth_failures_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Unauthenticated { failure, .. } => failure.label(),
            AuthError::PermissionDenied { .. } => "permission_denied",
        }
    }
}

fn not_covered<'a>(wanted: impl IntoIterator<Item = &'a String>, allowed: impl Fn(&str) -> bool) -> Vec<&'a str> {
    wanted.into_iter().map(String::as_str).filter(|p| !allowed(p)).collect()
}

impl Rights {
    fn token(&self) -> Option<&TokenRights> {
        match self {
            Rights::Unrestricted => None,
            Rights::Token(t) => Some(t),
        }
    }

    /// A submission: its user is the token's (filled in when empty), `act_as` ⊆ the token's
    /// actAs and `read_as` ⊆ its actAs ∪ readAs. `field` names the `Commands` message.
    pub fn authorize_commands(&self, commands: Option<&mut pb::Commands>, field: &str) -> Result<(), AuthError> {
        let (Some(t), Some(c)) = (self.token(), commands) else { return Ok(()) };
        t.authorize_user(&mut c.user_id, &format!("{field}.user_id"))?;
        let acting = not_covered(&c.act_as, |p| t.act_as.contains(p));
        if !acting.is_empty() {
            return Err(AuthError::denied(format!(
                "{field}.act_as: the access token of user {} does not allow acting as {acting:?}",
                t.user_id
            )));
        }
        let reading = not_covered(&c.read_as, |p| t.can_read(p));
        if !reading.is_empty() {
            return Err(AuthError::denied(format!(
                "{field}.read_as: the access token of user {} does not allow reading as {reading:?}",
                t.user_id
            )));
        }
        Ok(())
    }

    /// A request naming a user (completions): the token's user (filled in when empty).
    pub fn authorize_user(&self, user_id: &mut String, field: &str) -> Result<(), AuthError> {
        match self.token() {
            Some(t) => t.authorize_user(user_id, field),
            None => Ok(()),
        }
    }

    /// A read of `parties`' data (a stream, the ACS, an update): each in actAs ∪ readAs.
    pub fn authorize_read(&self, parties: &[String], field: &str) -> Result<(), AuthError> {
        let Some(t) = self.token() else { return Ok(()) };
        let missing = not_covered(parties, |p| t.can_read(p));
        if missing.is_empty() {
            return Ok(());
        }
        Err(AuthError::denied(format!(
            "{field}: the access token of user {} does not allow reading as {missing:?}",
            t.user_id
        )))
    }

    /// An admin service (`what`): the token's admin claim.
    pub fn authorize_admin(&self, what: &str) -> Result<(), AuthError> {
        match self.token() {
            Some(t) if !t.admin => Err(AuthError::denied(format!(
                "{what} needs an admin token; the access token of user {} has no admin claim",
                t.user_id
            ))),
            _ => Ok(()),
        }
    }
}

impl TokenRights {
    fn can_read(&self, party: &str) -> bool {
        self.act_as.contains(party) || self.read_as.contains(party)
    }

    fn authorize_user(&self, user_id: &mut String, field: &str) -> Result<(), AuthError> {
        if user_id.is_empty() {
            user_id.clone_from(&self.user_id);
        } else if *user_id != self.user_id {
            return Err(AuthError::denied(format!(
                "{field}: {user_id:?} is not the access token's user {:?}",
                self.user_id
            )));
        }
        Ok(())
    }
}

/// The caller's rights the interceptor left in `request` (refused when it did not run: a
/// service mounted without it must not be open by accident).
pub fn rights<T>(request: &tonic::Request<T>) -> Result<Rights, Status> {
    rights_of(request.extensions())
}

/// [`rights`] from a request's extensions.
pub fn rights_of(extensions: &tonic::Extensions) -> Result<Rights, Status> {
    extensions.get::<Rights>().cloned().ok_or_else(|| Status::internal("the ledger API's authentication did not run"))
}

/// Checks the token of every request of a service and leaves the [`Rights`] in its extensions.
#[derive(Clone)]
pub struct Authenticate {
    verifier: Option<Arc<Verifier>>,
}

impl Authenticate {
    /// With `verifier`, or letting everyone in without one.
    pub fn new(verifier: Option<Arc<Verifier>>) -> Authenticate {
        Authenticate { verifier }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let rights = match &self.verifier {
            None => Rights::Unrestricted,
            Some(v) => Rights::Token(Arc::new(v.verify_metadata(request.metadata())?)),
        };
        request.extensions_mut().insert(rights);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(act_as: &[&str], read_as: &[&str], admin: bool) -> Rights {
        Rights::Token(Arc::new(TokenRights {
            user_id: "app".into(),
            act_as: act_as.iter().map(|s| s.to_string()).collect(),
            read_as: read_as.iter().map(|s| s.to_string()).collect(),
            admin,
        }))
    }

    fn commands(user: &str, act_as: &[&str], read_as: &[&str]) -> pb::Commands {
        pb::Commands {
            user_id: user.into(),
            act_as: act_as.iter().map(|s| s.to_string()).collect(),
            read_as: read_as.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn commands_need_act_as_and_read_as_covered_and_the_tokens_user() {
        let r = token(&["alice"], &["bob"], false);
        let mut c = commands("", &["alice"], &["bob", "alice"]);
        r.authorize_commands(Some(&mut c), "commands").unwrap();
        assert_eq!(c.user_id, "app", "filled in from the token");
        let e = r.authorize_commands(Some(&mut commands("app", &["alice", "bob"], &[])), "commands").unwrap_err();
        assert_eq!(e.to_string(), r#"commands.act_as: the access token of user app does not allow acting as ["bob"]"#);
        assert_eq!(
            (e.code(), e.error_id(), e.label()),
            (Code::PermissionDenied, "PERMISSION_DENIED", "permission_denied")
        );
        let e = r.authorize_commands(Some(&mut commands("app", &["alice"], &["carol"])), "commands").unwrap_err();
        assert!(e.to_string().ends_with(r#"does not allow reading as ["carol"]"#), "{e}");
        let e = r.authorize_commands(Some(&mut commands("other", &["alice"], &[])), "commands").unwrap_err();
        assert_eq!(e.to_string(), r#"commands.user_id: "other" is not the access token's user "app""#);
        let mut c = commands("other", &["x"], &["y"]);
        Rights::Unrestricted.authorize_commands(Some(&mut c), "commands").unwrap();
    }

    #[test]
    fn reads_need_act_as_or_read_as_and_admin_needs_the_claim() {
        let r = token(&["alice"], &["bob"], false);
        r.authorize_read(&["alice".into(), "bob".into()], "filter.parties").unwrap();
        let e = r.authorize_read(&["alice".into(), "carol".into()], "filter.parties").unwrap_err();
        assert!(e.to_string().starts_with("filter.parties: "), "{e}");
        let e = r.authorize_admin("AllocateParty").unwrap_err();
        assert_eq!(
            e.to_string(),
            "AllocateParty needs an admin token; the access token of user app has no admin claim"
        );
        token(&[], &[], true).authorize_admin("AllocateParty").unwrap();
        Rights::Unrestricted.authorize_admin("AllocateParty").unwrap();
    }
}
