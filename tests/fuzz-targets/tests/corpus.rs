//! A short fuzz run in the test suite: every committed corpus file of each target, then
//! seeded mutations of them, bounded in count and time. The seed is printed;
//! `SYNCLINE_TEST_SEED=<n>` replays it. Deeper runs: `cargo +nightly fuzz run <target>` in
//! `fuzz/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use syncline_fuzz_targets::mutate::mutate;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(inputs.len() >= 5, "{}: a corpus of {} files", dir.display(), inputs.len());
    inputs
}

fn seed() -> u64 {
    std::env::var("SYNCLINE_TEST_SEED").map(|s| s.trim().parse().expect("a u64")).unwrap_or_else(|_| rand::random())
}

/// Run `target` over the corpus, then over up to `count` mutations within `limit`.
fn run(name: &str, target: fn(&[u8]), count: usize, limit: Duration) {
    let inputs = corpus(name);
    for input in &inputs {
        target(input);
    }
    let seed = seed();
    println!("{name}: {} corpus files; mutations with seed {seed} (replay: SYNCLINE_TEST_SEED={seed})", inputs.len());
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut done = 0;
    while done < count && start.elapsed() < limit {
        let a = &inputs[rng.random_range(0..inputs.len())];
        let b = &inputs[rng.random_range(0..inputs.len())];
        let input = mutate(&mut rng, a, b);
        let caught = std::panic::catch_unwind(|| target(&input));
        if caught.is_err() {
            let dir = std::env::temp_dir().join(format!("syncline-fuzz-{name}-{seed}"));
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("crash-{done}"));
            std::fs::write(&file, &input).unwrap();
            panic!("{name}: mutation {done} of seed {seed} fails; input kept in {}", file.display());
        }
        done += 1;
    }
    println!("{name}: {done} mutations in {:?}", start.elapsed());
}

#[test]
fn protocol_messages_decode_or_name_the_problem_and_round_trip() {
    run("protocol_message", syncline_fuzz_targets::protocol_message, 300_000, Duration::from_secs(5));
}

#[test]
fn config_files_load_or_are_refused_in_one_line() {
    run("config_file", syncline_fuzz_targets::config_file, 10_000, Duration::from_secs(5));
}
