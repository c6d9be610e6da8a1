/**
 * KAS memory per idle tunnel stream: KAS runs alone in a child process (bench/kas-process.ts), the
 * agents in another (bench/agents-process.ts). KAS's memory is read after full GCs before any agent
 * connects, with half of the agents connected and with all of them connected.
 *
 * Every sample, the baseline included, is taken after the same idle time (BENCH_SETTLE_MS, default
 * 30 s). V8 sizes its young generation by the recent allocation rate: a connection storm grows it
 * (16 -> 32 MiB of semispaces), and a GC while allocation is low shrinks it back (to 1 MiB here).
 * The sample's forced GCs do that once the storm is well past (reliably after 30 s here, only
 * sometimes after 10 s, never after 1 s), and a baseline read 0.5 s after start still held the
 * start-up's 16 MiB; with unequal or short idle times the difference between samples counted that
 * state (set by the allocation rate, not by the number of streams) as cost per stream, 4 to 8 KiB
 * per stream from run to run. run.ts also prints the differences without the young generation's
 * committed size. `asFound` shows the process as V8 left it before the forced GCs: with hardly any
 * allocation no GC runs, and a grown young generation and garbage stay until one does.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { sleep } from "./common.js";

export interface Usage {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
}

export interface MemorySample extends Usage {
  /** Committed bytes per V8 heap space (new_space, old_space, ...). */
  spaces: Record<string, number>;
  /** RSS and heap spaces just before the forced GCs: what V8 had given back by itself. */
  asFound: { rss: number; spaces: Record<string, number> };
  idleTunnels: number;
}

export interface MemoryResult {
  agents: number;
  /** BENCH_MEMORY_CONFIG=1: KAS runs the configuration module and every agent holds a GetConfiguration stream. */
  watchConfiguration: boolean;
  /** Idle time before each sample, baseline included. */
  settleMs: number;
  tunnelsPerAgent: number;
  baseline: MemorySample;
  half: MemorySample;
  full: MemorySample;
  connectSeconds: number;
}

type Message = { type: string; [key: string]: unknown };

/** Forks a compiled bench script (bench/dist, see run.ts) with plain node: no tsx in measured processes. */
function child(name: string, env: Record<string, string>, gc: boolean): ChildProcess {
  const path = fileURLToPath(new URL(`./dist/bench/${name}.js`, import.meta.url));
  return fork(path, [], {
    execArgv: gc ? ["--expose-gc"] : [],
    env: { ...process.env, ...env },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
}

function next(proc: ChildProcess, type: string, timeoutMs = 120_000): Promise<Message> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`timed out waiting for "${type}" from child`)), timeoutMs);
    const onMessage = (msg: Message) => {
      if (msg.type === type) done(undefined, msg);
    };
    const onExit = (code: number | null) => done(new Error(`child exited (${code}) while waiting for "${type}"`));
    function done(error?: Error, msg?: Message) {
      clearTimeout(timer);
      proc.off("message", onMessage);
      proc.off("exit", onExit);
      if (error) reject(error);
      else resolve(msg!);
    }
    proc.on("message", onMessage);
    proc.on("exit", onExit);
  });
}

async function ask(proc: ChildProcess, type: string, reply: string): Promise<Message> {
  const answer = next(proc, reply);
  proc.send({ type });
  return answer;
}

/** With BENCH_HEAP_SNAPSHOT=<dir>, KAS writes a heap snapshot at each sample (slow; for investigations). */
async function snapshot(kas: ChildProcess, label: string): Promise<void> {
  const dir = process.env.BENCH_HEAP_SNAPSHOT;
  if (!dir) return;
  const answer = next(kas, "snapshot", 600_000);
  kas.send({ type: "snapshot", path: `${dir}/kas-${label}.heapsnapshot` });
  console.log(`  heap snapshot: ${(await answer).path as string}`);
}

async function sample(kas: ChildProcess): Promise<MemorySample> {
  const msg = await ask(kas, "measure", "memory");
  const pick = (u: NodeJS.MemoryUsage): Usage => ({ rss: u.rss, heapTotal: u.heapTotal, heapUsed: u.heapUsed, external: u.external });
  const stats = msg.stats as { idleTunnels: number };
  return {
    ...pick(msg.usage as NodeJS.MemoryUsage),
    spaces: msg.spaces as Record<string, number>,
    asFound: msg.asFound as MemorySample["asFound"],
    idleTunnels: stats.idleTunnels,
  };
}

/**
 * Waits until KAS holds `tunnels` idle tunnels and `agents` registered agent processes and, with
 * `configured`, until that many agents have received their configuration.
 */
async function waitForAgents(
  kas: ChildProcess,
  agentProc: ChildProcess,
  agents: number,
  tunnels: number,
  configured: number,
  timeoutMs = 120_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const msg = await ask(kas, "stats", "stats");
    const { idleTunnels, registered } = msg.stats as { idleTunnels: number; registered: number };
    const withConfig = configured > 0 ? ((await ask(agentProc, "configured", "configured")).count as number) : 0;
    if (idleTunnels >= tunnels && registered >= agents && withConfig >= configured) return;
    if (Date.now() > deadline) {
      throw new Error(
        `only ${idleTunnels} of ${tunnels} idle tunnels, ${registered} of ${agents} agents and ${withConfig} of ${configured} configurations after ${timeoutMs} ms`,
      );
    }
    await sleep(250);
  }
}

function stop(proc: ChildProcess, type: string, reply: string): Promise<void> {
  if (proc.exitCode !== null || !proc.connected) return Promise.resolve();
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const killer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
  ask(proc, type, reply).catch(() => {});
  return exited.finally(() => clearTimeout(killer));
}

export async function measureMemory(agents: number, tunnelsPerAgent: number): Promise<MemoryResult> {
  const settleMs = Number(process.env.BENCH_SETTLE_MS ?? 30_000);
  const watchConfiguration = process.env.BENCH_MEMORY_CONFIG === "1";
  const env = { BENCH_AGENTS: String(agents), BENCH_IDLE_TUNNELS: String(tunnelsPerAgent), BENCH_MEMORY_CONFIG: watchConfiguration ? "1" : "0" };
  const configs = (n: number) => (watchConfiguration ? n : 0);
  const kas = child("kas-process", env, true);
  const agentProc = child("agents-process", env, false);
  try {
    const ready = await next(kas, "ready");
    await next(agentProc, "ready");
    const url = ready.url as string;
    await sleep(settleMs);
    const baseline = await sample(kas);
    await snapshot(kas, "baseline");
    const halfCount = Math.floor(agents / 2);
    const start = performance.now();
    agentProc.send({ type: "connect", url, first: 0, count: halfCount });
    await next(agentProc, "started");
    await waitForAgents(kas, agentProc, halfCount, halfCount * tunnelsPerAgent, configs(halfCount));
    await sleep(settleMs);
    const half = await sample(kas);
    await snapshot(kas, "half");
    agentProc.send({ type: "connect", url, first: halfCount, count: agents - halfCount });
    await next(agentProc, "started");
    await waitForAgents(kas, agentProc, agents, agents * tunnelsPerAgent, configs(agents));
    const connectSeconds = (performance.now() - start) / 1000;
    await sleep(settleMs);
    const full = await sample(kas);
    await snapshot(kas, "full");
    return { agents, watchConfiguration, settleMs, tunnelsPerAgent, baseline, half, full, connectSeconds };
  } finally {
    await stop(agentProc, "stop", "stopped");
    await stop(kas, "close", "closed");
  }
}
