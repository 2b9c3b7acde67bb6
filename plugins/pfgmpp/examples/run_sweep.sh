#!/bin/sh
# Runs the PFGM++ experiments (see run_sweep.py for the knobs) and prints the result tables.
#   plugins/pfgmpp/examples/run_sweep.sh            # everything (toy D-sweep, digits D-sweep + grids)
#   plugins/pfgmpp/examples/run_sweep.sh toy        # only the toy sweep;  ... digits / summary
# Finished runs are reused (results in $OUT/results.json); delete $OUT to start over.
set -e
cd "$(dirname "$0")/../../.."
exec /usr/bin/python3 plugins/pfgmpp/examples/run_sweep.py "$@"
