//! `syncline demo` end to end, as a new user runs it: no database given, so it starts its own
//! throwaway PostgreSQL, runs the whole topology (three sequencers, two mediator replicas, two
//! participants of two replicas each, HAProxy when installed), kills -9 a sequencer, the
//! leading mediator and participant1's leading replica while an application works through the
//! ledger API, and proves its checks. Then cleans up after itself.

use std::process::Command;

use crate::support::{syncline_bin, WHOLE_TOPOLOGY};

#[test]
fn the_demo_kills_a_node_of_each_kind_under_load_and_every_check_passes() {
    let _whole = WHOLE_TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(syncline_bin())
        .args(["demo", "--seconds", "20", "--rate", "10"])
        .env_remove("DATABASE_URL")
        .output()
        .expect("running syncline demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed ({}):\n{stdout}\n{stderr}", out.status);
    let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    let mut expected = vec![
        "bootstrap --mediator mediator",
        "host-party alice --participant participant1",
        "host-party bob --participant participant2",
        "kill -9 sequencer1 (a sequencer",
        "kill -9 mediator-a (the leading mediator",
        "kill -9 participant1-a (the leading replica of participant1",
        "mediator-b took over",
        "participant1-b took over",
        "first command accepted",
        "0 definitely rejected",
        "each completed exactly once",
        "0 only on one of them",
        "every command completed exactly once, nothing archived twice, both participants agree",
        // TLS on every listener, the admin APIs requiring client certificates.
        "TLS        every listener, with certificates of a throwaway CA",
        "health https://127.0.0.1:",
    ];
    if haproxy {
        expected.extend(["HAProxy for the sequencers", "HAProxy for participant1", "clients connect through HAProxy"]);
    }
    for e in expected {
        assert!(stdout.contains(e), "demo output lacks {e:?}:\n{stdout}");
    }
    // Each kill's recovery, in the summary with Canton's figure beside it.
    for (victim, canton) in [
        ("sequencer1", "sequencer readers pause 8-13 s"),
        ("mediator-a", "passive mediator replica retries the lock every 15 s"),
        ("participant1-a", "passive participant replica retries the lock every 15 s"),
    ] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(victim) && l.contains(" ms "));
        let line = line.unwrap_or_else(|| panic!("no recovery line for {victim}:\n{stdout}"));
        assert!(line.contains(canton) && !line.contains("NaN"), "{line}");
    }
    let checks: Vec<&str> =
        stdout.lines().map(str::trim_start).filter(|l| l.starts_with('✔') || l.starts_with('✗')).collect();
    assert!(checks.len() >= 5 && checks.iter().all(|l| l.starts_with('✔')), "{checks:#?}");
    for line in checks.iter().filter(|l| l.contains("archived twice")) {
        assert!(line.contains("archived twice: 0,") && line.contains("archived before created: 0"), "{line}");
    }
    // No process of the demo outlives it.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let leftovers: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains("syncline-demo-") && (l.contains("daemon") || l.contains("haproxy")))
        .map(str::to_string)
        .collect();
    assert!(leftovers.is_empty(), "demo left processes behind: {leftovers:?}");
}
