//! Writes a throwaway certificate authority and a server certificate for `localhost` and
//! `127.0.0.1` into a directory: `ca.pem` (for clients to trust), `cert.pem` and `key.pem`
//! (for `wsrelay-server --tls-cert cert.pem --tls-key key.pem`). For trying TLS locally and for
//! the TLS tests of `cargo xtask test`; never for production.
//!
//! ```sh
//! cargo run -p wsrelay-server --example self_signed -- target/tls
//! ```

#[path = "../tests/common/certs.rs"]
mod certs;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: self_signed DIR");
        return ExitCode::from(2);
    };
    let written = certs::test_certificates()
        .map_err(|error| error.to_string())
        .and_then(|certs| {
            std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
            for (name, pem, private) in [
                ("ca.pem", &certs.ca_pem, false),
                ("cert.pem", &certs.cert_pem, false),
                ("key.pem", &certs.key_pem, true),
            ] {
                write(&dir.join(name), pem.as_bytes(), private)
                    .map_err(|error| format!("{name}: {error}"))?;
            }
            Ok(())
        });
    match written {
        Ok(()) => {
            println!("{}: ca.pem cert.pem key.pem", dir.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("self_signed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `contents` to `path`; a `private` file (the key) is readable by its owner only, from
/// the moment it exists (never briefly by everyone).
fn write(path: &std::path::Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // An older file keeps its mode through `open`: set it too.
        if let Ok(meta) = std::fs::metadata(path) {
            let mut permissions = meta.permissions();
            permissions.set_mode(0o600);
            std::fs::set_permissions(path, permissions)?;
        }
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)?.write_all(contents)
}
