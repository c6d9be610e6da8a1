/**
 * Latency, throughput and concurrency of one EchoService reached three ways, all in this process
 * (client, every hop and the service share one event loop, so a figure is the whole chain's cost):
 *
 *  (a) direct:       client -> connect-node echo server
 *  (b) pass-through: client -> h2 forwarder -> h2 forwarder -> connect-node echo server
 *  (b') raw floor:   client -> h2 forwarder -> h2 forwarder -> raw node:http2 echo (no connect-es)
 *  (c) tunnel:       client -> KAS internal API -> reverse tunnel -> agent -> in-process echo service
 */
import { connectNodeAdapter } from "@connectrpc/connect-node";
import pino from "pino";
import { createAgent, type Agent } from "../sdk/src/agent/create-agent.js";
import { EchoService } from "../sdk/src/gen/kasbridge/echo/v1/echo_pb.js";
import { echoService } from "../sdk/src/modules/echo/agent/echo-service.js";
import { internalApiClientInterceptor } from "../sdk/src/kas/internal-api-auth.js";
import { createKasServer, type KasServer } from "../sdk/src/kas/kas-server.js";
import { StaticPlatformClient } from "../sdk/src/platform-client/static-platform-client.test-support.js";
import {
  closeServer,
  createWideServer,
  echoClient,
  h2Settings,
  listen,
  percentile,
  sleep,
  trackSessions,
  type EchoClient,
} from "./common.js";
import { startForwarder, startRawEcho, type BenchServer } from "./passthrough.js";

export type TargetName = "direct" | "passthrough" | "raw" | "tunnel";

export interface Target {
  name: TargetName;
  echo: EchoClient;
}

export interface UnaryResult {
  p50: number;
  p99: number;
  mean: number;
  calls: number;
  /** Process CPU time (all threads, including GC) per call, in microseconds. */
  cpuMicrosPerCall: number;
}

export interface StreamResult {
  bytes: number;
  seconds: number;
  mibPerSecond: number;
  /** MiB per second of process CPU time (all threads): throughput on an otherwise idle machine. */
  mibPerCpuSecond: number;
}

export interface PerfSetup {
  targets: Target[];
  tunnelTarget: Target;
  agent: Agent;
  kas: KasServer;
  close(): Promise<void>;
}

async function startConnectEcho(servedBy: string): Promise<BenchServer> {
  const server = createWideServer();
  const sessions = trackSessions(server);
  // Compression off on the server too: responses are never gzipped, whatever the client accepts.
  server.on("request", connectNodeAdapter({ acceptCompression: [], routes: (r) => r.service(EchoService, echoService(servedBy)) }));
  const port = await listen(server);
  return { port, url: `http://127.0.0.1:${port}`, close: () => closeServer(server, sessions) };
}

export async function setupPerf(): Promise<PerfSetup> {
  const logger = pino({ level: "warn" });
  const servers: BenchServer[] = [];
  const direct = await startConnectEcho("direct");
  servers.push(direct);

  const passService = await startConnectEcho("passthrough");
  const pass2 = await startForwarder(passService.url);
  const pass1 = await startForwarder(pass2.url);
  servers.push(pass1, pass2, passService);

  const raw = await startRawEcho();
  const raw2 = await startForwarder(raw.url);
  const raw1 = await startForwarder(raw2.url);
  servers.push(raw1, raw2, raw);

  const secret = new Uint8Array(32).fill(7);
  const platform = new StaticPlatformClient();
  platform.addToken("glagent-bench", { agentId: 1, agentName: "bench", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 1 });
  // Every call takes a new tunnel stream, which GitLab's per-token limit counts: a throughput
  // benchmark measures the path, not that policy (40 000 per minute by default).
  const kas = await createKasServer({ platform, logger, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: secret }, connectionsPerTokenPerMinute: 0 });
  const agent = createAgent({
    kasAddress: kas.agentApi.url("grpc"),
    token: "glagent-bench",
    logger,
    podName: "tunnel",
    transport: { http2Settings: h2Settings },
  });
  agent.start();
  const deadline = Date.now() + 10_000;
  while (kas.registry.stats().idleTunnels < 2) {
    if (Date.now() > deadline) throw new Error("agent did not connect");
    await sleep(20);
  }

  const tunnelTarget: Target = {
    name: "tunnel",
    echo: echoClient(`http://127.0.0.1:${kas.internalApiAddress.port}`, [internalApiClientInterceptor(secret, 1)]),
  };
  const targets: Target[] = [
    { name: "direct", echo: echoClient(direct.url) },
    { name: "passthrough", echo: echoClient(pass1.url) },
    { name: "raw", echo: echoClient(raw1.url) },
    tunnelTarget,
  ];
  return {
    targets,
    tunnelTarget,
    agent,
    kas,
    async close() {
      for (const t of targets) t.echo.close();
      await agent.stop(1000);
      await kas.close(1000);
      await Promise.all(servers.map((s) => s.close()));
    },
  };
}

const unaryPayload = new Uint8Array(100).fill(0x62);

async function echoOnce(target: Target): Promise<void> {
  const res = await target.echo.client.echo({ payload: unaryPayload });
  if (res.payload.byteLength !== unaryPayload.byteLength) throw new Error(`${target.name}: bad echo`);
}

/**
 * Sequential unary calls with a 100-byte payload, `calls` per target, in blocks of `blockSize`
 * calls that rotate between the targets, so every target sees the same machine load. After each
 * block the loop idles for `pauseMs` so work a call leaves behind (the agent replacing its used
 * tunnel) is neither charged to the next target's calls nor lost from this target's CPU time.
 * `warmup` calls per target are not recorded.
 */
export async function measureUnaryInterleaved(
  targets: Target[],
  calls: number,
  warmup: number,
  blockSize = 100,
  pauseMs = 10,
): Promise<Map<TargetName, UnaryResult>> {
  for (const target of targets) for (let i = 0; i < warmup; i++) await echoOnce(target);
  const latencies = new Map(targets.map((t) => [t.name, [] as number[]]));
  const cpuMicros = new Map(targets.map((t) => [t.name, 0]));
  for (let done = 0; done < calls; done += blockSize) {
    const n = Math.min(blockSize, calls - done);
    for (const target of targets) {
      const list = latencies.get(target.name)!;
      const cpu = process.cpuUsage();
      for (let i = 0; i < n; i++) {
        const start = performance.now();
        await echoOnce(target);
        list.push(performance.now() - start);
      }
      await sleep(pauseMs);
      const used = process.cpuUsage(cpu);
      cpuMicros.set(target.name, cpuMicros.get(target.name)! + used.user + used.system);
    }
  }
  const out = new Map<TargetName, UnaryResult>();
  for (const target of targets) {
    const sorted = latencies.get(target.name)!.sort((a, b) => a - b);
    out.set(target.name, {
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
      calls: sorted.length,
      cpuMicrosPerCall: cpuMicros.get(target.name)! / sorted.length,
    });
  }
  return out;
}

/** One server stream of `count` messages of `size` bytes, consumed as fast as it comes. */
export async function measureStream(target: Target, count: number, size: number): Promise<StreamResult> {
  const start = performance.now();
  const cpu = process.cpuUsage();
  let bytes = 0;
  let n = 0;
  for await (const msg of target.echo.client.serverStream({ count, size })) {
    bytes += msg.payload.byteLength;
    n++;
  }
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  const cpuSeconds = (used.user + used.system) / 1e6;
  if (n !== count || bytes !== count * size) throw new Error(`${target.name}: stream ended early (${n}/${count})`);
  return { bytes, seconds, mibPerSecond: bytes / (1 << 20) / seconds, mibPerCpuSecond: bytes / (1 << 20) / cpuSeconds };
}

export interface ConcurrencyResult {
  calls: number;
  failures: number;
  seconds: number;
  firstError?: string;
  maxTunnels: number;
}

/** `calls` unary calls started at once through the tunnel; every one must succeed. */
export async function measureConcurrency(setup: PerfSetup, calls: number): Promise<ConcurrencyResult> {
  const { client } = setup.tunnelTarget.echo;
  // Start from the pool's steady state (minIdleTunnels idle streams).
  const deadline = Date.now() + 30_000;
  while (setup.agent.pool.stats().active > 0 || setup.kas.registry.stats().idleTunnels < 2) {
    if (Date.now() > deadline) break;
    await sleep(20);
  }
  let maxTunnels = 0;
  const sampler = setInterval(() => {
    const s = setup.agent.pool.stats();
    maxTunnels = Math.max(maxTunnels, s.idle + s.active);
  }, 5);
  const start = performance.now();
  const results = await Promise.allSettled(
    Array.from({ length: calls }, async (_, i) => {
      const payload = new Uint8Array(100).fill(i % 256);
      const res = await client.echo({ payload }, { timeoutMs: 60_000 });
      if (res.payload.byteLength !== 100 || res.payload[0] !== i % 256) throw new Error(`call ${i}: wrong payload`);
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  clearInterval(sampler);
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  return {
    calls,
    failures: failed.length,
    seconds,
    firstError: failed[0] ? String(failed[0].reason) : undefined,
    maxTunnels,
  };
}
