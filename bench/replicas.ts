/**
 * Section 7 of `npm run bench`: several `kas` replicas on one Redis and one PostgreSQL database
 * (e2e/replicas.test-support.ts), with the real agentk:
 *
 * - forwarded vs local: unary latency and stream throughput of calls sent to the replica holding
 *   the agent's tunnels and to one that forwards them there through its private API, in the same
 *   run, interleaved in blocks;
 * - a token revoked on one replica -> the replica holding the agent's tunnels closes them (Redis
 *   pub/sub);
 * - kill -9 of the replica holding the agent's tunnels (agentk behind a TCP load balancer) -> a call
 *   sent to another replica right after the kill succeeds.
 *
 * Knobs: BENCH_REPLICA_CALLS (2000 per target), BENCH_REPLICA_ROUNDS (5; kill -9: 3).
 */
import { Cleanup } from "../testing/src/cleanup.js";
import { tcpProxy } from "../testing/src/tcp-proxy.js";
import { waitFor } from "../testing/src/wait.js";
import { api, createAgentWithToken, echoClient, startAgentk } from "../e2e/harness.test-support.js";
import { ReplicaSet, type Replica } from "../e2e/replicas.test-support.js";
import { loggedAt } from "./events.js";
import { fmt, median, percentile } from "./common.js";

export interface ReplicasResult {
  local: { p50: number; p99: number; mibPerSecond: number[] };
  forwarded: { p50: number; p99: number; mibPerSecond: number[] };
  /** forwarded / local */
  p50Ratio: number;
  p99Ratio: number;
  streamRatio: number;
  /** ms from the REST call revoking a token on one replica to another closing its tunnels. */
  revocation: number[];
  /** ms from kill -9 of the holding replica to a call through another replica succeeding. */
  recovery: number[];
}

type Table = (head: string[], rows: string[][]) => void;

const calls = Number(process.env.BENCH_REPLICA_CALLS ?? 2000);
const rounds = Number(process.env.BENCH_REPLICA_ROUNDS ?? 5);
const BLOCK = 100;
const STREAM_MESSAGES = 512;
const STREAM_MESSAGE_BYTES = 64 * 1024;

/** Runs section 7 and prints its tables. */
export async function measureReplicas(table: Table, verdict: (ok: boolean) => string): Promise<ReplicasResult> {
  const cleanup = new Cleanup();
  const set = new ReplicaSet({ KAS_LOG_LEVEL: "info" });
  try {
    await set.open();
    cleanup.add(() => set.close());
    const [a, b] = [await set.start(), await set.start()];

    // 1. Forwarded vs local.
    const agent = await createAgentWithToken(a, "bench");
    const agentk = startAgentk(a.addresses.agent, agent.token, {}, ["--log-level", "info"]);
    cleanup.add(() => agentk.cleanup());
    const local = echoClient(a, agent.agentId);
    const forwarded = echoClient(b, agent.agentId);
    cleanup.add(() => (local.close(), forwarded.close()));
    await forwarded.client.echo({}, { timeoutMs: 30_000 });
    const latencies = { local: [] as number[], forwarded: [] as number[] };
    const payload = new Uint8Array(100);
    for (let i = 0; i < 300; i++) await Promise.all([local.client.echo({ payload }), forwarded.client.echo({ payload })]);
    for (let done = 0; done < calls; done += BLOCK) {
      for (const [name, c] of [["local", local], ["forwarded", forwarded]] as const) {
        for (let i = 0; i < BLOCK; i++) {
          const t = performance.now();
          await c.client.echo({ payload });
          latencies[name].push(performance.now() - t);
        }
      }
    }
    const throughput = { local: [] as number[], forwarded: [] as number[] };
    for (let r = 0; r < 3; r++) {
      for (const [name, c] of [["local", local], ["forwarded", forwarded]] as const) {
        const t = performance.now();
        let bytes = 0;
        for await (const m of c.client.serverStream({ count: STREAM_MESSAGES, size: STREAM_MESSAGE_BYTES })) bytes += m.payload.byteLength;
        throughput[name].push(bytes / (1 << 20) / ((performance.now() - t) / 1000));
      }
    }
    const stats = (values: number[]) => {
      const sorted = [...values].sort((x, y) => x - y);
      return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
    };
    const l = { ...stats(latencies.local), mibPerSecond: throughput.local };
    const f = { ...stats(latencies.forwarded), mibPerSecond: throughput.forwarded };
    const p50Ratio = f.p50 / l.p50;
    const p99Ratio = f.p99 / l.p99;
    const streamRatio = median(f.mibPerSecond) / median(l.mibPerSecond);
    table(
      ["unary echo, 100 B (sequential)", "calls", "p50 ms", "p99 ms", "stream MiB/s (32 MiB, median of 3)"],
      [
        ["(l) to the replica holding the tunnels", String(latencies.local.length), fmt(l.p50, 3), fmt(l.p99, 3), fmt(median(l.mibPerSecond), 0)],
        ["(f) to another replica (forwarded, private API)", String(latencies.forwarded.length), fmt(f.p50, 3), fmt(f.p99, 3), fmt(median(f.mibPerSecond), 0)],
      ],
    );
    console.log(`  forwarded / local: p50 ${fmt(p50Ratio)}x, p99 ${fmt(p99Ratio)}x, stream ${fmt(streamRatio)}x (one more gRPC hop on loopback)`);

    // 2. Revocation on one replica -> tunnels closed on another.
    const revocation: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const round = new Cleanup();
      try {
        const revoked = await createAgentWithToken(a, `revoked-${i}`);
        const k = startAgentk(b.addresses.agent, revoked.token, {}, ["--log-level", "info"]);
        round.add(() => k.cleanup());
        const echo = echoClient(b, revoked.agentId);
        round.add(() => echo.close());
        await echo.client.echo({}, { timeoutMs: 30_000 });
        const revokedAt = Date.now();
        const res = await api(a, "DELETE", `/projects/${revoked.projectId}/cluster_agents/${revoked.agentId}/tokens/${revoked.tokenId}`);
        if (res.status !== 204) throw new Error(`revoke: HTTP ${res.status}`);
        const closedAt = await loggedAt(b, (line) => line.msg === "agent token revoked: closing its streams" && line.tokenId === revoked.tokenId, "the other replica to close the tunnels");
        revocation.push(closedAt - revokedAt);
      } finally {
        await round.run();
      }
    }

    // 3. kill -9 of the holding replica, agentk behind a load balancer.
    let live: Replica[] = [a, b, await set.start()];
    let next = 0;
    const lb = await tcpProxy(() => Number(new URL(live[next++ % live.length]!.addresses.agent).port));
    cleanup.add(() => lb.close());
    const moving = await createAgentWithToken(a, "moving");
    const mover = startAgentk(`grpc://127.0.0.1:${lb.port}`, moving.token, {}, ["--log-level", "info"]);
    cleanup.add(() => mover.cleanup());
    const recovery: number[] = [];
    for (let i = 0; i < Math.min(rounds, 3); i++) {
      const listed = async () =>
        ((await api(live[0]!, "GET", `/projects/${moving.projectId}/cluster_agents/${moving.agentId}/connections`)).json as Array<{ kas_instance: string }>).map((c) => c.kas_instance);
      await waitFor(async () => (await listed()).length === 1, 30_000, "agentk connected");
      const [holding] = await listed();
      const holder = live.find((r) => r.output.includes(`"kasInstance":"${holding}"`))!;
      live = live.filter((r) => r !== holder);
      const echo = echoClient(live[0]!, moving.agentId);
      await echo.client.echo({}, { timeoutMs: 30_000 });
      holder.child.kill("SIGKILL");
      const killedAt = Date.now();
      await holder.exited;
      await echo.client.echo({}, { timeoutMs: 30_000 });
      recovery.push(Date.now() - killedAt);
      echo.close();
      live.push(await set.start());
    }
    const row = (label: string, values: number[], target: number) => {
      const sorted = [...values].sort((x, y) => x - y);
      return [label, String(values.length), fmt(median(values), 0), fmt(percentile(sorted, 90), 0), fmt(sorted.at(-1)!, 0), verdict(median(values) <= target)];
    };
    table(
      ["event -> effect (ms)", "rounds", "median", "p90", "max", "target"],
      [
        [...row("token revoked on replica A -> replica B closes its tunnels", revocation, 1000).slice(0, 5), `median <= 1000 ms: ${verdict(median(revocation) <= 1000)}`],
        [...row("kill -9 of the holding replica -> a call through another succeeds", recovery, 5000).slice(0, 5), `median <= 5000 ms: ${verdict(median(recovery) <= 5000)}`],
      ],
    );
    return { local: l, forwarded: f, p50Ratio, p99Ratio, streamRatio, revocation, recovery };
  } finally {
    await cleanup.run();
  }
}
