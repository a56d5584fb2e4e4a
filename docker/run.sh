#!/usr/bin/env bash
# Run a command in the purejaxql image; with no command, the image's default (QMIX on MPE).
#   docker/run.sh python -m purejaxql.qmix_ps +alg=qmix_mpe alg.TOTAL_TIMESTEPS=1e6
#   docker/run.sh python -m purejaxql.vdn_ps -m +alg=vdn_mpe SEED=0,1,2
# ./outputs, ./multirun and ./models of the current directory are mounted, so run folders and checkpoints
# stay on the host. All GPUs are used when Docker has the NVIDIA runtime; GPUS=none forces CPU,
# GPUS='"device=0"' picks one. IMAGE=purejaxql:0.1 picks another image. WANDB_API_KEY is passed on if set.
set -euo pipefail
image="${IMAGE:-purejaxql:latest}"
gpus="${GPUS:-auto}"
if [[ "$gpus" == auto ]]; then
    if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then gpus=all; else gpus=none; fi
fi
# run as the host user (HOME=/tmp: that uid has no home in the image) so the mounted folders stay the user's
args=(--rm --user "$(id -u):$(id -g)" -e HOME=/tmp -e WANDB_API_KEY)
if [[ "$gpus" != none ]]; then
    args+=(--gpus "$gpus")
fi
if [[ -t 0 && -t 1 ]]; then
    args+=(-it)  # a terminal: live progress line, Ctrl-C reaches the run
fi
for dir in outputs multirun models; do
    mkdir -p "$dir"  # created here so that the host user, not root, owns it
    args+=(-v "$PWD/$dir:/workspace/$dir")
done
exec docker run "${args[@]}" "$image" "$@"
