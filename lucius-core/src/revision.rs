//! [`Revision`]: the opaque optimistic-concurrency token every stored row carries.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version of a stored row, as the store that holds it sees it: a counter in the
/// memory store, an ETag in Table Storage. The core only compares and passes it back.
///
/// `Revision::NEW` marks a row that is not stored yet: writing it is an insert that fails
/// with a conflict if the row exists. Any other value is a compare-and-swap: the write
/// succeeds only if the stored row still has exactly this revision.
///
/// Copies are cheap (no allocation): a counter is inline and a token is shared. It is 16
/// bytes, and every stored row carries one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Revision(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
enum Repr {
    #[default]
    New,
    Counter(u64),
    // A thin pointer, so the enum stays at 16 bytes.
    Token(Arc<String>),
}

impl Revision {
    /// Not stored yet.
    pub const NEW: Revision = Revision(Repr::New);

    /// A stored revision, as the store renders it (an ETag, say).
    pub fn stored(token: impl Into<String>) -> Revision {
        Revision(Repr::Token(Arc::new(token.into())))
    }

    /// A stored revision numbered by the store (the memory store's row versions).
    pub fn counter(n: u64) -> Revision {
        Revision(Repr::Counter(n))
    }

    /// Whether the row is not stored yet.
    pub fn is_new(&self) -> bool {
        self.0 == Repr::New
    }

    /// The store's token, if it is a [`stored`](Revision::stored) one.
    pub fn token(&self) -> Option<&str> {
        match &self.0 {
            Repr::Token(t) => Some(t.as_str()),
            Repr::New | Repr::Counter(_) => None,
        }
    }

    /// The number, if it is a [`counter`](Revision::counter).
    pub fn as_counter(&self) -> Option<u64> {
        match self.0 {
            Repr::Counter(n) => Some(n),
            Repr::New | Repr::Token(_) => None,
        }
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::New => f.write_str("new"),
            Repr::Counter(n) => write!(f, "{n}"),
            Repr::Token(t) => f.write_str(t),
        }
    }
}

/// On the wire: `null` when new, else the token as a string (a counter in decimal).
impl Serialize for Revision {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::New => serializer.serialize_none(),
            Repr::Counter(n) => serializer.collect_str(n),
            Repr::Token(t) => serializer.serialize_str(t),
        }
    }
}

/// Reads back what [`Serialize`] wrote: a decimal without leading zeros is a counter again
/// (so a memory-store row survives a round trip through JSON and still matches its
/// store), any other string a token. Table Storage's ETags are quoted (`W/"…"`), never
/// bare decimals.
impl<'de> Deserialize<'de> for Revision {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Revision, D::Error> {
        Ok(match Option::<String>::deserialize(deserializer)? {
            None => Revision::NEW,
            Some(s) => match s.parse::<u64>() {
                Ok(n) if n.to_string() == s => Revision::counter(n),
                _ => Revision::stored(s),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_compare_and_render() {
        assert_eq!(size_of::<Revision>(), 16);
        assert!(Revision::NEW.is_new());
        assert!(!Revision::counter(1).is_new());
        assert_eq!(Revision::counter(7), Revision::counter(7));
        assert_ne!(Revision::counter(7), Revision::counter(8));
        assert_eq!(Revision::stored("W/\"x\""), Revision::stored("W/\"x\""));
        assert_eq!(Revision::counter(7).to_string(), "7");
        assert_eq!(Revision::counter(7).as_counter(), Some(7));
        assert_eq!(Revision::stored("e").token(), Some("e"));
        assert_eq!(Revision::counter(7).token(), None);
        assert_eq!(serde_json::to_string(&Revision::NEW).unwrap(), "null");
        assert_eq!(
            serde_json::to_string(&Revision::counter(3)).unwrap(),
            "\"3\""
        );
        let back: Revision = serde_json::from_str("\"W/x\"").unwrap();
        assert_eq!(back, Revision::stored("W/x"));
        // A counter comes back a counter; a decimal-looking but non-canonical text stays a
        // token.
        for n in [0, 3, u64::MAX] {
            let text = serde_json::to_string(&Revision::counter(n)).unwrap();
            let back: Revision = serde_json::from_str(&text).unwrap();
            assert_eq!(back, Revision::counter(n), "{text}");
        }
        let back: Revision = serde_json::from_str("\"007\"").unwrap();
        assert_eq!(back, Revision::stored("007"));
        let back: Revision = serde_json::from_str("null").unwrap();
        assert!(back.is_new());
    }
}
