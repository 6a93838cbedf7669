#!/usr/bin/env bash
# `trellis train` stopped by SIGTERM and by SIGINT: it stops at the next step, writes
# the checkpoint, says so in the log, exits with 128 + the signal, leaves no torn row in
# curves.csv, and the run resumes from the checkpoint.
#   test_train_signals.sh TRELLIS
set -uo pipefail
cli=$1
source "$(dirname "$0")/shell_test.sh"
start_test signals
make_sotu "$work/data"
lm=(--task charlm --data sotu --data-dir "$work/data" --backend serial --threads 1 --ninp 8 --nhid 8 --nout 8
    --nlevels 3 --batch-size 4 --seq-len 16 --eval-batch-size 4 --log-every 7 --checkpoint-minutes 1000
    --minutes 5)

for sig in TERM INT; do
  run=$work/$sig
  "$cli" train "${lm[@]}" --run-dir "$run" >"$run.out" 2>"$run.err" &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q "^train charlm" "$run/log.txt" 2>/dev/null && break
    sleep 0.1
  done
  sleep 1
  kill -"$sig" "$pid"
  start=$SECONDS
  wait "$pid"
  status=$?
  want=$((128 + $(kill -l "$sig")))
  [ $status -eq $want ] || fail "SIG$sig: status $status, expected $want: $(tail -3 "$run.err")"
  [ $((SECONDS - start)) -lt 30 ] || fail "SIG$sig: took $((SECONDS - start)) s to stop"
  grep -q "stopped by SIG$sig at step" "$run/log.txt" || fail "SIG$sig: the log does not say so"
  [ -s "$run.out" ] && fail "SIG$sig: stdout is not empty: $(cat "$run.out")"
  awk -F, 'NF != 7 { bad = 1 } END { exit bad }' "$run/curves.csv" || fail "SIG$sig: a torn row in curves.csv"
  step=$(sed -n "s/.*stopped by SIG$sig at step \([0-9]*\).*/\1/p" "$run/log.txt")
  "$cli" train "${lm[@]}" --run-dir "$run" --resume --max-steps $((step + 3)) >"$run.resumed" 2>&1 ||
    fail "SIG$sig: does not resume: $(tail -3 "$run.resumed")"
  grep -q "resumed from .* at step $step " "$run/log.txt" || fail "SIG$sig: resumed at another step"
  echo "SIG$sig: status $status, stopped at step $step, resumed"
done

finish_test
