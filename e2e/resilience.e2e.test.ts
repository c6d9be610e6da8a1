import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { rejection, streamRejection, waitFor } from "@kasbridge/testing/wait";
import { adminToken, api, createAgentWithToken, echoClient, startAgentk, startKas } from "./harness.test-support.js";

describe("e2e: limits, restarts and secrets", function () {
  this.timeout(120_000);
  const cleanups = new Cleanup();
  afterEach(() => cleanups.run());

  it("refuses oversized messages both ways with RESOURCE_EXHAUSTED and keeps serving", async () => {
    const kas = await startKas({ KAS_MAX_MESSAGE_BYTES: String(1024 * 1024) });
    cleanups.add(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.add(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    cleanups.add(() => echo.close());
    await echo.client.echo({}, { timeoutMs: 15_000 });

    const up = await rejection(echo.client.echo({ payload: new Uint8Array(2 * 1024 * 1024) }));
    expect(up.code).to.equal(Code.ResourceExhausted);

    // The agent's reply is too big for KAS.
    const down = await streamRejection(echo.client.serverStream({ count: 1, size: 2 * 1024 * 1024 }));
    expect(down.code).to.equal(Code.ResourceExhausted);

    const ok = await echo.client.echo({ payload: new Uint8Array(512 * 1024) });
    expect(ok.payload.byteLength).to.equal(512 * 1024);
  });

  it("agentk reconnects and registers again after KAS restarts; a call in flight fails cleanly", async () => {
    // Every resource is released even when a step throws (kas is killed on purpose below: its
    // cleanup then only removes its data directory, which the second kas also uses).
    const kas = await startKas();
    cleanups.add(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const agentPort = new URL(kas.addresses.agent.replace(/^grpc:/, "http:")).port;
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.add(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    cleanups.add(() => echo.close());
    await echo.client.echo({}, { timeoutMs: 15_000 });
    let received = 0;
    const inflight = streamRejection(echo.client.serverStream({ count: 10_000_000, size: 1024 }), () => {
      received++;
    });
    await waitFor(() => received > 0, undefined, "the stream to flow");
    await kas.stop("SIGKILL");
    // It ends with an error (streamRejection fails the test on a clean end), not a hang. Its code
    // is the client library's: CANCELED, ABORTED or UNAVAILABLE depending on which of the socket's
    // and the session's ends connect-node sees first.
    await inflight;
    echo.close();
    await agentk.waitFor(/reverse tunnel to KAS failed/);

    // Same data directory and agent port: the agent's backoff brings it back.
    const again = await startKas({ KAS_AGENT_ADDR: `127.0.0.1:${agentPort}` }, kas.dataDir);
    cleanups.add(() => again.cleanup());
    const echo2 = echoClient(again, a.agentId);
    cleanups.add(() => echo2.close());
    const res = await echo2.client.echo({ payload: new Uint8Array([3]) }, { timeoutMs: 30_000 });
    expect(res.payload[0]).to.equal(3);
    await waitFor(
      async () => (await api(again, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}/connections`)).json.length === 1,
      30_000,
      "re-registration",
    );
    expect(agentk.child.exitCode).to.equal(null);
  });

  it("never logs agent or personal access tokens", async () => {
    const kas = await startKas();
    cleanups.add(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.add(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    cleanups.add(() => echo.close());
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
    const cleanup = new Cleanup();
    try {
      const kas = await startKas();
      cleanup.add(() => kas.cleanup());
      const a = await createAgentWithToken(kas);
      const agentk = startAgentk(kas.addresses.agent, a.token);
      cleanup.add(() => agentk.cleanup());
      const echo = echoClient(kas, a.agentId);
      cleanup.add(() => echo.close());
      await echo.client.echo({}, { timeoutMs: 15_000 });
      const rssBefore = await kasRss(kas.addresses.observability);
      // 256 MiB offered; the reader takes one message, then stalls until KAS's memory stops
      // growing: what KAS holds then is all that flow control lets through (had it buffered the
      // stream, its memory would stop growing only with the 256 MiB in it).
      const stream = echo.client.serverStream({ count: 4096, size: 65_536 })[Symbol.asyncIterator]();
      await stream.next();
      const samples: number[] = [];
      await waitFor(
        async () => {
          await new Promise((resolve) => setTimeout(resolve, 200)); // five samples span a second
          samples.push(await kasRss(kas.addresses.observability));
          const last = samples.slice(-5);
          return last.length === 5 && Math.max(...last) - Math.min(...last) < 2 * 1024 * 1024;
        },
        60_000,
        "KAS's memory to settle while the reader stalls",
      );
      const rssStalled = Math.max(...samples);
      let n = 1;
      while (!(await stream.next()).done) n++;
      expect(n).to.equal(4096);
      // Flow-control windows and small queues bound what KAS holds: far below the 256 MiB offered.
      expect(rssStalled - rssBefore).to.be.lessThan(64 * 1024 * 1024);
    } finally {
      await cleanup.run();
    }
  });
});

async function kasRss(observability: string): Promise<number> {
  const text = await (await fetch(`${observability}/metrics`)).text();
  const match = /^process_resident_memory_bytes (\d+(?:\.\d+)?(?:e\+\d+)?)/m.exec(text);
  if (!match) throw new Error("process_resident_memory_bytes missing from /metrics");
  return Number(match[1]);
}
