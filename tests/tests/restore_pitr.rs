//! Point-in-time recovery from the S3 archive (the scenario is in `common::pitr`; the
//! Azure tests run it once per credential method).

mod common;

use anyhow::Result;
use common::Archive;

#[test]
fn recovers_to_a_target_time_from_the_archive_alone() -> Result<()> {
    let archive = Archive::start(Some("gzip"))?;
    common::pitr::recovers_to_a_target_time(&archive)
}
