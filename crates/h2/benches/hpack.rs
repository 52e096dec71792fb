//! Placeholder until the HPACK bench lands.
fn main() {}
