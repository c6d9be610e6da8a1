import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { adminToken, api, createAgentWithToken, echoClient, startAgentk, startKas, waitUntil } from "./harness.test-support.js";

describe("e2e: limits, restarts and secrets", function () {
  this.timeout(120_000);
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("refuses oversized messages both ways with RESOURCE_EXHAUSTED and keeps serving", async () => {
    const kas = await startKas({ KAS_MAX_MESSAGE_BYTES: String(1024 * 1024) });
    cleanups.push(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.push(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    cleanups.push(() => echo.close());
    await echo.client.echo({}, { timeoutMs: 15_000 });

    const up = await echo.client.echo({ payload: new Uint8Array(2 * 1024 * 1024) }).catch((e: unknown) => ConnectError.from(e));
    expect((up as ConnectError).code).to.equal(Code.ResourceExhausted);

    const down = await (async () => {
      for await (const _ of echo.client.serverStream({ count: 1, size: 2 * 1024 * 1024 })) {
        /* the agent's reply is too big for KAS */
      }
    })().catch((e: unknown) => ConnectError.from(e));
    expect((down as ConnectError).code).to.equal(Code.ResourceExhausted);

    const ok = await echo.client.echo({ payload: new Uint8Array(512 * 1024) });
    expect(ok.payload.byteLength).to.equal(512 * 1024);
  });

  it("agentk reconnects and registers again after KAS restarts; a call in flight fails cleanly", async () => {
    const kas = await startKas();
    const a = await createAgentWithToken(kas);
    const agentPort = new URL(kas.addresses.agent.replace(/^grpc:/, "http:")).port;
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.push(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    await echo.client.echo({}, { timeoutMs: 15_000 });
    const inflight = (async () => {
      for await (const _ of echo.client.serverStream({ count: 10_000_000, size: 1024 })) {
        /* until KAS goes away */
      }
    })().catch((e: unknown) => ConnectError.from(e));
    await new Promise((r) => setTimeout(r, 200));
    await kas.stop("SIGKILL");
    const err = await inflight;
    expect(err).to.be.instanceOf(ConnectError);
    echo.close();
    await agentk.waitFor(/reverse tunnel to KAS failed/);

    // Same data directory and agent port: the agent's backoff brings it back.
    const again = await startKas({ KAS_AGENT_ADDR: `127.0.0.1:${agentPort}` }, kas.dataDir);
    cleanups.push(() => again.cleanup());
    const echo2 = echoClient(again, a.agentId);
    cleanups.push(() => echo2.close());
    const res = await echo2.client.echo({ payload: new Uint8Array([3]) }, { timeoutMs: 30_000 });
    expect(res.payload[0]).to.equal(3);
    await waitUntil(
      async () => (await api(again, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}/connections`)).json.length === 1,
      30_000,
      "re-registration",
    );
    expect(agentk.child.exitCode).to.equal(null);
  });

  it("never logs agent or personal access tokens", async () => {
    const kas = await startKas();
    cleanups.push(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.push(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    cleanups.push(() => echo.close());
    await echo.client.echo({}, { timeoutMs: 15_000 });
    await api(kas, "GET", "/projects/1", undefined, "glpat-wrong-token-0000000000000000");
    for (const output of [kas.output, agentk.output]) {
      expect(output).to.not.include(a.token);
      expect(output).to.not.include(adminToken);
      expect(output).to.not.include("glpat-wrong-token");
    }
  });
});

describe("e2e: backpressure", function () {
  this.timeout(120_000);

  it("holds a slow reader's stream back instead of buffering it in KAS", async () => {
    const kas = await startKas();
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    const echo = echoClient(kas, a.agentId);
    try {
      await echo.client.echo({}, { timeoutMs: 15_000 });
      const rssBefore = await kasRss(kas.addresses.observability);
      // 256 MiB offered; the reader takes one message then stalls for 3 s.
      const stream = echo.client.serverStream({ count: 4096, size: 65_536 })[Symbol.asyncIterator]();
      await stream.next();
      await new Promise((r) => setTimeout(r, 3000));
      const rssStalled = await kasRss(kas.addresses.observability);
      let n = 1;
      while (!(await stream.next()).done) n++;
      expect(n).to.equal(4096);
      // Flow-control windows and small queues bound what KAS holds: far below the 256 MiB offered.
      expect(rssStalled - rssBefore).to.be.lessThan(64 * 1024 * 1024);
    } finally {
      echo.close();
      await agentk.cleanup();
      await kas.cleanup();
    }
  });
});

async function kasRss(observability: string): Promise<number> {
  const text = await (await fetch(`${observability}/metrics`)).text();
  const match = /^process_resident_memory_bytes (\d+(?:\.\d+)?(?:e\+\d+)?)/m.exec(text);
  if (!match) throw new Error("process_resident_memory_bytes missing from /metrics");
  return Number(match[1]);
}
