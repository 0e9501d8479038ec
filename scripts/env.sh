# Sourced by the scripts: where the tools and the built filter are.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
export ENVOY_BIN=${ENVOY_BIN:-$root/.tools/bin/envoy}
export DOPPEL_WASM=${DOPPEL_WASM:-$target_dir/wasm32-wasip1/wasm/doppel_filter.wasm}
# The split-only build (no `mirror` feature: no body callbacks), beside the full one.
export DOPPEL_SPLIT_WASM=${DOPPEL_SPLIT_WASM:-$target_dir/wasm32-wasip1/wasm/doppel_filter_split.wasm}
# Builds both modules: the split-only one first (cargo writes both to doppel_filter.wasm).
build_filter() {
  local out=$target_dir/wasm32-wasip1/wasm
  cargo build --quiet -p doppel-filter --target wasm32-wasip1 --profile wasm --no-default-features &&
    cp "$out/doppel_filter.wasm" "$out/doppel_filter_split.wasm.tmp" &&
    mv "$out/doppel_filter_split.wasm.tmp" "$out/doppel_filter_split.wasm" &&
    cargo build --quiet -p doppel-filter --target wasm32-wasip1 --profile wasm
}
