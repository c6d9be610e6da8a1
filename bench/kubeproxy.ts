/**
 * Section 4 of `npm run bench`: the Kubernetes API proxy against the real kube-apiserver.
 *
 *   client (kubeproxy-client.js) ──HTTP/2+TLS──> kube-apiserver                          (direct)
 *   client ──HTTP/2+TLS──> KAS proxy (kubeproxy-servers.js kas) ──tunnel──> agent
 *          (kubeproxy-servers.js agent) ──HTTPS keep-alive──> kube-apiserver            (proxy)
 *   client ──HTTP/2+TLS──> forwarder A ──one h2c connection──> forwarder B
 *          ──HTTPS keep-alive──> kube-apiserver       (floor: kubeproxy-floor.js, node:http2 only)
 *
 * The floor has the proxy's hops, processes and connections but no kasbridge code: A and B replay
 * each stream as-is (B with the agent's token), so proxy / floor is what our code adds and
 * floor / direct what the hops themselves cost. The client also times the real kubectl binary
 * (`kubectl get configmaps`) against each target, as a user sees it.
 *
 * Runs in the `run.ts` process (under tsx): starts a throwaway control plane from the binaries
 * `npm run control-plane` builds (the section is skipped, with the reason, when they are absent),
 * KAS and the agent as two plain-node child processes, and the client as a third; prints the raw
 * figures per round and the ratios.
 *
 * Why processes: kas and agentk are separate processes in production, and the direct path's API
 * server is one too; with KAS, the agent and the client on one event loop the proxy would be
 * charged for serializing work that really runs in parallel (and the other way round for CPU).
 * Each process runs the SDK's own pieces (createKasServer + createKubernetesApiProxy,
 * createAgent + kubernetesApiAgentModule) compiled to plain JS; the platform is a fixed table (one
 * agent, two CI jobs): its answer is cached by the proxy for 5 s either way. The floor's two
 * forwarders are two more plain-node processes.
 *
 * Knobs: BENCH_KP_ROUNDS (3), BENCH_KP_SMALL_REQUESTS (600), BENCH_KP_LARGE_REQUESTS (20),
 * BENCH_KP_LARGE_OBJECTS (10000), BENCH_KP_CONCURRENCY (8), BENCH_KP_WATCH_RATE (1000),
 * BENCH_KP_WATCH_SECONDS (5; 0 skips the watch), BENCH_KP_KUBECTL_RUNS (30; 0 skips kubectl), BENCH_KP_CPU_PROF=<dir> (--cpu-prof for the
 * measured processes), BENCH_KP_LOG=<level> (KAS and agent logs on stderr).
 */
import { execFileSync, fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { controlPlaneBinDir, findBinaries, startControlPlane } from "../tools/control-plane/control-plane.js";
import { fmt, median } from "./common.js";
import type { KubectlResult, KubeproxyRound, KubeproxyTarget, ListResult, WatchResult } from "./kubeproxy-client.js";

export interface KubeproxyResult {
  skipped?: string;
  seedSeconds?: number;
  rounds: KubeproxyRound[];
  kubectl?: KubectlResult;
  watch?: WatchResult;
}

const AGENT_ID = 7;
const labels: Record<KubeproxyTarget, string> = {
  direct: "direct to kube-apiserver",
  proxy: "through KAS (access_as agent)",
  proxyCiJob: "through KAS (access_as ci_job)",
  floor: "floor (node:http2 forwarders)",
};

type Table = (head: string[], rows: string[][]) => void;

function dist(file: string): string {
  return fileURLToPath(new URL(`./dist/bench/${file}`, import.meta.url));
}

export function child(file: string, args: string[], env: Record<string, string>, profDir: string | undefined): ChildProcess {
  return fork(dist(file), args, {
    execArgv: profDir ? ["--cpu-prof", "--cpu-prof-dir", profDir] : [],
    env: { ...process.env, ...env },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
}

/** The child's next message of `type`; rejects if it exits first. */
export function next<T>(proc: ChildProcess, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (msg: { type: string }) => {
      if (msg.type !== type) return;
      proc.off("message", onMessage);
      proc.off("exit", onExit);
      resolve(msg as T);
    };
    const onExit = (code: number | null) => reject(new Error(`${proc.spawnfile} exited (${code}) before sending ${type}`));
    proc.on("message", onMessage);
    proc.once("exit", onExit);
  });
}

export async function stopChild(proc: ChildProcess | undefined): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once("exit", resolve));
  if (proc.connected) proc.send({ type: "close" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/** The proxy's certificate: kubectl sends tokens only over TLS; so does the client (same CA for nothing else). */
export function proxyCertificate(dir: string): { cert: string; key: string } {
  const cert = join(dir, "tls.crt");
  const key = join(dir, "tls.key");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert,
  ], { stdio: "pipe" });
  return { cert, key };
}

/** The control plane's binaries (`npm run control-plane`), or why the section is skipped (printed). */
export function controlPlaneBinaries(): { binDir: string } | { skipped: string } {
  try {
    const binDir = controlPlaneBinDir();
    findBinaries(binDir);
    return { binDir };
  } catch (e) {
    const skipped = (e as Error).message;
    console.log(`  SKIPPED: ${skipped}`);
    return { skipped };
  }
}

/** A child's CPU time (all threads) so far, in ms (kubeproxy-servers.ts answers "cpu"). */
export function cpuOf(proc: ChildProcess): Promise<number> {
  const reply = next<{ usage: NodeJS.CpuUsage }>(proc, "cpu");
  proc.send({ type: "cpu" });
  return reply.then((m) => (m.usage.user + m.usage.system) / 1000);
}

export async function measureKubeproxy(table: Table, verdict: (ok: boolean) => string): Promise<KubeproxyResult> {
  const binaries = controlPlaneBinaries();
  if ("skipped" in binaries) return { skipped: binaries.skipped, rounds: [] };
  const { binDir } = binaries;
  const profDir = process.env.BENCH_KP_CPU_PROF;
  const dir = mkdtempSync(join(tmpdir(), "kasbridge-bench-kubeproxy-"));
  const procs: ChildProcess[] = [];
  const cp = await startControlPlane({ binDir, kwok: false, agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }] });
  const result: KubeproxyResult = { rounds: [] };
  try {
    const { cert, key } = proxyCertificate(dir);
    const secrets = {
      BENCH_KP_AGENT_ID: String(AGENT_ID),
      BENCH_KP_AGENT_TOKEN: "glagent-bench-kubeproxy-0123456789",
      BENCH_KP_JOB_TOKEN: "glcbt-bench-job-as-agent",
      BENCH_KP_CI_JOB_TOKEN: "glcbt-bench-job-as-ci-job",
    };
    const kas = child("kubeproxy-servers.js", ["kas"], { ...secrets, BENCH_KP_TLS_CERT: cert, BENCH_KP_TLS_KEY: key }, profDir);
    procs.push(kas);
    const { agentUrl, proxyUrl } = await next<{ agentUrl: string; proxyUrl: string }>(kas, "ready");
    const agent = child("kubeproxy-servers.js", ["agent"], { ...secrets, BENCH_KP_KAS_URL: agentUrl, BENCH_KP_KUBECONFIG: cp.agentKubeconfigPath }, profDir);
    procs.push(agent);
    await next(agent, "ready");
    const floorB = child("kubeproxy-floor.js", ["b"], { BENCH_KP_API_URL: cp.apiServerUrl, BENCH_KP_API_CA: cp.caCertPath, BENCH_KP_API_TOKEN: cp.agentToken }, profDir);
    procs.push(floorB);
    const { url: floorBUrl } = await next<{ url: string }>(floorB, "ready");
    const floorA = child("kubeproxy-floor.js", ["a"], { BENCH_KP_FLOOR_TARGET: floorBUrl, BENCH_KP_TLS_CERT: cert, BENCH_KP_TLS_KEY: key }, profDir);
    procs.push(floorA);
    const { url: floorUrl } = await next<{ url: string }>(floorA, "ready");
    const client = child("kubeproxy-client.js", [], {
      BENCH_KP_API_URL: cp.apiServerUrl,
      BENCH_KP_API_CA: cp.caCertPath,
      BENCH_KP_API_TOKEN: cp.agentToken,
      BENCH_KP_PROXY_URL: proxyUrl,
      BENCH_KP_PROXY_CA: cert,
      BENCH_KP_PROXY_TOKEN: `ci:${AGENT_ID}:${secrets.BENCH_KP_JOB_TOKEN}`,
      BENCH_KP_PROXY_CI_JOB_TOKEN: `ci:${AGENT_ID}:${secrets.BENCH_KP_CI_JOB_TOKEN}`,
      BENCH_KP_FLOOR_URL: floorUrl,
      BENCH_KP_KUBECTL: cp.kubectl,
    }, profDir);
    procs.push(client);
    // KAS's, the agent's and the floor's CPU time at each mark the client asks for (before and after each list).
    type Cpu = NonNullable<ListResult["cpuMs"]>;
    const marks: Cpu[] = [];
    const diff = (a: Cpu, b: Cpu): Cpu => ({ kas: b.kas - a.kas, agent: b.agent - a.agent, floorA: b.floorA - a.floorA, floorB: b.floorB - a.floorB });
    await new Promise<void>((resolve, reject) => {
      client.on("message", (msg: { type: string } & Record<string, unknown>) => {
        if (msg.type === "mark") {
          void Promise.all([cpuOf(kas), cpuOf(agent), cpuOf(floorA), cpuOf(floorB)]).then(([k, a, fa, fb]) => {
            marks.push({ kas: k!, agent: a!, floorA: fa!, floorB: fb! });
            client.send({ type: "marked" });
          }, reject);
        } else if (msg.type === "seeded") {
          result.seedSeconds = msg.seconds as number;
          console.log(`  created ${String(msg.objects)} ConfigMaps for the large list in ${fmt(msg.seconds as number, 1)} s`);
        } else if (msg.type === "round") {
          const r = msg.result as KubeproxyRound;
          // The round's last four marks: small list start and end, large list start and end.
          const [s0, s1, l0, l1] = marks.slice(-4);
          r.small.cpuMs = diff(s0!, s1!);
          r.large.cpuMs = diff(l0!, l1!);
          result.rounds.push(r);
          printRound(table, msg.round as number, r);
        } else if (msg.type === "kubectl") {
          result.kubectl = msg.result as KubectlResult;
        } else if (msg.type === "watch") {
          result.watch = msg.result as WatchResult;
        } else if (msg.type === "done") {
          resolve();
        } else if (msg.type === "error") {
          reject(new Error(`kubeproxy client: ${String(msg.message)}`));
        }
      });
      client.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`kubeproxy client exited with ${code}`))));
      client.send({ type: "start" });
    });
  } finally {
    for (const p of procs.reverse()) await stopChild(p);
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  summarize(table, verdict, result);
  return result;
}

function printRound(table: Table, round: number, r: KubeproxyRound): void {
  console.log(`\n  round ${round}`);
  for (const [name, list] of [["small list", r.small], ["10k list", r.large]] as const) {
    table(
      [name, "p50 ms", "p99 ms", "mean ms", "KiB/resp", "req/s", "MiB/s"],
      targetsOf(list).map((t) => [
        labels[t],
        fmt(list.latency[t]!.p50, 2),
        fmt(list.latency[t]!.p99, 2),
        fmt(list.latency[t]!.mean, 2),
        fmt(list.latency[t]!.bytesPerResponse / 1024, 1),
        fmt(list.throughput[t]!.requestsPerSecond, 1),
        fmt(list.throughput[t]!.mibPerSecond, 1),
      ]),
    );
    if (list.cpuMs) {
      const per = (ms: number, n: number) => fmt((ms * 1000) / n, 0);
      const c = list.cpuMs;
      console.log(
        `  CPU per request (all threads): KAS ${per(c.kas, list.proxiedRequests)} us + agent ${per(c.agent, list.proxiedRequests)} us (${list.proxiedRequests} proxied); ` +
          `floor A ${per(c.floorA, list.floorRequests)} us + B ${per(c.floorB, list.floorRequests)} us (${list.floorRequests} requests)`,
      );
    }
  }
}

function targetsOf(list: ListResult): KubeproxyTarget[] {
  return (["direct", "proxy", "proxyCiJob", "floor"] as const).filter((t) => list.latency[t] && list.throughput[t]);
}

function summarize(table: Table, verdict: (ok: boolean) => string, result: KubeproxyResult): void {
  const all = result.rounds;
  if (all.length > 0) {
    type Pick = (r: KubeproxyRound) => ListResult;
    const ratio = (list: Pick, t: KubeproxyTarget, base: KubeproxyTarget = "direct") => ({
      p50: median(all.map((r) => list(r).latency[t]!.p50 / list(r).latency[base]!.p50)),
      p99: median(all.map((r) => list(r).latency[t]!.p99 / list(r).latency[base]!.p99)),
      throughput: median(all.map((r) => list(r).throughput[t]!.requestsPerSecond / list(r).throughput[base]!.requestsPerSecond)),
    });
    const lists: Array<[string, Pick]> = [["small list", (r) => r.small], ["10k list", (r) => r.large]];
    console.log(`\n  median of ${all.length} rounds`);
    for (const [name, list] of lists) {
      const med = (f: (l: ListResult) => number) => median(all.map((r) => f(list(r))));
      table(
        [name, "p50 ms", "p99 ms", "req/s"],
        targetsOf(list(all[0]!)).map((t) => [
          labels[t],
          fmt(med((l) => l.latency[t]!.p50), 2),
          fmt(med((l) => l.latency[t]!.p99), 2),
          fmt(med((l) => l.throughput[t]!.requestsPerSecond), 1),
        ]),
      );
    }
    const rows: Array<[string, Pick, KubeproxyTarget, KubeproxyTarget]> = [
      ["small list, proxy (agent) vs direct", (r) => r.small, "proxy", "direct"],
      ["small list, proxy (ci_job) vs direct", (r) => r.small, "proxyCiJob", "direct"],
      ["small list, proxy (agent) vs floor", (r) => r.small, "proxy", "floor"],
      ["small list, proxy (ci_job) vs floor", (r) => r.small, "proxyCiJob", "floor"],
      ["small list, floor vs direct", (r) => r.small, "floor", "direct"],
      ["10k list, proxy (agent) vs direct", (r) => r.large, "proxy", "direct"],
      ["10k list, proxy (agent) vs floor", (r) => r.large, "proxy", "floor"],
      ["10k list, floor vs direct", (r) => r.large, "floor", "direct"],
    ];
    console.log(`\n  ratios (median of ${all.length} per-round ratios; latency: lower is better, throughput: higher is better)`);
    table(
      ["", "p50", "p99", "throughput"],
      rows.map(([label, list, t, base]) => {
        const v = ratio(list, t, base);
        return [label, `${fmt(v.p50)}x`, `${fmt(v.p99)}x`, `${fmt(v.throughput)}x`];
      }),
    );
    for (const [label, list] of lists) {
      const per = (f: (c: NonNullable<ListResult["cpuMs"]>) => number, n: (l: ListResult) => number) =>
        fmt(median(all.map((r) => (f(list(r).cpuMs ?? { kas: NaN, agent: NaN, floorA: NaN, floorB: NaN }) * 1000) / n(list(r)))), 0);
      const proxied = (l: ListResult) => l.proxiedRequests;
      const floored = (l: ListResult) => l.floorRequests;
      console.log(
        `  ${label}: CPU per request (median of rounds) KAS ${per((c) => c.kas, proxied)} us + agent ${per((c) => c.agent, proxied)} us; ` +
          `floor A ${per((c) => c.floorA, floored)} us + B ${per((c) => c.floorB, floored)} us`,
      );
      const v = ratio(list, "proxy");
      const f = ratio(list, "floor");
      console.log(
        `  targets, ${label}: p50 <= 1.3x ${verdict(v.p50 <= 1.3)} (the floor itself: ${fmt(f.p50)}x); ` +
          `throughput >= 0.5x ${verdict(v.throughput >= 0.5)} (the floor itself: ${fmt(f.throughput)}x)`,
      );
    }
  }
  const k = result.kubectl;
  if (k) {
    const requests = (["direct", "proxy", "floor"] as const).map((t) => `${t} ${k.requests[t] ?? "?"}`).join(", ");
    console.log(
      `\n  kubectl get configmaps (${k.items} objects), ${k.runs} invocations per target in rotation, wall time spawn to exit; ` +
        `HTTP requests per warm invocation (kubectl -v=6): ${requests}`,
    );
    table(
      ["kubectl", "p50 ms", "p99 ms", "mean ms", "min ms"],
      (["direct", "proxy", "floor"] as const).filter((t) => k.wallMs[t]).map((t) => {
        const w = k.wallMs[t]!;
        return [labels[t], fmt(w.p50, 1), fmt(w.p99, 1), fmt(w.mean, 1), fmt(w.min, 1)];
      }),
    );
    const r = (t: KubeproxyTarget, base: KubeproxyTarget) => `p50 ${fmt(k.wallMs[t]!.p50 / k.wallMs[base]!.p50)}x, mean ${fmt(k.wallMs[t]!.mean / k.wallMs[base]!.mean)}x`;
    if (k.wallMs.proxy && k.wallMs.direct && k.wallMs.floor) {
      console.log(`  kubectl wall time: proxy vs direct ${r("proxy", "direct")}; proxy vs floor ${r("proxy", "floor")}; floor vs direct ${r("floor", "direct")}`);
    }
  }
  const w = result.watch;
  if (w) {
    console.log(`\n  watch: ${w.created} ConfigMaps created in ${fmt(w.createSeconds, 2)} s (${fmt(w.createRate, 0)}/s, ${w.createFailures} failed creates)`);
    table(
      ["watch", "events", "missing", "duplicates", "events/s", "lag from create p50 ms", "p99 ms"],
      (["proxy", "direct"] as const).map((k) => [
        k === "proxy" ? "through KAS" : "direct",
        String(w[k].received),
        String(w[k].missing),
        String(w[k].duplicates),
        fmt(w[k].rate, 0),
        fmt(w[k].lagP50, 1),
        fmt(w[k].lagP99, 1),
      ]),
    );
    console.log(`  added by the proxy per event (proxy watch - direct watch): p50 ${fmt(w.addedLagP50, 2)} ms, p99 ${fmt(w.addedLagP99, 2)} ms`);
    const rateOk = w.createRate >= 0.95 * Number(process.env.BENCH_KP_WATCH_RATE ?? 1000);
    console.log(
      `  target 1,000 events/s without loss: no loss ${verdict(w.proxy.missing === 0 && w.proxy.duplicates === 0)}; ` +
        `rate ${rateOk && w.proxy.rate >= 0.95 * w.createRate ? verdict(true) : verdict(false)}` +
        (rateOk ? "" : " (the API server did not take creates at the full rate)"),
    );
  }
}
