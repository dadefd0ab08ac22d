//! Reading the JavaScript options object into the core's [`Options`].

use std::time::Duration;

use js_sys::{Function, Reflect};
use wasm_bindgen::{JsCast, JsValue};

use super::error::error_value;
use crate::client::Options;

/// What the driver itself needs beyond the core's options.
pub(crate) struct DriverOptions {
    pub(crate) core: Options,
    /// `options.WebSocket`, else `globalThis.WebSocket`.
    pub(crate) socket_class: Function,
    pub(crate) debug: bool,
}

fn get(object: &JsValue, key: &str) -> JsValue {
    // Reading a property of an object cannot fail except through a throwing getter: treat that
    // as "not set".
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn invalid(key: &str) -> JsValue {
    let mut message = String::from("invalid option ");
    message.push_str(key);
    error_value("invalid_option", &message)
}

/// A non-negative number, or `None` when the option is absent.
fn number(object: &JsValue, key: &str) -> Result<Option<f64>, JsValue> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    match value.as_f64() {
        Some(n) if n >= 0.0 => Ok(Some(n)),
        _ => Err(invalid(key)),
    }
}

fn millis(object: &JsValue, key: &str, slot: &mut Duration) -> Result<(), JsValue> {
    if let Some(ms) = number(object, key)? {
        *slot = Duration::from_millis(ms as u64);
    }
    Ok(())
}

fn count(object: &JsValue, key: &str, slot: &mut usize) -> Result<(), JsValue> {
    if let Some(n) = number(object, key)? {
        *slot = n as usize;
    }
    Ok(())
}

/// Reads `options` (undefined or an object with reconnecting-websocket's names, camelCase).
pub(crate) fn read(options: &JsValue) -> Result<DriverOptions, JsValue> {
    let mut core = Options::default();
    let o = options;
    if !(o.is_undefined() || o.is_null()) {
        millis(o, "minReconnectionDelay", &mut core.min_reconnection_delay)?;
        millis(o, "maxReconnectionDelay", &mut core.max_reconnection_delay)?;
        if let Some(n) = number(o, "reconnectionDelayGrowFactor")? {
            core.reconnection_delay_grow_factor = n;
        }
        if let Some(n) = number(o, "reconnectionJitter")? {
            core.reconnection_jitter = n;
        }
        millis(o, "minUptime", &mut core.min_uptime)?;
        millis(o, "connectionTimeout", &mut core.connection_timeout)?;
        if let Some(n) = number(o, "maxRetries")? {
            core.max_retries = Some(n as u32);
        }
        core.start_closed = get(o, "startClosed").is_truthy();
        count(o, "maxEnqueuedMessages", &mut core.max_enqueued_messages)?;
        count(o, "maxEnqueuedBytes", &mut core.max_enqueued_bytes)?;
        count(o, "maxMessageSize", &mut core.max_message_size)?;
        millis(o, "heartbeatInterval", &mut core.heartbeat_interval)?;
        millis(o, "heartbeatTimeout", &mut core.heartbeat_timeout)?;
        millis(o, "requestTimeout", &mut core.request_timeout)?;
        millis(o, "closeTimeout", &mut core.close_timeout)?;
    }
    let mut class = if o.is_object() {
        get(o, "WebSocket")
    } else {
        JsValue::UNDEFINED
    };
    if class.is_undefined() || class.is_null() {
        class = super::js::GLOBAL_THIS.with(|global| get(global, "WebSocket"));
    }
    let Ok(socket_class) = class.dyn_into::<Function>() else {
        return Err(error_value(
            "no_websocket",
            "no WebSocket class: pass options.WebSocket (e.g. require('ws') on Node 20)",
        ));
    };
    Ok(DriverOptions {
        core,
        socket_class,
        debug: o.is_object() && get(o, "debug").is_truthy(),
    })
}
