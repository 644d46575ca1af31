//! `syncline demo` end to end, as a new user runs it: no database given, so it starts its own
//! throwaway PostgreSQL, runs three sequencer processes, kills one, and proves nothing was
//! lost. Then cleans up after itself.

use std::process::Command;

use crate::support::syncline_bin;

#[test]
fn the_demo_runs_end_to_end_on_a_throwaway_database_and_cleans_up() {
    let out = Command::new(syncline_bin())
        .args(["demo", "--seconds", "6", "--rate", "100"])
        .env_remove("DATABASE_URL")
        .output()
        .expect("running syncline demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed ({}):\n{stdout}\n{stderr}", out.status);
    for expected in [
        "kill -9 sequencer1",
        "online again after",
        "longest pause of the subscriber on sequencer2 after the kill",
        "nothing lost, nothing duplicated, one order for every subscriber",
    ] {
        assert!(stdout.contains(expected), "demo output lacks {expected:?}:\n{stdout}");
    }
    for line in stdout.lines().filter(|l| l.trim_start().starts_with("subscriber on")) {
        assert!(line.contains(" 0 duplicates") && line.contains("identical"), "{line}");
    }
    // No sequencer process of the demo outlives it.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let leftovers: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains("syncline-demo-") && l.contains("daemon"))
        .map(str::to_string)
        .collect();
    assert!(leftovers.is_empty(), "demo left processes behind: {leftovers:?}");
}
