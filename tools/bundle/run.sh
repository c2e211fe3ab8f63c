#!/bin/bash
# The one entry point of the offline bundle (.bundle/, made by `make bundle`) on a node without internet:
#   bash .bundle/run.sh [options] [--] COMMAND...     setup, then COMMAND (a shell string, or an argv)
#   bash .bundle/gpu_job.sh [options] [--] [COMMAND]  setup, CUDA tests, benchmark, then COMMAND
# Setup installs the missing wheels into a scratch venv that uses the node's own torch, and rebuilds CIFAR-10.
# Every output lands in --out (default $OUT): log.txt, job.json and one .tar.gz per step, packed as each step
# ends, within a total time budget (--budget) and output limits (--max-files, --max-file-mib, --max-total-mib),
# by default the ones the bundle was made with (make_bundle's options of the same names), else none.
# `bash .bundle/run.sh --help` lists the options; docs/gpu.md explains the whole chain. PYTHON picks the interpreter (default python3).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "${PYTHON:-python3}" "$here/job.py" "$@"
