/**
 * The client of the tracing benchmark (forked by `bench/tracing.ts`): the same HTTP/2 client as
 * the kubeproxy benchmark's, on a small list (kubectl get's Table request for 5 ConfigMaps), against
 * three targets in the same run: the kube-apiserver directly, KAS + agent with tracing off, and
 * KAS + agent with tracing on (exporting to a local OTLP receiver). Per round: sequential latency
 * in blocks rotating between the targets, then throughput with BENCH_TR_CONCURRENCY (8) requests
 * in flight on one connection per target.
 * Parent -> { type: "start" | "marked" }; -> { type: "mark" | "round" | "done" | "error" }.
 */
import { readFileSync } from "node:fs";
import { Client, inParallel, latency, mark, throughput, type LatencyResult, type ListSpec, type ThroughputResult } from "./kubeproxy-http.js";

if (!process.send) throw new Error("run as a forked child");
const send = process.send.bind(process);
const env = (name: string): string => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const rounds = num("BENCH_TR_ROUNDS", 3);
const requests = num("BENCH_TR_REQUESTS", 600);
const concurrency = num("BENCH_TR_CONCURRENCY", 8);

export type TracingTarget = "direct" | "off" | "on";
export interface TracingRound {
  latency: Record<TracingTarget, LatencyResult>;
  throughput: Record<TracingTarget, ThroughputResult>;
}

const NS = "bench-tracing";
const KUBECTL_GET_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

async function main(): Promise<void> {
  const apiCa = readFileSync(env("BENCH_KP_API_CA"));
  const proxyCa = readFileSync(env("BENCH_KP_PROXY_CA"));
  const token = env("BENCH_KP_PROXY_TOKEN");
  const clients: Record<TracingTarget, Client> = {
    direct: new Client("direct", env("BENCH_KP_API_URL"), apiCa, env("BENCH_KP_API_TOKEN")),
    off: new Client("off", env("BENCH_TR_OFF_URL"), proxyCa, token),
    on: new Client("on", env("BENCH_TR_ON_URL"), proxyCa, token),
  };
  const admin = new Client("admin", env("BENCH_KP_API_URL"), apiCa, env("BENCH_KP_API_TOKEN"));
  await admin.request("POST", "/api/v1/namespaces", { body: JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } }) });
  await inParallel(5, 5, (i) =>
    admin.request("POST", `/api/v1/namespaces/${NS}/configmaps`, {
      body: JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: `cm-${i}`, namespace: NS }, data: { payload: "x".repeat(200) } }),
    }),
  );
  const spec: ListSpec = { path: `/api/v1/namespaces/${NS}/configmaps`, accept: KUBECTL_GET_ACCEPT, items: 5 };
  const all = Object.values(clients);
  // Warm-up: connections, TLS sessions, the proxies' authorization caches, JIT, the exporter's connection.
  await latency(all, spec, 100, 20);
  for (let round = 1; round <= rounds; round++) {
    // The order alternates per round so that no target always runs first.
    const order = round % 2 ? all : [...all].reverse();
    await mark();
    const lat = await latency(order, spec, requests, 50);
    const thr: Partial<Record<TracingTarget, ThroughputResult>> = {};
    for (const c of order) thr[c.name as TracingTarget] = await throughput(c, spec, requests, concurrency);
    await mark();
    send({ type: "round", round, result: { latency: lat, throughput: thr as Record<TracingTarget, ThroughputResult> } satisfies TracingRound });
  }
  for (const c of [...all, admin]) c.close();
}

process.on("message", (msg: { type: string }) => {
  if (msg.type !== "start") return;
  main().then(
    () => send({ type: "done" }, () => process.exit(0)),
    (e: unknown) => send({ type: "error", message: (e as Error).stack ?? String(e) }, () => process.exit(1)),
  );
});
process.on("disconnect", () => process.exit(0));
