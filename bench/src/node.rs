//! Node and npm: the programs of the Node peers (`bench/node`, `bench/node/socketio`), found
//! once Node answers and their npm modules are installed (from the committed lockfiles).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs::ServerCmd;

/// Finds (or installs) the Node peer; `None` with the reason when it cannot run.
pub fn node_peer(root: &Path) -> Result<ServerCmd, String> {
    node_server(&root.join("bench").join("node"), &["ws"], "the Node peer")
}

/// Finds (or installs) the Socket.IO peers of the cluster rows.
pub fn socketio_peer(root: &Path) -> Result<ServerCmd, String> {
    node_server(
        &root.join("bench").join("node").join("socketio"),
        &[
            "socket.io",
            "redis",
            "@socket.io/redis-adapter",
            "@socket.io/redis-streams-adapter",
        ],
        "the Socket.IO peers",
    )
}

/// `node DIR/server.js`, once Node answers and the npm `modules` are in `DIR/node_modules`
/// (installed from the committed lockfile when one is missing).
fn node_server(dir: &Path, modules: &[&str], what: &str) -> Result<ServerCmd, String> {
    npm_install(dir, modules, what)?;
    Ok(ServerCmd {
        program: PathBuf::from("node"),
        args: vec![dir.join("server.js").display().to_string()],
    })
}

/// Checks that Node answers and that the npm `modules` are in `DIR/node_modules`, installing
/// them from the committed lockfile when one is missing.
pub fn npm_install(dir: &Path, modules: &[&str], what: &str) -> Result<(), String> {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node not found: {e}"))?;
    if !node.status.success() {
        return Err("node --version failed".into());
    }
    let installed = modules
        .iter()
        .all(|m| dir.join("node_modules").join(m).is_dir());
    if !installed {
        println!(
            "installing {what} (npm install {} in {})...",
            modules.join(" "),
            dir.display()
        );
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .status()
            .map_err(|e| format!("npm: {e}"))?;
        if !status.success() {
            return Err(format!("npm install failed ({status})"));
        }
    }
    Ok(())
}

/// The Node server package (npm `wsrelay-server`, built by `cargo xtask pkg` into
/// `pkg-server/`) in `bench/node/napi`: installed there as a user gets it (copies of the main
/// package and of this platform's, `npm install --install-links`) when the installed addon is
/// not the one built; `node bench/node/napi/server.js` (its mode is added by the rows).
pub fn napi_peer(root: &Path) -> Result<ServerCmd, String> {
    let dir = root.join("bench").join("node").join("napi");
    let pkg = root.join("pkg-server");
    // This platform's package: the one holding an addon.
    let platform = std::fs::read_dir(pkg.join("npm"))
        .map_err(|_| "pkg-server/ is not built (cargo xtask pkg server)".to_owned())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| addon_in(path).is_some())
        .ok_or("pkg-server/ holds no addon (cargo xtask pkg server)")?;
    let name = format!(
        "wsrelay-server-{}",
        platform
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let built = addon_in(&platform).and_then(|path| std::fs::read(path).ok());
    let installed =
        addon_in(&dir.join("node_modules").join(&name)).and_then(|p| std::fs::read(p).ok());
    let main_same = ["index.js", "binding.js"].iter().all(|file| {
        std::fs::read(pkg.join(file)).ok()
            == std::fs::read(dir.join("node_modules/wsrelay-server").join(file)).ok()
    });
    if built.is_none() || built != installed || !main_same {
        println!(
            "installing the Node server package (pkg-server/) in {}",
            dir.display()
        );
        for old in ["wsrelay-server", &name] {
            let _ = std::fs::remove_dir_all(dir.join("node_modules").join(old));
        }
        let status = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--install-links",
            ])
            // Only this platform's package, named here; the registry is not asked for the
            // others (not built, not published).
            .args(["--omit=optional", "--offline"])
            .arg(&platform)
            .arg(&pkg)
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("npm: {e}"))?;
        if !status.success() {
            return Err(format!("npm install of pkg-server/ failed ({status})"));
        }
    }
    Ok(ServerCmd {
        program: PathBuf::from("node"),
        args: vec![dir.join("server.js").display().to_string()],
    })
}

/// The `.node` file in `dir`, if any.
fn addon_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "node"))
}
