#!/usr/bin/env bash
# Build the purejaxql image with the repository root as the build context.
#   docker/build.sh                 # -> purejaxql:latest
#   docker/build.sh purejaxql:0.1   # another tag; arguments after it go to docker build (e.g. --no-cache)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-purejaxql:latest}"
shift || true
docker build -f docker/Dockerfile -t "$tag" "$@" .
