#!/usr/bin/env bash
# README command 1 (`make demo`): the main job on the embedded default (the CPU), from nothing:
# synthetic multi-task scenes in the Taskonomy layout, the initial model's metrics, training a
# small Mod-Squad on five tasks of different kinds, evaluation, extracting the depth task's own
# model and evaluating it, and a final table.
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

echo "== 1/5 synthetic data: $data"
if [ ! -f "$data/splits.csv" ]; then
  "$modsquad" synth --out "$data" --layout taskonomy --count 600 --size 72 --seed 0
else
  echo "(already there)"
fi

echo "== 2/5 the initial model"
rm -rf "$run"
"$modsquad" eval --config "$config" "${sets[@]}" --out "$run/metrics-init.json" >/dev/null

echo "== 3/5 training"
"$modsquad" train "$config" "${sets[@]}"

echo "== 4/5 evaluation of the trained model"
"$modsquad" eval --checkpoint "$run/last.safetensors" "${sets[@]}" --out "$run/metrics-trained.json" >/dev/null

task=depth_euclidean
echo "== 5/5 extracting $task's model (the experts it uses) and evaluating it"
"$modsquad" extract --task "$task" --checkpoint "$run/last.safetensors" "${sets[@]}" \
  --out "$run/extracted-$task.safetensors" --json "$run/extract-$task.json"
"$modsquad" eval --checkpoint "$run/extracted-$task.safetensors" --out "$run/metrics-extracted.json" >/dev/null

python3 scripts/demo_table.py "$run/metrics-init.json" "$run/metrics-trained.json" \
  --extracted "$run/metrics-extracted.json" --extract-summary "$run/extract-$task.json" \
  --seconds $(( $(date +%s) - start ))
if command -v gnuplot >/dev/null; then
  scripts/plot_run "$run" >/dev/null && echo "training curves: $run/plots/"
fi
