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
