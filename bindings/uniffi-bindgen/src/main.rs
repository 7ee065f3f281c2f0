//! The uniffi bindgen at the workspace's uniffi version (library mode):
//! `cargo run -p uniffi-bindgen -- generate target/debug/libzoufang_ffi.so --language kotlin --out-dir OUT`.
fn main() {
    uniffi::uniffi_bindgen_main()
}
