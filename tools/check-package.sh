#!/usr/bin/env bash
# Checks that `npm pack` of the SDK yields a working package: types resolve (arethetypeswrong),
# and a fresh project that installs the tarball can import the public API.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm pack -w sdk --pack-destination "$work" --silent > /dev/null
tarball=$(ls "$work"/kasbridge-sdk-*.tgz)
# Tests, test helpers (*.test-support.*) and anything of sdk/src/testing stay out of the package.
if tar tzf "$tarball" | grep -E '\.test[.-]|/testing/|/zz-' ; then
  echo "the package contains test files" >&2
  exit 1
fi
npx attw "$tarball" --profile esm-only
mkdir "$work/consumer"
cd "$work/consumer"
npm init -y > /dev/null
# Native addons (sqlite3) are not needed to import the API; skipping them keeps this fast.
npm install --ignore-scripts --no-audit --no-fund "$tarball" > /dev/null
node --input-type=module -e '
  const sdk = await import("@kasbridge/sdk");
  for (const name of ["createKasServer", "createAgent", "createPlatformApi", "openStore", "EchoService", "ReverseTunnel"]) {
    if (!sdk[name]) throw new Error(`@kasbridge/sdk does not export ${name}`);
  }
  const gen = await import("@kasbridge/sdk/gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb");
  if (!gen.ConnectRequestSchema) throw new Error("generated code is not importable");
  console.log("package OK: the installed tarball imports");
'
