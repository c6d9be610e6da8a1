/**
 * Section 4 of `npm run bench`: the Kubernetes API proxy against the real kube-apiserver.
 *
 *   client (kubeproxy-client.js) ──HTTP/2+TLS──> kube-apiserver                          (direct)
 *   client ──HTTP/2+TLS──> KAS proxy (kubeproxy-servers.js kas) ──tunnel──> agent
 *          (kubeproxy-servers.js agent) ──HTTPS keep-alive──> kube-apiserver            (proxy)
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
 * createAgent + createAgentKubernetesApi) compiled to plain JS; the platform is a fixed table (one
 * agent, two CI jobs): its answer is cached by the proxy for 5 s either way.
 *
 * Knobs: BENCH_KP_ROUNDS (3), BENCH_KP_SMALL_REQUESTS (600), BENCH_KP_LARGE_REQUESTS (20),
 * BENCH_KP_LARGE_OBJECTS (10000), BENCH_KP_CONCURRENCY (8), BENCH_KP_WATCH_RATE (1000),
 * BENCH_KP_WATCH_SECONDS (5; 0 skips the watch), BENCH_KP_CPU_PROF=<dir> (--cpu-prof for the
 * three processes), BENCH_KP_LOG=<level> (KAS and agent logs on stderr).
 */
import { execFileSync, fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { controlPlaneBinDir, findBinaries, startControlPlane } from "../tools/control-plane/control-plane.js";
import { fmt, median } from "./common.js";
import type { KubeproxyRound, KubeproxyTarget, ListResult, WatchResult } from "./kubeproxy-client.js";

export interface KubeproxyResult {
  skipped?: string;
  seedSeconds?: number;
  rounds: KubeproxyRound[];
  watch?: WatchResult;
}

const AGENT_ID = 7;
const labels: Record<KubeproxyTarget, string> = {
  direct: "direct to kube-apiserver",
  proxy: "through KAS (access_as agent)",
  proxyCiJob: "through KAS (access_as ci_job)",
};

type Table = (head: string[], rows: string[][]) => void;

function dist(file: string): string {
  return fileURLToPath(new URL(`./dist/bench/${file}`, import.meta.url));
}

function child(file: string, args: string[], env: Record<string, string>, profDir: string | undefined): ChildProcess {
  return fork(dist(file), args, {
    execArgv: profDir ? ["--cpu-prof", "--cpu-prof-dir", profDir] : [],
    env: { ...process.env, ...env },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
}

/** The child's next message of `type`; rejects if it exits first. */
function next<T>(proc: ChildProcess, type: string): Promise<T> {
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

async function stopChild(proc: ChildProcess | undefined): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once("exit", resolve));
  if (proc.connected) proc.send({ type: "close" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

export async function measureKubeproxy(table: Table, verdict: (ok: boolean) => string): Promise<KubeproxyResult> {
  let binDir: string;
  try {
    binDir = controlPlaneBinDir();
    findBinaries(binDir);
  } catch (e) {
    const skipped = (e as Error).message;
    console.log(`  SKIPPED: ${skipped}`);
    return { skipped, rounds: [] };
  }
  const profDir = process.env.BENCH_KP_CPU_PROF;
  const dir = mkdtempSync(join(tmpdir(), "kasbridge-bench-kubeproxy-"));
  const procs: ChildProcess[] = [];
  const cp = await startControlPlane({ binDir, kwok: false, agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }] });
  const result: KubeproxyResult = { rounds: [] };
  try {
    // kubectl sends tokens only over TLS; so does this client (same CA for nothing else).
    const cert = join(dir, "tls.crt");
    const key = join(dir, "tls.key");
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert,
    ], { stdio: "pipe" });
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
    const client = child("kubeproxy-client.js", [], {
      BENCH_KP_API_URL: cp.apiServerUrl,
      BENCH_KP_API_CA: cp.caCertPath,
      BENCH_KP_API_TOKEN: cp.agentToken,
      BENCH_KP_PROXY_URL: proxyUrl,
      BENCH_KP_PROXY_CA: cert,
      BENCH_KP_PROXY_TOKEN: `ci:${AGENT_ID}:${secrets.BENCH_KP_JOB_TOKEN}`,
      BENCH_KP_PROXY_CI_JOB_TOKEN: `ci:${AGENT_ID}:${secrets.BENCH_KP_CI_JOB_TOKEN}`,
    }, profDir);
    procs.push(client);
    // KAS's and the agent's CPU time at each mark the client asks for (before and after each list).
    const cpuOf = (proc: ChildProcess) => {
      const reply = next<{ usage: NodeJS.CpuUsage }>(proc, "cpu");
      proc.send({ type: "cpu" });
      return reply.then((m) => (m.usage.user + m.usage.system) / 1000);
    };
    const marks: Array<{ kas: number; agent: number }> = [];
    await new Promise<void>((resolve, reject) => {
      client.on("message", (msg: { type: string } & Record<string, unknown>) => {
        if (msg.type === "mark") {
          void Promise.all([cpuOf(kas), cpuOf(agent)]).then(([k, a]) => {
            marks.push({ kas: k!, agent: a! });
            client.send({ type: "marked" });
          }, reject);
        } else if (msg.type === "seeded") {
          result.seedSeconds = msg.seconds as number;
          console.log(`  created ${String(msg.objects)} ConfigMaps for the large list in ${fmt(msg.seconds as number, 1)} s`);
        } else if (msg.type === "round") {
          const r = msg.result as KubeproxyRound;
          // The round's last four marks: small list start and end, large list start and end.
          const [s0, s1, l0, l1] = marks.slice(-4);
          r.small.cpuMs = { kas: s1!.kas - s0!.kas, agent: s1!.agent - s0!.agent };
          r.large.cpuMs = { kas: l1!.kas - l0!.kas, agent: l1!.agent - l0!.agent };
          result.rounds.push(r);
          printRound(table, msg.round as number, r);
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
      const per = (ms: number) => fmt((ms * 1000) / list.proxiedRequests, 0);
      console.log(
        `  CPU per proxied request (${list.proxiedRequests} requests, all threads): KAS ${per(list.cpuMs.kas)} us, agent ${per(list.cpuMs.agent)} us`,
      );
    }
  }
}

function targetsOf(list: ListResult): KubeproxyTarget[] {
  return (["direct", "proxy", "proxyCiJob"] as const).filter((t) => list.latency[t] && list.throughput[t]);
}

function summarize(table: Table, verdict: (ok: boolean) => string, result: KubeproxyResult): void {
  const all = result.rounds;
  if (all.length > 0) {
    const ratio = (list: (r: KubeproxyRound) => ListResult, t: KubeproxyTarget) => ({
      p50: median(all.map((r) => list(r).latency[t]!.p50 / list(r).latency.direct!.p50)),
      p99: median(all.map((r) => list(r).latency[t]!.p99 / list(r).latency.direct!.p99)),
      throughput: median(all.map((r) => list(r).throughput[t]!.requestsPerSecond / list(r).throughput.direct!.requestsPerSecond)),
    });
    const rows: Array<[string, (r: KubeproxyRound) => ListResult, KubeproxyTarget]> = [
      ["small list, access_as agent", (r) => r.small, "proxy"],
      ["small list, access_as ci_job", (r) => r.small, "proxyCiJob"],
      ["10k list, access_as agent", (r) => r.large, "proxy"],
    ];
    console.log(`\n  proxy vs direct (median of ${all.length} per-round ratios; latency: lower is better, throughput: higher is better)`);
    table(
      ["", "p50", "p99", "throughput"],
      rows.map(([label, list, t]) => {
        const v = ratio(list, t);
        return [label, `${fmt(v.p50)}x`, `${fmt(v.p99)}x`, `${fmt(v.throughput)}x`];
      }),
    );
    for (const [label, list] of [["small list", (r: KubeproxyRound) => r.small], ["10k list", (r: KubeproxyRound) => r.large]] as const) {
      const per = (f: (c: { kas: number; agent: number }) => number) =>
        fmt(median(all.map((r) => (f(list(r).cpuMs ?? { kas: NaN, agent: NaN }) * 1000) / list(r).proxiedRequests)), 0);
      console.log(`  ${label}: CPU per proxied request (median of rounds) KAS ${per((c) => c.kas)} us, agent ${per((c) => c.agent)} us`);
      const v = ratio(list, "proxy");
      console.log(`  targets, ${label}: p50 <= 1.3x ${verdict(v.p50 <= 1.3)}; throughput >= 0.5x ${verdict(v.throughput >= 0.5)}`);
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
