#!/usr/bin/env bash
# Checks that `npm pack` of the SDK yields a working package on its own: no test code in it, types
# resolve for every subpath (arethetypeswrong), a fresh project that installs only the tarball has
# no database driver or web framework (npm ls), imports the public API, and runs the README's
# agent-only example against a KAS built from the same tarball.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
cleanup() {
  [ -n "${kas_pid:-}" ] && kill "$kas_pid" 2>/dev/null || true
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
npm pack -w sdk --pack-destination "$work" --silent > /dev/null
tarball=$(ls "$work"/kasbridge-sdk-*.tgz)

# Tests, test helpers (*.test-support.*) and anything of the test packages stay out of the package.
if tar tzf "$tarball" | grep -E '\.test[.-]|/testing/|test-support|/zz-' ; then
  echo "the package contains test files" >&2
  exit 1
fi
npx attw "$tarball" --profile esm-only

mkdir "$work/consumer"
cd "$work/consumer"
npm init -y > /dev/null
npm pkg set type=module > /dev/null
npm install --no-audit --no-fund "$tarball" > /dev/null

# An embedder of KAS or an agent installs no database driver and no web framework.
if npm ls --all --parseable 2>/dev/null | grep -E '/node_modules/(express|knex|pg|sqlite3|better-sqlite3|mysql2?)$'; then
  echo "installing @kasbridge/sdk pulls in the packages above (a database driver or web framework)" >&2
  exit 1
fi
# Tracing needs only @opentelemetry/api (which prom-client brings anyway); the OpenTelemetry SDK and
# the OTLP exporter are optional peers of @kasbridge/sdk/otlp, installed by who uses that subpath.
if npm ls --all --parseable 2>/dev/null | grep -E '/node_modules/@opentelemetry/(sdk-trace-base|sdk-trace|exporter-trace-otlp-proto|otlp-transformer)$'; then
  echo "installing @kasbridge/sdk pulls in the OpenTelemetry SDK or exporter above (optional peers of @kasbridge/sdk/otlp)" >&2
  exit 1
fi

node --input-type=module -e '
  const expect = async (subpath, names) => {
    const m = await import(`@kasbridge/sdk/${subpath}`);
    for (const name of names) if (!m[name]) throw new Error(`@kasbridge/sdk/${subpath} does not export ${name}`);
  };
  await expect("kas", ["createKasServer", "AgentAuthenticator", "InMemoryTunnelRegistry", "internalApiClientInterceptor"]);
  await expect("agent", ["createAgent", "defaultAgentModules", "TunnelPool", "createLeadership"]);
  await expect("platform-client", ["createHttpPlatformClient", "PlatformError"]);
  await expect("agent-config", ["parseAgentConfigFile"]);
  await expect("auth", ["signKasApiRequestJwt", "bearerToken"]);
  await expect("transport", ["createAgentApiListener", "createAgentTransport"]);
  await expect("util", ["Backoff", "hostPort"]);
  await expect("replicas", ["connectRedis", "startKasReplicas", "RoutingAgentCalls"]);
  for (const name of ["agent_registrar", "agent_configuration", "kubernetes_api", "gitlab_access", "observability"]) {
    for (const side of ["agent", "server"]) await import(`@kasbridge/sdk/modules/${name}/${side}`);
  }
  await import("@kasbridge/sdk/modules/echo/agent");
  await expect("modules/flux/agent", ["fluxAgentModule"]);
  await expect("modules/flux/server", ["fluxServerModule"]);
  await expect("modules/gitops/agent", ["gitopsAgentModule", "decodeManifests"]);
  await expect("modules/gitops/server", ["gitopsServerModule"]);
  await expect("modules/notifications/server", ["notificationsServerModule", "InMemoryGitPushEvents", "RedisGitPushEvents"]);
  await expect("modules/starboard_vulnerability/agent", ["starboardVulnerabilityAgentModule", "parseCron"]);
  await expect("modules/remote_development/agent", ["remoteDevelopmentAgentModule", "parseReconcileResponse"]);
  await expect("gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb", ["ConnectRequestSchema"]);
  await expect("tracing", ["Tracing", "recordedTraceId", "rpcSpan"]);
  // Without its optional peers, @kasbridge/sdk/otlp says which package is missing.
  const otlp = await import("@kasbridge/sdk/otlp").then(() => "imported", (e) => e.message);
  if (!/@opentelemetry\//.test(otlp)) throw new Error(`@kasbridge/sdk/otlp without its peers: ${otlp}`);
  let root = false;
  try { await import("@kasbridge/sdk"); root = true; } catch {}
  if (root) throw new Error("@kasbridge/sdk has a root entry point; the API is its subpaths");
  console.log("package OK: every subpath of the installed tarball imports");
'

# With its peers installed, @kasbridge/sdk/otlp works.
npm install --no-audit --no-fund $(node -p 'Object.entries(require("'"$root"'/sdk/package.json").peerDependencies).map(([n, v]) => `${n}@${v}`).join(" ")') > /dev/null
node --input-type=module -e '
  const { startOtlpTracing } = await import("@kasbridge/sdk/otlp");
  const otlp = await startOtlpTracing({ serviceName: "check", endpoint: "http://127.0.0.1:9/v1/traces" });
  await otlp.shutdown(100);
  console.log("@kasbridge/sdk/otlp OK with its optional peers installed");
'

# The README's agent-only example, connected to a KAS from the same tarball: KAS calls the
# agent's echo service through the tunnel, then the agent stops on SIGTERM.
sed -n '/<!-- agent-example:start -->/,/<!-- agent-example:end -->/p' "$root/README.md" | sed '1,2d;$d' | sed '$d' > agent.js
grep -q createAgent agent.js
cat > kas.js <<'JS'
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { EchoService } from "@kasbridge/sdk/gen/kasbridge/echo/v1/echo_pb";
import { createKasServer, internalApiClientInterceptor } from "@kasbridge/sdk/kas";
import { PlatformError } from "@kasbridge/sdk/platform-client";
const secret = new Uint8Array(32).fill(7);
const platform = {
  async getAgentInfo(token) {
    if (token !== "glagent-package-check") throw new PlatformError("unauthenticated", "unknown token");
    return { agentId: 1, agentName: "check", projectId: 1, projectPath: "check/cluster", defaultBranch: "main" };
  },
  watchTokenRevocations() {},
};
const kas = await createKasServer({ platform, logger: undefined, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: secret } });
console.log(`KAS ${kas.agentApi.url("grpc")}`);
const echo = createClient(EchoService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${kas.internalApiAddress.port}`, interceptors: [internalApiClientInterceptor(secret, 1)] }));
const reply = await echo.echo({ payload: new TextEncoder().encode("hi") }, { timeoutMs: 20_000 });
console.log(`ECHO ${new TextDecoder().decode(reply.payload)} from ${reply.servedBy}`);
await kas.close(1000);
JS
node kas.js > kas.out 2>&1 &
kas_pid=$!
for _ in $(seq 1 100); do grep -q '^KAS ' kas.out && break; sleep 0.1; done
kas_url=$(sed -n 's/^KAS //p' kas.out)
[ -n "$kas_url" ] || { cat kas.out >&2; echo "KAS did not start" >&2; exit 1; }
KAS_ADDRESS="$kas_url" AGENT_TOKEN=glagent-package-check node agent.js > agent.out 2>&1 &
agent_pid=$!
if ! wait "$kas_pid"; then kas_pid=; cat kas.out agent.out >&2; echo "KAS could not call the agent" >&2; exit 1; fi
kas_pid=
grep '^ECHO hi' kas.out
kill -TERM "$agent_pid"
if ! wait "$agent_pid"; then agent_pid=; cat agent.out >&2; echo "the agent did not stop cleanly on SIGTERM" >&2; exit 1; fi
agent_pid=
echo "agent-only example OK: it ran from the installed tarball, served KAS's call, stopped on SIGTERM"
