//! Attachment contents, content-addressed: the bytes of a photo live once, under their hash,
//! however many visits and devices name them. [`BlobStore`] is the seam where an object store
//! can replace [`FsBlobStore`], the data-directory implementation; who may read or write a
//! content (area checks) is the [`crate::Storage`]'s business, not this one's.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use zoufang_protocol::audit::{HashAlgorithm, is_hex_digest};

use crate::at_rest::{ObjectCipher, PARTIAL_HEADER};

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
    /// Is the content held whole and verified?
    fn complete(&self, key: &ContentKey) -> io::Result<bool>;
    /// Bytes held, durable, of `uploader`'s upload of a content (0: none). Each uploader has its
    /// own: a device never learns from the offsets that another one sent the same content.
    fn partial(&self, key: &ContentKey, uploader: &str) -> io::Result<u64>;
    /// Appends `bytes` at `offset` of `uploader`'s upload, which must be exactly what is held.
    /// Reaching `size`, the upload is verified against the hash and becomes the content (or is
    /// discarded); an upload of a content already complete is verified the same way, so
    /// [`Held::Complete`] always means this uploader sent every byte. Durable before it returns.
    fn append(
        &self,
        key: &ContentKey,
        uploader: &str,
        offset: u64,
        size: u64,
        bytes: &[u8],
    ) -> Result<Held, BlobError>;
    /// A complete content's bytes.
    fn read(&self, key: &ContentKey) -> io::Result<Option<Vec<u8>>>;
}

/// Contents as files under a directory: `objects/{algorithm}/{first two hex}/{hash}` when
/// complete; `partial/{algorithm}-{hash}-{uploader}` while uploading, with the durable length
/// in a `.held` file beside it (bytes past it, written before a crash, are cut off at the next
/// append). With an [`ObjectCipher`], objects are sealed (AEAD) and partial uploads encrypted
/// (CTR after a header), so no photo lies on the disk in clear.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    cipher: Option<Arc<ObjectCipher>>,
    /// Appends to one content are serialised; different contents proceed in parallel.
    stripes: Vec<Mutex<()>>,
    fallback: Mutex<()>,
}

const STRIPES: usize = 64;
/// Bytes read per piece while verifying a content.
const READ_PIECE: usize = 256 * 1024;

/// An uploader's name in a file name: short, fixed charset, not the device id itself.
fn uploader_tag(uploader: &str) -> String {
    HashAlgorithm::Sha256
        .digest(uploader.as_bytes())
        .get(..16)
        .unwrap_or_default()
        .to_owned()
}

impl FsBlobStore {
    /// Contents under `root`, sealed with `cipher` when there is one.
    pub fn open(root: &Path, cipher: Option<Arc<ObjectCipher>>) -> io::Result<Self> {
        crate::private::dir(root)?;
        crate::private::dir(&root.join("objects"))?;
        crate::private::dir(&root.join("partial"))?;
        Ok(Self {
            root: root.to_owned(),
            cipher,
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

    fn partial_path(&self, key: &ContentKey, uploader: &str, suffix: &str) -> PathBuf {
        self.root.join("partial").join(format!(
            "{}-{}-{}{suffix}",
            key.algorithm.as_str(),
            key.hash,
            uploader_tag(uploader)
        ))
    }

    /// The object's name as its seal covers it.
    fn sealed_name(key: &ContentKey) -> String {
        format!("{}:{}", key.algorithm.as_str(), key.hash)
    }

    /// Bytes before the first content byte of a partial upload.
    fn header_len(&self) -> u64 {
        if self.cipher.is_some() {
            PARTIAL_HEADER as u64
        } else {
            0
        }
    }

    /// The partial upload's header, if it is one of this key's (else it is not ours to use).
    fn partial_header(&self, part: &Path) -> io::Result<Option<Vec<u8>>> {
        let Some(cipher) = &self.cipher else {
            return Ok(Some(Vec::new()));
        };
        let mut header = vec![0u8; PARTIAL_HEADER];
        match File::open(part).and_then(|mut f| f.read_exact(&mut header)) {
            Ok(()) if cipher.owns_partial(&header) => Ok(Some(header)),
            Ok(()) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn partial_unlocked(&self, key: &ContentKey, uploader: &str) -> io::Result<u64> {
        // Never more than the file holds: after a crash the mark may have survived a new file's
        // directory entry.
        let part = self.partial_path(key, uploader, "");
        let on_disk = match fs::metadata(&part) {
            Ok(m) => m.len().saturating_sub(self.header_len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        if self.partial_header(&part)?.is_none() {
            return Ok(0);
        }
        Ok(self.read_held(key, uploader)?.min(on_disk))
    }

    /// Moves the mark after the bytes up to it were made durable. The mark itself is not
    /// synced (one fsync per chunk, not two): a crash may lose it or leave it unreadable, and the
    /// mark falls back to an earlier length, or 0 — the device then re-sends from there. It can
    /// never claim bytes that are not on disk.
    fn write_held(&self, key: &ContentKey, uploader: &str, held: u64) -> io::Result<()> {
        let tmp = self.partial_path(key, uploader, ".held.tmp");
        let mut f = crate::private::file_options()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(format!("{held} {:08x}", crc32fast::hash(&held.to_le_bytes())).as_bytes())?;
        drop(f);
        fs::rename(tmp, self.partial_path(key, uploader, ".held"))
    }

    fn read_held(&self, key: &ContentKey, uploader: &str) -> io::Result<u64> {
        let text = match fs::read_to_string(self.partial_path(key, uploader, ".held")) {
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

    fn discard(&self, key: &ContentKey, uploader: &str) {
        let _ = fs::remove_file(self.partial_path(key, uploader, ""));
        let _ = fs::remove_file(self.partial_path(key, uploader, ".held"));
    }

    /// Writes `bytes` at content offset `held` of the upload (its header first, on a new one).
    fn write_at(
        &self,
        key: &ContentKey,
        uploader: &str,
        held: u64,
        bytes: &[u8],
    ) -> io::Result<()> {
        let part = self.partial_path(key, uploader, "");
        let header = match (&self.cipher, held) {
            (Some(cipher), 0) => {
                let header = cipher.partial_header()?.to_vec();
                let mut f = crate::private::file_options()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&part)?;
                f.write_all(&header)?;
                header
            }
            _ => self.partial_header(&part)?.unwrap_or_default(),
        };
        let mut f = crate::private::file_options()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)?;
        // Whatever lies past the durable mark was never confirmed: cut it off.
        let start = self.header_len() + held;
        f.set_len(start)?;
        f.seek(SeekFrom::Start(start))?;
        match &self.cipher {
            Some(cipher) => {
                let mut sealed = bytes.to_vec();
                cipher.stream(&header, held, &mut sealed)?;
                f.write_all(&sealed)?;
            }
            None => f.write_all(bytes)?,
        }
        f.sync_data()
    }

    /// Verifies a finished upload against the hash and makes it the content (sealed, with a
    /// cipher). `false`: it did not match.
    fn finish(&self, key: &ContentKey, uploader: &str) -> io::Result<bool> {
        let part = self.partial_path(key, uploader, "");
        let mut hasher = key.algorithm.hasher();
        let sealed = match &self.cipher {
            None => {
                io::copy(
                    &mut BufReader::with_capacity(READ_PIECE, File::open(&part)?),
                    &mut hasher,
                )?;
                None
            }
            Some(cipher) => {
                let raw = fs::read(&part)?;
                let (header, body) = raw.split_at(PARTIAL_HEADER.min(raw.len()));
                let mut plain = body.to_vec();
                cipher.stream(header, 0, &mut plain)?;
                hasher.update(&plain);
                Some(cipher.seal(&Self::sealed_name(key), &plain)?)
            }
        };
        if hasher.finish() != key.hash {
            return Ok(false);
        }
        let object = self.object_path(key);
        if object.exists() {
            // Another upload made it first: these bytes proved the same content.
            self.discard(key, uploader);
            return Ok(true);
        }
        let dir = object.parent().unwrap_or(&self.root).to_owned();
        if !dir.exists() {
            // New directories become durable through their parents (once per directory).
            crate::private::dir(&dir)?;
            for parent in dir.ancestors().skip(1).take(2) {
                sync_dir(parent)?;
            }
        }
        match sealed {
            None => fs::rename(&part, &object)?,
            Some(sealed) => {
                let tmp = self.partial_path(key, uploader, ".sealed");
                write_durably(&tmp, &sealed)?;
                fs::rename(&tmp, &object)?;
            }
        }
        sync_dir(&dir)?;
        self.discard(key, uploader);
        Ok(true)
    }

    /// Re-seals every object sealed under `old` with this store's cipher (a key rotation). An
    /// object already under the new key is left alone, so an interrupted rotation resumes;
    /// partial uploads under the old key are dropped (their devices send them again).
    pub fn reseal_from(&self, old: Option<&ObjectCipher>) -> io::Result<u64> {
        let mut done = 0;
        for path in files_under(&self.root.join("objects"))? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let alg = path
                .parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .and_then(HashAlgorithm::parse);
            let Some(key) = alg.and_then(|a| ContentKey::new(a, name)) else {
                continue;
            };
            let bytes = fs::read(&path)?;
            if self.cipher.as_ref().is_some_and(|c| c.owns(&bytes)) {
                continue;
            }
            let plain = match old {
                Some(old) => old.open(&Self::sealed_name(&key), &bytes)?,
                None => bytes,
            };
            let Some(cipher) = &self.cipher else {
                continue;
            };
            let tmp = path.with_extension("reseal");
            write_durably(&tmp, &cipher.seal(&Self::sealed_name(&key), &plain)?)?;
            fs::rename(&tmp, &path)?;
            sync_dir(path.parent().unwrap_or(&self.root))?;
            done += 1;
        }
        for path in files_under(&self.root.join("partial"))? {
            let header = self.partial_header(&path)?;
            if header.is_none() || path.extension().is_some_and(|e| e == "held") {
                fs::remove_file(&path)?;
            }
        }
        Ok(done)
    }
}

fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = crate::private::file_options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes a rename or a new entry in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl BlobStore for FsBlobStore {
    fn complete(&self, key: &ContentKey) -> io::Result<bool> {
        Ok(self.object_path(key).exists())
    }

    fn partial(&self, key: &ContentKey, uploader: &str) -> io::Result<u64> {
        let _guard = self.stripe(key).lock();
        self.partial_unlocked(key, uploader)
    }

    fn append(
        &self,
        key: &ContentKey,
        uploader: &str,
        offset: u64,
        size: u64,
        bytes: &[u8],
    ) -> Result<Held, BlobError> {
        let _guard = self.stripe(key).lock();
        let held = self.partial_unlocked(key, uploader)?;
        if offset != held {
            return Err(BlobError::OffsetMismatch { held });
        }
        let end = held + bytes.len() as u64;
        if end > size {
            return Err(BlobError::TooLong);
        }
        self.write_at(key, uploader, held, bytes)?;
        if end < size {
            self.write_held(key, uploader, end)?;
            return Ok(Held::Partial(end));
        }
        if !self.finish(key, uploader)? {
            self.discard(key, uploader);
            return Err(BlobError::HashMismatch);
        }
        Ok(Held::Complete)
    }

    fn read(&self, key: &ContentKey) -> io::Result<Option<Vec<u8>>> {
        let bytes = match fs::read(self.object_path(key)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match &self.cipher {
            Some(cipher) => cipher.open(&Self::sealed_name(key), &bytes).map(Some),
            None => Ok(Some(bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::at_rest::{CipherSuite, ServerKey};
    use std::fs::OpenOptions;

    const DEVICE: &str = "device-1";

    fn key_of(bytes: &[u8]) -> ContentKey {
        ContentKey::new(HashAlgorithm::Sha256, &HashAlgorithm::Sha256.digest(bytes)).unwrap()
    }

    /// Each test runs on a plaintext store and on one of each suite.
    fn stores(dir: &Path) -> Vec<FsBlobStore> {
        let sealed = |suite, name: &str| {
            let key = ServerKey::parse(&"5a".repeat(32), suite).unwrap();
            FsBlobStore::open(&dir.join(name), Some(Arc::new(key.objects()))).unwrap()
        };
        vec![
            FsBlobStore::open(&dir.join("plain"), None).unwrap(),
            sealed(CipherSuite::Aes256, "aes"),
            sealed(CipherSuite::Sm4, "sm4"),
        ]
    }

    #[test]
    fn appends_resume_and_complete_verified() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let content: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
            let key = key_of(&content);
            assert_eq!(store.partial(&key, DEVICE).unwrap(), 0);
            assert_eq!(
                store
                    .append(&key, DEVICE, 0, 100_000, &content[..40_000])
                    .unwrap(),
                Held::Partial(40_000)
            );
            // A chunk at another offset is refused and changes nothing.
            assert!(matches!(
                store.append(&key, DEVICE, 30_000, 100_000, &content[30_000..50_000]),
                Err(BlobError::OffsetMismatch { held: 40_000 })
            ));
            assert!(matches!(
                store.append(&key, DEVICE, 40_000, 100_000, &content[40_000..]),
                Ok(Held::Complete)
            ));
            assert!(store.complete(&key).unwrap());
            assert_eq!(store.read(&key).unwrap().unwrap(), content);
        }
    }

    #[test]
    fn each_uploader_has_its_own_upload_and_must_send_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let content: Vec<u8> = (0..30_000u32).map(|i| (i % 199) as u8).collect();
            let key = key_of(&content);
            store
                .append(&key, DEVICE, 0, 30_000, &content[..10_000])
                .unwrap();
            // Another device sees nothing of the first one's upload.
            assert_eq!(store.partial(&key, "device-2").unwrap(), 0);
            store
                .append(&key, DEVICE, 10_000, 30_000, &content[10_000..])
                .unwrap();
            // The content is complete, yet a second uploader is not told so from one byte: it
            // sends them all, and they are checked.
            assert_eq!(
                store
                    .append(&key, "device-2", 0, 30_000, &content[..1])
                    .unwrap(),
                Held::Partial(1)
            );
            let mut forged = content.clone();
            forged[20_000] ^= 1;
            assert!(matches!(
                store.append(&key, "device-2", 1, 30_000, &forged[1..]),
                Err(BlobError::HashMismatch)
            ));
            assert_eq!(
                store.append(&key, "device-2", 0, 30_000, &content).unwrap(),
                Held::Complete
            );
            assert_eq!(store.read(&key).unwrap().unwrap(), content);
        }
    }

    #[test]
    fn a_content_that_does_not_match_its_hash_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let content = vec![7u8; 10_000];
            let key = key_of(&content);
            let mut forged = content.clone();
            forged[5_000] = 8;
            store
                .append(&key, DEVICE, 0, 10_000, &forged[..5_000])
                .unwrap();
            assert!(matches!(
                store.append(&key, DEVICE, 5_000, 10_000, &forged[5_000..]),
                Err(BlobError::HashMismatch)
            ));
            assert_eq!(store.partial(&key, DEVICE).unwrap(), 0);
            assert!(store.read(&key).unwrap().is_none());
            assert!(matches!(
                store.append(&key, DEVICE, 0, 10_000, &content[..20]),
                Ok(Held::Partial(20))
            ));
            assert!(matches!(
                store.append(&key, DEVICE, 20, 10_000, &content),
                Err(BlobError::TooLong)
            ));
        }
    }

    #[test]
    fn bytes_past_the_durable_mark_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let content: Vec<u8> = (0..9_000u32).map(|i| (i % 7) as u8).collect();
            let key = key_of(&content);
            store
                .append(&key, DEVICE, 0, 9_000, &content[..3_000])
                .unwrap();
            // A crash after writing more bytes but before moving the mark.
            let mut f = OpenOptions::new()
                .append(true)
                .open(store.partial_path(&key, DEVICE, ""))
                .unwrap();
            f.write_all(&[0xFF; 2_000]).unwrap();
            drop(f);
            assert_eq!(store.partial(&key, DEVICE).unwrap(), 3_000);
            assert_eq!(
                store
                    .append(&key, DEVICE, 3_000, 9_000, &content[3_000..])
                    .unwrap(),
                Held::Complete
            );
            assert_eq!(store.read(&key).unwrap().unwrap(), content);
        }
    }

    #[test]
    fn a_mark_that_outlived_its_file_claims_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let content = vec![3u8; 8_000];
            let key = key_of(&content);
            store
                .append(&key, DEVICE, 0, 8_000, &content[..5_000])
                .unwrap();
            fs::remove_file(store.partial_path(&key, DEVICE, "")).unwrap();
            assert_eq!(store.partial(&key, DEVICE).unwrap(), 0);
            assert!(matches!(
                store.append(&key, DEVICE, 0, 8_000, &content),
                Ok(Held::Complete)
            ));
        }
    }

    #[test]
    fn sealed_objects_and_uploads_hold_no_byte_in_clear_and_reseal_under_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = ServerKey::parse(&"11".repeat(32), CipherSuite::Sm4).unwrap();
        let new = ServerKey::parse(&"22".repeat(32), CipherSuite::Sm4).unwrap();
        let root = dir.path().join("a");
        let store = FsBlobStore::open(&root, Some(Arc::new(old.objects()))).unwrap();
        let photo = b"JFIF household photo, ID 513401199001011234 ".repeat(200);
        let key = key_of(&photo);
        store
            .append(&key, DEVICE, 0, photo.len() as u64, &photo[..100])
            .unwrap();
        let other = b"JFIF second photo ".repeat(100);
        let other_key = key_of(&other);
        store
            .append(&other_key, DEVICE, 0, other.len() as u64, &other)
            .unwrap();
        for path in files_under(&root).unwrap() {
            let bytes = fs::read(&path).unwrap();
            assert!(!bytes.windows(4).any(|w| w == b"JFIF"), "{path:?}");
        }
        let rotated = FsBlobStore::open(&root, Some(Arc::new(new.objects()))).unwrap();
        assert!(rotated.read(&other_key).is_err());
        assert_eq!(rotated.reseal_from(Some(&old.objects())).unwrap(), 1);
        assert_eq!(rotated.read(&other_key).unwrap().unwrap(), other);
        // Resuming finds nothing left to do; the old key opens nothing any more.
        assert_eq!(rotated.reseal_from(Some(&old.objects())).unwrap(), 0);
        assert!(store.read(&other_key).is_err());
        // The upload begun under the old key is dropped: its device starts it again.
        assert_eq!(rotated.partial(&key, DEVICE).unwrap(), 0);
    }

    #[test]
    fn names_must_be_hex_digests() {
        assert!(ContentKey::new(HashAlgorithm::Sha256, "../../etc/passwd").is_none());
        assert!(ContentKey::new(HashAlgorithm::Sm3, &"A".repeat(64)).is_none());
        assert!(ContentKey::new(HashAlgorithm::Sm3, &"a".repeat(64)).is_some());
    }
}
