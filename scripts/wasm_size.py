#!/usr/bin/env python3
"""What each part of the web build's wasm module costs (bench/ANALYSIS.md section 6).

LTO and opt-level "z" inline most of the driver and the core into a few exported functions, so
function names say little. This attributes every byte of the code section to the source file
of its DWARF line-table row (inlined code to the file it came from) and groups the files into
parts; the gzip column spreads the code's gzip -9 output over its bytes (256-byte chunks,
sync-flushed).

Make the input as `cargo xtask pkg` makes the package, with DWARF kept (from the repository):

    CARGO_PROFILE_WASM_RELEASE_DEBUG=2 cargo build -p wsrelay --lib \\
        --target wasm32-unknown-unknown --profile wasm-release \\
        --no-default-features --features small-allocator --target-dir target/dwarf
    wasm-bindgen --keep-debug --target web --out-dir target/dwarf/bg \\
        target/dwarf/wasm32-unknown-unknown/wasm-release/wsrelay.wasm
    xtask/node_modules/.bin/wasm-opt target/dwarf/bg/wsrelay_bg.wasm -g -Oz --converge \\
        --low-memory-unused <the --enable-* flags of Cargo.toml> -o target/dwarf/opt.wasm
    python3 scripts/wasm_size.py target/dwarf/opt.wasm [--functions PATTERN]

Needs `llvm-dwarfdump` (Debian's llvm package). It cannot read the module's export section
(externref), so a copy without it is what it reads: the line table's addresses are offsets in
the code section, which that leaves unchanged.
"""
import collections
import os
import re
import subprocess
import sys
import tempfile
import zlib


def leb(data, i):
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def encode_leb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(data):
    i = 8
    while i < len(data):
        sid = data[i]
        size, i = leb(data, i + 1)
        yield sid, i, size
        i += size


def function_names(data):
    """Function index -> name, from the `name` custom section; and the imported function count."""
    names, imported = {}, 0
    for sid, off, size in sections(data):
        if sid == 2:
            count, j = leb(data, off)
            for _ in range(count):
                for _ in range(2):
                    length, j = leb(data, j)
                    j += length
                kind = data[j]
                j += 1
                if kind == 0:
                    _, j = leb(data, j)
                    imported += 1
                elif kind == 1:
                    j += 1
                    flags, j = leb(data, j)
                    _, j = leb(data, j)
                    if flags & 1:
                        _, j = leb(data, j)
                elif kind == 2:
                    flags, j = leb(data, j)
                    _, j = leb(data, j)
                    if flags & 1:
                        _, j = leb(data, j)
                elif kind == 3:
                    j += 2
                elif kind == 4:
                    j += 1
                    _, j = leb(data, j)
        if sid == 0:
            length, j = leb(data, off)
            if data[j:j + length] != b"name":
                continue
            j += length
            while j < off + size:
                sub = data[j]
                sub_size, j = leb(data, j + 1)
                if sub == 1:
                    count, k = leb(data, j)
                    for _ in range(count):
                        index, k = leb(data, k)
                        length, k = leb(data, k)
                        names[index] = data[k:k + length].decode("utf-8", "replace")
                        k += length
                j += sub_size
    return names, imported


def part(path):
    root = os.getcwd() + "/"
    p = path.replace(root, "WS/")
    rules = [
        ("WS/core/src/protocol/json.rs", "protocol: JSON reader and string writer"),
        ("WS/core/src/protocol/", "protocol: envelope decode/encode"),
        ("WS/core/src/client/machine", "client core: state machine"),
        ("WS/core/src/client/outbox.rs", "client core: outbox and deadlines"),
        ("WS/core/src/client/options.rs", "client core: options table"),
        ("WS/core/src/", "client core: backoff, URL, errors, stats, events, bucket, time"),
        ("WS/src/web/drain.rs", "web driver: drain loop (drain.rs)"),
        ("WS/src/web/mod.rs", "web driver: the exported class (mod.rs)"),
        ("WS/src/", "web driver: errors, options, JS imports, lib.rs"),
        ("lol_alloc", "allocator"),
        ("spin-", "allocator"),
        ("library/alloc/src/alloc.rs", "allocator"),
        ("wasm-bindgen", "wasm-bindgen, js-sys, web-sys (Rust side)"),
        ("js-sys", "wasm-bindgen, js-sys, web-sys (Rust side)"),
        ("web-sys", "wasm-bindgen, js-sys, web-sys (Rust side)"),
        ("compiler-builtins", "compiler builtins"),
        ("library/core/src/fmt", "std: panics and formatting"),
        ("panic", "std: panics and formatting"),
        ("library/alloc/src/str", "std: string handling"),
        ("library/core/src/str", "std: string handling"),
        ("library/core/src/char", "std: string handling"),
        ("library/alloc/", "std inlined: Vec, RawVec, Rc, Box, Cow"),
        ("library/core/", "std inlined: drop glue, Option/Result, slices, iterators, cells"),
    ]
    for needle, name in rules:
        if needle in p:
            return name
    return "no line info (wasm-bindgen shims)" if path == "?" else "other: " + path


def main():
    path = sys.argv[1]
    pattern = sys.argv[sys.argv.index("--functions") + 1] if "--functions" in sys.argv else None
    data = open(path, "rb").read()
    code_off, code_len = next((off, size) for sid, off, size in sections(data) if sid == 10)
    code = data[code_off:code_off + code_len]
    copy = bytearray(data[:8])
    for sid, off, size in sections(data):
        if sid != 7:
            copy += bytes([sid]) + encode_leb(size) + data[off:off + size]
    with tempfile.NamedTemporaryFile(suffix=".wasm") as tmp:
        tmp.write(copy)
        tmp.flush()
        dump = lambda what: subprocess.run(
            ["llvm-dwarfdump", what, tmp.name], capture_output=True, text=True, check=True
        ).stdout
        info, lines = dump("--debug-info"), dump("--debug-line")
    comp_dir, stmt = {}, None
    for line in info.splitlines():
        m = re.search(r"DW_AT_stmt_list\s+\((0x[0-9a-f]+)\)", line)
        if m:
            stmt = int(m.group(1), 16)
        m = re.search(r'DW_AT_comp_dir\s+\("(.*)"\)', line)
        if m and stmt is not None:
            comp_dir[stmt], stmt = m.group(1), None
    rows, files, dirs, current = [], {}, {}, None
    for line in lines.splitlines():
        if line.startswith("debug_line["):
            unit = int(line[len("debug_line["):-1], 16)
            files, dirs = {}, {0: comp_dir.get(unit, "?")}
            continue
        m = re.match(r'include_directories\[\s*(\d+)\] = "(.*)"', line)
        if m:
            dirs[int(m.group(1))] = m.group(2)
            continue
        m = re.match(r"file_names\[\s*(\d+)\]:", line)
        if m:
            current = int(m.group(1))
            continue
        m = re.match(r'\s+name: "(.*)"', line)
        if m:
            name = m.group(1)
            continue
        m = re.match(r"\s+dir_index: (\d+)", line)
        if m:
            d = dirs.get(int(m.group(1)), "")
            if not d.startswith("/"):
                d = dirs[0] + "/" + d
            files[current] = d + "/" + name
            continue
        m = re.match(r"0x([0-9a-f]+)\s+\d+\s+\d+\s+(\d+)\s+\d+\s+\d+\s*(.*)", line)
        if m:
            rows.append((int(m.group(1), 16), files.get(int(m.group(2)), "?"), "end_sequence" in m.group(3)))
    owner = ["?"] * len(code)
    for (start, file, end), (stop, _, _) in zip(rows, rows[1:]):
        if not end:
            for i in range(max(start, 0), min(stop, len(code))):
                owner[i] = file
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    cost = [0.0] * len(code)
    for i in range(0, len(code), 256):
        chunk = code[i:i + 256]
        n = len(compressor.compress(chunk)) + len(compressor.flush(zlib.Z_SYNC_FLUSH))
        for j in range(len(chunk)):
            cost[i + j] = n / len(chunk)
    scale = len(zlib.compress(code, 9)) / sum(cost)
    raw, gz = collections.Counter(), collections.Counter()
    for i, file in enumerate(owner):
        raw[part(file)] += 1
        gz[part(file)] += cost[i] * scale
    print(f"| part | raw B | gzip B (est.) |\n|---|---:|---:|")
    for name, n in raw.most_common():
        print(f"| {name} | {n} | {gz[name]:.0f} |")
    print(f"| code section | {len(code)} | {sum(gz.values()):.0f} |")
    if pattern:
        names, imported = function_names(data)
        count, j = leb(code, 0)
        per = collections.Counter()
        for k in range(count):
            size, body = leb(code, j)
            for i in range(j, body + size):
                if pattern in owner[i] or pattern in part(owner[i]):
                    per[names.get(imported + k, f"func[{imported + k}]")] += 1
            j = body + size
        print(f"\nbytes from {pattern!r}, by function:")
        for name, n in per.most_common(25):
            print(f"{n:7}  {name}")


if __name__ == "__main__":
    main()
