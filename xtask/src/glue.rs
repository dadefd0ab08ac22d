//! Shrinking the web build after wasm-pack: the import names the module and its glue share,
//! and the glue's own code ([`minify`]).
//!
//! wasm-bindgen names each import `__wbg_<method>_<16 hex digits>`: 53 names of about 35 bytes,
//! written twice (the module's import section, the glue's imports object), whose hashes gzip
//! cannot compress. They are internal to the pair: the glue builds the imports object, the
//! module reads it, nothing else sees it. [`shorten_import_names`] renames them to `a`, `b`, ...
//! in both. Exports keep their names: `init()` returns them (`InitOutput` in the declarations),
//! except the closure shims, whose hashed names [`shorten_closure_exports`] shortens there too.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{step, Tally};

/// Minifies the glue `js` with terser (npm, in `xtask/node_modules`): a module, compressed and
/// mangled, its exported names kept (`export class WebSocketClient` keeps its name, so
/// `constructor.name` and stack traces still say it). The comment that points Deno and JSR at
/// the declarations (`@ts-self-types`) is put back.
pub fn minify(root: &Path, js: &Path, tally: &mut Tally) -> Result<(), String> {
    let text = fs::read_to_string(js).map_err(|e| format!("{}: {e}", js.display()))?;
    let header = text
        .lines()
        .next()
        .filter(|line| line.starts_with("/* @ts-self-types="))
        .map(str::to_owned);
    step(
        "minify the web build's glue (terser)",
        root,
        Command::new(root.join("xtask/node_modules/.bin/terser"))
            .arg(js)
            .args(["--module", "--compress", "passes=2", "--mangle", "-o"])
            .arg(js),
        tally,
    )?;
    if let Some(header) = header {
        let minified = fs::read_to_string(js).map_err(|e| format!("{}: {e}", js.display()))?;
        fs::write(js, format!("{header}\n{minified}\n"))
            .map_err(|e| format!("{}: {e}", js.display()))?;
    }
    Ok(())
}

/// Renames every import of the module `wasm` to a short name, and the key that defines it in
/// the glue `js` to the same. Fails, leaving both files untouched, when a name is not defined
/// exactly once in the glue (a wasm-bindgen whose output no longer looks as expected).
pub fn shorten_import_names(wasm: &Path, js: &Path) -> Result<usize, String> {
    let module = fs::read(wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    let mut glue = fs::read_to_string(js).map_err(|e| format!("{}: {e}", js.display()))?;
    let (module, renamed) = rename_imports(&module)?;
    for (old, new) in &renamed {
        // In the imports object, each import is defined as `    NAME: function(...`.
        let definition = format!("{old}: function");
        if glue.matches(&definition).count() != 1 {
            return Err(format!(
                "{}: the import {old} is not defined exactly once",
                js.display()
            ));
        }
        glue = glue.replacen(&definition, &format!("{new}: function"), 1);
    }
    fs::write(wasm, module).map_err(|e| format!("{}: {e}", wasm.display()))?;
    fs::write(js, glue).map_err(|e| format!("{}: {e}", js.display()))?;
    Ok(renamed.len())
}

/// The prefix of the exports wasm-bindgen makes for each closure signature's shim, followed by
/// a hash that changes with every build: `wasm_bindgen__convert__closures_____invoke__h<16 hex>`.
const CLOSURE_SHIM: &str = "wasm_bindgen__convert__closures_____invoke__";

/// Renames the module's closure-shim exports (see [`CLOSURE_SHIM`]) to `__wbg_cb0`,
/// `__wbg_cb1`, ..., and every mention of them in `texts` (the glue, which calls them, and the
/// declarations, which list them in `InitOutput`). Their hashes, written in the module and
/// the glue, are what gzip cannot compress; a name that changes with every build is no one's
/// API. Fails, leaving every file untouched, when the glue does not mention a shim.
pub fn shorten_closure_exports(wasm: &Path, texts: &[&Path]) -> Result<usize, String> {
    let module = fs::read(wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    let (module, renamed) = rename_exports(&module, |name| name.starts_with(CLOSURE_SHIM))?;
    let mut contents = Vec::new();
    for path in texts {
        let mut text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (old, new) in &renamed {
            text = text.replace(old.as_str(), new);
        }
        contents.push(text);
    }
    let glue = contents.first().map(String::as_str).unwrap_or_default();
    let original =
        fs::read_to_string(texts.first().ok_or("no glue given")?).map_err(|e| e.to_string())?;
    for (old, new) in &renamed {
        if !original.contains(old.as_str()) || !glue.contains(new.as_str()) {
            return Err(format!("the glue does not call the export {old}"));
        }
    }
    fs::write(wasm, module).map_err(|e| format!("{}: {e}", wasm.display()))?;
    for (path, text) in texts.iter().zip(contents) {
        fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(renamed.len())
}

/// The `index`-th short name: `a`..`z`, `A`..`Z`, then two letters, and so on.
fn short_name(mut index: usize) -> String {
    const LETTERS: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut name = Vec::new();
    loop {
        name.push(LETTERS[index % 52]);
        index /= 52;
        if index == 0 {
            break;
        }
        index -= 1;
    }
    name.reverse();
    String::from_utf8(name).unwrap_or_default()
}

/// A reader of the binary format's primitives.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self.bytes.get(self.at).ok_or("truncated wasm module")?;
        self.at += 1;
        Ok(byte)
    }

    /// An unsigned LEB128 number.
    fn u32(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            value |= u32::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("malformed LEB128 number in the wasm module".into())
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let bytes = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or("truncated wasm module")?;
        self.at += len;
        Ok(bytes)
    }

    fn name(&mut self) -> Result<&'a str, String> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| "a wasm name is not UTF-8".into())
    }

    /// Limits of a table or memory: flags, minimum, and a maximum when flagged.
    fn limits(&mut self) -> Result<(), String> {
        let flags = self.byte()?;
        self.u32()?;
        if flags & 1 == 1 {
            self.u32()?;
        }
        Ok(())
    }
}

fn push_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    push_u32(out, name.len() as u32);
    out.extend_from_slice(name.as_bytes());
}

/// Each renamed import: (old name, new name).
type Renamed = Vec<(String, String)>;

/// The module with the body of its section `id` (if it has one) replaced by what `rewrite`
/// makes of it; every other section is copied byte for byte.
fn rewrite_section(
    module: &[u8],
    id: u8,
    mut rewrite: impl FnMut(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    if module.get(..8) != Some(b"\0asm\x01\0\0\0".as_slice()) {
        return Err("not a wasm module (version 1)".into());
    }
    let mut reader = Reader {
        bytes: module,
        at: 8,
    };
    let mut out = module[..8].to_vec();
    while reader.at < module.len() {
        let section = reader.byte()?;
        let len = reader.u32()? as usize;
        let body = reader.take(len)?;
        let rewritten;
        let body = if section == id {
            rewritten = rewrite(body)?;
            &rewritten[..]
        } else {
            body
        };
        out.push(section);
        push_u32(&mut out, body.len() as u32);
        out.extend_from_slice(body);
    }
    Ok(out)
}

/// The module with its imports renamed, and the (old, new) names. Every other section is
/// copied byte for byte.
fn rename_imports(module: &[u8]) -> Result<(Vec<u8>, Renamed), String> {
    let mut renamed = Vec::new();
    let out = rewrite_section(module, 2, |body| {
        let mut section = Reader { bytes: body, at: 0 };
        let count = section.u32()?;
        let mut imports = Vec::new();
        push_u32(&mut imports, count);
        for _ in 0..count {
            let from = section.name()?;
            let name = section.name()?;
            let described = section.at;
            match section.byte()? {
                // A function: its type index.
                0 => {
                    section.u32()?;
                }
                // A table: its element type, then its limits.
                1 => {
                    section.byte()?;
                    section.limits()?;
                }
                // A memory: its limits.
                2 => section.limits()?,
                // A global: its value type and mutability.
                3 => {
                    section.take(2)?;
                }
                // A tag: its attribute and type index.
                4 => {
                    section.byte()?;
                    section.u32()?;
                }
                kind => return Err(format!("unknown import kind {kind} in the wasm module")),
            }
            push_name(&mut imports, from);
            // The driver's snippets (`inline_snippets`) keep their names: their own short
            // ones, defined by the snippet, not in the imports object.
            if from.starts_with("./snippets/") {
                push_name(&mut imports, name);
            } else {
                let short = short_name(renamed.len());
                push_name(&mut imports, &short);
                renamed.push((name.to_owned(), short));
            }
            imports.extend_from_slice(&body[described..section.at]);
        }
        if section.at != body.len() {
            return Err("unexpected bytes after the wasm imports".into());
        }
        Ok(imports)
    })?;
    Ok((out, renamed))
}

/// The module with the exports `rename` selects renamed to `__wbg_cb0`, `__wbg_cb1`, ..., and
/// the (old, new) names. Every other section is copied byte for byte.
fn rename_exports(
    module: &[u8],
    rename: impl Fn(&str) -> bool,
) -> Result<(Vec<u8>, Renamed), String> {
    let mut renamed = Vec::new();
    let out = rewrite_section(module, 7, |body| {
        let mut section = Reader { bytes: body, at: 0 };
        let count = section.u32()?;
        let mut exports = Vec::new();
        push_u32(&mut exports, count);
        for _ in 0..count {
            let name = section.name()?;
            let described = section.at;
            // The kind, then the index of the function, table, memory, global or tag.
            section.byte()?;
            section.u32()?;
            if rename(name) {
                let short = format!("__wbg_cb{}", renamed.len());
                push_name(&mut exports, &short);
                renamed.push((name.to_owned(), short));
            } else {
                push_name(&mut exports, name);
            }
            exports.extend_from_slice(&body[described..section.at]);
        }
        if section.at != body.len() {
            return Err("unexpected bytes after the wasm exports".into());
        }
        Ok(exports)
    })?;
    Ok((out, renamed))
}

/// Puts the driver's JavaScript snippets (`#[wasm_bindgen(module = ...)]`, which wasm-bindgen
/// writes to `snippets/` and imports from the glue as a module namespace the wasm module
/// imports from) into the glue itself, and removes `snippets/`: one file less to fetch in
/// browsers, and the Node build (CommonJS, where wasm-bindgen would `require` a snippet written
/// with `export`) loads in every Node version. Each snippet becomes a function scope that
/// returns its exports, so its names cannot meet the glue's. Returns how many imports of
/// snippets were replaced.
pub fn inline_snippets(out: &Path) -> Result<usize, String> {
    let js = out.join("wsrelay.js");
    let glue = fs::read_to_string(&js).map_err(|e| format!("{}: {e}", js.display()))?;
    let mut inlined = 0;
    let mut done: Vec<&str> = Vec::new();
    let mut text = String::with_capacity(glue.len() + 4096);
    for line in glue.lines() {
        let Some((binding, path)) = snippet_import(line) else {
            text.push_str(line);
            text.push('\n');
            continue;
        };
        inlined += 1;
        // wasm-bindgen may import one snippet several times (a namespace for the module, a
        // destructuring for the glue's own calls): its code goes in once, as `snippetN`.
        let index = match done.iter().position(|done| *done == path) {
            Some(index) => index,
            None => {
                let file = out.join(path);
                text.push_str(&format!("const snippet{} = ", done.len()));
                text.push_str(&module_scope(&file)?);
                done.push(path);
                done.len() - 1
            }
        };
        text.push_str(&format!("const {binding} = snippet{index};\n"));
    }
    fs::write(&js, text).map_err(|e| format!("{}: {e}", js.display()))?;
    let snippets = out.join("snippets");
    if snippets.exists() {
        fs::remove_dir_all(&snippets).map_err(|e| format!("{}: {e}", snippets.display()))?;
    }
    Ok(inlined)
}

/// The snippet module `file` as an expression: a function scope that runs its code and
/// returns its exports (`export function` only).
fn module_scope(file: &Path) -> Result<String, String> {
    let source = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut names = Vec::new();
    let mut body = String::from("(() => {\n");
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("export ") {
            let name = rest
                .strip_prefix("function ")
                .and_then(|rest| rest.split('(').next())
                .ok_or_else(|| {
                    format!("{}: only `export function` can be inlined", file.display())
                })?;
            names.push(name.trim().to_owned());
            body.push_str(rest);
        } else {
            body.push_str(line);
        }
        body.push('\n');
    }
    body.push_str(&format!("return {{ {} }};\n}})();\n", names.join(", ")));
    Ok(body)
}

/// The binding and the path of a snippet's import in the glue: `import * as import1 from
/// "./snippets/...";` or `import { deliver } from "./snippets/...";` (web), ``const import1 = require("./snippets/...");`` or
/// ``const { deliver } = require(String.raw`./snippets/...`);`` (Node.js).
fn snippet_import(line: &str) -> Option<(String, &str)> {
    let start = line.find("./snippets/")?;
    let path = line.get(start + 2..)?;
    let path = path.get(..path.find(['\'', '`', '"'])?)?;
    let line = line.trim_start();
    let binding = match line.strip_prefix("import ") {
        Some(rest) => {
            let clause = rest.get(..rest.find(" from ")?)?;
            // `* as name` is the namespace; `{ a as b }` destructures as `{ a: b }`.
            match clause.strip_prefix("* as ") {
                Some(name) => name.to_owned(),
                None => clause.replace(" as ", ": "),
            }
        }
        None => {
            let rest = line.strip_prefix("const ")?;
            rest.get(..rest.find(" = ")?)?.to_owned()
        }
    };
    Some((binding.trim().to_owned(), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_imports_are_read_in_every_form_wasm_bindgen_writes() {
        let path = "snippets/wsrelay-4f7f/src/web/socket.js";
        let cases = [
            (r#"import * as import1 from "./snippets/wsrelay-4f7f/src/web/socket.js""#, "import1"),
            ("import { deliver } from './snippets/wsrelay-4f7f/src/web/socket.js';", "{ deliver }"),
            ("import { a as b } from './snippets/wsrelay-4f7f/src/web/socket.js';", "{ a: b }"),
            (r#"const import2 = require("./snippets/wsrelay-4f7f/src/web/socket.js");"#, "import2"),
            (
                "const { deliver } = require(String.raw`./snippets/wsrelay-4f7f/src/web/socket.js`);",
                "{ deliver }",
            ),
        ];
        for (line, binding) in cases {
            assert_eq!(
                snippet_import(line),
                Some((binding.to_owned(), path)),
                "{line}"
            );
        }
        // The imports object names the module too: not an import.
        let key = r#"        "./snippets/wsrelay-4f7f/src/web/socket.js": import1,"#;
        assert_eq!(snippet_import(key), None);
    }

    #[test]
    fn a_snippet_becomes_a_scope_returning_its_exports() {
        let dir = std::env::temp_dir().join(format!("wsrelay-glue-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("snippet.js");
        let source = "function helper(x) {\n  return x;\n}\nexport function watch(s) {\n  return helper(s);\n}\n";
        fs::write(&file, source).expect("written");
        let scope = module_scope(&file).expect("inlined");
        assert!(scope.starts_with("(() => {\n"), "{scope}");
        assert!(scope.contains("\nfunction watch(s) {"), "{scope}");
        assert!(scope.ends_with("return { watch };\n})();\n"), "{scope}");
        fs::write(&file, "export const x = 1;\n").expect("written");
        assert!(module_scope(&file).is_err(), "only functions are exported");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn short_names_are_distinct_identifiers() {
        let names: Vec<_> = (0..3000).map(short_name).collect();
        assert_eq!(&names[..3], ["a", "b", "c"]);
        assert_eq!(names[52], "aa");
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_alphabetic())));
    }

    /// A module with a function, a memory and a global import, a type section before and a
    /// custom section after.
    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // Type section: one type, () -> ().
        m.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]);
        let mut imports = vec![3];
        push_name(&mut imports, "./x_bg.js");
        push_name(&mut imports, "__wbg_now_3c3c080c12519fd2");
        imports.extend_from_slice(&[0, 0]);
        push_name(&mut imports, "./x_bg.js");
        push_name(&mut imports, "__wbindgen_memory");
        imports.extend_from_slice(&[2, 1, 17, 200, 1]);
        push_name(&mut imports, "env");
        push_name(&mut imports, "g");
        imports.extend_from_slice(&[3, 0x7f, 0]);
        m.push(2);
        push_u32(&mut m, imports.len() as u32);
        m.extend_from_slice(&imports);
        m.extend_from_slice(&[0, 3, 1, b'z', 9]);
        m
    }

    #[test]
    fn renames_imports_and_keeps_the_rest() {
        let original = module();
        let (renamed_module, renamed) = rename_imports(&original).expect("valid module");
        assert_eq!(
            renamed,
            [
                ("__wbg_now_3c3c080c12519fd2".to_owned(), "a".to_owned()),
                ("__wbindgen_memory".to_owned(), "b".to_owned()),
                ("g".to_owned(), "c".to_owned()),
            ]
        );
        let mut expected = b"\0asm\x01\0\0\0".to_vec();
        expected.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]);
        let mut imports = vec![3];
        push_name(&mut imports, "./x_bg.js");
        push_name(&mut imports, "a");
        imports.extend_from_slice(&[0, 0]);
        push_name(&mut imports, "./x_bg.js");
        push_name(&mut imports, "b");
        imports.extend_from_slice(&[2, 1, 17, 200, 1]);
        push_name(&mut imports, "env");
        push_name(&mut imports, "c");
        imports.extend_from_slice(&[3, 0x7f, 0]);
        expected.push(2);
        push_u32(&mut expected, imports.len() as u32);
        expected.extend_from_slice(&imports);
        expected.extend_from_slice(&[0, 3, 1, b'z', 9]);
        assert_eq!(renamed_module, expected);
    }

    /// A module whose export section holds `names` (functions 0, 1, ...), a custom section after.
    fn exporting(names: &[&str]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let mut exports = vec![names.len() as u8];
        for (index, name) in names.iter().enumerate() {
            push_name(&mut exports, name);
            exports.extend_from_slice(&[0, index as u8]);
        }
        m.push(7);
        push_u32(&mut m, exports.len() as u32);
        m.extend_from_slice(&exports);
        m.extend_from_slice(&[0, 3, 1, b'z', 9]);
        m
    }

    #[test]
    fn renames_closure_shim_exports_only() {
        let shim = "wasm_bindgen__convert__closures_____invoke__h9dc42ff367ceb35a";
        let original = exporting(&["memory", shim, "websocketclient_new"]);
        let (module, renamed) =
            rename_exports(&original, |name| name.starts_with(CLOSURE_SHIM)).expect("valid");
        assert_eq!(renamed, [(shim.to_owned(), "__wbg_cb0".to_owned())]);
        assert_eq!(
            module,
            exporting(&["memory", "__wbg_cb0", "websocketclient_new"])
        );
        assert!(rename_exports(b"not wasm", |_| true).is_err());
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(rename_imports(b"not wasm").is_err());
        let mut truncated = module();
        truncated.truncate(30);
        assert!(rename_imports(&truncated).is_err());
    }

    #[test]
    fn leb128_round_trips() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut bytes = Vec::new();
            push_u32(&mut bytes, value);
            let mut reader = Reader {
                bytes: &bytes,
                at: 0,
            };
            assert_eq!(reader.u32(), Ok(value));
            assert_eq!(reader.at, bytes.len());
        }
    }
}
