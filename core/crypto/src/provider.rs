//! The C side: SQLCipher's provider struct, the callbacks of both suites, the default provider
//! SQLCipher asks for at its initialisation, and the default-provider swap for SM4 stores.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use crate::ProviderError;
use crate::primitives::{self, Digest};

const SQLITE_OK: c_int = 0;
const SQLITE_ERROR: c_int = 1;
const BLOCK: c_int = 16;
/// SQLCipher's `CIPHER_ENCRYPT`.
const ENCRYPT: c_int = 1;

/// `struct sqlcipher_provider` of SQLCipher 4.14 (the one bundled by libsqlite3-sys 0.38),
/// field for field. A layout change upstream is caught by the tests, which open, write and
/// reopen stores of both suites and read stores written by the OpenSSL provider.
#[repr(C)]
pub(crate) struct SqlcipherProvider {
    init: Option<unsafe extern "C" fn() -> c_int>,
    shutdown: Option<unsafe extern "C" fn()>,
    get_provider_name: Option<unsafe extern "C" fn(*mut c_void) -> *const c_char>,
    add_random: Option<unsafe extern "C" fn(*mut c_void, *const c_void, c_int) -> c_int>,
    random: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int>,
    hmac: Option<HmacFn>,
    kdf: Option<KdfFn>,
    cipher: Option<CipherFn>,
    get_cipher: Option<unsafe extern "C" fn(*mut c_void) -> *const c_char>,
    get_key_sz: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    get_iv_sz: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    get_block_sz: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    get_hmac_sz: Option<unsafe extern "C" fn(*mut c_void, c_int) -> c_int>,
    ctx_init: Option<unsafe extern "C" fn(*mut *mut c_void) -> c_int>,
    ctx_free: Option<unsafe extern "C" fn(*mut *mut c_void) -> c_int>,
    fips_status: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    get_provider_version: Option<unsafe extern "C" fn(*mut c_void) -> *const c_char>,
    next: *mut SqlcipherProvider,
}

type HmacFn = unsafe extern "C" fn(
    *mut c_void,
    c_int,
    *const u8,
    c_int,
    *const u8,
    c_int,
    *const u8,
    c_int,
    *mut u8,
) -> c_int;
type KdfFn = unsafe extern "C" fn(
    *mut c_void,
    c_int,
    *const u8,
    c_int,
    *const u8,
    c_int,
    c_int,
    c_int,
    *mut u8,
) -> c_int;
type CipherFn = unsafe extern "C" fn(
    *mut c_void,
    c_int,
    *const u8,
    c_int,
    *const u8,
    *const u8,
    c_int,
    *mut u8,
) -> c_int;

unsafe extern "C" {
    fn sqlcipher_register_provider(p: *mut SqlcipherProvider) -> c_int;
    fn sqlcipher_get_provider() -> *mut SqlcipherProvider;
    fn sqlcipher_malloc(size: u64) -> *mut c_void;
}

/// What differs between the two suites' providers.
trait Suite {
    const NAME: &'static CStr;
    const CIPHER: &'static CStr;
    const KEY: c_int;
    /// The page MAC and KDF digest, given the algorithm the store names.
    fn digest(algorithm: c_int) -> Option<Digest>;
    fn page(encrypt: bool, key: &[u8], iv: &[u8], data: &mut [u8]) -> bool;
}

/// SQLCipher's standard suite: AES-256-CBC pages, the HMAC and PBKDF2 digest the store names
/// (stores written by SQLCipher's OpenSSL provider open unchanged).
struct Aes;

impl Suite for Aes {
    const NAME: &'static CStr = c"zoufang-aes";
    const CIPHER: &'static CStr = c"aes-256-cbc";
    const KEY: c_int = 32;
    fn digest(algorithm: c_int) -> Option<Digest> {
        Digest::of_sqlcipher(algorithm)
    }
    fn page(encrypt: bool, key: &[u8], iv: &[u8], data: &mut [u8]) -> bool {
        primitives::aes256_cbc(encrypt, key, iv, data)
    }
}

/// The national suite: SM4-CTR pages, HMAC-SM3 and PBKDF2-HMAC-SM3 whatever the store names.
/// CTR, not CBC: its blocks are independent, so a parallel SM4 serves writes as well as reads.
/// SQLCipher draws a fresh random IV for every page write and MACs the ciphertext with the IV
/// and page number (encrypt-then-MAC), so no counter block repeats under a key and no page can
/// be altered or moved unnoticed.
struct Sm;

impl Suite for Sm {
    const NAME: &'static CStr = c"zoufang-sm";
    const CIPHER: &'static CStr = c"sm4-ctr";
    const KEY: c_int = 16;
    fn digest(_: c_int) -> Option<Digest> {
        Some(Digest::Sm3)
    }
    fn page(_encrypt: bool, key: &[u8], iv: &[u8], data: &mut [u8]) -> bool {
        primitives::ctr(crate::CipherSuite::Sm4, key, iv, 0, data)
    }
}

const VERSION: &CStr = c"2";

unsafe extern "C" fn name<S: Suite>(_: *mut c_void) -> *const c_char {
    S::NAME.as_ptr()
}
unsafe extern "C" fn version(_: *mut c_void) -> *const c_char {
    VERSION.as_ptr()
}
unsafe extern "C" fn cipher_name<S: Suite>(_: *mut c_void) -> *const c_char {
    S::CIPHER.as_ptr()
}
unsafe extern "C" fn add_random(_: *mut c_void, _: *const c_void, _: c_int) -> c_int {
    SQLITE_OK
}
unsafe extern "C" fn key_size<S: Suite>(_: *mut c_void) -> c_int {
    S::KEY
}
unsafe extern "C" fn block_size(_: *mut c_void) -> c_int {
    BLOCK
}
unsafe extern "C" fn mac_size<S: Suite>(_: *mut c_void, algorithm: c_int) -> c_int {
    S::digest(algorithm).map_or(0, |d| d.len() as c_int)
}
unsafe extern "C" fn ctx_init(ctx: *mut *mut c_void) -> c_int {
    // The providers keep no per-connection state.
    if !ctx.is_null() {
        // SAFETY: SQLCipher passes the address of its context pointer.
        unsafe { *ctx = std::ptr::null_mut() };
    }
    SQLITE_OK
}
unsafe extern "C" fn ctx_free(_: *mut *mut c_void) -> c_int {
    SQLITE_OK
}
unsafe extern "C" fn fips_status(_: *mut c_void) -> c_int {
    0
}

/// A byte slice from SQLCipher's pointer and length; empty for a null pointer.
///
/// SAFETY: `ptr` must be null or valid for `len` bytes for the duration of the call.
unsafe fn bytes<'a>(ptr: *const u8, len: c_int) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    if ptr.is_null() {
        return (len == 0).then_some(&[]);
    }
    // SAFETY: guaranteed by the caller (SQLCipher's buffers of the stated size).
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// SAFETY: as [`bytes`], for writing.
unsafe fn bytes_mut<'a>(ptr: *mut u8, len: c_int) -> Option<&'a mut [u8]> {
    let len = usize::try_from(len).ok()?;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

fn status(ok: bool) -> c_int {
    if ok { SQLITE_OK } else { SQLITE_ERROR }
}

unsafe extern "C" fn random(_: *mut c_void, buffer: *mut c_void, length: c_int) -> c_int {
    // SAFETY: SQLCipher passes a buffer of `length` bytes.
    match unsafe { bytes_mut(buffer.cast(), length) } {
        Some(out) => status(primitives::random_bytes(out)),
        None => SQLITE_ERROR,
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn hmac<S: Suite>(
    _: *mut c_void,
    algorithm: c_int,
    key: *const u8,
    key_sz: c_int,
    input: *const u8,
    input_sz: c_int,
    input2: *const u8,
    input2_sz: c_int,
    out: *mut u8,
) -> c_int {
    let Some(digest) = S::digest(algorithm) else {
        return SQLITE_ERROR;
    };
    if input.is_null() {
        return SQLITE_ERROR;
    }
    // SAFETY: SQLCipher's buffers of the stated sizes; `out` holds get_hmac_sz bytes.
    let (key, a, b, out) = unsafe {
        (
            bytes(key, key_sz),
            bytes(input, input_sz),
            bytes(input2, input2_sz),
            bytes_mut(out, digest.len() as c_int),
        )
    };
    let (Some(key), Some(a), Some(b), Some(out)) = (key, a, b, out) else {
        return SQLITE_ERROR;
    };
    status(primitives::hmac(digest, key, &[a, b], out))
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn kdf<S: Suite>(
    _: *mut c_void,
    algorithm: c_int,
    pass: *const u8,
    pass_sz: c_int,
    salt: *const u8,
    salt_sz: c_int,
    workfactor: c_int,
    key_sz: c_int,
    key: *mut u8,
) -> c_int {
    // SAFETY: SQLCipher's buffers of the stated sizes.
    let (pass, salt, out) = unsafe {
        (
            bytes(pass, pass_sz),
            bytes(salt, salt_sz),
            bytes_mut(key, key_sz),
        )
    };
    let (Some(digest), Some(pass), Some(salt), Some(out), Ok(rounds)) = (
        S::digest(algorithm),
        pass,
        salt,
        out,
        u32::try_from(workfactor),
    ) else {
        return SQLITE_ERROR;
    };
    status(primitives::pbkdf2(digest, pass, salt, rounds, out))
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn cipher<S: Suite>(
    _: *mut c_void,
    mode: c_int,
    key: *const u8,
    key_sz: c_int,
    iv: *const u8,
    input: *const u8,
    input_sz: c_int,
    out: *mut u8,
) -> c_int {
    if key_sz != S::KEY || input_sz < 0 || input_sz % BLOCK != 0 || input.is_null() {
        return SQLITE_ERROR;
    }
    // SAFETY: `out` has room for `input_sz` bytes; `copy` tolerates overlap with `input`.
    let data = unsafe {
        std::ptr::copy(input, out, input_sz as usize);
        bytes_mut(out, input_sz)
    };
    // SAFETY: key of key_sz bytes, IV of get_iv_sz (= block) bytes.
    let (key, iv) = unsafe { (bytes(key, key_sz), bytes(iv, BLOCK)) };
    let (Some(data), Some(key), Some(iv)) = (data, key, iv) else {
        return SQLITE_ERROR;
    };
    status(S::page(mode == ENCRYPT, key, iv, data))
}

fn table<S: Suite>() -> SqlcipherProvider {
    SqlcipherProvider {
        init: None,
        shutdown: None,
        get_provider_name: Some(name::<S>),
        add_random: Some(add_random),
        random: Some(random),
        hmac: Some(hmac::<S>),
        kdf: Some(kdf::<S>),
        cipher: Some(cipher::<S>),
        get_cipher: Some(cipher_name::<S>),
        get_key_sz: Some(key_size::<S>),
        get_iv_sz: Some(block_size),
        get_block_sz: Some(block_size),
        get_hmac_sz: Some(mac_size::<S>),
        ctx_init: Some(ctx_init),
        ctx_free: Some(ctx_free),
        fips_status: Some(fips_status),
        get_provider_version: Some(version),
        next: std::ptr::null_mut(),
    }
}

/// SQLCipher's default provider, filled in when SQLCipher initialises: it is built with
/// `SQLCIPHER_CRYPTO_CUSTOM=zoufang_sqlcipher_setup` (.cargo/config.toml) and calls this with a
/// struct it allocated.
///
/// SAFETY: `p` is null or a writable `sqlcipher_provider` (SQLCipher's own allocation).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zoufang_sqlcipher_setup(p: *mut SqlcipherProvider) -> c_int {
    if p.is_null() {
        return SQLITE_ERROR;
    }
    // SAFETY: see above; `write` does not read the uninitialised struct.
    unsafe { p.write(table::<Aes>()) };
    SQLITE_OK
}

/// Keeps the setup function in every link that has this crate: SQLCipher's C code refers to it,
/// and static linkers only pull archive members that something already needs.
pub(crate) fn keep_setup() {
    std::hint::black_box(zoufang_sqlcipher_setup as *const ());
}

/// The addresses of SQLCipher's default provider and of the SM one (made once: SQLCipher links
/// providers into a list it owns and frees at shutdown).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Installed {
    default: usize,
    sm: usize,
}

/// SQLCipher's default provider, once SQLCipher is initialised. `sqlite3_initialize` returns at
/// once in a thread that arrives while another is still between SQLite's own initialisation and
/// SQLCipher's (which registers the default provider): that thread waits here.
fn default_provider() -> Result<*mut SqlcipherProvider, ProviderError> {
    // SAFETY: plain C call; it runs sqlcipher_extra_init, which registers the default provider.
    if unsafe { libsqlite3_sys::sqlite3_initialize() } != SQLITE_OK {
        return Err(ProviderError("SQLite could not be initialised".into()));
    }
    for _ in 0..5_000 {
        // SAFETY: reads SQLCipher's default-provider pointer.
        let default = unsafe { sqlcipher_get_provider() };
        if !default.is_null() {
            return Ok(default);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(ProviderError("SQLCipher has no default provider".into()))
}

pub(crate) fn installed() -> Result<Installed, ProviderError> {
    // Made once, and only on success (a failure is not remembered: the next open retries).
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    static MAKING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    if let Some(done) = INSTALLED.get() {
        return Ok(*done);
    }
    let _making = MAKING.lock();
    if let Some(done) = INSTALLED.get() {
        return Ok(*done);
    }
    let default = default_provider()?;
    // SQLCipher frees every listed provider at shutdown with its own allocator.
    // SAFETY: plain allocation call.
    let sm: *mut SqlcipherProvider =
        unsafe { sqlcipher_malloc(size_of::<SqlcipherProvider>() as u64).cast() };
    if sm.is_null() {
        return Err(ProviderError("out of memory for the SM provider".into()));
    }
    // SAFETY: `sm` is a fresh, aligned allocation of the struct's size.
    unsafe { sm.write(table::<Sm>()) };
    let made = Installed {
        default: default as usize,
        sm: sm as usize,
    };
    Ok(*INSTALLED.get_or_init(|| made))
}

/// The SM provider as SQLCipher's default until dropped (callers hold the keying lock).
pub(crate) struct SmDefault(Installed);

impl SmDefault {
    pub(crate) fn activate(installed: Installed) -> Result<Self, ProviderError> {
        // SAFETY: the provider lives for the process; SQLCipher takes its mutex.
        let rc = unsafe { sqlcipher_register_provider(installed.sm as *mut SqlcipherProvider) };
        if rc == SQLITE_OK {
            Ok(Self(installed))
        } else {
            Err(ProviderError(format!(
                "SQLCipher refused the SM provider ({rc})"
            )))
        }
    }
}

impl Drop for SmDefault {
    fn drop(&mut self) {
        // Re-registering a listed provider only moves it back to the front.
        // SAFETY: SQLCipher's default provider, still on its list.
        let _ = unsafe { sqlcipher_register_provider(self.0.default as *mut SqlcipherProvider) };
    }
}
