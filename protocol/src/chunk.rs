//! Chunk ids: a chunk is named by the BLAKE3 hash of its plaintext, so equal content has one
//! name (dedup) and either side can verify what it received.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The 32-byte BLAKE3 hash of a chunk's plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Lower-case hex, as used for cache file names and logs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the form [`ChunkId::to_hex`] writes.
    pub fn from_hex(s: &str) -> Option<ChunkId> {
        let bytes = hex::decode(s).ok()?;
        Some(ChunkId(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId([7; 32]);
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
        assert_eq!(ChunkId::from_hex("abcd"), None);
    }
}
