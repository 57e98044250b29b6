#!/usr/bin/env bash
# Issue 22: the paper's own protocol on MNIST (90-epoch training; Cohen's CERTIFY at N0=100, N=100,000,
# alpha=0.001 on test indices 0, 20, ..., 9980; then the adaptive certifier, N <= 100,000, radii 0:2.5:0.25).
#
# Run it in the background from any folder: `ROOT=DIR RSBENCH_PY=PYTHON RSBENCH_DATA=DATA nohup nice -n 19 bash
# benchmarks/paper_protocol_chain.sh >> DIR/chain.log 2>&1 &` (defaults: ROOT ./paper-protocol, the `python` on
# PATH, ./data). Resumable: rerun the same line after an interruption. A finished step leaves
# done/STEP and is skipped; training continues from its in-epoch checkpoint (train --resume); a certification
# resumes by itself (its protocol names the run in the store).
#
# Layout under ROOT: runs/mnist/full/NAME (models; `reproduce --budget paper-subset` shares full's folders),
# store.db (every training and certification), logs/STEP.log, steps.tsv (one line per step attempt:
# step, start, end, wall s, user+sys CPU s, exit code, loadavg at start, loadavg at end; an attempt cut off
# with its chain is written when the chain next starts, rc `killed`, ending at that chain's last load sample,
# CPU unknown), load.log (/proc/loadavg every 60 s while the chain runs), records/*.json.gz (every complete
# paper-subset certification, exported as a run record after each certification step).
set -u
# The whole chain is one function, parsed before it runs: editing this file never changes a running chain.
main() {
  ROOT=$(realpath -m "${ROOT:-paper-protocol}")
  PY=${RSBENCH_PY:-python}   # an rsbench that knows the paper-subset budget
  case $PY in */*) PY=$(realpath -ms "$PY") ;; esac   # absolute, symlinks kept (a venv's python), for the cd below
  export RSBENCH_DATA=$(realpath -m "${RSBENCH_DATA:-data}")
  export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
  if ! "$PY" -c "from rsbench.budgets import BUDGETS; assert 'paper-subset' in BUDGETS" 2>/dev/null; then
    echo "$PY cannot run rsbench with the paper-subset budget: set RSBENCH_PY to such a tree's python"; exit 2
  fi
  DB=$ROOT/store.db
  RUNS=$ROOT/runs
  mkdir -p "$ROOT/logs" "$ROOT/done" "$ROOT/leaderboards"
  cd "$ROOT"

  exec 9>"$ROOT/.lock"
  if ! flock -n 9; then echo "run.sh is already running (lock $ROOT/.lock)"; exit 1; fi

  [ -s "$ROOT/steps.tsv" ] || printf 'step\tstart\tend\twall_s\tcpu_s\trc\tload_start\tload_end\n' > "$ROOT/steps.tsv"
  # An attempt a killed chain left behind (running/STEP: its start) ends at the last load sample that chain took.
  mkdir -p "$ROOT/running"
  for left in "$ROOT"/running/*; do
    [ -e "$left" ] || continue
    local last; last=$(tail -n 1 "$ROOT/load.log" 2>/dev/null | cut -d' ' -f1)
    read -r lname lstart lt0 lload < "$left"
    local lend; lend=$(date -d "${last:-$lstart}" +%s)
    printf '%s\t%s\t%s\t%s\t\tkilled\t%s\t%s\n' "$lname" "$lstart" "${last:-$lstart}" "$(( lend - lt0 ))" \
      "${lload//,/ }" "$(tail -n 1 "$ROOT/load.log" 2>/dev/null | cut -d' ' -f2-4)" >> "$ROOT/steps.tsv"
    rm -f "$left"
  done

  ( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)" >> "$ROOT/load.log"; sleep 60; done ) 9>&- &
  SAMPLER=$!
  trap 'kill $SAMPLER 2>/dev/null' EXIT


  # step NAME COMMAND...: run COMMAND unless done/NAME exists; log wall time, CPU time and load.
  step() {
    local name=$1; shift
    if [ -e "$ROOT/done/$name" ]; then echo "skip $name (done)"; return 0; fi
    local start load_start t0 rc timing
    start=$(date -u +%FT%TZ); load_start=$(cut -d' ' -f1-3 /proc/loadavg); t0=$(date +%s)
    echo "== $name: $start load $load_start" | tee -a "$ROOT/logs/$name.log"
    echo "$name $start $t0 ${load_start// /,}" > "$ROOT/running/$name"
    timing=$(mktemp)
    { TIMEFORMAT='%U %S'; time "$@" >> "$ROOT/logs/$name.log" 2>&1; } 2> "$timing"
    rc=$?
    local cpu; cpu=$(awk '{printf "%.0f", $1 + $2}' "$timing"); rm -f "$timing" "$ROOT/running/$name"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$start" "$(date -u +%FT%TZ)" "$(( $(date +%s) - t0 ))" \
      "$cpu" "$rc" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$ROOT/steps.tsv"
    if [ $rc -eq 0 ]; then touch "$ROOT/done/$name"; else echo "$name failed (rc $rc), see logs/$name.log"; exit $rc; fi
  }

  # train PRESET NAME: the preset's paper schedule (90 epochs on MNIST), resumed if a checkpoint exists.
  train() {
    local out=$RUNS/mnist/full/$2 resume=--no-resume
    [ -e "$out/checkpoint.pth.tar" ] && resume=--resume
    "$PY" -m rsbench train --preset "$1" --out "$out" --db "$DB" --checkpoint-every 300 --no-progress $resume
  }

  # cohen EXPERIMENT METHOD SIGMA: CERTIFY through reproduce, so the run carries budget paper-subset.
  cohen() {
    "$PY" -m rsbench reproduce "$1" --budget paper-subset --methods "$2" --sigmas "$3" --runs-dir "$RUNS" \
      --output-dir "$ROOT/leaderboards" --db "$DB" --no-progress
  }

  # adaptive NAME: the adaptive certifier on the same images, N at most 100,000.
  adaptive() {
    "$PY" -m rsbench certify "$RUNS/mnist/full/$1/checkpoint.pth.tar" --certifier adaptive --n 100000 \
      --radii 0:2.5:0.25 --skip 20 --budget paper-subset --db "$DB" --no-progress
  }

  # export_records: every complete paper-subset run of the store as a run record in records/ (overwritten;
  # copy them to leaderboards/records/mnist-paper/ and run leaderboards/paper_protocol.py --chain ROOT).
  export_records() {
    mkdir -p "$ROOT/records"
    "$PY" - "$DB" "$ROOT/records" >> "$ROOT/logs/export.log" 2>&1 <<'PY'
import subprocess
import sys

from rsbench.store import open_store

db, folder = sys.argv[1:]
runs = open_store(db).runs(dataset="mnist", complete_only=True)
for run in runs[runs.budget == "paper-subset"].itertuples():
    name = f"{run.method}-sigma{run.sigma:.2f}-seed{int(run.seed)}-{run.certifier}-paper-subset.json.gz"
    command = ["-m", "rsbench", "export", str(run.id), "--format", "json", "-o", f"{folder}/{name}", "--db", db]
    subprocess.run([sys.executable, *command], check=True)
    print(f"run {run.id}: {folder}/{name}")
PY
  }

  # Each row's CERTIFY (the issue's done-when) before the adaptive runs, and the adaptive runs of the rows
  # certified so far before the last row's training: a session that ends mid-chain lands whole rows.
  cohen_row() {  # cohen_row EXPERIMENT PRESET METHOD SIGMA NAME
    step "train-$2" train "$2" "$5"
    step "cohen-$2" cohen "$1" "$3" "$4"
    export_records
  }
  adaptive_row() {  # adaptive_row EXPERIMENT PRESET METHOD SIGMA NAME
    step "adaptive-$2" adaptive "$5"
    export_records
  }

  rows=(
    "table2-slice mnist-gaussian-0.50 gaussian 0.5 gaussian-sigma0.5-seed0"
    "table2-slice mnist-gaussian-1.00 gaussian 1.0 gaussian-sigma1-seed0"
    "table2-slice mnist-consistency-0.50 consistency 0.5 consistency-sigma0.5-eta0.5-lam5.0-lossdefault-m2-seed0"
    "table2-slice mnist-consistency-1.00 consistency 1.0 consistency-sigma1-eta0.5-lam5.0-lossdefault-m2-seed0"
  )
  for r in "${rows[@]:0:3}"; do cohen_row $r; done
  for r in "${rows[@]:0:3}"; do adaptive_row $r; done
  cohen_row ${rows[3]}
  adaptive_row ${rows[3]}
  cohen_row table2 mnist-stability-0.50 stability 0.5 stability-sigma0.5-lam2.0-seed0
  adaptive_row table2 mnist-stability-0.50 stability 0.5 stability-sigma0.5-lam2.0-seed0
  echo "all steps done"
}
main "$@"; exit $?
