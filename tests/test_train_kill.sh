#!/usr/bin/env bash
# `trellis train` killed with SIGKILL at random moments (inside steps, while writing a
# checkpoint, while validating), 20 times on Serial, then resumed each time: the run
# directory's checkpoint always loads, curves.csv never holds a torn row, and the
# finished run's losses are the uninterrupted run's, step for step, bit for bit. Then a
# few kills on OpenMP (where built), which must load and resume.
#   test_train_kill.sh TRELLIS
set -uo pipefail
cli=$1
source "$(dirname "$0")/shell_test.sh"
start_test kill
make_sotu "$work/data"
steps=400
# Checkpoints and validations every few steps, so that kills land in them too.
lm=(--task charlm --data sotu --data-dir "$work/data" --ninp 16 --nhid 32 --nout 16 --nlevels 4
    --batch-size 8 --seq-len 64 --eval-batch-size 4 --log-every 1 --checkpoint-minutes 0.001
    --eval-minutes 0.002 --valid-tokens 500 --anneal 0 --minutes 30 --max-steps $steps)

# step -> train loss, from curves.csv (rows with a train loss).
losses() { awk -F, 'NR > 1 && $5 != "" && $5 != "nan" { print $1 "," $5 }' "$1/curves.csv"; }
no_torn_row() { awk -F, 'NF != 7 { bad = 1 } END { exit bad }' "$1/curves.csv"; }

"$cli" train "${lm[@]}" --backend serial --threads 1 --run-dir "$work/straight" >"$work/straight.out" 2>&1 ||
  fail "the uninterrupted run failed: $(tail -3 "$work/straight.out")"
losses "$work/straight" >"$work/straight.losses"
[ "$(wc -l <"$work/straight.losses")" -eq $steps ] || fail "the uninterrupted run has $(wc -l <"$work/straight.losses") loss rows, expected $steps"

# Kill at moments drawn from a fixed seed, spread over a session's start-up and steps.
RANDOM=20
run=$work/killed
kills=0
sessions=0
while [ $kills -lt 20 ] && [ $sessions -lt 60 ]; do
  sessions=$((sessions + 1))
  resume=()
  [ -e "$run/checkpoint.safetensors" ] && resume=(--resume)
  "$cli" train "${lm[@]}" --backend serial --threads 1 --run-dir "$run" "${resume[@]}" >"$work/session.out" 2>&1 &
  pid=$!
  sleep "$(printf '0.%03d' $((200 + RANDOM % 500)))"  # 0.2 to 0.7 s: start-up, steps, checkpoints, validations
  if kill -KILL "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    kills=$((kills + 1))
  else
    wait "$pid" || fail "session $sessions failed: $(tail -3 "$work/session.out")"
    grep -q "^test bpc" "$work/session.out" && break  # it finished before the kill
  fi
  [ -e "$run/curves.csv" ] && { no_torn_row "$run" || fail "kill $kills: a torn row in curves.csv"; }
  if [ -e "$run/checkpoint.safetensors" ]; then
    "$cli" eval --backend serial --checkpoint "$run/checkpoint.safetensors" --data sotu --data-dir "$work/data" \
      --split valid >"$work/eval.out" 2>&1 || fail "kill $kills: the checkpoint does not load: $(tail -2 "$work/eval.out")"
  fi
done
[ $kills -ge 20 ] || fail "only $kills kills landed in $sessions sessions"
# Finish the run.
resume=()
[ -e "$run/checkpoint.safetensors" ] && resume=(--resume)
"$cli" train "${lm[@]}" --backend serial --threads 1 --run-dir "$run" "${resume[@]}" >"$work/last.out" 2>&1 ||
  fail "the last session failed: $(tail -3 "$work/last.out")"
no_torn_row "$run" || fail "a torn row in the finished run's curves.csv"
losses "$run" >"$work/killed.losses"
if ! cmp -s "$work/straight.losses" "$work/killed.losses"; then
  fail "the killed and resumed run's losses differ from the uninterrupted run's: $(diff "$work/straight.losses" "$work/killed.losses" | head -4)"
fi
[ "$(tail -1 "$work/last.out")" = "$(tail -1 "$work/straight.out")" ] ||
  fail "test metric $(tail -1 "$work/last.out"), uninterrupted $(tail -1 "$work/straight.out")"
echo "Serial: $kills kills in $sessions sessions, then the same $steps losses and $(tail -1 "$work/last.out")"

# OpenMP: a kill, then the checkpoint loads and the run resumes.
if "$cli" eval --backend openmp --checkpoint "$run/checkpoint.safetensors" --data sotu --data-dir "$work/data" \
  --split valid >/dev/null 2>&1; then
  omp=$work/openmp
  for i in 1 2 3; do
    resume=()
    [ -e "$omp/checkpoint.safetensors" ] && resume=(--resume)
    "$cli" train "${lm[@]}" --backend openmp --threads 2 --run-dir "$omp" "${resume[@]}" >"$work/omp.out" 2>&1 &
    pid=$!
    sleep 0.$((700 + i * 100))
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    [ -e "$omp/curves.csv" ] && { no_torn_row "$omp" || fail "OpenMP kill $i: a torn row"; }
  done
  if [ -e "$omp/checkpoint.safetensors" ]; then
    # A few steps past the checkpoint's: loading and resuming is what is checked here.
    saved=$(python3 -c 'import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
f.seek(8 + n + h["step"]["data_offsets"][0]); print(struct.unpack("<q", f.read(8))[0])' "$omp/checkpoint.safetensors")
    "$cli" train "${lm[@]}" --backend openmp --threads 2 --run-dir "$omp" --resume --max-steps $((saved + 3)) \
      >"$work/omp.out" 2>&1 || fail "OpenMP: does not resume after kills: $(tail -3 "$work/omp.out")"
    grep -q "resumed from" "$omp/log.txt" || fail "OpenMP: the log does not say it resumed"
    echo "OpenMP: killed 3 times, resumed"
  else
    echo "OpenMP: no checkpoint before the kills (slow start-up); nothing to resume" >&2
  fi
fi

finish_test
