//! Links the addon the way Node-API needs on each platform (macOS leaves `napi_*` symbols
//! undefined until the addon is loaded into `node`).

fn main() {
    napi_build::setup();
}
