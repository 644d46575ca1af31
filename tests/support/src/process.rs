//! `syncline daemon` processes of a test: start with config files and a log file, kill -9,
//! SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `syncline daemon`; killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Daemon {
    /// Start `<bin> daemon --config <files>` (`bin`: a `syncline` binary) with its log in
    /// `dir/<name>.log`.
    pub fn start(bin: &Path, dir: &Path, name: &str, configs: &[PathBuf]) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let list: Vec<String> = configs.iter().map(|p| p.display().to_string()).collect();
        let child = Command::new(bin)
            .args(["daemon", "--config", &list.join(","), "--log-file-name"])
            .arg(&log)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning syncline daemon");
        Daemon { child, log }
    }

    /// SIGKILL, no clean-up of any kind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().expect("wait")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
