//! The chaos test: `syncline demo --chaos` runs the whole topology (three sequencers, two
//! mediator replicas, two participants of two replicas each, HAProxy in front when installed,
//! every node reaching its database through a fault proxy of its own) with the demo's
//! application, while a seeded schedule injects faults one at a time: kill -9 and restart of
//! any node, a node's database connections cut, its database silent for a while, set-passive
//! on a leader. After each the topology must be whole again; at the end every command completed
//! exactly once, nothing archived twice, both participants agree, every sequencer served each
//! member one order, no verdict was sequenced twice and offsets are gap-free.
//!
//! Bounded: 45 s of workload, 10 faults. The seed is printed; `SYNCLINE_TEST_SEED=<n>` replays
//! the same faults in the same order.

use std::process::Command;

use crate::support::{seed, syncline_bin, WHOLE_TOPOLOGY};

#[test]
fn faults_of_every_kind_leave_every_command_once_one_order_one_verdict_and_no_offset_gap() {
    let _whole = WHOLE_TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    println!("chaos seed {seed} (replay: SYNCLINE_TEST_SEED={seed})");
    let faults = 10;
    let out = Command::new(syncline_bin())
        .args(["demo", "--chaos", "--seconds", "45", "--rate", "10"])
        .args(["--faults", &faults.to_string(), "--seed", &seed.to_string()])
        .env_remove("DATABASE_URL")
        .output()
        .expect("running syncline demo --chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seed {seed}: chaos run failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(&format!("chaos: seed {seed}")), "{stdout}");
    assert!(stdout.contains("every node reaches its database through a fault proxy of its own"), "{stdout}");
    let injected = stdout.lines().filter(|l| l.contains(">>> fault ")).count();
    assert_eq!(injected, faults, "seed {seed}: not every fault was injected:\n{stdout}");
    let checks: Vec<&str> =
        stdout.lines().map(str::trim_start).filter(|l| l.starts_with('✔') || l.starts_with('✗')).collect();
    assert!(checks.iter().all(|l| l.starts_with('✔')), "seed {seed}: {checks:#?}");
    for needle in [
        "each completed exactly once",
        "archived twice: 0, created twice: 0",
        "0 only on one of them",
        "one order per subscriber",
        "sequenced twice: 0, missing: 0",
        "participant1: offsets 1..=",
        "participant2: offsets 1..=",
    ] {
        assert!(checks.iter().any(|l| l.contains(needle)), "seed {seed}: no passed check {needle:?}: {checks:#?}");
    }
}
