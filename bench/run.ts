/**
 * `npm run bench`: the tunnel's cost against a direct call and against a bare HTTP/2 pass-through
 * chain of the same hop count, 1,000 concurrent calls through one agent, and KAS memory per idle
 * tunnel stream, the Kubernetes API proxy, how soon KAS acts on a revocation or a config push, and
 * how soon a git push reaches Flux's webhook or is applied by the built-in GitOps, and several
 * replicas: forwarded vs local calls, revocation across replicas, recovery after kill -9.
 * Loopback only; everything stops by itself. See docs/benchmarks.md.
 *
 * Knobs (environment): BENCH_ROUNDS (3), BENCH_UNARY_CALLS (3000), BENCH_WARMUP (500),
 * BENCH_STREAM_MIB (100), BENCH_STREAM_MESSAGE_BYTES (32768), BENCH_CONCURRENT (1000),
 * BENCH_AGENTS (2000), BENCH_TUNNELS_PER_AGENT (2), BENCH_MEMORY_CONFIG (0; 1: section 3 with KAS's
 * configuration module on and every agent holding its GetConfiguration stream, as the shipped kas), BENCH_ONLY (comma list of: perf, concurrency, memory, kubeproxy, events, gitops, replicas, tracing),
 * BENCH_JSON (a file to write the raw results to); section 4 (kubeproxy): see bench/kubeproxy-client.ts for BENCH_KP_*;
 * section 5 (events): BENCH_EVENT_ROUNDS (10); section 6 (gitops): BENCH_GITOPS_ROUNDS (10);
 * section 7 (replicas): BENCH_REPLICA_CALLS (2000), BENCH_REPLICA_ROUNDS (5); section 8 (tracing): BENCH_TR_ROUNDS (3),
 * BENCH_TR_REQUESTS (600), BENCH_TR_CONCURRENCY (8).
 */
import { execFileSync, fork } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { fmt, median } from "./common.js";
import { measureEvents, type EventsResult } from "./events.js";
import { measureGitops, type GitopsResult } from "./gitops.js";
import { measureKubeproxy, type KubeproxyResult } from "./kubeproxy.js";
import { measureTracing, type TracingBenchResult } from "./tracing.js";
import { measureReplicas, type ReplicasResult } from "./replicas.js";
import { measureMemory, type MemoryResult, type Usage } from "./memory.js";
import {
  type ConcurrencyResult,
  type StreamResult,
  type TargetName,
  type UnaryResult,
} from "./perf.js";

const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const rounds = env("BENCH_ROUNDS", 3);
const unaryCalls = env("BENCH_UNARY_CALLS", 3000);
const warmup = env("BENCH_WARMUP", 500);
const streamMessageBytes = env("BENCH_STREAM_MESSAGE_BYTES", 32768);
const streamMessages = Math.ceil((env("BENCH_STREAM_MIB", 100) * (1 << 20)) / streamMessageBytes);
const concurrentCalls = env("BENCH_CONCURRENT", 1000);
const agentCount = env("BENCH_AGENTS", 2000);
const tunnelsPerAgent = env("BENCH_TUNNELS_PER_AGENT", 2);
const only = new Set((process.env.BENCH_ONLY ?? "perf,concurrency,memory,kubeproxy,events,gitops,replicas,tracing").split(",").map((s) => s.trim()));

const targets: TargetName[] = ["direct", "passthrough", "raw", "tunnel"];
const labels: Record<TargetName, string> = {
  direct: "(a) direct",
  passthrough: "(b) pass-through",
  raw: "(b') raw floor",
  tunnel: "(c) tunnel",
};

interface Round {
  unary: Record<TargetName, UnaryResult>;
  stream: Record<TargetName, StreamResult>;
}

function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => "  " + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(line(head));
  for (const row of rows) console.log(line(row));
}

function verdict(ok: boolean): string {
  return ok ? "meets target" : "MISSES target";
}

const started = performance.now();
console.log(`kasbridge bench: node ${process.version}, ${(await import("node:os")).cpus().length} CPUs, load ${(await import("node:os")).loadavg().map((l) => l.toFixed(2)).join(" ")}`);
const results: {
  rounds?: Round[];
  concurrency?: ConcurrencyResult[];
  memory?: MemoryResult;
  kubeproxy?: KubeproxyResult;
  events?: EventsResult;
  gitops?: GitopsResult;
  replicas?: ReplicasResult;
  tracing?: TracingBenchResult;
} = {};

/** Compiles the benchmark to plain JS (bench/dist): measured processes run without tsx. */
function compile(): void {
  const tsc = fileURLToPath(new URL("../node_modules/typescript/bin/tsc", import.meta.url));
  const started = performance.now();
  try {
    execFileSync(process.execPath, [tsc, "-p", fileURLToPath(new URL("./tsconfig.json", import.meta.url))], { stdio: "inherit" });
  } catch {
    // tsc still emits; `npm run bench` type-checks the SDK in its build step anyway.
    console.log("warning: type errors above; running the emitted JavaScript anyway");
  }
  console.log(`compiled the benchmark in ${fmt((performance.now() - started) / 1000, 1)} s`);
}

/** Runs sections 1 and 2 in a child process and prints their results as they come. */
async function runPerfWorker(): Promise<void> {
  const worker = fork(fileURLToPath(new URL("./dist/bench/perf-worker.js", import.meta.url)), [], {
    execArgv: [],
    env: {
      ...process.env,
      BENCH_ONLY: [...only].join(","),
      BENCH_ROUNDS: String(rounds),
      BENCH_UNARY_CALLS: String(unaryCalls),
      BENCH_WARMUP: String(warmup),
      BENCH_STREAM_MESSAGE_BYTES: String(streamMessageBytes),
      BENCH_STREAM_MESSAGES: String(streamMessages),
      BENCH_CONCURRENT: String(concurrentCalls),
    },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const all: Round[] = [];
  if (only.has("perf")) {
    console.log(
      `\n1. Unary (100 B payload, ${unaryCalls} sequential calls per target in interleaved blocks, after warm-up) and server stream ` +
        `(${streamMessages} x ${streamMessageBytes} B = ${fmt((streamMessages * streamMessageBytes) / (1 << 20), 0)} MiB), ${rounds} rounds`,
    );
  }
  await new Promise<void>((resolve, reject) => {
    worker.on("message", (msg: { type: string } & Record<string, unknown>) => {
      if (msg.type === "round") {
        const { unary, stream } = msg as unknown as Round;
        all.push({ unary, stream });
        console.log(`\n  round ${String(msg.round)}`);
        table(
          ["", "p50 ms", "p99 ms", "mean ms", "cpu us/call", "stream MiB/s", "MiB/cpu-s"],
          targets.map((t) => [
            labels[t],
            fmt(unary[t].p50, 3),
            fmt(unary[t].p99, 3),
            fmt(unary[t].mean, 3),
            fmt(unary[t].cpuMicrosPerCall, 0),
            fmt(stream[t].mibPerSecond, 1),
            fmt(stream[t].mibPerCpuSecond, 1),
          ]),
        );
      } else if (msg.type === "concurrency") {
        results.concurrency = msg.runs as ConcurrencyResult[];
      } else if (msg.type === "done") {
        resolve();
      }
    });
    worker.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`perf worker exited with ${code}`))));
  });
  if (all.length > 0) {
    results.rounds = all;
    summarize(all);
  }
  if (results.concurrency) {
    const runs = results.concurrency;
    console.log(`\n2. ${concurrentCalls} concurrent unary calls through one agent (${runs.length} runs)`);
    table(
      ["run", "seconds", "calls/s", "failures", "peak agent tunnels"],
      runs.map((r, i) => [String(i + 1), fmt(r.seconds, 3), fmt(r.calls / r.seconds, 0), String(r.failures), String(r.maxTunnels)]),
    );
    const failures = runs.reduce((n, r) => n + r.failures, 0);
    if (failures > 0) console.log(`  first failure: ${runs.find((r) => r.firstError)?.firstError}`);
    console.log(`  target all succeed: ${verdict(failures === 0)}`);
  }
}

function summarize(all: Round[]): void {
  const med = (f: (r: Round) => number) => median(all.map(f));
  console.log(`\n  median of ${all.length} rounds`);
  table(
    ["", "p50 ms", "p99 ms", "cpu us/call", "stream MiB/s", "MiB/cpu-s"],
    targets.map((t) => [
      labels[t],
      fmt(med((r) => r.unary[t].p50), 3),
      fmt(med((r) => r.unary[t].p99), 3),
      fmt(med((r) => r.unary[t].cpuMicrosPerCall), 0),
      fmt(med((r) => r.stream[t].mibPerSecond), 1),
      fmt(med((r) => r.stream[t].mibPerCpuSecond), 1),
    ]),
  );
  const ratios = (base: TargetName) => ({
    p50: med((r) => r.unary.tunnel.p50 / r.unary[base].p50),
    p99: med((r) => r.unary.tunnel.p99 / r.unary[base].p99),
    cpu: med((r) => r.unary.tunnel.cpuMicrosPerCall / r.unary[base].cpuMicrosPerCall),
    stream: med((r) => r.stream.tunnel.mibPerSecond / r.stream[base].mibPerSecond),
    streamCpu: med((r) => r.stream.tunnel.mibPerCpuSecond / r.stream[base].mibPerCpuSecond),
  });
  const vsB = ratios("passthrough");
  console.log(`\n  tunnel ratios (median of per-round ratios; latency and cpu/call: lower is better; stream: higher is better)`);
  table(
    ["tunnel vs", "p50", "p99", "cpu/call", "stream", "stream/cpu-s"],
    (["passthrough", "direct", "raw"] as const).map((base) => {
      const v = ratios(base);
      return [labels[base], `${fmt(v.p50)}x`, `${fmt(v.p99)}x`, `${fmt(v.cpu)}x`, `${fmt(v.stream)}x`, `${fmt(v.streamCpu)}x`];
    }),
  );
  console.log(`  targets vs (b): p50 <= 1.5x ${verdict(vsB.p50 <= 1.5)}; p99 <= 2x ${verdict(vsB.p99 <= 2)}; stream >= 0.7x ${verdict(vsB.stream >= 0.7)}`);
}

compile();
if (only.has("perf") || only.has("concurrency")) await runPerfWorker();

if (only.has("memory")) {
  const withConfig = process.env.BENCH_MEMORY_CONFIG === "1" ? " + 1 idle GetConfiguration stream each (configuration module on)" : "";
  console.log(
    `\n3. KAS memory with ${agentCount} agents x ${tunnelsPerAgent} idle tunnels${withConfig} (KAS alone in a child process, after full GCs; per stream = per tunnel stream)`,
  );
  const m = await measureMemory(agentCount, tunnelsPerAgent);
  console.log(`  each sample after ${fmt(m.settleMs / 1000, 1)} s idle (BENCH_SETTLE_MS); "as found": before the forced GCs`);
  results.memory = m;
  const streams = Math.max(1, m.full.idleTunnels);
  const halfStreams = m.half.idleTunnels;
  const kib = (bytes: number) => fmt(bytes / 1024, 1);
  const mib = (bytes: number) => fmt(bytes / (1 << 20), 1);
  const samples = [
    ["baseline", m.baseline],
    ["half connected", m.half],
    ["all connected", m.full],
  ] as const;
  const fields: Array<(u: Usage) => number> = [(u) => u.rss, (u) => u.heapTotal, (u) => u.heapUsed, (u) => u.heapUsed + u.external];
  const per = (from: Usage, to: Usage, n: number) => fields.map((f) => kib((f(to) - f(from)) / n));
  table(
    ["", "idle streams", "rss MiB", "heapTotal MiB", "heapUsed MiB", "external MiB", "new space MiB", "as found: rss, new space"],
    samples.map(([label, s]) => [
      label,
      String(s.idleTunnels),
      mib(s.rss),
      mib(s.heapTotal),
      mib(s.heapUsed),
      mib(s.external),
      mib(s.spaces.new_space ?? NaN),
      `${mib(s.asFound.rss)}, ${mib(s.asFound.spaces.new_space ?? NaN)}`,
    ]),
  );
  table(
    ["KiB", "rss", "heapTotal", "heapUsed", "heapUsed+external"],
    [
      ["per stream (all - baseline)", ...per(m.baseline, m.full, streams)],
      ["per stream (all - half)", ...per(m.half, m.full, Math.max(1, streams - halfStreams))],
      ["per agent (all - baseline)", ...per(m.baseline, m.full, m.agents)],
      // V8 sizes the young generation by the recent allocation rate (1-32 MiB here, from run to
      // run), not by the number of streams: the same differences without it.
      ["per stream, young gen. excluded", ...per(withoutNewSpace(m.baseline), withoutNewSpace(m.full), streams)],
    ],
  );
  console.log(`  ${m.agents} agents connected in ${fmt(m.connectSeconds, 1)} s`);
  const perStream = (f: (u: Usage) => number) => (f(m.full) - f(m.baseline)) / streams / 1024;
  function withoutNewSpace(s: (typeof samples)[number][1]): Usage {
    const young = s.spaces.new_space ?? 0;
    return { ...s, rss: s.rss - young, heapTotal: s.heapTotal - young };
  }
  console.log(
    `  target <= 30 KiB/stream (all - baseline): JS heap (heapUsed+external) ${verdict(perStream((u) => u.heapUsed + u.external) <= 30)}; ` +
      `rss ${verdict(perStream((u) => u.rss) <= 30)}`,
  );
}

if (only.has("kubeproxy")) {
  console.log("\n4. Kubernetes API proxy vs direct, real kube-apiserver (small list, 10,000-object list, watch at 1,000 events/s)");
  results.kubeproxy = await measureKubeproxy(table, verdict);
}

if (only.has("events")) {
  console.log(`\n5. Event -> effect with the real kas and agentk processes (${process.env.BENCH_EVENT_ROUNDS ?? 10} rounds each)`);
  results.events = await measureEvents(table, verdict);
}

if (only.has("gitops")) {
  console.log(`\n6. GitOps: git push -> Flux webhook, git push -> manifests applied, real kas, agentk and kube-apiserver (${process.env.BENCH_GITOPS_ROUNDS ?? 10} rounds)`);
  results.gitops = await measureGitops(table, verdict);
}

if (only.has("replicas")) {
  console.log("\n7. Several kas replicas on Redis and PostgreSQL: forwarded vs local calls, revocation across replicas, kill -9 failover");
  results.replicas = await measureReplicas(table, verdict);
}

if (only.has("tracing")) {
  console.log("\n8. Tracing: the Kubernetes API proxy with tracing off (the default) and on (OTLP to a local receiver), and direct, real kube-apiserver");
  results.tracing = await measureTracing(table, verdict);
}

console.log(`\nbench finished in ${fmt((performance.now() - started) / 1000, 1)} s`);
if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(results, (_, v) => (typeof v === "bigint" ? String(v) : v), 2));
