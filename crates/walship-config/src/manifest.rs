//! [`Manifest`]: an `ObjectStore` document that passed validation, with what validation
//! parsed kept beside it, so nothing downstream parses or checks it again.

use std::ops::Deref;

use crate::{ConfigError, Destination, ObjectStore};

/// A validated `ObjectStore` document: only [`crate::parse`] and [`crate::load`] make
/// one, and it is read-only, so its `destinationPath` and the [`Destination`] parsed
/// from it always agree. It reads as the document it holds (`Deref`).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    document: ObjectStore,
    destination: Destination,
}

impl Manifest {
    /// Keeps `document`, which validation accepted, with its parsed destination.
    pub(crate) fn new(document: ObjectStore) -> Result<Manifest, ConfigError> {
        let destination = document.spec.configuration.try_destination()?;
        Ok(Manifest {
            document,
            destination,
        })
    }

    /// Where the archive is: `destinationPath`, parsed.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// The document itself, to change or to serialize.
    pub fn into_document(self) -> ObjectStore {
        self.document
    }
}

impl Deref for Manifest {
    type Target = ObjectStore;

    fn deref(&self) -> &ObjectStore {
        &self.document
    }
}
