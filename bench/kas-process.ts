/**
 * KAS alone in a child process, for the idle-tunnel memory benchmark: a StaticPlatformClient with
 * `BENCH_AGENTS` tokens (glagent-bench-<i>, agent id i + 1). With BENCH_MEMORY_CONFIG=1 it also runs
 * the agent configuration module, as the shipped `kas` does. Talks to the parent over IPC:
 *   -> { type: "ready", url }            agent API URL, once listening
 *   <- { type: "measure" }  -> { type: "memory", usage, spaces, asFound, stats }   after full GCs
 *                              (asFound: rss and heap spaces just before those GCs)
 *   <- { type: "snapshot", path }  -> { type: "snapshot", path }  heap snapshot after full GCs
 *   <- { type: "close" }    -> exits once KAS has closed
 * Run with --expose-gc.
 */
import { getHeapSpaceStatistics, writeHeapSnapshot } from "node:v8";
import pino from "pino";
import { agentConfigurationServerModule } from "../sdk/src/modules/agent_configuration/server/agent-configuration-module.js";
import { agentRegistrarServerModule } from "../sdk/src/modules/agent_registrar/server/agent-registrar-module.js";
import { createKasServer } from "../sdk/src/kas/kas-server.js";
import { StaticPlatformClient } from "../sdk/src/platform-client/static-platform-client.test-support.js";

const agents = Number(process.env.BENCH_AGENTS ?? 2000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc || !process.send) throw new Error("run as a forked child with --expose-gc");
const send = process.send.bind(process);

const platform = new StaticPlatformClient();
for (let i = 0; i < agents; i++) {
  platform.addToken(`glagent-bench-${i}`, {
    agentId: i + 1,
    agentName: `agent-${i}`,
    projectId: 1000 + i,
    projectPath: `bench/project-${i}`,
    defaultBranch: "main",
    tokenId: i + 1,
  });
}
const kas = await createKasServer({
  platform,
  logger: pino({ level: "error" }),
  agentApi: { port: 0 },
  internalApi: { port: 0, jwtSecret: new Uint8Array(32).fill(3) },
  modules: [agentRegistrarServerModule(), ...(process.env.BENCH_MEMORY_CONFIG === "1" ? [agentConfigurationServerModule()] : [])],
});

async function fullGc(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc!();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Committed bytes per V8 heap space. */
function heapSpaces(): Record<string, number> {
  return Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, s.space_size]));
}

process.on("message", (msg: { type: string }) => {
  void (async () => {
    if (msg.type === "stats") {
      send({ type: "stats", stats: { ...kas.registry.stats(), registered: kas.tracker.count() } });
    } else if (msg.type === "measure") {
      // As V8 left them, before our forced GCs: shows what V8 gives back on its own while idle.
      const asFound = { rss: process.memoryUsage.rss(), spaces: heapSpaces() };
      await fullGc();
      send({
        type: "memory",
        usage: process.memoryUsage(),
        spaces: heapSpaces(),
        asFound,
        stats: { ...kas.registry.stats(), registered: kas.tracker.count() },
      });
    } else if (msg.type === "snapshot") {
      // For investigations: BENCH_HEAP_SNAPSHOT=<dir> makes the memory bench write snapshots.
      await fullGc();
      send({ type: "snapshot", path: writeHeapSnapshot((msg as { path?: string }).path) });
    } else if (msg.type === "close") {
      await kas.close(2000);
      process.disconnect();
      process.exit(0);
    }
  })();
});
send({ type: "ready", url: kas.agentApi.url("grpc") });
