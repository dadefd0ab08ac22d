//! Reading the JavaScript options object into the core's [`Options`], through the core's one
//! option table ([`Options::NAMES`] and [`Options::set`]): no option can be missing here.

#[cfg(feature = "persist")]
use alloc::string::String;
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
    /// `options.persist`: where the client's state is kept.
    #[cfg(feature = "persist")]
    pub(crate) persist: Option<Persist>,
}

/// Where a client created with `persist` keeps its journal (PROTOCOL.md section 13).
#[cfg(feature = "persist")]
pub(crate) struct Persist {
    /// The file's path, or the IndexedDB database's name: what an error message names.
    pub(crate) name: String,
    /// Node.js: the path, a string; browsers: the open `IDBDatabase` (`journal.js` tells them
    /// apart).
    pub(crate) store: JsValue,
    /// Browsers: the journal as the `wsrelay/persist` entry read it, asynchronously, before
    /// it constructed the client (`Ok`), or why it could not (`Err`). Node.js: `None`, the
    /// file is read at once.
    pub(crate) text: Option<Result<String, String>>,
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
    let persist_option = if given {
        get(options, "persist")
    } else {
        JsValue::UNDEFINED
    };
    #[cfg(not(feature = "persist"))]
    persist(&persist_option)?;
    #[cfg(feature = "persist")]
    let persist = persist(&persist_option)?;
    Ok(DriverOptions {
        core,
        socket_class,
        debug: given && get(options, "debug").is_truthy(),
        token,
        #[cfg(feature = "persist")]
        persist,
    })
}

/// `options.persist` is absent or `false`.
fn persist_absent(persist: &JsValue) -> bool {
    persist.is_undefined() || persist.is_null() || persist.as_bool() == Some(false)
}

/// `options.persist` in a build that cannot persist: refused unless absent or `false`.
#[cfg(not(feature = "persist"))]
fn persist(persist: &JsValue) -> Result<(), JsValue> {
    if persist_absent(persist) {
        return Ok(());
    }
    Err(error_value(
        "invalid_option",
        "persist: in browsers, import the client from 'wsrelay/persist'",
    ))
}

/// `options.persist`: absent or `false` (nothing kept), `{ path }` (Node.js: a file), or the
/// form the `wsrelay/persist` entry passes once it has read IndexedDB: `{ name, indexedDB,
/// journal }`, or `{ name, error }` when it could not. `persist: true` itself is that entry's:
/// it reads the database asynchronously before it constructs this class.
#[cfg(feature = "persist")]
fn persist(persist: &JsValue) -> Result<Option<Persist>, JsValue> {
    if persist_absent(persist) {
        return Ok(None);
    }
    if persist.as_bool() == Some(true) {
        return Err(error_value(
            "invalid_option",
            "persist: true (IndexedDB) is the option of the 'wsrelay/persist' entry, in \
             browsers; in Node.js, use persist: { path }",
        ));
    }
    if let Some(path) = get(persist, "path")
        .as_string()
        .filter(|path| !path.is_empty())
    {
        return Ok(Some(Persist {
            name: path.clone(),
            store: path.into(),
            text: None,
        }));
    }
    let Some(name) = get(persist, "name").as_string() else {
        return Err(error_value(
            "invalid_option",
            "persist must be { path: string } (the file that keeps the client's state)",
        ));
    };
    let text = match get(persist, "error").as_string() {
        Some(error) => Err(error),
        None => Ok(get(persist, "journal").as_string().unwrap_or_default()),
    };
    Ok(Some(Persist {
        name,
        store: get(persist, "indexedDB"),
        text: Some(text),
    }))
}
