//! The shipped library's link: relative relocations packed (DT_RELR), which took the stripped
//! x86_64 library from 8.0 to 6.5 MB (its `.rela.dyn` was 1.1 MB of pointers into its own
//! tables). Only on glibc Linux, whose loader reads them from 2.36 (Debian 12); Android's reads
//! them from API 30, so an app with an older minSdk packs with lld's
//! `--pack-dyn-relocs=android` in its own build instead (README).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
}
