//! Time proofs: protocol time is sequencer time, so a deadline passes for a node only when it
//! sees an event past it. A node with a pending deadline and no traffic asks for one: an empty
//! send to itself, whose event carries a fresh sequencer timestamp.

use std::time::Duration;

use syncline_proto::sequencer::SendRequest;
use syncline_sequencer_client::{now_micros, RequestBuilder};
use tokio::time::Instant;

/// Message-id prefix of time proofs: `time-proof-<µs>`.
pub const TIME_PROOF_PREFIX: &str = "time-proof-";

/// The least pause between two time proofs for the same deadline.
pub const RETRY: Duration = Duration::from_secs(1);

/// When a node asks for time proofs, and which deadline it last asked for.
#[derive(Clone, Debug)]
pub struct TimeProofs {
    delay: Duration,
    asked: Option<(i64, Instant)>,
}

impl TimeProofs {
    /// Ask `delay` after a deadline that no event has passed yet.
    pub fn new(delay: Duration) -> TimeProofs {
        TimeProofs { delay, asked: None }
    }

    /// When a time proof is due (wall-clock µs): `next_deadline` is pending and the last event
    /// seen (`last_ts`) has not passed it; `delay` after it, and not again within [`RETRY`].
    pub fn due(&self, next_deadline: Option<i64>, last_ts: i64) -> Option<i64> {
        let deadline = next_deadline.filter(|d| *d >= last_ts)?;
        let mut due = deadline + self.delay.as_micros() as i64;
        if let Some((d, at)) = self.asked {
            if d == deadline {
                let wait = (at + RETRY).saturating_duration_since(Instant::now());
                due = due.max(now_micros() + wait.as_micros() as i64);
            }
        }
        Some(due)
    }

    /// Record that a proof was asked for `deadline` now; the send that asks it, from `member`
    /// to itself.
    pub fn ask(&mut self, member: &str, deadline: i64) -> SendRequest {
        self.asked = Some((deadline, Instant::now()));
        RequestBuilder::new(member, format!("{TIME_PROOF_PREFIX}{}", now_micros()))
            .to([member.to_string()], Vec::new())
            .within(Duration::from_secs(10))
            .build()
    }
}

/// Sleep until wall-clock `at` (µs since the epoch); forever if `None`.
pub async fn sleep_until_wall(at: Option<i64>) {
    match at {
        Some(at) => tokio::time::sleep(Duration::from_micros((at - now_micros()).max(0) as u64)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_due_after_a_pending_deadline_not_yet_passed_and_not_asked_twice_at_once() {
        let mut proofs = TimeProofs::new(Duration::from_millis(100));
        assert_eq!(proofs.due(None, 5), None);
        assert_eq!(proofs.due(Some(1_000), 2_000), None, "an event already passed it");
        assert_eq!(proofs.due(Some(1_000), 500), Some(101_000));
        let send = proofs.ask("m", 1_000);
        assert_eq!(
            (send.sender.as_str(), send.envelopes[0].recipients.as_slice()),
            ("m", ["m".to_string()].as_slice())
        );
        assert!(send.message_id.starts_with(TIME_PROOF_PREFIX));
        let again = proofs.due(Some(1_000), 500).unwrap();
        assert!(again >= now_micros() + 900_000, "asked again at once");
        assert_eq!(proofs.due(Some(5_000), 500), Some(105_000), "another deadline is not held back");
    }
}
