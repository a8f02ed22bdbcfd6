//! walship-credentials
