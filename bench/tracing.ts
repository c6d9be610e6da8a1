/**
 * Section 8 of `npm run bench`: what tracing costs on the Kubernetes API proxy, against the real
 * kube-apiserver, in one run:
 *
 *   client ──HTTP/2+TLS──> kube-apiserver                                             (direct)
 *   client ──HTTP/2+TLS──> KAS ──tunnel──> agent ──HTTPS──> kube-apiserver            (off: no tracing, the default)
 *   client ──HTTP/2+TLS──> KAS ──tunnel──> agent ──HTTPS──> kube-apiserver            (on: both export spans
 *          over OTLP/HTTP to a receiver in this process, as KAS_OTLP_ENDPOINT / --otlp-endpoint set it up)
 *
 * KAS and the agent of each pair are the kubeproxy section's processes (kubeproxy-servers.ts), the
 * client is tracing-client.ts. Reports latency and throughput per target, their ratios (on / off,
 * off / direct, on / direct), the CPU per request of KAS and the agent with tracing off and on, and
 * the spans the receiver got (4 per request when on: KAS's request and tunnel call, the agent's
 * call and API server request).
 *
 * Knobs: BENCH_TR_ROUNDS (3), BENCH_TR_REQUESTS (600 per target and measurement),
 * BENCH_TR_CONCURRENCY (8).
 */
import { mkdtempSync, rmSync } from "node:fs";
import type { ChildProcess } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startControlPlane } from "../tools/control-plane/control-plane.js";
import { startOtlpReceiver } from "../testing/src/otlp-receiver.js";
import { SpanKind, Tracing } from "../sdk/src/tracing/tracing.js";
import { fmt, median } from "./common.js";
import { child, controlPlaneBinaries, cpuOf, next, proxyCertificate, stopChild } from "./kubeproxy.js";
import type { TracingRound, TracingTarget } from "./tracing-client.js";

type Table = (head: string[], rows: string[][]) => void;

export interface TracingBenchResult {
  skipped?: string;
  rounds: TracingRound[];
  /** CPU time per proxied request (µs) of KAS and the agent, per round, with tracing off and on. */
  cpuUsPerRequest: Array<Record<"off" | "on", { kas: number; agent: number }>>;
  spansReceived?: number;
  proxiedRequestsOn?: number;
  /** CPU time per request of the tracing calls KAS and the agent make with tracing off, in ns. */
  offOverheadNsPerRequest?: number;
}

const AGENT_ID = 7;
const labels: Record<TracingTarget, string> = { direct: "direct to kube-apiserver", off: "through KAS, tracing off", on: "through KAS, tracing on" };

/**
 * What tracing off costs a proxied request: the SDK's tracing calls on one request's path (KAS: the
 * request's and the tunnel call's spans, the traceparent read and the injections skipped; the
 * agent: the tunnel call's and the API server request's), with OpenTelemetry's no-op globals, as
 * `kas` and `agentk` run by default. In ns per request, the median of 5 runs of 200 000.
 */
export function offOverheadNsPerRequest(): number {
  const tracing = new Tracing();
  const nodeHeaders = { host: "kas:8154", accept: "application/json", "user-agent": "kubectl/v1.37.2", authorization: "Bearer x" };
  const callHeaders = new Headers({ "content-type": "application/grpc" });
  const meta = {};
  let sink = 0;
  const oneRequest = () => {
    // KAS (proxy-requests.ts)
    const span = tracing.startSpan("GET", SpanKind.SERVER, tracing.fromNodeHeaders(nodeHeaders));
    const callSpan = tracing.startSpan("MakeRequest", SpanKind.CLIENT, tracing.withSpan(span));
    if (callSpan.isRecording()) sink++;
    tracing.injectMeta(callSpan, meta);
    tracing.injectMeta(callSpan, meta);
    if (span.isRecording()) sink++;
    callSpan.end();
    span.end();
    // The agent (agent-tunnel.ts, kubernetes-api-agent-module.ts)
    const served = tracing.startSpan("MakeRequest", SpanKind.SERVER, tracing.fromMeta(meta));
    if (served.isRecording()) sink++;
    const apiRequest = tracing.startSpan("GET", SpanKind.CLIENT, tracing.fromHeaders(callHeaders));
    if (apiRequest.isRecording()) sink++;
    apiRequest.end();
    served.end();
  };
  const n = 200_000;
  const runs: number[] = [];
  for (let run = 0; run < 5; run++) {
    const t0 = process.cpuUsage();
    for (let i = 0; i < n; i++) oneRequest();
    const t = process.cpuUsage(t0);
    runs.push(((t.user + t.system) * 1000) / n);
  }
  if (sink !== 0) throw new Error("a no-op span recorded");
  return median(runs);
}

export async function measureTracing(table: Table, verdict: (ok: boolean) => string): Promise<TracingBenchResult> {
  const binaries = controlPlaneBinaries();
  if ("skipped" in binaries) return { skipped: binaries.skipped, rounds: [], cpuUsPerRequest: [] };
  const { binDir } = binaries;
  const dir = mkdtempSync(join(tmpdir(), "kasbridge-bench-tracing-"));
  const procs: ChildProcess[] = [];
  const receiver = await startOtlpReceiver();
  const cp = await startControlPlane({ binDir, kwok: false, agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }] });
  const result: TracingBenchResult = { rounds: [], cpuUsPerRequest: [], offOverheadNsPerRequest: offOverheadNsPerRequest() };
  const requests = Number(process.env.BENCH_TR_REQUESTS ?? 600);
  try {
    const { cert, key } = proxyCertificate(dir);
    const secrets = {
      BENCH_KP_AGENT_ID: String(AGENT_ID),
      BENCH_KP_AGENT_TOKEN: "glagent-bench-tracing-0123456789",
      BENCH_KP_JOB_TOKEN: "glcbt-bench-tracing-job",
      BENCH_KP_CI_JOB_TOKEN: "glcbt-bench-tracing-ci-job",
    };
    /** A KAS and its agent; with `otlp`, both export spans there. */
    const pair = async (otlp: string | undefined) => {
      const tracingEnv: Record<string, string> = otlp ? { BENCH_KP_OTLP_ENDPOINT: otlp } : {};
      const kas = child("kubeproxy-servers.js", ["kas"], { ...secrets, ...tracingEnv, BENCH_KP_TLS_CERT: cert, BENCH_KP_TLS_KEY: key }, undefined);
      procs.push(kas);
      const { agentUrl, proxyUrl } = await next<{ agentUrl: string; proxyUrl: string }>(kas, "ready");
      const agent = child("kubeproxy-servers.js", ["agent"], { ...secrets, ...tracingEnv, BENCH_KP_KAS_URL: agentUrl, BENCH_KP_KUBECONFIG: cp.agentKubeconfigPath }, undefined);
      procs.push(agent);
      await next(agent, "ready");
      return { kas, agent, proxyUrl };
    };
    const off = await pair(undefined);
    const on = await pair(receiver.url);
    const client = child("tracing-client.js", [], {
      BENCH_KP_API_URL: cp.apiServerUrl,
      BENCH_KP_API_CA: cp.caCertPath,
      BENCH_KP_API_TOKEN: cp.agentToken,
      BENCH_KP_PROXY_CA: cert,
      BENCH_KP_PROXY_TOKEN: `ci:${AGENT_ID}:${secrets.BENCH_KP_JOB_TOKEN}`,
      BENCH_TR_OFF_URL: off.proxyUrl,
      BENCH_TR_ON_URL: on.proxyUrl,
    }, undefined);
    procs.push(client);
    const servers = [off.kas, off.agent, on.kas, on.agent];
    const marks: number[][] = [];
    await new Promise<void>((resolve, reject) => {
      client.on("message", (msg: { type: string } & Record<string, unknown>) => {
        if (msg.type === "mark") {
          void Promise.all(servers.map(cpuOf)).then((ms) => {
            marks.push(ms);
            client.send({ type: "marked" });
          }, reject);
        } else if (msg.type === "round") {
          const r = msg.result as TracingRound;
          result.rounds.push(r);
          // Each proxy took `requests` twice (latency, throughput) between the round's two marks.
          const [a, b] = marks.slice(-2);
          const us = (i: number) => ((b![i]! - a![i]!) * 1000) / (2 * requests);
          result.cpuUsPerRequest.push({ off: { kas: us(0), agent: us(1) }, on: { kas: us(2), agent: us(3) } });
          printRound(table, msg.round as number, r, result.cpuUsPerRequest.at(-1)!);
        } else if (msg.type === "done") {
          resolve();
        } else if (msg.type === "error") {
          reject(new Error(`tracing client: ${String(msg.message)}`));
        }
      });
      client.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`tracing client exited with ${code}`))));
      client.send({ type: "start" });
    });
    // The traced pair flushes what it still holds when it stops.
    await stopChild(on.agent);
    await stopChild(on.kas);
    result.spansReceived = receiver.spans.length;
    // Warm-up (100) and the rounds' latency and throughput requests.
    result.proxiedRequestsOn = 100 + result.rounds.length * 2 * requests;
  } finally {
    for (const p of procs.reverse()) await stopChild(p);
    await cp.stop();
    await receiver.close();
    rmSync(dir, { recursive: true, force: true });
  }
  summarize(table, verdict, result);
  return result;
}

function printRound(table: Table, round: number, r: TracingRound, cpu: TracingBenchResult["cpuUsPerRequest"][number]): void {
  console.log(`\n  round ${round}`);
  table(
    ["small list", "p50 ms", "p99 ms", "mean ms", "req/s"],
    (["direct", "off", "on"] as const).map((t) => [labels[t], fmt(r.latency[t].p50, 2), fmt(r.latency[t].p99, 2), fmt(r.latency[t].mean, 2), fmt(r.throughput[t].requestsPerSecond, 1)]),
  );
  console.log(`  CPU per request: tracing off KAS ${fmt(cpu.off.kas, 0)} us + agent ${fmt(cpu.off.agent, 0)} us; tracing on KAS ${fmt(cpu.on.kas, 0)} us + agent ${fmt(cpu.on.agent, 0)} us`);
}

function summarize(table: Table, verdict: (ok: boolean) => string, result: TracingBenchResult): void {
  const all = result.rounds;
  if (all.length === 0) return;
  const ratio = (t: TracingTarget, base: TracingTarget) => ({
    p50: median(all.map((r) => r.latency[t].p50 / r.latency[base].p50)),
    p99: median(all.map((r) => r.latency[t].p99 / r.latency[base].p99)),
    throughput: median(all.map((r) => r.throughput[t].requestsPerSecond / r.throughput[base].requestsPerSecond)),
  });
  console.log(`\n  ratios (median of ${all.length} per-round ratios; latency: lower is better, throughput: higher is better)`);
  const rows: Array<[string, TracingTarget, TracingTarget]> = [
    ["tracing on vs off", "on", "off"],
    ["tracing off vs direct", "off", "direct"],
    ["tracing on vs direct", "on", "direct"],
  ];
  table(
    ["small list", "p50", "p99", "throughput"],
    rows.map(([label, t, base]) => {
      const v = ratio(t, base);
      return [label, `${fmt(v.p50)}x`, `${fmt(v.p99)}x`, `${fmt(v.throughput)}x`];
    }),
  );
  const cpu = (side: "off" | "on", who: "kas" | "agent") => median(result.cpuUsPerRequest.map((c) => c[side][who]));
  console.log(
    `  CPU per request (median of rounds): KAS ${fmt(cpu("off", "kas"), 0)} -> ${fmt(cpu("on", "kas"), 0)} us, ` +
      `agent ${fmt(cpu("off", "agent"), 0)} -> ${fmt(cpu("on", "agent"), 0)} us (off -> on)`,
  );
  if (result.spansReceived !== undefined) {
    console.log(`  spans received by the OTLP receiver: ${result.spansReceived} for ${result.proxiedRequestsOn} traced requests (4 expected per request)`);
  }
  if (result.offOverheadNsPerRequest !== undefined) {
    const offCpuNs = (cpu("off", "kas") + cpu("off", "agent")) * 1000;
    console.log(
      `  tracing off: the SDK's tracing calls on a request's path cost ${fmt(result.offOverheadNsPerRequest, 0)} ns of CPU (KAS and agent together), ` +
        `${fmt((100 * result.offOverheadNsPerRequest) / offCpuNs, 3)}% of the ${fmt(offCpuNs / 1000, 0)} us the two processes spend per request ` +
        `(target < 1%: ${verdict(result.offOverheadNsPerRequest < offCpuNs / 100)})`,
    );
  }
  const v = ratio("on", "off");
  console.log(`  target: tracing on costs <= 10% (p50 <= 1.1x ${verdict(v.p50 <= 1.1)}, throughput >= 0.9x ${verdict(v.throughput >= 0.9)})`);
}
