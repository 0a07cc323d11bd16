#!/usr/bin/env bash
# Runs the PyTorch cross-check for a tied and an untied model with biases.
# Exit 77 (meson: skipped) when PyTorch is missing, unless NGQ_REQUIRE_TORCH=1
# (scripts/test sets it: CI installs python3-torch, so there a missing torch fails).
set -euo pipefail
dump=$1
root=$2
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "torch_crosscheck: /usr/bin/python3 cannot import torch (apt-get install python3-torch)"
  [ "${NGQ_REQUIRE_TORCH:-0}" = 1 ] && exit 1
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for variant in tied untied-bias; do
  mkdir -p "$tmp/$variant"
  "$dump" "$tmp/$variant" "$variant"
  /usr/bin/python3 "$root/scripts/torch_crosscheck.py" "$tmp/$variant/model.safetensors" "$tmp/$variant/dump.safetensors"
done
