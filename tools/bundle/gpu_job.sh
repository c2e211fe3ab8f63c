#!/bin/bash
# A GPU job: setup, the cuda-marked tests, benchmarks/bench.py, then the optional COMMAND, each step packed into
# $OUT as it ends, all within --budget seconds (as run.sh: the bundle's default). Same options as run.sh; see docs/gpu.md.
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/run.sh" --gpu-job "$@"
