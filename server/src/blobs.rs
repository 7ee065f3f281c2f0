//! Attachment contents, content-addressed: the bytes of a photo live once, under their hash,
//! however many visits and devices name them. [`BlobStore`] is the seam where an object store
//! can replace [`FsBlobStore`], the data-directory implementation; who may read or write a
//! content (area checks) is the [`crate::Storage`]'s business, not this one's.

use std::fs::{self, File};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use zoufang_protocol::audit::{HashAlgorithm, is_hex_digest};

/// A content's name: its hash and the algorithm that made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentKey {
    pub algorithm: HashAlgorithm,
    hash: String,
}

impl ContentKey {
    /// `None` unless `hash` is a lowercase hex digest (so it is also a safe file name).
    pub fn new(algorithm: HashAlgorithm, hash: &str) -> Option<Self> {
        is_hex_digest(hash).then(|| Self {
            algorithm,
            hash: hash.to_owned(),
        })
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// How much of a content the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Whole and verified against its hash.
    Complete,
    /// This many bytes, durable, of an upload in progress (0: none).
    Partial(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the chunk starts at another offset than the {held} bytes held")]
    OffsetMismatch { held: u64 },
    #[error("the chunk goes past the content's declared size")]
    TooLong,
    #[error("the uploaded content does not match its hash; it was discarded")]
    HashMismatch,
    #[error("attachment storage failed: {0}")]
    Io(#[from] io::Error),
}

pub trait BlobStore: Send + Sync + 'static {
    fn held(&self, key: &ContentKey) -> io::Result<Held>;
    /// Appends `bytes` at `offset`, which must be exactly what is held. Reaching `size`, the
    /// content is verified against its hash and becomes [`Held::Complete`], or is discarded.
    /// A content already complete ignores the bytes. Durable before it returns.
    fn append(
        &self,
        key: &ContentKey,
        offset: u64,
        size: u64,
        bytes: &[u8],
    ) -> Result<Held, BlobError>;
    /// A complete content's bytes.
    fn read(&self, key: &ContentKey) -> io::Result<Option<Vec<u8>>>;
}

/// Contents as files under a directory: `objects/{algorithm}/{first two hex}/{hash}` when
/// complete; `partial/{algorithm}-{hash}` while uploading, with the durable length in a
/// `.held` file beside it (bytes past it, written before a crash, are cut off at the next
/// append).
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    /// Appends to one content are serialised; different contents proceed in parallel.
    stripes: Vec<Mutex<()>>,
    fallback: Mutex<()>,
}

const STRIPES: usize = 64;
/// Bytes read per piece while verifying a content.
const READ_PIECE: usize = 256 * 1024;

impl FsBlobStore {
    pub fn open(root: &Path) -> io::Result<Self> {
        crate::private::dir(root)?;
        crate::private::dir(&root.join("objects"))?;
        crate::private::dir(&root.join("partial"))?;
        Ok(Self {
            root: root.to_owned(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            fallback: Mutex::new(()),
        })
    }

    fn stripe(&self, key: &ContentKey) -> &Mutex<()> {
        let first = u8::from_str_radix(key.hash.get(..2).unwrap_or("00"), 16).unwrap_or(0);
        // Always in range; the fallback only satisfies the types.
        let i = usize::from(first) % STRIPES;
        self.stripes.get(i).unwrap_or(&self.fallback)
    }

    fn object_path(&self, key: &ContentKey) -> PathBuf {
        self.root
            .join("objects")
            .join(key.algorithm.as_str())
            .join(key.hash.get(..2).unwrap_or("00"))
            .join(&key.hash)
    }

    fn partial_path(&self, key: &ContentKey, suffix: &str) -> PathBuf {
        self.root
            .join("partial")
            .join(format!("{}-{}{suffix}", key.algorithm.as_str(), key.hash))
    }

    fn held_unlocked(&self, key: &ContentKey) -> io::Result<Held> {
        if self.object_path(key).exists() {
            return Ok(Held::Complete);
        }
        // Never more than the file holds: after a crash the mark may have survived a new file's
        // directory entry.
        let on_disk = match fs::metadata(self.partial_path(key, "")) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Held::Partial(self.read_held(key)?.min(on_disk)))
    }

    /// Moves the mark after the bytes up to it were made durable. The mark itself is not
    /// synced (one fsync per chunk, not two): a crash may lose it or leave it unreadable, and the
    /// mark falls back to an earlier length, or 0 — the device then re-sends from there. It can
    /// never claim bytes that are not on disk.
    fn write_held(&self, key: &ContentKey, held: u64) -> io::Result<()> {
        let tmp = self.partial_path(key, ".held.tmp");
        let mut f = crate::private::file_options()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(format!("{held} {:08x}", crc32fast::hash(&held.to_le_bytes())).as_bytes())?;
        drop(f);
        fs::rename(tmp, self.partial_path(key, ".held"))
    }

    fn read_held(&self, key: &ContentKey) -> io::Result<u64> {
        let text = match fs::read_to_string(self.partial_path(key, ".held")) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        // Anything but a mark with its checksum (a write torn by a crash) counts as nothing held.
        let mut parts = text.split_whitespace();
        let held = parts.next().and_then(|h| h.parse::<u64>().ok());
        let crc = parts.next().and_then(|c| u32::from_str_radix(c, 16).ok());
        Ok(match (held, crc) {
            (Some(h), Some(c)) if crc32fast::hash(&h.to_le_bytes()) == c => h,
            _ => 0,
        })
    }

    fn verify(&self, key: &ContentKey, part: &Path) -> io::Result<bool> {
        let mut hasher = key.algorithm.hasher();
        io::copy(
            &mut BufReader::with_capacity(READ_PIECE, File::open(part)?),
            &mut hasher,
        )?;
        Ok(hasher.finish() == key.hash)
    }

    fn discard(&self, key: &ContentKey) {
        let _ = fs::remove_file(self.partial_path(key, ""));
        let _ = fs::remove_file(self.partial_path(key, ".held"));
    }
}

/// Makes a rename or a new entry in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl BlobStore for FsBlobStore {
    fn held(&self, key: &ContentKey) -> io::Result<Held> {
        let _guard = self.stripe(key).lock();
        self.held_unlocked(key)
    }

    fn append(
        &self,
        key: &ContentKey,
        offset: u64,
        size: u64,
        bytes: &[u8],
    ) -> Result<Held, BlobError> {
        let _guard = self.stripe(key).lock();
        let held = match self.held_unlocked(key)? {
            Held::Complete => return Ok(Held::Complete),
            Held::Partial(n) => n,
        };
        if offset != held {
            return Err(BlobError::OffsetMismatch { held });
        }
        let end = held + bytes.len() as u64;
        if end > size {
            return Err(BlobError::TooLong);
        }
        let part = self.partial_path(key, "");
        let mut f = crate::private::file_options()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)?;
        // Whatever lies past the durable mark was never confirmed: cut it off.
        f.set_len(held)?;
        f.seek(SeekFrom::Start(held))?;
        f.write_all(bytes)?;
        f.sync_data()?;
        drop(f);
        if end < size {
            self.write_held(key, end)?;
            return Ok(Held::Partial(end));
        }
        if !self.verify(key, &part)? {
            self.discard(key);
            return Err(BlobError::HashMismatch);
        }
        let object = self.object_path(key);
        let dir = object.parent().unwrap_or(&self.root).to_owned();
        if !dir.exists() {
            // New directories become durable through their parents (once per directory).
            crate::private::dir(&dir)?;
            for parent in dir.ancestors().skip(1).take(2) {
                sync_dir(parent)?;
            }
        }
        fs::rename(&part, &object)?;
        sync_dir(&dir)?;
        let _ = fs::remove_file(self.partial_path(key, ".held"));
        Ok(Held::Complete)
    }

    fn read(&self, key: &ContentKey) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.object_path(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use std::fs::OpenOptions;

    fn key_of(bytes: &[u8]) -> ContentKey {
        ContentKey::new(HashAlgorithm::Sha256, &HashAlgorithm::Sha256.digest(bytes)).unwrap()
    }

    #[test]
    fn appends_resume_and_complete_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let key = key_of(&content);
        assert_eq!(store.held(&key).unwrap(), Held::Partial(0));
        assert_eq!(
            store.append(&key, 0, 100_000, &content[..40_000]).unwrap(),
            Held::Partial(40_000)
        );
        // A chunk at another offset is refused and changes nothing.
        assert!(matches!(
            store.append(&key, 30_000, 100_000, &content[30_000..50_000]),
            Err(BlobError::OffsetMismatch { held: 40_000 })
        ));
        assert!(matches!(
            store.append(&key, 40_000, 100_000, &content[40_000..]),
            Ok(Held::Complete)
        ));
        assert_eq!(store.read(&key).unwrap().unwrap(), content);
        // Complete: more bytes are ignored, the content stays.
        assert_eq!(
            store.append(&key, 0, 100_000, b"x").unwrap(),
            Held::Complete
        );
        assert_eq!(store.read(&key).unwrap().unwrap(), content);
    }

    #[test]
    fn a_content_that_does_not_match_its_hash_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let content = vec![7u8; 10_000];
        let key = key_of(&content);
        let mut forged = content.clone();
        forged[5_000] = 8;
        store.append(&key, 0, 10_000, &forged[..5_000]).unwrap();
        assert!(matches!(
            store.append(&key, 5_000, 10_000, &forged[5_000..]),
            Err(BlobError::HashMismatch)
        ));
        assert_eq!(store.held(&key).unwrap(), Held::Partial(0));
        assert!(store.read(&key).unwrap().is_none());
        assert!(matches!(
            store.append(&key, 0, 10_000, &content[..20]),
            Ok(Held::Partial(20))
        ));
        assert!(matches!(
            store.append(&key, 20, 10_000, &content),
            Err(BlobError::TooLong)
        ));
    }

    #[test]
    fn bytes_past_the_durable_mark_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let content: Vec<u8> = (0..9_000u32).map(|i| (i % 7) as u8).collect();
        let key = key_of(&content);
        store.append(&key, 0, 9_000, &content[..3_000]).unwrap();
        // A crash after writing more bytes but before moving the mark.
        let mut f = OpenOptions::new()
            .append(true)
            .open(store.partial_path(&key, ""))
            .unwrap();
        f.write_all(&[0xFF; 2_000]).unwrap();
        drop(f);
        assert_eq!(store.held(&key).unwrap(), Held::Partial(3_000));
        assert_eq!(
            store.append(&key, 3_000, 9_000, &content[3_000..]).unwrap(),
            Held::Complete
        );
        assert_eq!(store.read(&key).unwrap().unwrap(), content);
    }

    #[test]
    fn a_mark_that_outlived_its_file_claims_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let content = vec![3u8; 8_000];
        let key = key_of(&content);
        store.append(&key, 0, 8_000, &content[..5_000]).unwrap();
        fs::remove_file(store.partial_path(&key, "")).unwrap();
        assert_eq!(store.held(&key).unwrap(), Held::Partial(0));
        assert!(matches!(
            store.append(&key, 0, 8_000, &content),
            Ok(Held::Complete)
        ));
    }

    #[test]
    fn names_must_be_hex_digests() {
        assert!(ContentKey::new(HashAlgorithm::Sha256, "../../etc/passwd").is_none());
        assert!(ContentKey::new(HashAlgorithm::Sm3, &"A".repeat(64)).is_none());
        assert!(ContentKey::new(HashAlgorithm::Sm3, &"a".repeat(64)).is_some());
    }
}
