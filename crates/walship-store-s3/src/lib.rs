//! walship-store-s3
