//! Rebuild the crate when a migration is added or changed.
// embed_migrations! only tracks the files it saw: rebuild when a migration is added.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
