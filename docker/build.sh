#!/usr/bin/env bash
# Build the purejaxql image from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
docker build -f docker/Dockerfile -t purejaxql .
