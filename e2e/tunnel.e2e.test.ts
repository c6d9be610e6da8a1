import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { decodeSecret } from "@kasbridge/sdk/auth";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { HUNG_MS, deferred, rejection, streamRejection, waitFor, within } from "@kasbridge/testing/wait";
import { api, createAgentWithToken, echoClient, echoThroughPrivateApi, startAgentk, startKas, type KasProcess } from "./harness.test-support.js";

describe("e2e: kas + agentk processes over the reverse tunnel", function () {
  this.timeout(120_000);
  let kas: Awaited<ReturnType<typeof startKas>>;
  const suite = new Cleanup();
  const cleanups = new Cleanup();

  before(async () => {
    kas = await startKas();
    suite.add(() => kas.cleanup());
  });
  after(() => suite.run());
  afterEach(() => cleanups.run());

  async function connectedAgent() {
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.add(() => agentk.cleanup());
    await waitFor(async () => (await connections(kas, a)).length === 1, 15_000, "agent connection");
    const echo = echoClient(kas, a.agentId);
    cleanups.add(() => echo.close());
    return { ...a, agentk, echo: echo.client };
  }

  it("connects an agent created over REST and lists its connection", async () => {
    const a = await connectedAgent();
    const [conn] = await connections(kas, a);
    expect(conn.pod_name).to.equal("agentk-e2e-pod");
    expect(conn.pod_namespace).to.equal("gitlab-agent");
    expect(conn.agent_version).to.match(/^v/);
    expect(conn.connection_id).to.match(/^\d+$/);
    expect(conn.kas_instance).to.be.a("string").and.not.empty;
    expect(Date.parse(conn.connected_at)).to.be.greaterThan(Date.now() - 60_000);
  });

  it("carries unary, a 50 MB server stream and bidi through the tunnel", async () => {
    const { echo } = await connectedAgent();
    const res = await echo.echo({ payload: new TextEncoder().encode("ping") });
    expect(new TextDecoder().decode(res.payload)).to.equal("ping");
    expect(res.servedBy).to.equal("agentk-e2e-pod");
    let bytes = 0;
    let index = 0;
    for await (const msg of echo.serverStream({ count: 800, size: 65_536 })) {
      expect(msg.index).to.equal(index++);
      bytes += msg.payload.byteLength;
    }
    expect(bytes).to.equal(800 * 65_536);
    const sent = Array.from({ length: 100 }, (_, i) => i);
    const got: number[] = [];
    async function* input() {
      for (const i of sent) yield { payload: new Uint8Array([i]) };
    }
    for await (const msg of echo.bidi(input())) got.push(msg.payload[0]);
    expect(got).to.deep.equal(sent);
  });

  it("serves the private (kas-to-kas) API on its own port, with the replicas' secret", async () => {
    const { agentId } = await connectedAgent();
    const addresses = kas.addresses as KasProcess["addresses"] & { private?: string };
    expect(addresses.private).to.match(/^grpc:\/\/127\.0\.0\.1:\d+$/);
    const privateSecret = decodeSecret(readFileSync(join(kas.dataDir, ".gitlab_kas_private_api_secret"), "utf8"));
    const res = await echoThroughPrivateApi(addresses.private!, privateSecret, agentId, new TextEncoder().encode("from a replica"));
    expect(new TextDecoder().decode(res)).to.equal("from a replica");
    // The platform's secret is not a replica's.
    const refused = await rejection(echoThroughPrivateApi(addresses.private!, kas.secret, agentId, new Uint8Array(1)));
    expect(refused.code).to.equal(Code.Unauthenticated);
  });

  it("serves the private API over TLS when private_tls is set", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kas-private-tls-"));
    cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
    const { certFile, keyFile } = selfSignedCertificateFiles(dir, "private");
    const tlsKas = await startKas({ KAS_PRIVATE_TLS_CERT_FILE: certFile, KAS_PRIVATE_TLS_KEY_FILE: keyFile });
    cleanups.add(() => tlsKas.cleanup());
    const a = await createAgentWithToken(tlsKas);
    const agentk = startAgentk(tlsKas.addresses.agent, a.token);
    cleanups.add(() => agentk.cleanup());
    await waitFor(async () => (await connections(tlsKas, a)).length === 1, 15_000, "agent connection");
    const address = (tlsKas.addresses as KasProcess["addresses"] & { private?: string }).private!;
    expect(address).to.match(/^grpcs:\/\/127\.0\.0\.1:\d+$/);
    const privateSecret = decodeSecret(readFileSync(join(tlsKas.dataDir, ".gitlab_kas_private_api_secret"), "utf8"));
    const res = await echoThroughPrivateApi(address, privateSecret, a.agentId, new TextEncoder().encode("over TLS"), readFileSync(certFile));
    expect(new TextDecoder().decode(res)).to.equal("over TLS");
  });

  it("propagates cancellation from the caller and keeps serving", async () => {
    const { echo } = await connectedAgent();
    const abort = new AbortController();
    let n = 0;
    const err = await streamRejection(echo.serverStream({ count: 10_000_000, size: 1024 }, { signal: abort.signal }), () => {
      if (++n === 100) abort.abort();
    });
    expect(err.code).to.equal(Code.Canceled);
    const res = await echo.echo({ payload: new Uint8Array([9]) });
    expect(res.payload[0]).to.equal(9);
  });

  it("ends the call with UNAVAILABLE when the agent is killed mid-stream", async () => {
    const { echo, agentk } = await connectedAgent();
    let n = 0;
    const err = await streamRejection(echo.serverStream({ count: 10_000_000, size: 1024 }), () => {
      if (++n === 100) agentk.child.kill("SIGKILL");
    });
    expect(err.code).to.equal(Code.Unavailable);
    expect(err.rawMessage).to.match(/agent \d+/);
  });

  it("fails fast with UNAVAILABLE naming an agent that is not connected", async () => {
    const a = await createAgentWithToken(kas);
    const echo = echoClient(kas, a.agentId);
    cleanups.add(() => echo.close());
    // The gateway gives up 250 ms before the deadline, so the caller gets its UNAVAILABLE rather than DEADLINE_EXCEEDED.
    const err = await rejection(echo.client.echo({}, { timeoutMs: 2000 }));
    expect(err.code).to.equal(Code.Unavailable);
    expect(err.rawMessage).to.equal(`agent ${a.agentId} is not connected`);
  });

  // How fast (bench: "revocation -> tunnels closed"), is measured by `npm run bench`.
  it("closes every tunnel of a revoked token and refuses the token afterwards", async () => {
    const a = await connectedAgent();
    await a.echo.echo({});
    const res = await api(kas, "DELETE", `/projects/${a.projectId}/cluster_agents/${a.agentId}/tokens/${a.tokenId}`);
    expect(res.status).to.equal(204);
    await waitFor(async () => (await connections(kas, a)).length === 0, undefined, "the revoked token's connection to go");
    const err = await rejection(a.echo.echo({}, { timeoutMs: 2000 }));
    expect(err.code).to.equal(Code.Unavailable);
    expect(err.rawMessage).to.equal(`agent ${a.agentId} is not connected`);
    await a.agentk.waitFor(/KAS rejected the agent token/);
  });

  it("refuses a bad token with a clear log and backs off instead of spinning", async () => {
    const agentk = startAgentk(kas.addresses.agent, "glagent-not-a-real-token-000000000000000000000000000");
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/KAS rejected the agent token; check the token/);
    // Each refused attempt of the configuration stream is logged with the delay before the next:
    // agentk's back-off (1 s, growing 1.6x per attempt, +-20 % jitter), read from four of them.
    const failures = () =>
      agentk.output
        .split("\n")
        .filter((l) => l.includes('"msg":"configuration stream failed"'))
        .map((l) => JSON.parse(l) as { time: number; retryInMs: number });
    await waitFor(() => failures().length >= 4, 30_000, "four refused configuration attempts");
    const attempts = failures().slice(0, 4);
    attempts.forEach((a, i) => {
      const base = 1000 * 1.6 ** i;
      expect(a.retryInMs, `delay after attempt ${i + 1}`).to.be.within(Math.floor(0.8 * base), Math.ceil(1.2 * base));
    });
    // And agentk waited that long before trying again (a lower bound: load only adds to it).
    for (let i = 1; i < attempts.length; i++) {
      expect(attempts[i]!.time - attempts[i - 1]!.time, `gap before attempt ${i + 1}`).to.be.at.least(attempts[i - 1]!.retryInMs - 5);
    }
    expect(agentk.running).to.equal(true);
    expect(agentk.output).to.not.include("glagent-not-a-real-token");
  });

  it("refuses a third active token with 400", async () => {
    const a = await createAgentWithToken(kas);
    const second = await api(kas, "POST", `/projects/${a.projectId}/cluster_agents/${a.agentId}/tokens`, { name: "t2" });
    expect(second.status).to.equal(201);
    const third = await api(kas, "POST", `/projects/${a.projectId}/cluster_agents/${a.agentId}/tokens`, { name: "t3" });
    expect(third.status).to.equal(400);
    expect(third.json.message).to.be.a("string").and.match(/token/i);
  });

  it("survives malformed frames from a raw HTTP/2 client", async () => {
    const a = await connectedAgent();
    const agentUrl = kas.addresses.agent.replace(/^grpc:/, "http:");
    const session = http2.connect(agentUrl);
    session.on("error", () => {});
    const statuses: string[] = [];
    await Promise.all(
      [
        Buffer.from([0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]), // absurd length prefix
        Buffer.from([0, 0, 0, 0, 3, 0xff, 0xff, 0xff]), // invalid protobuf
        Buffer.from("this is not grpc at all"),
      ].map(
        (body) =>
          new Promise<void>((resolve) => {
            const stream = session.request({
              ":method": "POST",
              ":path": "/gitlab.agent.reverse_tunnel.rpc.ReverseTunnel/Connect",
              "content-type": "application/grpc",
              authorization: `Bearer ${a.token}`,
              te: "trailers",
            });
            stream.on("trailers", (t) => statuses.push(String(t["grpc-status"])));
            stream.on("response", (h) => h["grpc-status"] && statuses.push(String(h["grpc-status"])));
            stream.on("error", () => {});
            stream.on("close", () => resolve());
            stream.resume();
            stream.end(body);
          }),
      ),
    );
    session.destroy();
    expect(statuses).to.have.length(3);
    for (const s of statuses) expect(s).to.not.equal("0");
    // Raw garbage at the TCP level, too.
    const { port } = new URL(agentUrl);
    const junk = net.connect(Number(port), "127.0.0.1", () => junk.write(Buffer.alloc(1000, 0x7f)));
    cleanups.add(() => junk.destroy());
    junk.on("error", () => {});
    junk.resume();
    // KAS hangs up on it.
    await within(HUNG_MS, new Promise((resolve) => junk.once("close", resolve)), "KAS to close the garbage connection");
    const res = await a.echo.echo({ payload: new Uint8Array([42]) });
    expect(res.payload[0]).to.equal(42);
  });

  it("lets in-flight calls finish when agentk gets SIGTERM", async () => {
    const a = await connectedAgent();
    // The reader stops after the first message until agentk has its SIGTERM: flow control keeps
    // most of the 25 MiB on the agent's side, so the call is in flight when agentk is told to stop.
    const started = deferred();
    const signalled = deferred();
    const stream = (async () => {
      let bytes = 0;
      for await (const m of a.echo.serverStream({ count: 400, size: 65_536 })) {
        if (bytes === 0) {
          started.resolve();
          await signalled.promise;
        }
        bytes += m.payload.byteLength;
      }
      return bytes;
    })();
    await started.promise;
    a.agentk.child.kill("SIGTERM");
    signalled.resolve();
    expect(await stream).to.equal(400 * 65_536);
    expect(await a.agentk.exited).to.equal(0);
  });
});

async function connections(kas: KasProcess, a: { projectId: number; agentId: number }) {
  const res = await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}/connections`);
  if (res.status !== 200) throw new Error(`connections: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json as Array<Record<string, string>>;
}
