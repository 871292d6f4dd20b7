#!/usr/bin/env bash
# Before/after of a change, back to back: the echo benchmark on REV and on the working tree,
# alternated for ROUNDS rounds (single runs vary by up to 15 % at N=100; alternating spreads
# the machine's drift over both sides).
#
#   benchmarks/ab.sh REV [KINDS] [N] [ROUNDS]      # e.g. benchmarks/ab.sh HEAD~3 ours-trio 50 2
#
# REV is checked out in a temporary worktree and imported through PYTHONPATH, so both sides run
# in this environment (PYTHON, default python3; OFFICIAL_PYTHON for the official row). Prints one line per run: tree, round, client,
# N, CPU s per call-minute (all, user, sys), user us per frame, other load %, underrun ms.
set -euo pipefail
rev=${1:?usage: ab.sh REV [KINDS] [N] [ROUNDS]}
kinds=${2:-ours-asyncio,ours-trio}
n=${3:-50}
rounds=${4:-2}
python=${PYTHON:-python3}
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
old=$(mktemp -d)
git -C "$root" worktree add -q --detach "$old" "$rev"
trap 'git -C "$root" worktree remove --force "$old"' EXIT
out=$(mktemp -d)
for round in $(seq 1 "$rounds"); do
  for side in before after; do
    tree=$([ "$side" = before ] && echo "$old" || echo "$root")
    json="$out/$side-$round.json"
    (cd "$tree/benchmarks" && PYTHONPATH="$tree" "$python" bench.py --n "$n" --kinds "$kinds" \
      --seconds 20 --retries 1 --json "$json" ${OFFICIAL_PYTHON:+--official-python "$OFFICIAL_PYTHON"} \
      > "$out/$side-$round.log" 2>&1)
    "$python" - "$json" "$side" "$round" <<'PY'
import json, sys
path, side, rnd = sys.argv[1:]
data = json.load(open(path))
for r in data if isinstance(data, list) else data.get("results", data):
    print(side, rnd, r["kind"], r["n"], r["cpu_s_per_call_min"], r["user_s_per_call_min"],
          r["sys_s_per_call_min"], r.get("user_us_per_frame"), r.get("other_load_pct"),
          r.get("underrun_ms"))
PY
  done
done
