//! [`Revision`]: the opaque optimistic-concurrency token every stored row carries.

use serde::{Deserialize, Serialize};

/// The version of a stored row, as the store that holds it sees it: a counter in the
/// memory store, an ETag in Table Storage. The core only compares and passes it back.
///
/// `Revision::NEW` marks a row that is not stored yet: writing it is an insert that fails
/// with a conflict if the row exists. Any other value is a compare-and-swap: the write
/// succeeds only if the stored row still has exactly this revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(Option<String>);

impl Revision {
    /// Not stored yet.
    pub const NEW: Revision = Revision(None);

    /// A stored revision, as the store renders it.
    pub fn stored(token: impl Into<String>) -> Revision {
        Revision(Some(token.into()))
    }

    /// Whether the row is not stored yet.
    pub fn is_new(&self) -> bool {
        self.0.is_none()
    }

    /// The store's token, if stored.
    pub fn token(&self) -> Option<&str> {
        self.0.as_deref()
    }
}
