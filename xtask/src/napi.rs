//! The Node server package, `wsrelay-server` (issue 21): the server library as a napi-rs
//! addon (`node-server/`), built with the napi-rs CLI (npm `@napi-rs/cli`, pinned in
//! xtask/package.json) into `pkg-server/` the napi-rs way, and its tests
//! (`tests/node-server/`).
//!
//! `pkg-server/` is the main package (the JavaScript API, its declarations, the napi-rs
//! loader `binding.js`), and `pkg-server/npm/PLATFORM/` one package per platform of
//! `napi.targets` (`wsrelay-server-linux-x64-gnu`...), the main package's optional
//! dependencies; the one of this machine holds the `.node` file built here. Each platform's
//! is built the same way on a machine (or with a `--target`) of that platform, then published
//! with the main package: a CI matrix.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::web::ensure_npm;
use crate::{step, Tally};

/// The napi-rs CLI installed by `npm ci` in xtask/.
fn napi_cli(root: &Path) -> PathBuf {
    root.join("xtask/node_modules/.bin/napi")
}

/// The files of the main package that are written by hand (`node-server/js/`).
const SOURCES: [&str; 5] = [
    "package.json",
    "index.js",
    "index.mjs",
    "index.d.ts",
    "README.md",
];

/// Builds the package into `root/pkg-server`: the addon in release (`napi build
/// --platform`), the platform packages (`napi create-npm-dirs`), this platform's addon moved
/// into its package. Returns the main package's folder and this
/// platform's.
pub fn build_server_pkg(root: &Path, tally: &mut Tally) -> Result<(PathBuf, PathBuf), String> {
    ensure_npm(root, "xtask", tally)?;
    let pkg = root.join("pkg-server");
    let _ = fs::remove_dir_all(&pkg);
    fs::create_dir_all(&pkg).map_err(|e| format!("{}: {e}", pkg.display()))?;
    let js = root.join("node-server/js");
    for file in SOURCES {
        fs::copy(js.join(file), pkg.join(file))
            .map_err(|e| format!("{}: {e}", js.join(file).display()))?;
    }
    // One text of the declarations for both conditions: `import` reads index.d.mts.
    fs::copy(js.join("index.d.ts"), pkg.join("index.d.mts")).map_err(|e| e.to_string())?;
    let package_json = pkg.join("package.json");
    step(
        "napi build --platform --release (the Node server addon)",
        root,
        Command::new(napi_cli(root))
            .args(["build", "--platform", "--release"])
            .args(["--manifest-path", "node-server/Cargo.toml"])
            .arg("--package-json-path")
            .arg(&package_json)
            .arg("--output-dir")
            .arg(&pkg)
            .args(["--js", "binding.js", "--dts", "binding.d.ts"]),
        tally,
    )?;
    // The loader is the package's; the generated declarations describe the native half,
    // which index.d.ts wraps.
    let _ = fs::remove_file(pkg.join("binding.d.ts"));
    let npm = pkg.join("npm");
    step(
        "napi create-npm-dirs (one package per platform)",
        root,
        Command::new(napi_cli(root))
            .arg("create-npm-dirs")
            .arg("--package-json-path")
            .arg(&package_json)
            .arg("--npm-dir")
            .arg(&npm),
        tally,
    )?;
    let addon = fs::read_dir(&pkg)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with(".node"))
        .ok_or("napi build made no .node file")?;
    // `wsrelay-server.linux-x64-gnu.node`: its platform's package is npm/linux-x64-gnu.
    let platform = addon
        .strip_prefix("wsrelay-server.")
        .and_then(|rest| rest.strip_suffix(".node"))
        .ok_or_else(|| format!("unexpected addon name {addon}"))?
        .to_owned();
    // What `napi artifacts` does in the CI job that gathers every platform's addon (it
    // insists on all of them): each into its platform's package.
    let platform_pkg = npm.join(&platform);
    fs::rename(pkg.join(&addon), platform_pkg.join(&addon))
        .map_err(|e| format!("{addon} into npm/{platform}: {e}"))?;
    let size = fs::metadata(platform_pkg.join(&addon))
        .map_err(|e| e.to_string())?
        .len();
    println!(
        "pkg-server: wsrelay-server, and wsrelay-server-{platform} with {addon} ({:.1} MB)",
        size as f64 / 1e6
    );
    Ok((pkg, platform_pkg))
}

/// Builds the package when its addon is missing or older than its sources (the benchmark's
/// Node server rows run it).
pub fn ensure_server_pkg(root: &Path, tally: &mut Tally) -> Result<(), String> {
    // The addon is the newest file there: moved into its platform's package last.
    let built = crate::web::newest(&root.join("pkg-server/npm"));
    let sources = ["node-server", "native-server/src", "core/src", "Cargo.lock"]
        .iter()
        .filter_map(|p| crate::web::newest(&root.join(p)))
        .max();
    if built.is_none() || built < sources {
        build_server_pkg(root, tally)?;
    }
    Ok(())
}

/// Installs the packages as a user would, copies and not links (`npm install
/// --install-links`): this platform's package and the main package from `pkg-server/`, and
/// the client package from its tarball (`npm pack` of pkg/, made by the client tests), into
/// `dir`'s node_modules.
fn install(root: &Path, dir: &str, packages: &[&Path], tally: &mut Tally) -> Result<(), String> {
    let folder = root.join(dir);
    // Same names and versions on every build: remove the old copies so npm cannot keep them.
    for name in ["wsrelay", "wsrelay-server"] {
        let _ = fs::remove_dir_all(folder.join("node_modules").join(name));
    }
    if let Ok(entries) = fs::read_dir(folder.join("node_modules")) {
        for entry in entries.filter_map(Result::ok) {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("wsrelay-server-")
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    step(
        &format!("npm install the server and client packages ({dir})"),
        &folder,
        Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--install-links",
                // The other platforms' packages are not built here (nor published): only this
                // platform's, named on the command line, is installed, and npm is not sent to
                // the registry to look for the others.
                "--omit=optional",
                "--offline",
            ])
            .args(packages),
        tally,
    )
}

/// The tests of the Node server package (tests/node-server): the chat example in TypeScript
/// with clients in Node 20, Node 22 and Chromium; every method and event (on Node 20, then on
/// Node 22); two servers on one Redis; misbehaving handlers; 5 000 clients; the process's
/// exit after `close()`. `client` is the client package's tarball; Chromium, Node 22
/// (tests/node22), redis-server and the test certificates (`target/tls`) are expected there.
pub fn run_server_tests(root: &Path, client: &Path, tally: &mut Tally) -> Result<(), String> {
    ensure_npm(root, "tests/node-server", tally)?;
    let (pkg, platform_pkg) = build_server_pkg(root, tally)?;
    install(
        root,
        "tests/node-server",
        &[&platform_pkg, &pkg, client],
        tally,
    )?;
    let dir = root.join("tests/node-server");
    let tls = crate::web::target_dir(root).join("tls");
    let files = crate::web::test_files(&dir, &[])?;
    let run = |name: &str, node: &Path, files: &[String], tally: &mut Tally| {
        let mut command = Command::new(node);
        command
            .args(["--test", "--test-reporter=spec", "--test-concurrency=1"])
            .args(files)
            .env("WSRELAY_TLS_DIR", &tls);
        step(name, &dir, &mut command, tally)
    };
    run(
        "Node server package (Node 20): the chat in TypeScript with clients in Node 20, Node 22 \
         and Chromium; API; Redis; handlers; 5 000 clients; exit",
        Path::new("node"),
        &files,
        tally,
    )?;
    run(
        "Node server package: the API and the handlers on Node 22",
        &crate::web::node22(root),
        &["api.test.mjs".to_owned(), "handlers.test.mjs".to_owned()],
        tally,
    )
}
