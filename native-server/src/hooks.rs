//! The application's hooks on connections coming and going, and what they are told.

use std::net::SocketAddr;
use std::sync::Arc;

use wsrelay_core::server::DisconnectReason;

/// A connected client, as the hooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The identity the connection was registered under.
    pub source: String,
    /// The peer's address.
    pub addr: Option<SocketAddr>,
}

/// Called when a client connects.
pub(crate) type ConnectHook = Arc<dyn Fn(&ClientInfo) + Send + Sync>;
/// Called when a client's connection ends, with why.
pub(crate) type DisconnectHook = Arc<dyn Fn(&ClientInfo, &DisconnectReason) + Send + Sync>;

/// The application's hooks.
#[derive(Default)]
pub(crate) struct Hooks {
    /// Called in order when a client connects.
    pub(crate) on_connect: Vec<ConnectHook>,
    /// Called in order when a client's connection ends.
    pub(crate) on_disconnect: Vec<DisconnectHook>,
}

impl Hooks {
    /// Tells every connect hook.
    pub(crate) fn connected(&self, info: &ClientInfo) {
        for hook in &self.on_connect {
            hook(info);
        }
    }

    /// Tells every disconnect hook.
    pub(crate) fn disconnected(&self, info: &ClientInfo, reason: &DisconnectReason) {
        for hook in &self.on_disconnect {
            hook(info, reason);
        }
    }
}
