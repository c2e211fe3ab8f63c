#!/bin/bash
# The experiment step of a GPU job (job.py --experiment): brings the runs of earlier jobs into this job's runs
# folder (the committed teachers/ folders of the project, then the archives the bundle carries in imports/), then
# runs each experiment within what is left of BUDGET seconds: `dard experiment --time-budget`, every run's records
# exported to OUT/runs/<run>.tar.gz as soon as it stops or finishes, each report written to OUT/results/<name>.
#   bash experiment_step.sh PYTHON BUDGET RUNS SCALE OUT EXPERIMENT...
set -u
python=$1 budget=$2 runs=$3 scale=$4 out=$5
shift 5
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$runs" "$out/runs" "$out/results"
shopt -s nullglob
for src in teachers/*/ "$here"/imports/*.tar.gz; do
    "$python" -m dard import "${src%/}" --runs "$runs" || echo "experiment step: $src not imported, going on"
done
status=0
for exp in "$@"; do
    name=$exp scale_args=(--scale "$scale")
    # a file runs as it is: dard refuses --scale beside one
    [[ $exp == *.yaml ]] && name=$(basename "$(dirname "$exp")") scale_args=()
    left=$((budget - SECONDS))
    ((left < 0)) && left=0
    echo "== experiment $exp: ${left} s left"
    "$python" -m dard experiment "$exp" ${scale_args[@]+"${scale_args[@]}"} --runs "$runs" --results "$out/results/$name" \
        --time-budget "${left}s" --partial-under 15 --export "$out/runs" || status=1
done
exit $status
