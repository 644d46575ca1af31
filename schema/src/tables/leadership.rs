//! Tables of replica-group leadership and fencing (`syncline-coordination`'s leadership).

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
