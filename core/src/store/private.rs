//! The store file is owner-only before SQLite opens it (SQLite gives its WAL and SHM the
//! database's mode), whatever the umask: it holds personal data even when encrypted.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub(crate) fn sqlite_file(path: &Path) -> io::Result<()> {
    if !path.exists() {
        // An empty file is an empty database to SQLite (and to SQLCipher before its key).
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let p = Path::new(&name);
        if p.exists() {
            fs::set_permissions(p, Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}
