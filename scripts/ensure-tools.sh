#!/usr/bin/env bash
# Tools the deploy checks need: promtool and prometheus (Debian's `prometheus`), kustomize (Go module proxy).
# Idempotent; prints nothing on stdout but the bin directory to add to PATH.
set -euo pipefail
BIN="${SENTINEL_TOOLS_BIN:-$HOME/.cache/sentinel/bin}"
KUSTOMIZE_VERSION="v5.5.0"
mkdir -p "$BIN"
say() { echo "ensure-tools: $*" >&2; }

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing Debian's prometheus (promtool and the server)"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
    else
        say "promtool/prometheus missing: install Debian's 'prometheus' package (sudo apt-get install prometheus)"
    fi
fi

if [[ ! -x "$BIN/kustomize" ]]; then
    if command -v go >/dev/null 2>&1; then
        say "building kustomize $KUSTOMIZE_VERSION from the Go module proxy"
        GOBIN="$BIN" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
    else
        say "kustomize missing and no Go toolchain to build it: install Go (apt-get install golang) or kustomize"
    fi
fi
echo "$BIN"
