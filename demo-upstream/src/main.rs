//! The demo upstream (to be built).

fn main() {}
