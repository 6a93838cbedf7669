#!/usr/bin/env bash
# `mpirun -np 2 trellis train|eval` end to end on a small synthetic SOTU: the same
# losses and figures as one process (fp64), output from rank 0 only, clear errors on
# every rank without a hang (an indivisible batch, a missing data set), and a rank
# killed with SIGKILL ending the job promptly with a checkpoint that still resumes.
#   test_mpi_cli.sh TRELLIS MPIEXEC [MPIEXEC_ARGS...]
set -uo pipefail
cli=$1
shift
mpiexec=("$@")
source "$(dirname "$0")/shell_test.sh"
start_test mpi-cli
make_sotu "$work/data"

lm=(--task charlm --data sotu --data-dir "$work/data" --backend serial --threads 1 --precision fp64
    --ninp 8 --nhid 8 --nout 8 --nlevels 3 --batch-size 4 --seq-len 16 --eval-batch-size 4
    --log-every 1 --checkpoint-minutes 1000 --minutes 5 --dropout 0.1 --dropouti 0.1 --dropouth 0.1
    --emb-dropout 0.1 --wdrop 0.2 --wnorm --aux 0.2 --aux-freq 1 --anneal 0 --clip 0.1)

losses() { tail -n +2 "$1/curves.csv" | awk -F, '$5 != "" { print $5 }'; }

# One process against 2 ranks: every step's loss within 1e-9 relative, the same last line.
"$cli" train "${lm[@]}" --run-dir "$work/one" --max-steps 12 >"$work/one.out" 2>"$work/one.err" ||
  fail "one process: $(tail -3 "$work/one.err")"
timeout 120 "${mpiexec[@]}" "$cli" train "${lm[@]}" --run-dir "$work/two" --max-steps 12 --bucket-mb 0.001 \
  >"$work/two.out" 2>"$work/two.err" || fail "2 ranks: $(tail -5 "$work/two.err")"
if ! paste -d' ' <(losses "$work/one") <(losses "$work/two") |
  awk 'NF != 2 || ($1 - $2 > 1e-9 * $1 || $2 - $1 > 1e-9 * $1) { bad = 1 } END { exit bad || NR != 12 }'; then
  fail "2 ranks' losses differ from one process's: $(paste -d' ' <(losses "$work/one") <(losses "$work/two") | head -3)"
fi
[ "$(tail -1 "$work/one.out")" = "$(tail -1 "$work/two.out")" ] ||
  fail "last lines differ: '$(tail -1 "$work/one.out")' and '$(tail -1 "$work/two.out")'"
[ "$(grep -c '^test bpc' "$work/two.out")" -eq 1 ] || fail "the test figure is printed $(grep -c '^test bpc' "$work/two.out") times"
grep -q "data-parallel: MPI" "$work/two/log.txt" || fail "the log does not say the run was data-parallel"

# Evaluation as 2 ranks prints one process's figure, once.
"$cli" eval --checkpoint "$work/one/checkpoint.safetensors" --data sotu --data-dir "$work/data" --backend serial \
  --split valid >"$work/eval1.out" 2>&1 || fail "eval: $(tail -3 "$work/eval1.out")"
timeout 120 "${mpiexec[@]}" "$cli" eval --checkpoint "$work/one/checkpoint.safetensors" --data sotu \
  --data-dir "$work/data" --backend serial --split valid >"$work/eval2.out" 2>"$work/eval2.err" ||
  fail "eval, 2 ranks: $(tail -3 "$work/eval2.err")"
[ "$(cat "$work/eval2.out")" = "$(tail -1 "$work/eval1.out")" ] ||
  fail "eval: '$(cat "$work/eval2.out")' as 2 ranks, '$(tail -1 "$work/eval1.out")' alone"

# Errors on every rank, and no hang.
expect_error_on_every_rank() {
  local name=$1 message=$2
  shift 2
  local start=$SECONDS
  timeout 60 "${mpiexec[@]}" "$cli" train "$@" >"$work/$name.out" 2>"$work/$name.err"
  local status=$?
  [ $status -ne 0 ] && [ $status -ne 124 ] || fail "$name: status $status (124: it hung)"
  for rank in 0 1; do
    grep -q "rank $rank of 2: .*$message" "$work/$name.err" ||
      fail "$name: no message from rank $rank: $(head -5 "$work/$name.err")"
  done
  [ $((SECONDS - start)) -lt 60 ] || fail "$name took $((SECONDS - start)) s"
}
expect_error_on_every_rank batch "--batch-size 5 does not divide among 2 ranks" \
  "${lm[@]}" --run-dir "$work/batch" --batch-size 5
expect_error_on_every_rank data "sotu" "${lm[@]/$work\/data/$work/missing}" --run-dir "$work/nodata"

# A launcher's ranks that MPI does not join (srun without PMI) would each train alone on
# the same files: an error.
SLURM_STEP_NUM_TASKS=2 timeout 60 "$cli" train "${lm[@]}" --run-dir "$work/alone" >"$work/alone.out" 2>"$work/alone.err"
status=$?
[ $status -eq 1 ] || fail "2 launcher ranks that MPI does not see: status $status"
grep -q "started as one of 2 ranks, but MPI sees 1" "$work/alone.err" ||
  fail "2 launcher ranks that MPI does not see: $(head -3 "$work/alone.err")"
[ -e "$work/alone" ] && fail "2 launcher ranks that MPI does not see: the run directory was made"

# SIGKILL to one rank while it trains: the job ends non-zero within 30 s; the last
# checkpoint loads and the run resumes, as 2 ranks and as one process.
"${mpiexec[@]}" "$cli" train "${lm[@]}" --run-dir "$work/killed" --checkpoint-minutes 0.002 \
  >"$work/killed.out" 2>"$work/killed.err" &
job=$!
for _ in $(seq 1 300); do
  [ -f "$work/killed/checkpoint.safetensors" ] && break
  sleep 0.1
done
sleep 1
victim=$(pgrep -P "$job" -f "$cli" | tail -1)
if [ -z "$victim" ]; then
  fail "no rank process found under mpirun ($job)"
  kill -9 "$job" 2>/dev/null
else
  kill -9 "$victim"
  killed_at=$SECONDS
  waited=0
  while kill -0 "$job" 2>/dev/null && [ $waited -lt 300 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$job" 2>/dev/null; then
    fail "mpirun still runs 30 s after a rank was killed"
    kill -9 "$job"
  fi
  wait "$job"
  status=$?
  [ $status -ne 0 ] || fail "mpirun ended with status 0 after a rank was killed"
  echo "mpirun ended $((SECONDS - killed_at)) s after SIGKILL to rank pid $victim, status $status"
fi
step=$(python3 -c "
import json, struct, sys
with open(sys.argv[1], 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    h = json.loads(f.read(n))
    t = h['step']
    f.seek(8 + n + t['data_offsets'][0])
    print(struct.unpack('<q', f.read(8))[0])" "$work/killed/checkpoint.safetensors") ||
  fail "the checkpoint after the kill does not load"
echo "the checkpoint after the kill holds step $step"
timeout 120 "${mpiexec[@]}" "$cli" train "${lm[@]}" --run-dir "$work/killed" --resume --max-steps $((step + 3)) \
  >"$work/resumed.out" 2>"$work/resumed.err" || fail "2 ranks do not resume: $(tail -3 "$work/resumed.err")"
"$cli" train "${lm[@]}" --run-dir "$work/killed" --resume --max-steps $((step + 6)) \
  >"$work/resumed1.out" 2>"$work/resumed1.err" || fail "one process does not resume: $(tail -3 "$work/resumed1.err")"
grep -q "resumed from .* at step $((step + 3))" "$work/killed/log.txt" || fail "the second resume did not start at step $((step + 3))"

# SIGTERM to every rank: they stop at the same step, rank 0 checkpoints, each exits
# with 128 + 15, and the run resumes.
"${mpiexec[@]}" "$cli" train "${lm[@]}" --run-dir "$work/signalled" >"$work/signalled.out" 2>"$work/signalled.err" &
job=$!
for _ in $(seq 1 300); do
  grep -q "^train charlm" "$work/signalled/log.txt" 2>/dev/null && break
  sleep 0.1
done
sleep 1
pkill -TERM -P "$job" -f "$cli"
wait "$job"
status=$?
[ $status -ne 0 ] || fail "SIGTERM to the ranks: mpirun ended with status 0"
grep -q "stopped by SIGTERM at step" "$work/signalled/log.txt" ||
  fail "SIGTERM to the ranks: the log does not say so: $(tail -3 "$work/signalled.err")"
stopped=$(sed -n 's/.*stopped by SIGTERM at step \([0-9]*\).*/\1/p' "$work/signalled/log.txt" | tail -1)
timeout 120 "${mpiexec[@]}" "$cli" train "${lm[@]}" --run-dir "$work/signalled" --resume --max-steps $((stopped + 2)) \
  >"$work/signalled2.out" 2>"$work/signalled2.err" || fail "after SIGTERM, 2 ranks do not resume: $(tail -3 "$work/signalled2.err")"
echo "SIGTERM to the ranks: mpirun status $status, stopped at step $stopped, resumed"

finish_test
