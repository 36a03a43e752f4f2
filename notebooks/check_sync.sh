#!/usr/bin/env bash
# Check that every notebook pair NN_name.py (jupytext py:percent) / NN_name.ipynb has the same cells.
# Compares cell inputs (code and markdown) with `jupytext --diff`, which ignores outputs and the
# jupytext header. Exit status: 0 all pairs in sync, 1 a pair differs or a partner is missing,
# 2 jupytext failed.
set -u
cd "$(dirname "$0")"
status=0
for f in [0-9][0-9]_*.py [0-9][0-9]_*.ipynb; do
  [ -e "$f" ] || continue
  stem="${f%.*}"
  if [ ! -e "$stem.py" ] || [ ! -e "$stem.ipynb" ]; then
    echo "MISSING PARTNER: $f (expected both $stem.py and $stem.ipynb)"
    status=1
  fi
done
for py in [0-9][0-9]_*.py; do
  [ -e "$py" ] || continue
  nb="${py%.py}.ipynb"
  [ -e "$nb" ] || continue
  if ! out=$(jupytext --diff "$py" "$nb"); then
    echo "jupytext --diff failed on $py / $nb"
    exit 2
  fi
  if [ -n "$out" ]; then
    printf '%s\n' "$out"
    echo "OUT OF SYNC: $py <-> $nb (edit one side, then run: jupytext --sync notebooks/$py)"
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "all notebook pairs in sync"
exit "$status"
