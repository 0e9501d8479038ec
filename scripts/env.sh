# Sourced by the scripts: where the tools and the built filter are.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
export ENVOY_BIN=${ENVOY_BIN:-$root/.tools/bin/envoy}
export DOPPEL_WASM=${DOPPEL_WASM:-$target_dir/wasm32-wasip1/wasm/doppel_filter.wasm}
build_filter() {
  cargo build --quiet -p doppel-filter --target wasm32-wasip1 --profile wasm
}
