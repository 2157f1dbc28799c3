#!/usr/bin/env bash
# A long campaign of the property tests with fresh draws (the suite runs a fixed, bounded set):
# the whole pipeline (tests/test_pipeline_property.py) and the type layer and snapshot units.
# usage: bench/pipeline_campaign.sh [rounds=10] [pipeline examples per round=50]
# Each round's outcome goes to bench/out/campaign.log; a failure stops the campaign and its
# pytest output (with the failing scenario) is kept in bench/out/campaign-failure.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
per_round=${2:-50}
mkdir -p bench/out
for round in $(seq 1 "$rounds"); do
    start=$(date +%s)
    if HYPOTHESIS_PROFILE=explore PIPELINE_EXAMPLES="$per_round" PROPERTY_EXAMPLES=$((per_round * 10)) \
        .venv/bin/python -m pytest -q \
        -p no:cacheprovider tests/test_pipeline_property.py tests/test_unit_convert.py \
        tests/test_unit_snapshot_drift.py > bench/out/campaign-round.txt 2>&1; then
        echo "$(date -u +%FT%TZ) round $round: ok, $per_round pipeline examples, $(( $(date +%s) - start ))s, $(tail -1 bench/out/campaign-round.txt)" | tee -a bench/out/campaign.log
    else
        cp bench/out/campaign-round.txt bench/out/campaign-failure.txt
        echo "$(date -u +%FT%TZ) round $round: FAILED (bench/out/campaign-failure.txt)" | tee -a bench/out/campaign.log
        exit 1
    fi
done
