//! Reading the JavaScript options object into the core's [`Options`], through the core's one
//! option table ([`Options::NAMES`] and [`Options::set`]): no option can be missing here.

use alloc::vec::Vec;

use js_sys::{Function, Reflect};
use wasm_bindgen::{JsCast, JsValue};

use super::error::{core_error, error_value};
use crate::client::{OptionValue, Options};

/// What the driver itself needs beyond the core's options.
pub(crate) struct DriverOptions {
    pub(crate) core: Options,
    /// `options.WebSocket`, else `globalThis.WebSocket`.
    pub(crate) socket_class: Function,
    pub(crate) debug: bool,
    /// `options.token`: a string, a function called before every attempt, or undefined.
    pub(crate) token: JsValue,
    /// `options.persist.path`: the file that keeps the client's state (Node.js).
    #[cfg(feature = "persist")]
    pub(crate) persist: Option<alloc::string::String>,
}

fn get(object: &JsValue, key: &str) -> JsValue {
    // Reading a property of an object cannot fail except through a throwing getter: treat that
    // as "not set".
    super::js::get(object, key).unwrap_or(JsValue::UNDEFINED)
}

/// Reads `options` (undefined, null or an object with reconnecting-websocket's names).
pub(crate) fn read(options: &JsValue) -> Result<DriverOptions, JsValue> {
    let mut core = Options::default();
    let given = options.is_object();
    if given {
        for name in Options::NAMES {
            let value = get(options, name);
            if value.is_undefined() || value.is_null() {
                continue;
            }
            let mut numbers = Vec::new();
            let value = if let Some(flag) = value.as_bool() {
                OptionValue::Bool(flag)
            } else if value.is_object() {
                // A list, read by index through `length` (no Array imports); a non-number in it
                // reads as NaN, which the core refuses.
                let length = get(&value, "length").as_f64().unwrap_or(0.0) as u32;

                for i in 0..length {
                    let n = Reflect::get(&value, &i.into()).unwrap_or(JsValue::UNDEFINED);
                    numbers.push(n.as_f64().unwrap_or(f64::NAN));
                }
                OptionValue::Numbers(&numbers)
            } else {
                // Not a number (a string...): NaN, refused by the core with the option's name.
                OptionValue::Number(value.as_f64().unwrap_or(f64::NAN))
            };
            core.set(name, value).map_err(|error| core_error(&error))?;
        }
    }
    core.validate().map_err(|error| core_error(&error))?;
    let mut class = if given {
        get(options, "WebSocket")
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
    let token = if given {
        get(options, "token")
    } else {
        JsValue::UNDEFINED
    };
    if !(token.is_undefined() || token.is_null() || token.is_string() || token.is_function()) {
        return Err(error_value(
            "invalid_option",
            "token must be a string or a function",
        ));
    }
    // Read in every build: one without `persist` refuses the option rather than ignore it.
    let persist = if given {
        persist_path(&get(options, "persist"))?
    } else {
        None
    };
    #[cfg(not(feature = "persist"))]
    debug_assert!(persist.is_none(), "refused above");
    Ok(DriverOptions {
        core,
        socket_class,
        debug: given && get(options, "debug").is_truthy(),
        token,
        #[cfg(feature = "persist")]
        persist,
    })
}

/// `options.persist`: absent or `false` (nothing kept), or `{ path }`.
fn persist_path(persist: &JsValue) -> Result<Option<alloc::string::String>, JsValue> {
    if persist.is_undefined() || persist.is_null() || persist.as_bool() == Some(false) {
        return Ok(None);
    }
    if cfg!(not(feature = "persist")) {
        return Err(error_value(
            "invalid_option",
            "persist: this build of wsrelay cannot persist (the Node.js build can)",
        ));
    }
    if persist.as_bool() == Some(true) {
        return Err(error_value(
            "invalid_option",
            "persist: true (IndexedDB, in browsers) is not available yet; in Node.js, use \
             persist: { path }",
        ));
    }
    match get(persist, "path").as_string() {
        Some(path) if !path.is_empty() => Ok(Some(path)),
        _ => Err(error_value(
            "invalid_option",
            "persist must be { path: string } (the file that keeps the client's state)",
        )),
    }
}
