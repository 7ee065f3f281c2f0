//! libsqlite3-sys asks the linker for `libcrypto` whenever it bundles SQLCipher without
//! OpenSSL (it assumes SQLCipher's OpenSSL provider). Ours is built with a custom provider
//! (zoufang-crypto's, .cargo/config.toml) and needs nothing from it, and Android's NDK has no
//! libcrypto to give: an empty archive of that name, found first, satisfies the request. A
//! symbol that really needed OpenSSL would still fail the link, loudly.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let apple = std::env::var("CARGO_CFG_TARGET_VENDOR").is_ok_and(|v| v == "apple");
    if apple {
        // libsqlite3-sys builds SQLCipher on CommonCrypto there and links no libcrypto.
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let stub = out.join("libcrypto.a");
    // An archive with no members.
    if std::fs::write(&stub, b"!<arch>\n").is_ok() {
        println!("cargo:rustc-link-search=native={}", out.display());
    }
}
