//! `Sequencer::start` refuses settings that would panic or spin its tasks, before it starts
//! any of them (no database is needed to be refused).

use std::time::Duration;

use syncline_coordination::DbConfig;
use syncline_sequencer::{Sequencer, SequencerError, SequencerSettings};

async fn start(tweak: impl FnOnce(&mut SequencerSettings)) -> SequencerError {
    let mut settings = SequencerSettings::default();
    tweak(&mut settings);
    // Nothing listens there: a start that got past validation would return Ok and retry.
    match Sequencer::start(DbConfig::new("postgres://nobody@127.0.0.1:1/none"), settings).await {
        Ok(seq) => {
            seq.shutdown().await;
            panic!("started with invalid settings")
        }
        Err(e) => e,
    }
}

#[tokio::test]
async fn zero_online_check_interval_is_refused_naming_the_field() {
    let e = start(|s| s.online_check_interval = Duration::ZERO).await;
    assert!(matches!(&e, SequencerError::InvalidSetting(i) if i.field == "online_check_interval"), "{e:?}");
    assert_eq!(e.to_string(), "invalid setting online_check_interval: must be positive");
}

#[tokio::test]
async fn zero_keep_alive_and_other_spinning_values_are_refused() {
    let e = start(|s| s.keep_alive_interval = Duration::ZERO).await;
    assert_eq!(e.to_string(), "invalid setting keep_alive_interval: must be positive");
    for (field, e) in [
        ("polling_interval", start(|s| s.polling_interval = Duration::ZERO).await),
        ("write_timeout", start(|s| s.write_timeout = Duration::ZERO).await),
        ("queue_size", start(|s| s.queue_size = 0).await),
        ("max_batch_size", start(|s| s.max_batch_size = 0).await),
        ("read_batch_size", start(|s| s.read_batch_size = 0).await),
    ] {
        assert!(matches!(&e, SequencerError::InvalidSetting(i) if i.field == field), "{field}: {e:?}");
    }
}

#[tokio::test]
async fn writer_lanes_out_of_range_or_beyond_the_node_indexes_are_refused_naming_the_field() {
    for e in [start(|s| s.writer_lanes = 0).await, start(|s| s.writer_lanes = 5).await] {
        assert!(matches!(&e, SequencerError::InvalidSetting(i) if i.field == "writer_lanes"), "{e:?}");
    }
    let e = start(|s| {
        s.total_node_count = 1;
        s.writer_lanes = 2;
    })
    .await;
    assert_eq!(
        e.to_string(),
        "invalid setting writer_lanes: 2 lanes need as many node indexes, but total_node_count is 1 (it must cover \
         lanes × sequencer processes)"
    );
}
