//! walship-engine
