//! How `serve` and `admin` find the server key, and the admin commands that make and rotate
//! one. The key comes from a file (owner-only) or `ZOUFANG_SERVER_KEY`, never from the
//! command line (it would sit in the shell history and in `ps`). Without one, the server
//! refuses to start unless told `--plaintext`, and then warns at every start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zoufang_server::at_rest::{AtRest, CipherSuite, KEY_ENV, ServerKey};

use crate::{CliResult, Failure, Out, fail};

#[derive(clap::Args, Debug, Clone)]
pub struct AtRestArgs {
    /// File holding the server key (64 hex digits, owner-only; `zoufang admin new-key` makes
    /// one). Without it, the key is read from ZOUFANG_SERVER_KEY.
    #[arg(long, env = "ZOUFANG_SERVER_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// The suite of the data at rest: aes256, or sm4 (SM4 pages with HMAC-SM3, SM4-GCM
    /// objects) for the national-crypto mode.
    #[arg(
        long,
        env = "ZOUFANG_SERVER_CIPHER",
        default_value = "aes256",
        global = true
    )]
    cipher: String,
    /// Keep the database and the photos in clear (not for real households' data).
    #[arg(long, global = true)]
    plaintext: bool,
}

pub fn suite(name: &str) -> Result<CipherSuite, Failure> {
    match name {
        "aes256" => Ok(CipherSuite::Aes256),
        "sm4" => Ok(CipherSuite::Sm4),
        _ => Err(fail("invalid_input", "--cipher is aes256 or sm4")),
    }
}

fn server_failure(e: zoufang_server::ServerError) -> Failure {
    fail(e.code(), e.to_string())
}

impl AtRestArgs {
    /// How the data directory is kept, as these arguments, the environment and the global
    /// `--plaintext` say.
    pub fn at_rest(&self, plaintext: bool) -> Result<AtRest, Failure> {
        let suite = suite(&self.cipher)?;
        let key = ServerKey::load(self.key_file.as_deref(), suite).map_err(server_failure)?;
        match (key, plaintext) {
            (Some(_), true) => Err(fail(
                "invalid_input",
                "--plaintext and a server key exclude each other",
            )),
            (Some(key), false) => Ok(AtRest::Encrypted(Arc::new(key))),
            (None, true) => {
                tracing::warn!(
                    "the server's data is kept in clear (--plaintext): households' names, ID numbers and photos are readable by anyone who can read the disk"
                );
                Ok(AtRest::Plaintext)
            }
            (None, false) => Err(fail(
                "no_server_key",
                format!(
                    "no server key: set {KEY_ENV} or give --key-file FILE (make one with `zoufang admin new-key --out FILE`), or --plaintext to keep the data in clear"
                ),
            )),
        }
    }
}

/// `admin new-key`: 32 random bytes as 64 hex digits, into an owner-only file or to stdout.
pub fn new_key(out_file: Option<&Path>, out: &Out) -> CliResult {
    let (key, text) = ServerKey::generate(CipherSuite::Aes256).map_err(server_failure)?;
    match out_file {
        Some(path) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail("io", format!("cannot create the key file: {e}")))?;
            f.write_all(format!("{text}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| fail("io", format!("cannot write the key file: {e}")))?;
            out.emit(
                &serde_json::json!({"key_file": path, "key_id": key.id()}),
                || {
                    format!(
                        "a new server key (id {}) is in {}",
                        key.id(),
                        path.display()
                    )
                },
            )
        }
        None => out.emit(&serde_json::json!({"key": text}), || text.clone()),
    }
}

/// `admin rotate-key`: re-encrypts the stopped server's data under the key in `new_key_file`
/// (from the current key, or from clear with --plaintext).
pub fn rotate_key(
    dir: &Path,
    from: &AtRest,
    new_key_file: &Path,
    cipher: &str,
    out: &Out,
) -> CliResult {
    let key = ServerKey::load(Some(new_key_file), suite(cipher)?)
        .map_err(server_failure)?
        .ok_or_else(|| fail("no_server_key", "the new key file holds no key"))?;
    let to = AtRest::Encrypted(Arc::new(key));
    let done = zoufang_server::rotation::rotate(dir, from, &to).map_err(server_failure)?;
    out.emit(&done, || {
        format!(
            "re-encrypted under key {}: {} attachment objects, database {}; give the new key to every node",
            done.key_id,
            done.objects_resealed,
            if done.database_reencrypted { "too" } else { "on PostgreSQL (not ours)" }
        )
    })
}

/// A fresh random key, for the servers the demo and the benchmarks run (as a deployment
/// would: encrypted).
pub fn ephemeral(suite: CipherSuite) -> Result<AtRest, Failure> {
    let (key, _) = ServerKey::generate(suite).map_err(server_failure)?;
    Ok(AtRest::Encrypted(Arc::new(key)))
}
