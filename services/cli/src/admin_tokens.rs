//! Member tokens in `syncline admin`: registering a member (alone, or in `bootstrap` and
//! `join-participant`) issues its token once, and rotating issues a new one; each is written
//! to the file its nodes' `sequencer.token_file` names, or printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use syncline_node::config::RemoteConfig;
use syncline_proto::sequencer::{RegisterMemberRequest, RegisterMemberResponse, RotateMemberTokenRequest};

use crate::admin::on_a_sequencer;

/// Where an issued token goes.
#[derive(Clone, Debug)]
pub enum Destination {
    /// Printed on stdout.
    Print,
    /// Written to this file.
    File(PathBuf),
    /// Written to `DIR/<member>.token`.
    Dir(PathBuf),
}

impl Destination {
    /// `--token-file` if given, else printed.
    pub fn file(path: Option<PathBuf>) -> Destination {
        path.map_or(Destination::Print, Destination::File)
    }

    /// `--token-dir` if given, else printed.
    pub fn dir(path: Option<PathBuf>) -> Destination {
        path.map_or(Destination::Print, Destination::Dir)
    }
}

/// The file `syncline admin ... --token-dir DIR` writes `member`'s token to.
pub fn token_file(dir: &Path, member: &str) -> PathBuf {
    dir.join(format!("{member}.token"))
}

/// Register `member` at a sequencer and hand out its token when this registration issued one.
pub async fn register(
    remote: &RemoteConfig,
    member: &str,
    to: &Destination,
    d: Duration,
) -> Result<RegisterMemberResponse> {
    let req = RegisterMemberRequest { member: member.to_string() };
    let (_, r) = on_a_sequencer(remote, None, d, |mut c| {
        let req = req.clone();
        async move { c.register_member(req).await }
    })
    .await?;
    if r.token.is_empty() {
        println!(
            "{member} was registered before and keeps its token (`syncline admin rotate-member-token {member}` issues a new one)"
        );
    } else {
        hand_out(member, &r.token, to)?;
    }
    Ok(r)
}

/// Issue a new token for `member` (its old one stops working) and hand it out.
pub async fn rotate(remote: &RemoteConfig, member: &str, to: &Destination, d: Duration) -> Result<()> {
    let req = RotateMemberTokenRequest { member: member.to_string() };
    let (_, r) = on_a_sequencer(remote, None, d, |mut c| {
        let req = req.clone();
        async move { c.rotate_member_token(req).await }
    })
    .await?;
    hand_out(member, &r.token, to)?;
    println!("the previous token of {member} no longer works; its nodes re-read their token_file within a second");
    Ok(())
}

fn hand_out(member: &str, token: &str, to: &Destination) -> Result<()> {
    let path = match to {
        Destination::Print => {
            println!("token of {member} (shown only now; its nodes name it in sequencer.token or token_file): {token}");
            return Ok(());
        }
        Destination::File(p) => p.clone(),
        Destination::Dir(dir) => token_file(dir, member),
    };
    write_secret(&path, token).with_context(|| {
        format!(
            "{member} is registered, but its token could not be written to {} (issue a new one with \
             `syncline admin rotate-member-token {member} --token-file FILE`)",
            path.display()
        )
    })?;
    println!("wrote the token of {member} to {}", path.display());
    Ok(())
}

/// Write `token` to `path` readable by its owner only, replacing it in one step so a node
/// re-reading the file never sees half a token.
fn write_secret(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("token.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_replaced_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(dir.path(), "m");
        write_secret(&path, "t1").unwrap();
        write_secret(&path, "t2").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "t2\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
