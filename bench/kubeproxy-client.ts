/**
 * The client side of the kubeproxy benchmark (forked by `bench/kubeproxy.ts`): the same HTTP/2
 * client (as kubectl's client-go uses over TLS) talks to the kube-apiserver directly and through
 * KAS's Kubernetes API proxy, and reports per round:
 *   - a small list (kubectl get's Table request for a few ConfigMaps) and a 10,000-object list (plain
 *     JSON): sequential latency in blocks that rotate between the targets, then throughput with
 *     BENCH_KP_CONCURRENCY requests in flight on one connection per target;
 *   - the same lists through the floor (bench/kubeproxy-floor.ts: the proxy's hops as bare node:http2
 *     forwarders), in the same rotation;
 *   - the real `kubectl get configmaps` process, BENCH_KP_KUBECTL_RUNS (30) invocations per target
 *     rotating between them, wall time per invocation;
 *   - a watch through the proxy (and one direct, for reference) while ConfigMaps are created at
 *     BENCH_KP_WATCH_RATE per second: events received vs created, delivery rate and lag.
 * Parent -> { type: "start" | "marked" }; -> { type: "seeded" | "mark" | "round" | "watch" | "done" | "error" }.
 */
import { execFile } from "node:child_process";
import http2 from "node:http2";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { percentile } from "./common.js";
import { Client, inParallel, latency, mark, throughput, type LatencyResult, type ListSpec, type ThroughputResult } from "./kubeproxy-http.js";

export type { LatencyResult, ThroughputResult } from "./kubeproxy-http.js";

if (!process.send) throw new Error("run as a forked child");
const send = process.send.bind(process);
const env = (name: string, fallback?: string): string => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

const rounds = num("BENCH_KP_ROUNDS", 3);
const largeObjects = num("BENCH_KP_LARGE_OBJECTS", 10_000);
const smallRequests = num("BENCH_KP_SMALL_REQUESTS", 600);
const largeRequests = num("BENCH_KP_LARGE_REQUESTS", 20);
const concurrency = num("BENCH_KP_CONCURRENCY", 8);
const watchRate = num("BENCH_KP_WATCH_RATE", 1000);
const watchSeconds = num("BENCH_KP_WATCH_SECONDS", 5);
const kubectlRuns = num("BENCH_KP_KUBECTL_RUNS", 30);

export type KubeproxyTarget = "direct" | "proxy" | "proxyCiJob" | "floor";
export interface ListResult {
  latency: Partial<Record<KubeproxyTarget, LatencyResult>>;
  throughput: Partial<Record<KubeproxyTarget, ThroughputResult>>;
  /** Requests of this list that went through KAS (checks included). */
  proxiedRequests: number;
  /** Requests of this list that went through the floor's forwarders (checks included). */
  floorRequests: number;
  /** CPU time of KAS, the agent and the floor's forwarders over this list's measurements, filled in by the parent. */
  cpuMs?: { kas: number; agent: number; floorA: number; floorB: number };
}
export interface KubeproxyRound {
  small: ListResult;
  large: ListResult;
}
/** Wall time of `kubectl get configmaps` invocations (spawn to exit), per target. */
export interface KubectlResult {
  runs: number;
  items: number;
  wallMs: Partial<Record<KubeproxyTarget, { p50: number; p99: number; mean: number; min: number }>>;
  /** HTTP requests one warm invocation makes (counted once per target from kubectl -v=6). */
  requests: Partial<Record<KubeproxyTarget, number>>;
}
export interface WatchTargetResult {
  received: number;
  missing: number;
  duplicates: number;
  lagP50: number;
  lagP99: number;
  /** Events per second from the first create to the last event received. */
  rate: number;
}
export interface WatchResult {
  created: number;
  createFailures: number;
  createSeconds: number;
  createRate: number;
  proxy: WatchTargetResult;
  direct: WatchTargetResult;
  /** Per event: when the proxy watch saw it minus when the direct watch did (what the proxy adds). */
  addedLagP50: number;
  addedLagP99: number;
}

const SMALL_NS = "bench-small";
const LARGE_NS = "bench-large";
const WATCH_NS = "bench-watch";
/** What kubectl get asks for (a server-side Table, JSON as the fallback). */
const KUBECTL_GET_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

const configMap = (namespace: string, name: string, payload: string) =>
  JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace, labels: { app: "kasbridge-bench" } }, data: { payload } });

/** Namespaces, a few ConfigMaps for the small list, `largeObjects` for the large one, RBAC for ci_job. */
async function seed(admin: Client): Promise<void> {
  for (const ns of [SMALL_NS, LARGE_NS, WATCH_NS]) {
    await admin.request("POST", "/api/v1/namespaces", { body: JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } }) });
  }
  const payload = "x".repeat(200);
  await inParallel(5, 5, (i) => admin.request("POST", `/api/v1/namespaces/${SMALL_NS}/configmaps`, { body: configMap(SMALL_NS, `small-${i}`, payload) }));
  await inParallel(largeObjects, 64, (i) =>
    admin.request("POST", `/api/v1/namespaces/${LARGE_NS}/configmaps`, { body: configMap(LARGE_NS, `large-${String(i).padStart(5, "0")}`, payload) }),
  );
  // The impersonated CI job (access_as: ci_job) may read ConfigMaps, nothing else.
  await admin.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {
    body: JSON.stringify({ apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: "bench-configmap-reader" }, rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch"] }] }),
  });
  await admin.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
    body: JSON.stringify({
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: "bench-ci-jobs-read-configmaps" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "bench-configmap-reader" },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: "gitlab:ci_job" }],
    }),
  });
}

/** Every target answers the list completely (checked once per round, not timed). */
async function check(clients: Client[], spec: ListSpec): Promise<void> {
  for (const c of clients) {
    const r = await c.request("GET", spec.path, { accept: spec.accept, keepBody: true });
    const body = JSON.parse(r.body!.toString("utf8")) as { items?: unknown[]; rows?: unknown[] };
    const n = (body.items ?? body.rows ?? []).length;
    if (n !== spec.items) throw new Error(`${c.name}: ${spec.path} returned ${n} objects, expected ${spec.items}`);
  }
}

/** One list's measurements, between two marks (the parent charges the CPU between them to it). */
async function measureList(clients: Client[], spec: ListSpec, n: number, block: number, throughputN: number): Promise<ListResult> {
  await mark();
  await check(clients, spec);
  const proxiedRequests = clients.filter((c) => c.name === "proxy" || c.name === "proxyCiJob").length * (1 + n + throughputN);
  const floorRequests = clients.filter((c) => c.name === "floor").length * (1 + n + throughputN);
  const result: ListResult = { latency: await latency(clients, spec, n, block), throughput: {}, proxiedRequests, floorRequests };
  for (const c of clients) result.throughput[c.name as KubeproxyTarget] = await throughput(c, spec, throughputN, concurrency);
  await mark();
  return result;
}

const execFileAsync = promisify(execFile);

interface KubectlTarget {
  name: KubeproxyTarget;
  server: string;
  ca: string;
  token: string;
}

/**
 * The real kubectl, `get configmaps -n <ns>`, `kubectlRuns` times per target in rotation (the order
 * alternates per run). Every target gets the same kind of kubeconfig (the CA and a token; the URL
 * as `--server`) and its own discovery cache directory, warmed before timing.
 */
async function measureKubectl(kubectl: string, targets: KubectlTarget[], namespace: string, items: number): Promise<KubectlResult> {
  const dir = mkdtempSync(join(tmpdir(), "kasbridge-bench-kubectl-"));
  try {
    const args = targets.map((t) => {
      const kubeconfig = join(dir, `${t.name}.kubeconfig`);
      writeFileSync(kubeconfig, JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "bench", cluster: { server: t.server, "certificate-authority": t.ca } }],
        users: [{ name: "bench", user: { token: t.token } }],
        contexts: [{ name: "bench", context: { cluster: "bench", user: "bench" } }],
        "current-context": "bench",
      }));
      return [`--kubeconfig=${kubeconfig}`, `--server=${t.server}`, `--cache-dir=${join(dir, `cache-${t.name}`)}`, "get", "configmaps", "-n", namespace, "--no-headers"];
    });
    const env = { ...process.env, KUBECONFIG: undefined };
    const run = async (i: number): Promise<number> => {
      const t0 = performance.now();
      const { stdout } = await execFileAsync(kubectl, args[i]!, { env, timeout: 60_000 });
      const ms = performance.now() - t0;
      const n = stdout.split("\n").filter((l) => l.startsWith("small-")).length;
      if (n !== items) throw new Error(`kubectl via ${targets[i]!.name} listed ${n} ConfigMaps, expected ${items}: ${stdout.slice(0, 300)}`);
      return ms;
    };
    // Warm-up: fills each discovery cache (and the proxy's authorization cache).
    for (let w = 0; w < 3; w++) for (let i = 0; i < targets.length; i++) await run(i);
    const requests: KubectlResult["requests"] = {};
    for (let i = 0; i < targets.length; i++) {
      const { stderr } = await execFileAsync(kubectl, ["-v=6", ...args[i]!], { env, timeout: 60_000 });
      requests[targets[i]!.name] = stderr.split("\n").filter((l) => /\b(GET|POST|PUT|PATCH|DELETE) https?:\/\/|\bverb="[A-Z]+" url="/.test(l)).length;
    }
    const times = targets.map((): number[] => []);
    for (let r = 0; r < kubectlRuns; r++) {
      const order = targets.map((_, i) => i);
      if (r % 2) order.reverse();
      for (const i of order) times[i]!.push(await run(i));
    }
    const wallMs: KubectlResult["wallMs"] = {};
    targets.forEach((t, i) => {
      const sorted = times[i]!.sort((a, b) => a - b);
      wallMs[t.name] = { p50: percentile(sorted, 50), p99: percentile(sorted, 99), mean: sorted.reduce((s, x) => s + x, 0) / sorted.length, min: sorted[0]! };
    });
    return { runs: kubectlRuns, items, wallMs, requests };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Event lines of a watch: (type, name) per event, until close(). */
function watch(client: Client, path: string, onEvent: (type: string, name: string) => void): { close(): void; ended: Promise<void> } {
  const stream = client.open("GET", path, { accept: "application/json" });
  let rest = "";
  stream.setEncoding("utf8");
  stream.on("response", (h) => {
    if (Number(h[":status"]) !== 200) stream.destroy(new Error(`${client.name} watch: status ${String(h[":status"])}`));
  });
  stream.on("data", (chunk: string) => {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      if (line.trim() === "") continue;
      const e = JSON.parse(line) as { type: string; object: { metadata?: { name?: string } } };
      onEvent(e.type, e.object.metadata?.name ?? "");
    }
  });
  const ended = new Promise<void>((resolve, reject) => {
    stream.on("close", () => resolve());
    stream.on("error", reject);
  });
  return { close: () => stream.close(http2.constants.NGHTTP2_CANCEL), ended };
}

/** ConfigMaps created at `watchRate`/s while a proxy watch and a direct watch count their events. */
async function measureWatch(creator: Client, proxy: Client, direct: Client): Promise<WatchResult> {
  const total = Math.round(watchRate * watchSeconds);
  const list = await creator.request("GET", `/api/v1/namespaces/${WATCH_NS}/configmaps`, { keepBody: true });
  const rv = (JSON.parse(list.body!.toString("utf8")) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
  const path = `/api/v1/namespaces/${WATCH_NS}/configmaps?watch=1&resourceVersion=${rv}&allowWatchBookmarks=false`;
  const sentAt = new Map<string, number>();
  const seen = { proxy: new Map<string, number>(), direct: new Map<string, number>() };
  const dups = { proxy: 0, direct: 0 };
  const watches = (["proxy", "direct"] as const).map((k) =>
    watch(k === "proxy" ? proxy : direct, path, (type, name) => {
      if (type !== "ADDED") return;
      if (seen[k].has(name)) dups[k]++;
      else seen[k].set(name, performance.now());
    }),
  );
  // Both watches are established once one event went through each.
  const probe = "probe";
  await creator.request("POST", `/api/v1/namespaces/${WATCH_NS}/configmaps`, { body: configMap(WATCH_NS, probe, "p") });
  for (const deadline = Date.now() + 30_000; !(seen.proxy.has(probe) && seen.direct.has(probe)); ) {
    if (Date.now() > deadline) throw new Error("watches did not start");
    await new Promise((r) => setTimeout(r, 10));
  }

  let failures = 0;
  const t0 = performance.now();
  let issued = 0;
  let inFlight = 0;
  let lastDone = t0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * watchRate) + 1);
      while (issued < due && inFlight < 256) {
        const name = `w-${String(issued++).padStart(6, "0")}`;
        inFlight++;
        sentAt.set(name, performance.now());
        creator
          .request("POST", `/api/v1/namespaces/${WATCH_NS}/configmaps`, { body: configMap(WATCH_NS, name, "w") })
          .catch(() => {
            failures++;
            sentAt.delete(name);
          })
          .finally(() => {
            inFlight--;
            lastDone = performance.now();
            if (issued === total && inFlight === 0) resolve();
          });
      }
      if (issued < total) setTimeout(tick, 2);
    };
    tick();
  });
  const createSeconds = (lastDone - t0) / 1000;
  // Stragglers: until both watches saw every created object, or 30 s without progress.
  const want = () => [...sentAt.keys()];
  let last = -1;
  for (let idle = 0; idle < 300; idle++) {
    const got = want().filter((n) => seen.proxy.has(n) && seen.direct.has(n)).length;
    if (got === sentAt.size) break;
    if (got !== last) idle = 0;
    last = got;
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const w of watches) w.close();
  const summarize = (k: "proxy" | "direct"): WatchTargetResult => {
    const lags: number[] = [];
    let missing = 0;
    let lastAt = t0;
    for (const [name, at] of sentAt) {
      const got = seen[k].get(name);
      if (got === undefined) missing++;
      else {
        lags.push(got - at);
        lastAt = Math.max(lastAt, got);
      }
    }
    lags.sort((a, b) => a - b);
    return { received: lags.length, missing, duplicates: dups[k], lagP50: percentile(lags, 50), lagP99: percentile(lags, 99), rate: lags.length / ((lastAt - t0) / 1000) };
  };
  const added: number[] = [];
  for (const name of sentAt.keys()) {
    const viaProxy = seen.proxy.get(name);
    const direct = seen.direct.get(name);
    if (viaProxy !== undefined && direct !== undefined) added.push(viaProxy - direct);
  }
  added.sort((a, b) => a - b);
  return {
    created: sentAt.size,
    createFailures: failures,
    createSeconds,
    createRate: sentAt.size / createSeconds,
    proxy: summarize("proxy"),
    direct: summarize("direct"),
    addedLagP50: percentile(added, 50),
    addedLagP99: percentile(added, 99),
  };
}

async function main(): Promise<void> {
  const apiCa = readFileSync(env("BENCH_KP_API_CA"));
  const proxyCa = readFileSync(env("BENCH_KP_PROXY_CA"));
  const apiUrl = env("BENCH_KP_API_URL");
  const agentToken = env("BENCH_KP_API_TOKEN");
  const direct = new Client("direct", apiUrl, apiCa, agentToken);
  const proxy = new Client("proxy", env("BENCH_KP_PROXY_URL"), proxyCa, env("BENCH_KP_PROXY_TOKEN"));
  const proxyCiJob = new Client("proxyCiJob", env("BENCH_KP_PROXY_URL"), proxyCa, env("BENCH_KP_PROXY_CI_JOB_TOKEN"));
  // The floor's B replaces the token with the agent's; the client sends one of the proxy's length.
  const floor = new Client("floor", env("BENCH_KP_FLOOR_URL"), proxyCa, env("BENCH_KP_PROXY_TOKEN"));
  const admin = new Client("admin", apiUrl, apiCa, agentToken);
  const t0 = performance.now();
  await seed(admin);
  send({ type: "seeded", seconds: (performance.now() - t0) / 1000, objects: largeObjects });

  const small: ListSpec = { path: `/api/v1/namespaces/${SMALL_NS}/configmaps`, accept: KUBECTL_GET_ACCEPT, items: 5 };
  const large: ListSpec = { path: `/api/v1/namespaces/${LARGE_NS}/configmaps`, accept: "application/json", items: largeObjects };
  // Warm-up: connections, TLS sessions, the proxy's authorization cache, JIT.
  await latency([direct, proxy, proxyCiJob, floor], small, 100, 20);
  await latency([direct, proxy, floor], large, 2, 1);
  for (let round = 1; round <= rounds; round++) {
    // The target order alternates per round so that neither always runs first.
    const r: KubeproxyRound = {
      small: await measureList(round % 2 ? [direct, proxy, proxyCiJob, floor] : [floor, proxyCiJob, proxy, direct], small, smallRequests, 50, smallRequests),
      large: await measureList(round % 2 ? [direct, proxy, floor] : [floor, proxy, direct], large, largeRequests, 2, largeRequests),
    };
    send({ type: "round", round, result: r });
  }
  const kubectl = process.env.BENCH_KP_KUBECTL;
  if (kubectl && kubectlRuns > 0) {
    const targets: KubectlTarget[] = [
      { name: "direct", server: apiUrl, ca: env("BENCH_KP_API_CA"), token: agentToken },
      { name: "proxy", server: env("BENCH_KP_PROXY_URL"), ca: env("BENCH_KP_PROXY_CA"), token: env("BENCH_KP_PROXY_TOKEN") },
      { name: "floor", server: env("BENCH_KP_FLOOR_URL"), ca: env("BENCH_KP_PROXY_CA"), token: env("BENCH_KP_PROXY_TOKEN") },
    ];
    send({ type: "kubectl", result: await measureKubectl(kubectl, targets, SMALL_NS, small.items) });
  }
  if (watchRate > 0 && watchSeconds > 0) send({ type: "watch", result: await measureWatch(admin, proxy, direct) });
  for (const c of [direct, proxy, proxyCiJob, floor, admin]) c.close();
}

process.on("message", (msg: { type: string }) => {
  if (msg.type !== "start") return;
  main().then(
    () => send({ type: "done" }, () => process.exit(0)),
    (e: unknown) => send({ type: "error", message: (e as Error).stack ?? String(e) }, () => process.exit(1)),
  );
});
process.on("disconnect", () => process.exit(0));
