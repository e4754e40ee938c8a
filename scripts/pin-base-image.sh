#!/usr/bin/env bash
# Re-pin deploy/Dockerfile's base image to the digest its tag points at today (needs Docker with buildx).
# Usage: scripts/pin-base-image.sh [tag]   (default python:3.11-slim); review and commit the change.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-python:3.11-slim}"
digest="$(docker buildx imagetools inspect "$TAG" --format '{{json .Manifest}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')"
sed -i -E "s|^ARG PYTHON_IMAGE=.*|ARG PYTHON_IMAGE=${TAG}@${digest}|" deploy/Dockerfile
echo "deploy/Dockerfile now builds on ${TAG}@${digest}"
