#!/bin/sh
# CrysBFN experiments on perov-5 (see run_experiments.py for arms and environment variables).
# From the repository root, after building:  plugins/crysbfn/examples/run_experiments.sh all
set -e
exec /usr/bin/python3 "$(dirname "$0")/run_experiments.py" "$@"
