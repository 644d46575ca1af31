//! The members' tokens a client presents (`authorization: Bearer <token>`): given in the
//! configuration, or read from a file that is re-read while the client runs, so a node may
//! start before `syncline admin` wrote its token and pick up a rotated one without a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// How long a token read from a file is used before the file is read again.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// Where a member's token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// The token itself.
    Token(String),
    /// A file holding the token (surrounding whitespace ignored).
    File(PathBuf),
}

/// A token as the client uses it: parsed once into its header value.
struct Entry {
    source: TokenSource,
    /// The header value and when it was read (file sources only re-read after a while).
    cached: Mutex<Option<(Instant, Option<AsciiMetadataValue>)>>,
}

impl Entry {
    fn value(&self) -> Option<AsciiMetadataValue> {
        let mut cached = self.cached.lock().unwrap();
        if let Some((at, value)) = &*cached {
            if matches!(self.source, TokenSource::Token(_)) || at.elapsed() < REREAD_AFTER {
                return value.clone();
            }
        }
        let token = match &self.source {
            TokenSource::Token(t) => Some(t.clone()),
            TokenSource::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text.trim().to_string()),
                Err(e) => {
                    // The node may have started before its token was written; calls go out
                    // without one and are refused UNAUTHENTICATED until it is there.
                    tracing::warn!(file = %path.display(), "cannot read the member token file: {e}");
                    None
                }
            },
        };
        let value = token.and_then(|t| match format!("Bearer {t}").parse::<AsciiMetadataValue>() {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(source = ?self.source_name(), "the member token is not printable ASCII; not sent");
                None
            }
        });
        *cached = Some((Instant::now(), value.clone()));
        value
    }

    /// The source, without the token itself.
    fn source_name(&self) -> String {
        match &self.source {
            TokenSource::Token(_) => "the configured token".into(),
            TokenSource::File(p) => p.display().to_string(),
        }
    }
}

/// Member name → token, shared by a client's clones.
#[derive(Clone, Default)]
pub(crate) struct Tokens {
    by_member: Arc<RwLock<HashMap<String, Arc<Entry>>>>,
}

impl Tokens {
    /// Present `source`'s token on calls acting as `member`.
    pub(crate) fn set(&self, member: &str, source: TokenSource) {
        let entry = Arc::new(Entry { source, cached: Mutex::new(None) });
        self.by_member.write().unwrap().insert(member.to_string(), entry);
    }

    /// A request carrying `member`'s token, if the client has one.
    pub(crate) fn request<T>(&self, member: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.authorize(member, request.metadata_mut());
        request
    }

    fn authorize(&self, member: &str, metadata: &mut MetadataMap) {
        let entry = self.by_member.read().unwrap().get(member).cloned();
        if let Some(value) = entry.and_then(|e| e.value()) {
            metadata.insert("authorization", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_again_after_a_while_and_a_missing_one_sends_nothing() {
        let dir = std::env::temp_dir().join(format!("syncline-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.token");
        let tokens = Tokens::default();
        tokens.set("m", TokenSource::File(file.clone()));
        tokens.set("s", TokenSource::Token("abc".into()));
        let header = |member: &str| {
            tokens.request(member, ()).metadata().get("authorization").map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(header("m"), None, "no file yet");
        assert_eq!(header("s").as_deref(), Some("Bearer abc"));
        assert_eq!(header("other"), None);
        std::fs::write(&file, "t1\n").unwrap();
        // Re-read once the cached absence is old enough.
        let entry = tokens.by_member.read().unwrap()["m"].clone();
        *entry.cached.lock().unwrap() = Some((Instant::now() - REREAD_AFTER, None));
        assert_eq!(header("m").as_deref(), Some("Bearer t1"));
        std::fs::write(&file, "t2").unwrap();
        assert_eq!(header("m").as_deref(), Some("Bearer t1"), "cached for a while");
        *entry.cached.lock().unwrap() = None;
        assert_eq!(header("m").as_deref(), Some("Bearer t2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
