#!/usr/bin/env bash
# The generation benchmark cases for one H100 / H200, in one call of at most 8 minutes: the thinking workload on a
# random llm-jp-4-8b-shaped model (bf16), naive generate() against the paged and static engines at a few batch sizes,
# and the static engine's rounds of growing length against one round to the budget.
# Prints one JSON line per case on stdout (an environment line first); each case's progress goes to $LOGS/<case>.log.
#
#   benchmarks/gpu_suite.sh                          # the GPU run (torch + transformers preinstalled, no network)
#   GPU_SUITE_SHAPE=tiny benchmarks/gpu_suite.sh     # CPU dry run: the same cases with the tiny shape
#   GPU_SUITE_SHAPE=tiny GPU_SUITE_CASES=paged-b8 GPU_SUITE_EXTRA="--n 4 --budget 32" benchmarks/gpu_suite.sh
#                                                    # CI: one case, smaller still (tests/test_benchmarks.py)
#
# GPU_SUITE_CASES (comma-separated names) runs only those cases; GPU_SUITE_EXTRA is appended to every case's flags.
# Needs pydantic (the harness's config models): where it is missing, wheels in $WHEELS (default .whl, see
# benchmarks/README.md) are installed into a temporary folder first. Each case runs in its own process under its own
# timeout, and cases that no longer fit in GPU_SUITE_SECONDS are reported as skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SHAPE=${GPU_SUITE_SHAPE:-llm-jp-4-8b}
TOTAL=${GPU_SUITE_SECONDS:-465}
LOGS=${GPU_SUITE_LOGS:-/tmp/gpu_suite}
WHEELS=${WHEELS:-.whl}
mkdir -p "$LOGS"
started=$SECONDS

if ! $PY -c "import pydantic" 2>/dev/null; then
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "gpu_suite: pydantic is missing and $WHEELS holds no wheels (see benchmarks/README.md)" >&2
        exit 2
    fi
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$LOGS/site" "$WHEELS"/*.whl || exit 2
    export PYTHONPATH="$LOGS/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

$PY - <<'EOF'
import json, platform, torch, transformers
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
print(json.dumps({"case": "environment", "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__,
                  "transformers": transformers.__version__, "cuda": torch.version.cuda}))
EOF

if [ "$SHAPE" = tiny ]; then
    common=(--shape tiny --workload thinking --n 16 --naive-seconds 10 --engine-seconds 20)
    cases=(
        "paged-b8|--engine paged --batch 8|60"
        "paged-b8-compiled|--engine paged --batch 8 --compile on|40"
        "static-b8|--engine static --batch 8|60"
        "static-b8-one-round|--engine static --batch 8 --first-segment 0 --skip-naive|40"
        "paged-b16|--engine paged --batch 16|60"
    )
else
    # Thinking-shaped lengths with the budget scaled to 4 096 (median 1 024): a 16 k row alone needs 16 k sequential
    # steps, minutes by itself, and 8 minutes must hold every case. Naive generate() is time-boxed (its rate over the
    # first batches: an upper bound); an engine stopped by --engine-seconds counts finished rows only (a lower bound).
    # The static engine runs 48 rows, first in rounds of growing length (its default, first round 1 024 tokens), then
    # in one round to the budget (as before rounds existed; same naive baseline, so that case skips it).
    common=(--shape "$SHAPE" --workload thinking --budget 4096 --median 1024 --n 96 --naive-seconds 20
            --engine-seconds 90)
    cases=(
        "paged-b64|--engine paged --batch 64|150"
        "static-b16|--engine static --batch 16 --n 48 --engine-seconds 60|110"
        "static-b16-one-round|--engine static --batch 16 --n 48 --first-segment 0 --engine-seconds 45 --skip-naive|75"
        "paged-b64-compiled|--engine paged --batch 64 --compile on|140"
        "paged-b128|--engine paged --batch 128|140"
    )
fi

for case in "${cases[@]}"; do
    IFS='|' read -r name flags limit <<<"$case"
    if [[ -n ${GPU_SUITE_CASES:-} && ",$GPU_SUITE_CASES," != *",$name,"* ]]; then
        continue
    fi
    left=$((TOTAL - (SECONDS - started)))
    if ((left < 40)); then
        echo "{\"case\": \"$name\", \"skipped\": \"suite time limit\"}"
        continue
    fi
    ((limit > left)) && limit=$left
    # shellcheck disable=SC2086  # flags are words
    line=$(timeout -k 10 "$limit" $PY benchmarks/gen_throughput.py "${common[@]}" $flags ${GPU_SUITE_EXTRA:-} --label "$name" \
        2>"$LOGS/$name.log" | tail -n 1)
    rc=$?
    if [[ $line == "{"* ]]; then
        echo "$line"
    else
        CASE=$name RC=$rc LIMIT=$limit LOG="$LOGS/$name.log" $PY - <<'EOF'
import json, os
tail = open(os.environ["LOG"], errors="replace").read().splitlines()[-6:]
rc = int(os.environ["RC"])
why = f"timed out after {os.environ['LIMIT']} s" if rc in (124, 137) else f"exit status {rc}"
print(json.dumps({"case": os.environ["CASE"], "error": why, "log_tail": tail}))
EOF
    fi
done
echo "{\"case\": \"done\", \"seconds\": $((SECONDS - started))}"
