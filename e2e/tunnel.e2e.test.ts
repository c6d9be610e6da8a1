import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import { expect } from "chai";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { EchoService, decodeSecret, privateApiClientInterceptor } from "@kasbridge/sdk";
import { api, createAgentWithToken, delay, echoClient, selfSignedCert, startAgentk, startKas, waitUntil, type KasProcess } from "./harness.test-support.js";

describe("e2e: kas + agentk processes over the reverse tunnel", function () {
  this.timeout(120_000);
  let kas: Awaited<ReturnType<typeof startKas>>;
  const cleanups: Array<() => Promise<void> | void> = [];

  before(async () => {
    kas = await startKas();
  });
  after(async () => {
    await kas?.cleanup();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function connectedAgent() {
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.push(() => agentk.cleanup());
    await waitUntil(async () => (await connections(kas, a)).length === 1, 15_000, "agent connection");
    const echo = echoClient(kas, a.agentId);
    cleanups.push(() => echo.close());
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
    const baseUrl = addresses.private!.replace(/^grpc:/, "http:");
    const sessions = new Http2SessionManager(baseUrl);
    cleanups.push(() => sessions.abort());
    const peer = (secret: Uint8Array) =>
      createClient(EchoService, createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors: [privateApiClientInterceptor(secret, agentId)] }));
    const privateSecret = decodeSecret(readFileSync(join(kas.dataDir, ".gitlab_kas_private_api_secret"), "utf8"));
    const res = await peer(privateSecret).echo({ payload: new TextEncoder().encode("from a replica") });
    expect(new TextDecoder().decode(res.payload)).to.equal("from a replica");
    // The platform's secret is not a replica's.
    const refused = await peer(kas.secret).echo({ payload: new Uint8Array(1) }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(refused?.code).to.equal(Code.Unauthenticated);
  });

  it("serves the private API over TLS when private_tls is set", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kas-private-tls-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { certFile, keyFile } = selfSignedCert(dir, "private");
    const tlsKas = await startKas({ KAS_PRIVATE_TLS_CERT_FILE: certFile, KAS_PRIVATE_TLS_KEY_FILE: keyFile });
    cleanups.push(() => tlsKas.cleanup());
    const a = await createAgentWithToken(tlsKas);
    const agentk = startAgentk(tlsKas.addresses.agent, a.token);
    cleanups.push(() => agentk.cleanup());
    await waitUntil(async () => (await connections(tlsKas, a)).length === 1, 15_000, "agent connection");
    const address = (tlsKas.addresses as KasProcess["addresses"] & { private?: string }).private!;
    expect(address).to.match(/^grpcs:\/\/127\.0\.0\.1:\d+$/);
    const baseUrl = address.replace(/^grpcs:/, "https:");
    const sessions = new Http2SessionManager(baseUrl, undefined, { ca: readFileSync(certFile) });
    cleanups.push(() => sessions.abort());
    const privateSecret = decodeSecret(readFileSync(join(tlsKas.dataDir, ".gitlab_kas_private_api_secret"), "utf8"));
    const peer = createClient(EchoService, createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors: [privateApiClientInterceptor(privateSecret, a.agentId)] }));
    const res = await peer.echo({ payload: new TextEncoder().encode("over TLS") });
    expect(new TextDecoder().decode(res.payload)).to.equal("over TLS");
  });

  it("propagates cancellation from the caller and keeps serving", async () => {
    const { echo } = await connectedAgent();
    const abort = new AbortController();
    let n = 0;
    const err = await (async () => {
      for await (const _ of echo.serverStream({ count: 10_000_000, size: 1024 }, { signal: abort.signal })) {
        if (++n === 100) abort.abort();
      }
    })().catch((e: unknown) => ConnectError.from(e));
    expect(err).to.be.instanceOf(ConnectError);
    expect((err as ConnectError).code).to.equal(Code.Canceled);
    const res = await echo.echo({ payload: new Uint8Array([9]) });
    expect(res.payload[0]).to.equal(9);
  });

  it("ends the call with UNAVAILABLE when the agent is killed mid-stream", async () => {
    const { echo, agentk } = await connectedAgent();
    let n = 0;
    const err = await (async () => {
      for await (const _ of echo.serverStream({ count: 10_000_000, size: 1024 })) {
        if (++n === 100) agentk.child.kill("SIGKILL");
      }
    })().catch((e: unknown) => ConnectError.from(e));
    expect(err).to.be.instanceOf(ConnectError);
    expect((err as ConnectError).code).to.equal(Code.Unavailable);
    expect((err as ConnectError).rawMessage).to.match(/agent \d+/);
  });

  it("fails fast with UNAVAILABLE naming an agent that is not connected", async () => {
    const a = await createAgentWithToken(kas);
    const echo = echoClient(kas, a.agentId);
    cleanups.push(() => echo.close());
    const err = await echo.client.echo({}, { timeoutMs: 500 }).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).to.equal(Code.Unavailable);
    expect((err as ConnectError).rawMessage).to.equal(`agent ${a.agentId} is not connected`);
  });

  it("closes every tunnel of a revoked token within 1 second", async () => {
    const a = await connectedAgent();
    await a.echo.echo({});
    const revokedAt = Date.now();
    const res = await api(kas, "DELETE", `/projects/${a.projectId}/cluster_agents/${a.agentId}/tokens/${a.tokenId}`);
    expect(res.status).to.equal(204);
    const took = await waitUntil(async () => (await connections(kas, a)).length === 0, 1000, "connection removal");
    const err = await a.echo.echo({}, { timeoutMs: 300 }).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).to.equal(Code.Unavailable);
    expect(Date.now() - revokedAt).to.be.lessThan(2000);
    expect(took).to.be.lessThan(1000);
    await a.agentk.waitFor(/KAS rejected the agent token/);
  });

  it("refuses a bad token with a clear log and backs off instead of spinning", async () => {
    const agentk = startAgentk(kas.addresses.agent, "glagent-not-a-real-token-000000000000000000000000000");
    cleanups.push(() => agentk.cleanup());
    await agentk.waitFor(/KAS rejected the agent token/);
    await delay(3000);
    expect(agentk.child.exitCode).to.equal(null);
    // Backoff 1 s -> 1.6 s -> 2.6 s: a handful of attempts in 3 s, not thousands.
    const attempts = kas.count(/agent token is invalid or revoked|unknown or revoked agent token/);
    expect(agentk.count(/KAS rejected the agent token/)).to.be.lessThan(8);
    expect(attempts).to.be.lessThan(50);
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
    await new Promise<void>((resolve) => {
      const junk = net.connect(Number(port), "127.0.0.1", () => junk.write(Buffer.alloc(1000, 0x7f)));
      junk.on("error", () => resolve());
      junk.on("close", () => resolve());
      junk.resume();
      setTimeout(() => {
        junk.destroy();
        resolve();
      }, 500);
    });
    const res = await a.echo.echo({ payload: new Uint8Array([42]) });
    expect(res.payload[0]).to.equal(42);
  });

  it("lets in-flight calls finish when agentk gets SIGTERM", async () => {
    const a = await connectedAgent();
    const stream = (async () => {
      let bytes = 0;
      for await (const m of a.echo.serverStream({ count: 400, size: 65_536 })) bytes += m.payload.byteLength;
      return bytes;
    })();
    await delay(20);
    a.agentk.child.kill("SIGTERM");
    expect(await stream).to.equal(400 * 65_536);
    expect(await a.agentk.exited).to.equal(0);
  });
});

async function connections(kas: KasProcess, a: { projectId: number; agentId: number }) {
  const res = await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}/connections`);
  if (res.status !== 200) throw new Error(`connections: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json as Array<Record<string, string>>;
}
