//! Owner-only files and directories. The server's data directory holds personal data (the
//! database, its WAL, photos of homes and ID cards): every file it creates is 0600 and every
//! directory 0700, whatever the umask of the process that started it.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `path` (and its missing parents) owner-only, and makes an existing one so.
pub(crate) fn dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    fs::set_permissions(path, Permissions::from_mode(0o700))
}

/// Options that create a file owner-only.
pub(crate) fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(0o600);
    o
}

/// A SQLite database file, owner-only before SQLite opens it: SQLite gives its WAL and SHM the
/// database's mode. An existing file (and its WAL and SHM) is made owner-only too.
pub(crate) fn sqlite_file(path: &Path) -> io::Result<()> {
    if !path.exists() {
        // An empty file is an empty database to SQLite.
        file_options().write(true).create_new(true).open(path)?;
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
