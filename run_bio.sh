#!/usr/bin/env bash
# The course's Part 4 run: ProtoNet on the TDC metabolism assays, 2-way 5-shot,
# 10 query molecules per label, 4 tasks per meta-batch, 8000 iterations, lr 5e-4, on
# 1024 Morgan counts (the course's pickle's features when it is in DIR; --features picks others).
#
#   bash run_bio.sh                          # data in ./data/metabolism
#   bash run_bio.sh DIR [more flags]         # data in DIR; e.g. --algorithm maml, --device gpu
#   METABOLISM_DATA=DIR bash run_bio.sh
#
# A relative DIR is taken from where you run it; the default data and the logs are in the repository's
# ./data/metabolism and ./logs/, as the course's were.
set -euo pipefail
datadir="${1:-${METABOLISM_DATA:-}}"
if [ $# -gt 0 ]; then shift; fi
case "$datadir" in ''|/*) ;; *) datadir="$PWD/$datadir" ;; esac  # a DIR you give is where you are
cd "$(dirname "$0")"
datadir="${datadir:-./data/metabolism}"
# the course's settings are the metabolism dataset's defaults (2-way 5-shot, 10 queries, 4 tasks a meta-batch,
# 8000 iterations, lr 5e-4): not repeated here, so that each --algorithm keeps its own (Reptile's meta step 1.0)
exec python run_metabolism.py --datadir "$datadir" "$@"
