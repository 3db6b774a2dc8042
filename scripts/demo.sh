#!/usr/bin/env bash
# README command 1 (`make demo`): the main job on the embedded default (the CPU), from nothing:
# synthetic multi-task scenes in the Taskonomy layout, the initial model's metrics, training a
# small Mod-Squad on five tasks of different kinds, evaluation, and a final table.
#   DEMO_STEPS=N   train for N steps instead of configs/demo.yaml's train.steps (tests use it)
#   DEMO_DIR=dir   where data and the run go (default runs/)
#   MODSQUAD_BIN=path  the program (default ./modsquad; make test SANITIZE=1 uses build/san's)
set -euo pipefail
cd "$(dirname "$0")/.."
modsquad=${MODSQUAD_BIN:-./modsquad}
dir=${DEMO_DIR:-runs}
config=configs/demo.yaml
data="$dir/data/synth-demo"
run="$dir/demo"
sets=(--set "data.root=$data" --set "run.dir=$dir" --set run.name=demo)
if [ -n "${DEMO_STEPS:-}" ]; then
  sets+=(--set "train.steps=$DEMO_STEPS" --set "train.warmup_steps=$(( DEMO_STEPS / 10 ))"
         --set "train.checkpoint_every=0" --set "train.eval_every=0")
fi
start=$(date +%s)

echo "== 1/4 synthetic data: $data"
if [ ! -f "$data/splits.csv" ]; then
  "$modsquad" synth --out "$data" --layout taskonomy --count 600 --size 72 --seed 0
else
  echo "(already there)"
fi

echo "== 2/4 the initial model"
rm -rf "$run"
"$modsquad" eval --config "$config" "${sets[@]}" --out "$run/metrics-init.json" >/dev/null

echo "== 3/4 training"
"$modsquad" train "$config" "${sets[@]}"

echo "== 4/4 evaluation of the trained model"
"$modsquad" eval --checkpoint "$run/last.safetensors" "${sets[@]}" --out "$run/metrics-trained.json" >/dev/null

python3 scripts/demo_table.py "$run/metrics-init.json" "$run/metrics-trained.json" \
  --seconds $(( $(date +%s) - start ))
if command -v gnuplot >/dev/null; then
  scripts/plot_run "$run" >/dev/null && echo "training curves: $run/plots/"
fi
