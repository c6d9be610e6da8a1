#!/usr/bin/env bash
# Fails when `npm run generate` would change the committed generated code.
set -euo pipefail
cd "$(dirname "$0")/.."
npx buf generate
if ! git diff --quiet --exit-code -- sdk/src/gen || [ -n "$(git ls-files --others --exclude-standard -- sdk/src/gen)" ]; then
  echo "generated code is stale: run 'npm run generate' and commit sdk/src/gen" >&2
  git status --short -- sdk/src/gen >&2
  exit 1
fi
echo "generated code is current"
