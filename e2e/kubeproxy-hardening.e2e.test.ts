// What the Kubernetes API proxy must not let through, end to end: a real `kas` process, the real
// `agentk` in front of a real kube-apiserver (its audit log shows the request URI it received),
// the real kubectl, and, for what a compromised or buggy agent could answer, an agent built from
// the SDK whose KubernetesApi answers what each test needs. Everything over real sockets.
import { Registry } from "prom-client";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type ServiceImpl } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { expect } from "chai";
import pino from "pino";
import { createAgent, type AgentModule, type AgentModuleContext } from "@kasbridge/sdk/agent";
import { KubernetesApi } from "@kasbridge/sdk/gen/gitlab/agent/kubernetes_api/rpc/rpc_pb";
import { internalApiClientInterceptor } from "@kasbridge/sdk/kas";
import { agentRegistrarAgentModule } from "@kasbridge/sdk/modules/agent_registrar/agent";
import { ESCAPED_PATH_HEADER, kubernetesApiAgentModule } from "@kasbridge/sdk/modules/kubernetes_api/agent";
import {
  HttpRequestSchema,
  type HttpRequest,
  type HttpResponse,
  type HttpResponseSchema,
} from "@kasbridge/sdk/gen/gitlab/agent/grpctool/grpctool_pb";
import { findBinaries, startControlPlane, type ControlPlane, type RunResult } from "../tools/control-plane/control-plane.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { waitFor } from "@kasbridge/testing/wait";
import { api, createAgentWithToken, startAgentk, startKas } from "./harness.test-support.js";
import { runWithInput } from "./kubectl.test-support.js";

const PREFIX = "/-/k8s-proxy";

describe("e2e: Kubernetes API proxy hardening (kas, agentk, kube-apiserver)", function () {
  this.timeout(300_000);
  let cp: ControlPlane;
  let kas: Awaited<ReturnType<typeof startKas>>;
  let agentk: ReturnType<typeof startAgentk>;
  let crafted: ReturnType<typeof createAgent>;
  // Released last to first, each step even when another throws: nothing is left running.
  const cleanups = new Cleanup();
  const dir = mkdtempSync(join(tmpdir(), "kubeproxy-hardening-e2e-"));
  cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
  const { certFile, keyFile } = selfSignedCertificateFiles(dir, "tls");
  const ca = readFileSync(certFile);
  /** `ci:<agent>:<job token>` for the agentk in front of the API server, and for the crafted agent. */
  let realToken: string;
  let craftedToken: string;
  let realAgentId: number;

  before(async () => {
    findBinaries(); // throws "... Run `npm run control-plane` ..." when the binaries are missing
    cp = await startControlPlane({ kwok: false, auditLog: true, agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }] });
    cleanups.add(() => cp.stop());
    kas = await startKas({ KAS_AGENT_TLS_CERT_FILE: certFile, KAS_AGENT_TLS_KEY_FILE: keyFile, KAS_K8S_PROXY_URL_PATH_PREFIX: `${PREFIX}/` });
    cleanups.add(() => kas.cleanup());
    // A job of an agent's own configuration project may use the agent (GitLab's implicit authorization).
    const real = await createAgentWithToken(kas, "real");
    realAgentId = real.agentId;
    realToken = `ci:${real.agentId}:${(await api(kas, "POST", `/projects/${real.projectId}/jobs`, {})).json.token}`;
    const craftedAgent = await createAgentWithToken(kas, "crafted");
    craftedToken = `ci:${craftedAgent.agentId}:${(await api(kas, "POST", `/projects/${craftedAgent.projectId}/jobs`, {})).json.token}`;

    agentk = startAgentk(kas.addresses.agent, real.token, {}, ["--kubeconfig", cp.agentKubeconfigPath, "--ca-cert-file", certFile]);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/kubeconfig loaded/);
    crafted = createAgent({
      kasAddress: kas.addresses.agent,
      token: craftedAgent.token,
      transport: { ca },
      // Registration (the test waits for its connection) and the crafted API only.
      modules: [agentRegistrarAgentModule(), craftedKubernetesApi()],
      logger: pino({ level: "silent" }),
    });
    crafted.start();
    cleanups.add(() => crafted.stop(100));
    for (const a of [real, craftedAgent]) {
      await waitFor(async () => (await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}/connections`)).json.length === 1, 15_000, "agent connected");
    }
  });

  after(() => cleanups.run());

  const proxyUrl = () => (kas.addresses as { k8sProxy: string }).k8sProxy;

  function kubectl(args: string[], input?: string, env: Record<string, string> = {}): Promise<RunResult> {
    const empty = join(dir, "empty-kubeconfig");
    writeFileSync(empty, "apiVersion: v1\nkind: Config\n");
    const run = ["--server", proxyUrl(), "--certificate-authority", certFile, "--token", realToken, ...args];
    if (Object.keys(env).length === 0) return cp.runKubectl(run, { kubeconfig: empty, allowFailure: true, input, timeoutMs: 120_000 });
    return runWithInput(cp.kubectl, ["--kubeconfig", empty, ...run], input, env);
  }

  /** Audit events of the API server (JSON lines; written before each response completes). */
  function auditEvents(): Array<{ requestURI: string; responseStatus?: { code?: number } }> {
    return readFileSync(cp.auditLogPath!, "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as { requestURI: string });
  }

  it("answers the API server's own 413 to a body too large, however the upload races its answer (kubectl and raw, HTTP/2 and HTTP/1.1)", async () => {
    // The API server reads 3 MiB of a request body, answers 413 and closes the connection while the
    // agent is still sending the rest: the answer must win over the failed write.
    const huge = JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "huge", namespace: "default" }, data: { big: "x".repeat(6 * 1024 * 1024) } });
    for (let i = 0; i < 3; i++) {
      for (const env of [{}, { DISABLE_HTTP2: "1" }] as Array<Record<string, string>>) {
        const r = await kubectl(["create", "-f", "-"], huge, env);
        expect(r.code, r.stderr).to.not.equal(0);
        expect(r.stderr, `kubectl ${JSON.stringify(env)}`).to.include("Request entity too large").and.not.include("ECONNRESET").and.not.include("502");
      }
      for (const protocol of ["HTTP/1.1", "HTTP/2"] as const) {
        const r = await request(protocol, "POST", "/api/v1/namespaces/default/configmaps", { "content-type": "application/json" }, Buffer.from(huge));
        expect(r.status, `${protocol}: ${r.body.slice(0, 300)}`).to.equal(413);
        expect(JSON.parse(r.body)).to.include({ kind: "Status", reason: "RequestEntityTooLarge", code: 413 });
      }
    }
    // What KAS sees from the agent (GitLab's KAS fails the request when the call ends in an
    // error, even after the answer): the answer and a call that ends well. On loopback the
    // kernel's socket buffers take a few MiB more than the API server reads, so the body here is
    // large enough that the agent is still writing when the API server closes.
    const larger = Buffer.from(JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "huge", namespace: "default" }, data: { big: "x".repeat(48 << 20) } }));
    for (let i = 0; i < 3; i++) {
      const frames = await makeRequestToAgent(realAgentId, "/api/v1/namespaces/default/configmaps", undefined, larger);
      const head = frames[0]?.message;
      expect(head?.case === "header" && head.value.response?.statusCode).to.equal(413);
      expect(frames.at(-1)?.message.case).to.equal("trailer");
    }
    expect(agentk.output).to.not.include("Kubernetes API server request failed");
  });

  it("the agent reports the API server's early answer and nothing else, while its KAS goes on sending the body", async () => {
    // The agent half on its own, against the API server, fed as GitLab's KAS feeds it: the body
    // keeps coming after the 413, and the API server's connection breaks under it (Go's server
    // resets it 500 ms after answering a request whose body it did not read: write EPIPE). Once
    // the agent's process is busy across that moment (emulated: its event loop is held for 1.5 s
    // once 8 MiB are written), it finds the answer and the broken connection together.
    const module = await kubernetesApiAgentModule({ kubeconfig: cp.agentKubeconfigPath, logger: pino({ level: "silent" }) });
    // Its services need nothing of the agent but a metrics registry.
    const makeRequest = (module.services!({ metrics: new Registry() } as AgentModuleContext)[0]!.implementation as unknown as {
      makeRequest(requests: AsyncIterable<HttpRequest>, ctx: { signal: AbortSignal }): AsyncIterable<MessageInitShape<typeof HttpResponseSchema>>;
    }).makeRequest;
    const body = Buffer.from(JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "huge", namespace: "default" }, data: { big: "x".repeat(48 << 20) } }));
    let sent = 0;
    async function* requests(): AsyncIterable<HttpRequest> {
      yield create(HttpRequestSchema, {
        message: {
          case: "header",
          value: {
            request: { method: "POST", urlPath: "/api/v1/namespaces/default/configmaps", header: { "Content-Type": { value: ["application/json"] } } },
            contentLength: BigInt(body.length),
          },
        },
      });
      for (let off = 0; off < body.length; off += 256 << 10) {
        await new Promise((resolve) => setImmediate(resolve));
        if (off === 8 << 20) busy(1_500);
        sent = off;
        yield create(HttpRequestSchema, { message: { case: "data", value: { data: body.subarray(off, off + (256 << 10)) } } });
      }
      sent = body.length;
      yield create(HttpRequestSchema, { message: { case: "trailer", value: {} } });
    }
    const cases: string[] = [];
    let status = 0;
    const call = new AbortController();
    try {
      for await (const r of makeRequest(requests(), { signal: call.signal })) {
        const m = r.message;
        cases.push(m?.case ?? "");
        if (m?.case === "header") status = m.value.response?.statusCode ?? 0;
      }
      // The body still on its way when the answer was complete: the race was real.
      expect(sent, "bytes sent when the answer was complete").to.be.lessThan(body.length);
      // Until the whole body is through (and the API server has broken the connection under it).
      await waitFor(() => sent === body.length, 60_000, "body sent");
    } finally {
      call.abort();
    }
    expect(status).to.equal(413);
    expect(cases).to.deep.equal(["header", "data", "trailer"]);
  });

  it('refuses "." and ".." path segments however they are encoded, at KAS and at the agent', async () => {
    const before = auditEvents().length;
    for (const path of [
      "/api/v1/namespaces/default/configmaps/..%2F..%2F..%2Fsecrets",
      "/api/v1/namespaces/%2E%2E/configmaps",
      "/api/v1/namespaces/default/configmaps/.%2e",
      "/api/v1/namespaces/default/configmaps/%2e",
      "/api/v1/namespaces/default/../kube-system/configmaps",
      "/api/v1/./namespaces",
      "/api/v1/namespaces/default/configmaps/a%2F..",
    ]) {
      for (const protocol of ["HTTP/1.1", "HTTP/2"] as const) {
        const r = await request(protocol, "GET", path);
        expect(r.status, `${protocol} ${path}: ${r.body}`).to.equal(400);
        expect(JSON.parse(r.body)).to.include({ kind: "Status", reason: "BadRequest", message: 'GitLab Agent Server: the request path must not have "." or ".." segments' });
      }
    }
    const bad = await request("HTTP/1.1", "GET", "/api/v1/namespaces/%zz");
    expect(bad.status).to.equal(400);
    expect(JSON.parse(bad.body).message).to.equal("GitLab Agent Server: the request path has an invalid percent-encoding");
    // A KAS that passes them on (GitLab's decodes the path and sends `/../`) meets the agent's own check.
    for (const [urlPath, escaped] of [
      ["/api/v1/namespaces/default/configmaps/../../../../api/v1/secrets", undefined],
      ["/api/v1/namespaces/default/configmaps/a/b", "/api/v1/namespaces/default/configmaps/a%2Fc"],
    ] as const) {
      const err = await makeRequestToAgent(realAgentId, urlPath, escaped).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err?.code, `${urlPath}: ${err?.message}`).to.equal(Code.InvalidArgument);
    }
    // Nothing of it reached the API server.
    const reached = auditEvents().slice(before).filter((e) => /(^|\/)\.\.?(\/|$)|%2e/i.test(e.requestURI.split("?")[0]!));
    expect(reached.map((e) => e.requestURI)).to.deep.equal([]);
  });

  it("keeps an encoded slash inside a segment encoded on its way to the API server", async () => {
    for (const protocol of ["HTTP/1.1", "HTTP/2"] as const) {
      const name = protocol === "HTTP/2" ? "two%2Fparts" : "one%2Fpart";
      const r = await request(protocol, "GET", `/api/v1/namespaces/default/configmaps/${name}`);
      expect(r.status, r.body).to.equal(404);
      const uri = `/api/v1/namespaces/default/configmaps/${name}`;
      await waitFor(() => auditEvents().some((e) => e.requestURI === uri), undefined, `audit event for ${uri}`);
    }
  });

  it("does not forward the headers a client's Connection header names (RFC 9110 7.6.1)", async () => {
    // The API server answers YAML when asked; a client making Accept hop-by-hop must get JSON.
    const yaml = await request("HTTP/1.1", "GET", "/api/v1/namespaces/default", { accept: "application/yaml" });
    expect(yaml.headers["content-type"]).to.equal("application/yaml");
    const listed = await request("HTTP/1.1", "GET", "/api/v1/namespaces/default", { accept: "application/yaml", connection: "keep-alive, Accept" });
    expect(listed.status).to.equal(200);
    expect(listed.headers["content-type"]).to.equal("application/json");
  });

  it("drops the hop-by-hop and invalid headers of an agent's answer (HTTP/2 and HTTP/1.1)", async () => {
    for (const protocol of ["HTTP/1.1", "HTTP/2"] as const) {
      const r = await request(protocol, "GET", "/crafted/headers", {}, undefined, craftedToken);
      expect(r.status, r.body).to.equal(200);
      expect(r.body).to.equal("crafted body");
      expect(r.headers["x-fine"]).to.equal("ok");
      for (const name of ["x-hop", "keep-alive", "x-bad", "set-cookie", "injected"]) expect(r.headers, `${protocol} ${name}`).to.not.have.property(name);
    }
  });

  it("checks the headers of an upgrade answer (no header injection) and bounds a refused upgrade's body", async () => {
    const upgraded = await rawUpgrade("/crafted/upgrade");
    const head = upgraded.slice(0, upgraded.indexOf("\r\n\r\n"));
    expect(head).to.match(/^HTTP\/1\.1 101 /);
    expect(head).to.include("X-Fine: ok");
    expect(head.toLowerCase()).to.not.include("set-cookie").and.not.include("injected");
    expect(upgraded).to.include("\r\n\r\nupgraded bytes");

    const small = await rawUpgrade("/crafted/refuse-small");
    expect(small).to.match(/^HTTP\/1\.1 403 /);
    expect(small.endsWith('{"kind":"Status","code":403}')).to.equal(true);

    const large = await rawUpgrade("/crafted/refuse-large");
    expect(large).to.match(/^HTTP\/1\.1 502 /);
    const body = JSON.parse(large.slice(large.indexOf("\r\n\r\n") + 4));
    expect(body.message).to.match(/answer refusing the upgrade exceeds 65536 bytes/);
  });

  // ---------------------------------------------------------------- helpers

  /** One request to the proxy (path without the prefix), HTTP/1.1 or HTTP/2, as sent: no path normalisation. */
  async function request(
    protocol: "HTTP/1.1" | "HTTP/2",
    method: string,
    path: string,
    headers: Record<string, string> = {},
    body?: Buffer,
    token = realToken,
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
    const url = new URL(proxyUrl());
    const all = { authorization: `Bearer ${token}`, ...headers };
    if (protocol === "HTTP/1.1") {
      return new Promise((resolve, reject) => {
        const req = https.request(
          { host: url.hostname, port: url.port, method, path: PREFIX + path, headers: all, ca, servername: "localhost", agent: false },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
            res.on("error", reject);
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    }
    const session = http2.connect(url.origin, { ca, servername: "localhost" });
    try {
      return await new Promise((resolve, reject) => {
        session.on("error", reject);
        const stream = session.request({ ":method": method, ":path": PREFIX + path, ...all });
        let status = 0;
        let got: Record<string, string | string[] | undefined> = {};
        const chunks: Buffer[] = [];
        stream.on("response", (h) => {
          status = Number(h[":status"]);
          got = h as Record<string, string | string[] | undefined>;
        });
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => resolve({ status, headers: got, body: Buffer.concat(chunks).toString() }));
        stream.on("error", reject);
        stream.end(body);
      });
    } finally {
      session.close();
    }
  }

  /** An HTTP/1.1 upgrade request to the crafted agent; everything the proxy sent until it closed (or 2 s after the head). */
  async function rawUpgrade(path: string): Promise<string> {
    const url = new URL(proxyUrl());
    const socket = tls.connect({ host: url.hostname, port: Number(url.port), ca, servername: "localhost", ALPNProtocols: ["http/1.1"] });
    await new Promise((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
    socket.write(
      `GET ${PREFIX}${path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${craftedToken}\r\n` +
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
    );
    let received = "";
    socket.on("data", (d: Buffer) => (received += d.toString("latin1")));
    socket.on("error", () => {});
    await waitFor(() => socket.destroyed || socket.readableEnded || received.includes("upgraded bytes"), 15_000, `answer to ${path}`);
    socket.destroy();
    return received;
  }

  /** KubernetesApi/MakeRequest straight to an agent through KAS's internal API (as GitLab's KAS would send it). */
  async function makeRequestToAgent(agentId: number, urlPath: string, escaped?: string, body?: Buffer): Promise<HttpResponse[]> {
    const baseUrl = kas.addresses.internal.replace(/^grpc:/, "http:");
    const sessions = new Http2SessionManager(baseUrl);
    try {
      const client = createClient(KubernetesApi, createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors: [internalApiClientInterceptor(kas.secret, agentId)] }));
      async function* requests(): AsyncIterable<HttpRequest> {
        yield create(HttpRequestSchema, {
          message: {
            case: "header",
            value: {
              request: {
                method: body ? "POST" : "GET",
                urlPath,
                header: {
                  ...(escaped ? { [ESCAPED_PATH_HEADER]: { value: [escaped] } } : {}),
                  ...(body ? { "Content-Type": { value: ["application/json"] } } : {}),
                },
              },
              ...(body ? { contentLength: BigInt(body.length) } : {}),
            },
          },
        });
        // As GitLab's KAS sends a body: frames of at most 1 MiB, as fast as the stream takes them.
        for (let off = 0; body && off < body.length; off += 1 << 20) {
          yield create(HttpRequestSchema, { message: { case: "data", value: { data: body.subarray(off, off + (1 << 20)) } } });
        }
        yield create(HttpRequestSchema, { message: { case: "trailer", value: {} } });
      }
      const out: HttpResponse[] = [];
      for await (const r of client.makeRequest(requests())) out.push(r);
      return out;
    } finally {
      sessions.abort();
    }
  }
});

/**
 * A KubernetesApi that answers what a compromised or buggy agent could: headers with line breaks
 * in names and values, hop-by-hop headers, a refused upgrade with a body far too large.
 */
function craftedKubernetesApi(): AgentModule {
  type Out = MessageInitShape<typeof HttpResponseSchema>;
  const header = (statusCode: number, headers: Record<string, string[]>): Out => ({
    message: {
      case: "header",
      value: { response: { statusCode, status: `${statusCode}`, header: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, { value: v }])) } },
    },
  });
  const data = (kind: "data" | "upgradeData", bytes: Uint8Array): Out => ({ message: { case: kind, value: { data: bytes } } });
  const trailer = (): Out => ({ message: { case: "trailer", value: {} } });

  async function* makeRequest(requests: AsyncIterable<HttpRequest>): AsyncIterable<Out> {
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    // The rest of the request stream is read and dropped.
    void (async () => {
      while (!(await it.next()).done);
    })().catch(() => {});
    const path = first.value?.message.case === "header" ? (first.value.message.value.request?.urlPath ?? "") : "";
    if (path === "/crafted/headers") {
      yield header(200, {
        "Content-Type": ["text/plain"],
        Connection: ["X-Hop, close"],
        "X-Hop": ["secret"],
        "Keep-Alive": ["timeout=5"],
        "X-Bad": ["a\r\nSet-Cookie: injected=1"],
        "X-Name\r\nInjected": ["1"],
        "X-Fine": ["ok"],
      });
      yield data("data", Buffer.from("crafted body"));
      yield trailer();
    } else if (path === "/crafted/upgrade") {
      yield header(101, {
        Connection: ["Upgrade"],
        Upgrade: ["SPDY/3.1"],
        "X-Evil\r\nSet-Cookie: injected=2": ["x"],
        "X-Value": ["a\r\nSet-Cookie: injected=3"],
        "X-Fine": ["ok"],
      });
      yield trailer();
      yield data("upgradeData", Buffer.from("upgraded bytes"));
    } else if (path === "/crafted/refuse-small") {
      yield header(403, { "Content-Type": ["application/json"] });
      yield data("data", Buffer.from('{"kind":"Status","code":403}'));
      yield trailer();
    } else if (path === "/crafted/refuse-large") {
      yield header(403, { "Content-Type": ["application/json"] });
      for (let i = 0; i < 64; i++) yield data("data", Buffer.alloc(64 * 1024, 0x20));
      yield trailer();
    } else {
      yield header(404, {});
      yield trailer();
    }
  }
  const implementation: Partial<ServiceImpl<typeof KubernetesApi>> = { makeRequest };
  return { name: "kubernetes_api", services: () => [{ service: KubernetesApi, implementation }] };
}

/** Holds the event loop for `ms` (a busy process), so that what happens meanwhile is found all at once. */
function busy(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until);
}
