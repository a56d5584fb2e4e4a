#!/usr/bin/env bash
# Run a command in the purejaxql image with all GPUs; outputs land in ./outputs on the host.
set -euo pipefail
docker run --rm -it --gpus all -v "$PWD/outputs:/purejaxql/outputs" -e WANDB_API_KEY purejaxql "$@"
