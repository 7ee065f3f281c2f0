//! Every file the phone's store and the server create is owner-only (0600) and every directory
//! 0700, whatever the umask: the database, its WAL and SHM, the photo objects and their
//! partial uploads. Run with a permissive umask (0002) so a default would show.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zoufang_core::media::PhotoLimits;
use zoufang_core::protocol::messages::Role;
use zoufang_tests::{Device, TestServer, noisy_jpeg, survey_with_photo};

const VILLAGE: &str = "513431104201";

/// Every file and directory below `root` whose mode lets anyone but the owner in.
fn too_open(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            let allowed = if meta.is_dir() { 0o700 } else { 0o600 };
            if mode & !allowed != 0 {
                out.push(format!("{} {mode:o}", path.display()));
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

#[test]
fn the_phones_and_the_servers_files_are_owner_only_whatever_the_umask() {
    // Process-wide, and this test binary runs this one test alone.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o002));
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[VILLAGE]);
    let (visit, _) = survey_with_photo(
        &phone.collector,
        VILLAGE,
        &noisy_jpeg(320, 240, 3),
        &PhotoLimits::default(),
    );
    let report = phone
        .collector
        .sync(&server.transport(), None, None)
        .unwrap();
    assert!(report.attachments_uploaded > 0, "{report:?} {visit}");
    rustix::process::umask(old);

    assert!(phone.path.exists());
    assert_eq!(too_open(phone.dir.path()), Vec::<String>::new());
    assert!(server.dir.path().join("attachments/objects").exists());
    assert_eq!(too_open(server.dir.path()), Vec::<String>::new());
}
