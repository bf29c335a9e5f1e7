#!/usr/bin/env bash
# Re-measure every shipped profile's held-out points on this host (docs/calibration.md, "Fidelity").
#
#   bash experiments/calibration/remeasure.sh OUT_DIR [DESIM]
#
# One `desim profile --validate` per shipped table, one after another (they would slow each other
# down), at the held-out points of the calibration page. Each writes OUT_DIR/<table>.csv (absolute
# and shape MAPE per point), <table>-rows.csv (every block) and <table>-monotonicity.csv.
# qlora needs bitsandbytes (pip install bitsandbytes==0.50.2); without it that table is skipped.
set -euo pipefail
out=${1:?usage: remeasure.sh OUT_DIR [DESIM]}
desim=${2:-desim}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/../.." && pwd)
profiles="$here/desim/data/profiles"
declare -A points=(
  [roberta-large_lora]=2x96 [roberta-large_full]=2x96
)
for csv in "$profiles"/cpu-reference_*.csv; do
  name=$(basename "$csv" .csv); table=${name#cpu-reference_}
  pts=${points[$table]:-2x96,3x160}
  if [[ $table == *qlora ]] && ! python -c "import bitsandbytes" 2>/dev/null; then
    echo "skip $table: bitsandbytes is not installed"; continue
  fi
  echo "$(date -u +%FT%TZ) $table at $pts"
  $desim profile --validate "$csv" --points "$pts" --out "$out/$name.csv"
done
