//! Tables of the topology store (`syncline-protocol`'s `topology::store`).

diesel::table! {
    /// Every topology transaction a node received, with its outcome and validity.
    topology_transactions (sequenced_at) {
        sequenced_at -> BigInt,
        sender -> Text,
        operation -> Text,
        serial -> Integer,
        mapping_kind -> Text,
        mapping_key -> Text,
        content -> Binary,
        accepted -> Bool,
        ignore_reason -> Nullable<Text>,
        effective_from -> Nullable<BigInt>,
        effective_until -> Nullable<BigInt>,
    }
}
