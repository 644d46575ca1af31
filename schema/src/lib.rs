//! Syncline's SQL migrations (embedded) and the Diesel definitions of its tables.

use diesel_migrations::{embed_migrations, EmbeddedMigrations};

/// Every migration of the Syncline schema, in order.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Diesel table definitions, matching `migrations/`.
pub mod tables {
    diesel::table! {
        /// One row per sequencer node index.
        sequencer_watermarks (node_index) {
            node_index -> Integer,
            watermark_ts -> BigInt,
            online -> Bool,
        }
    }

    diesel::table! {
        /// The total order of sequenced events.
        sequencer_events (ts) {
            ts -> BigInt,
            node_index -> SmallInt,
            kind -> Text,
            message_id -> Nullable<Text>,
            sender -> Nullable<Integer>,
            recipients -> Array<Integer>,
            error_message -> Nullable<Text>,
        }
    }

    diesel::table! {
        /// One row per member of an event.
        sequencer_event_recipients (node_index, recipient_id, ts) {
            node_index -> SmallInt,
            recipient_id -> Integer,
            ts -> BigInt,
        }
    }

    diesel::table! {
        /// Event bodies, keyed by event timestamp.
        sequencer_payloads (ts) {
            ts -> BigInt,
            node_index -> SmallInt,
            content -> Binary,
        }
    }

    diesel::table! {
        /// Claimed (sender, message id) pairs for idempotent sends.
        sequencer_message_ids (sender, message_id) {
            sender -> Integer,
            message_id -> Text,
            ts -> BigInt,
            node_index -> SmallInt,
            max_sequencing_ts -> BigInt,
            digest -> Nullable<Binary>,
        }
    }

    diesel::table! {
        /// Fencing epoch and heartbeat of each replica group.
        leadership (group_key) {
            group_key -> BigInt,
            group_name -> Text,
            epoch -> BigInt,
            holder -> Text,
            holder_pid -> Integer,
            acquired_ts -> BigInt,
            heartbeat_ts -> BigInt,
        }
    }

    diesel::table! {
        /// The active's heartbeat per replica group, apart from the fenced `leadership` row.
        leadership_heartbeat (group_key) {
            group_key -> BigInt,
            epoch -> BigInt,
            holder_pid -> Integer,
            heartbeat_ts -> BigInt,
        }
    }

    diesel::table! {
        /// Registered sequencer members.
        sequencer_members (id) {
            id -> Integer,
            member -> Text,
            registered_ts -> BigInt,
            pruned_previous_event_ts -> Nullable<BigInt>,
            enabled -> Bool,
        }
    }

    diesel::table! {
        /// Latest acknowledged timestamp per member.
        sequencer_acknowledgements (member_id) {
            member_id -> Integer,
            ts -> BigInt,
        }
    }

    diesel::table! {
        /// Exclusive lower bound of readable events.
        sequencer_lower_bound (single_row) {
            single_row -> Bool,
            ts -> BigInt,
        }
    }

    diesel::joinable!(sequencer_acknowledgements -> sequencer_members (member_id));

    diesel::allow_tables_to_appear_in_same_query!(
        sequencer_members,
        sequencer_acknowledgements,
        sequencer_watermarks,
        sequencer_events,
        sequencer_event_recipients,
        sequencer_payloads,
        sequencer_message_ids,
    );
}
