import { create } from "@bufbuild/protobuf";
import { expect } from "chai";
import { createHash } from "node:crypto";
import net from "node:net";
import pino from "pino";
import http2 from "node:http2";
import tls from "node:tls";
import { Registry } from "prom-client";
import { selfSignedCertificate } from "@kasbridge/testing/tls";
import { ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { AgentModule, AgentModuleContext } from "../../agent/agent-module.js";
import { createAgent } from "../../agent/create-agent.js";
import { HttpRequestSchema, type HttpRequest } from "../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { ImpersonationConfigSchema } from "../../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import type { ProxyUserAuthorizationAnswer } from "../../platform-client/platform-client.js";
import { createKasServer } from "../../kas/kas-server.js";
import { KasAuditLog } from "../../kas/audit-log.js";
import type { KasAuditEvent } from "../../platform-client/audit-events.js";
import type { PlatformClient } from "../../platform-client/platform-client.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer } from "@kasbridge/testing/servers";
import { HUNG_MS, waitFor, within } from "@kasbridge/testing/wait";
import { expectSilentHttp2SessionClosed, expectSlowHeadClosed } from "../../transport/listener-limits.test-support.js";
import { kubernetesApiAgentModule } from "./agent/kubernetes-api-agent-module.js";
import { ciJobImpersonation, impersonationHeaders, userImpersonation } from "./impersonation.js";
import { K8sProxyError, statusJson, toK8sProxyError } from "./server/k8s-status.js";
import { createKubernetesApiProxy } from "./server/kubernetes-api-proxy.js";
import { ProxyPlatform, fakeApiServer, job, kubeConfig } from "./kubernetes-api.test-support.js";

describe("kubeproxy: impersonation and Status errors", () => {
  it("builds GitLab's ci_job identity (groups, extras, environment)", () => {
    const j = job({ access_as: { ci_job: {} } }, { slug: "prod-1a2b", tier: "production" });
    const c = ciJobImpersonation(j, j.allowedAgents[0]!);
    expect(c.username).to.equal("gitlab:ci_job:11");
    expect(c.groups).to.deep.equal([
      "gitlab:ci_job",
      "gitlab:group:2",
      "gitlab:group_env_tier:2:production",
      "gitlab:group:1",
      "gitlab:group_env_tier:1:production",
      "gitlab:project:5",
      "gitlab:project_env:5:prod-1a2b",
      "gitlab:project_env_tier:5:production",
    ]);
    expect(c.extra.map((e) => [e.key, e.val])).to.deep.equal([
      ["agent.gitlab.com/id", ["7"]],
      ["agent.gitlab.com/config_project_id", ["3"]],
      ["agent.gitlab.com/project_id", ["5"]],
      ["agent.gitlab.com/ci_pipeline_id", ["10"]],
      ["agent.gitlab.com/ci_job_id", ["11"]],
      ["agent.gitlab.com/username", ["dev"]],
      ["agent.gitlab.com/environment_slug", ["prod-1a2b"]],
      ["agent.gitlab.com/environment_tier", ["production"]],
    ]);
  });

  it("uses the agent's identity by default and the configured one for impersonate", () => {
    const j = job({});
    expect(ciJobImpersonation(j, j.allowedAgents[0]!).username).to.equal("");
    const a = job({ access_as: { agent: {} } });
    expect(ciJobImpersonation(a, a.allowedAgents[0]!).groups).to.deep.equal([]);
    const i = job({ access_as: { impersonate: { username: "deployer", groups: ["g1"], uid: "u-1", extra: [{ key: "k/x", val: ["v"] }] } } });
    const c = ciJobImpersonation(i, i.allowedAgents[0]!);
    expect([c.username, c.groups, c.uid]).to.deep.equal(["deployer", ["g1"], "u-1"]);
    expect(impersonationHeaders(c)).to.deep.equal([
      ["Impersonate-User", "deployer"],
      ["Impersonate-Group", "g1"],
      ["Impersonate-Uid", "u-1"],
      ["Impersonate-Extra-k%2Fx", "v"],
    ]);
  });

  it("builds the user_access identity from roles", () => {
    const auth: ProxyUserAuthorizationAnswer = {
      agent: { id: 7, configProject: { id: 3 } },
      user: { id: 4, username: "dev" },
      accessAs: { user: { projects: [{ id: 5, roles: ["reporter", "developer"] }], groups: [{ id: 2, roles: ["developer"] }] } },
    };
    const c = userImpersonation(auth, "personal_access_token");
    expect(c.username).to.equal("gitlab:user:dev");
    expect(c.groups).to.deep.equal(["gitlab:user", "gitlab:project_role:5:reporter", "gitlab:project_role:5:developer", "gitlab:group_role:2:developer"]);
    expect(c.extra.map((e) => e.key)).to.deep.equal([
      "agent.gitlab.com/id",
      "agent.gitlab.com/username",
      "agent.gitlab.com/access_type",
      "agent.gitlab.com/config_project_id",
    ]);
    expect(userImpersonation({ ...auth, accessAs: { agent: {} } }, "personal_access_token")).to.deep.equal(create(ImpersonationConfigSchema));
  });

  it("formats errors as Kubernetes Status objects", () => {
    expect(JSON.parse(statusJson(503, "agent 7 is not connected"))).to.deep.equal({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: "GitLab Agent Server: agent 7 is not connected",
      reason: "ServiceUnavailable",
      code: 503,
    });
    expect(toK8sProxyError(new Error("x")).code).to.equal(500);
    expect(new K8sProxyError(403, "no").reason).to.equal("Forbidden");
  });
});

/** Calls the agent module's MakeRequest directly (GET /api/v1/namespaces): the Authorization header the API server saw. */
async function authorizationSeenBy(module: AgentModule): Promise<unknown> {
  // Its services need nothing of the agent but a metrics registry.
  const impl = module.services!({ metrics: new Registry() } as AgentModuleContext)[0]!.implementation as unknown as {
    makeRequest(requests: AsyncIterable<HttpRequest>, ctx: HandlerContext): AsyncIterable<{ message?: { case?: string; value?: { data?: Uint8Array } } }>;
  };
  async function* requests() {
    yield create(HttpRequestSchema, { message: { case: "header", value: { request: { method: "GET", urlPath: "/api/v1/namespaces" } } } });
    yield create(HttpRequestSchema, { message: { case: "trailer", value: {} } });
  }
  const chunks: Uint8Array[] = [];
  for await (const r of impl.makeRequest(requests(), { signal: new AbortController().signal } as HandlerContext)) {
    if (r.message?.case === "data") chunks.push(r.message.value!.data!);
  }
  return (JSON.parse(Buffer.concat(chunks).toString("utf8")) as { headers: Record<string, unknown> }).headers.authorization;
}

describe("kubeproxy: KAS proxy + agent + API server (in process)", function () {
  this.timeout(30_000);
  const logger = pino({ level: "silent" });
  let api: Awaited<ReturnType<typeof fakeApiServer>>;
  let kas: Awaited<ReturnType<typeof createKasServer>>;
  let agent: ReturnType<typeof createAgent>;
  let proxy: Awaited<ReturnType<typeof createKubernetesApiProxy>>;
  let platform: ProxyPlatform;
  const metrics = new Registry();
  /** What the proxy sends to the platform's audit trail. */
  const audited: KasAuditEvent[] = [];
  const auditLog = new KasAuditLog({
    platform: { recordAuditEvents: async (events: KasAuditEvent[]) => void audited.push(...events) } as unknown as PlatformClient,
    logger,
    metrics,
    flushIntervalMs: 10,
  });

  const cleanup = new Cleanup();

  before(async () => {
    api = await fakeApiServer();
    cleanup.add(() => closeServer(api.server));
    const apiUrl = api.url;
    platform = new ProxyPlatform();
    platform.addToken("glagent-k", { agentId: 7, agentName: "a", projectId: 3, projectPath: "g/cfg", defaultBranch: "main", tokenId: 70 });
    platform.jobs.set("job-ci", job({ access_as: { ci_job: {} } }));
    platform.jobs.set("job-agent", job({}));
    kas = await createKasServer({ platform, logger, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: new Uint8Array(32) } });
    cleanup.add(() => kas.close(100));
    proxy = await createKubernetesApiProxy({ agentCalls: kas.agentCalls, platform, logger, port: 0, tunnelWaitMs: 300, metrics, authCacheTtlMs: 2000, audit: auditLog });
    cleanup.add(() => proxy.close(100));
    const kc = await kubeConfig(apiUrl, "agent-sa-token");
    agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token: "glagent-k", logger, modules: [await kubernetesApiAgentModule({ kubeconfig: kc, logger })] });
    agent.start();
    cleanup.add(() => agent.stop(100));
    await waitFor(() => kas.registry.stats().idleTunnels > 0, undefined, "a tunnel from the agent");
  });

  after(() => cleanup.run());

  async function get(path: string, headers: Record<string, string>) {
    const res = await fetch(proxy.url + path, { headers });
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  it("forwards a CI job's request with the ci_job impersonation and the agent's credentials", async () => {
    const r = await get("/api/v1/namespaces?limit=5&labelSelector=a%3Db", { authorization: "Bearer ci:7:job-ci", cookie: "x=y", accept: "application/json" });
    expect(r.status).to.equal(200);
    const body = JSON.parse(r.text) as { headers: Record<string, string | string[]>; query: string };
    expect(body.headers.authorization).to.equal("Bearer agent-sa-token");
    expect(body.headers.cookie).to.equal(undefined);
    expect(body.headers["impersonate-user"]).to.equal("gitlab:ci_job:11");
    expect(body.headers["impersonate-group"]).to.include("gitlab:project:5");
    expect(body.headers["impersonate-extra-agent.gitlab.com%2fci_job_id"]).to.equal("11");
    expect(new URLSearchParams(body.query).get("labelSelector")).to.equal("a=b");
  });

  it("uses the agent's own identity for access_as agent, and the user's for a PAT", async () => {
    const r = await get("/api/v1/namespaces", { authorization: "Bearer ci:7:job-agent" });
    expect(JSON.parse(r.text).headers["impersonate-user"]).to.equal(undefined);
    const u = await get("/api/v1/namespaces", { authorization: "Bearer pat:7:glpat-good" });
    expect(JSON.parse(u.text).headers["impersonate-user"]).to.equal("gitlab:user:dev");
  });

  it("counts the agent's calls by module and its API server requests by verb and status", async () => {
    expect((await get("/api/v1/namespaces", { authorization: "Bearer ci:7:job-agent" })).status).to.equal(200);
    // The histogram's count, not its first bucket: how long the request took is the machine's business.
    const sample = async (name: string, labels: Record<string, string>, series = name) =>
      (await agent.metrics.getSingleMetric(name)!.get()).values.find((v) => ((v as { metricName?: string }).metricName ?? name) === series && Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value ?? 0;
    expect(await sample("agentk_k8s_api_requests_total", { verb: "list", code: "200" })).to.be.greaterThan(0);
    expect(await sample("agentk_k8s_api_request_duration_seconds", { verb: "list", code: "200" }, "agentk_k8s_api_request_duration_seconds_count")).to.be.greaterThan(0);
    await waitFor(async () => (await sample("agentk_tunnel_calls_total", { module: "kubernetes_api", code: "OK" })) > 0, undefined, "the call counted when it ended");
  });

  it("refuses missing, forged and unauthorized credentials with Status objects", async () => {
    const none = await get("/api/v1/namespaces", {});
    expect(none.status).to.equal(401);
    expect(none.headers.get("gitlab-unauthorized")).to.equal("true");
    expect(JSON.parse(none.text)).to.include({ kind: "Status", code: 401, reason: "Unauthorized" });
    const forged = await get("/api/v1/namespaces", { authorization: "Bearer ci:7:forged" });
    expect(forged.status).to.equal(401);
    const otherAgent = await get("/api/v1/namespaces", { authorization: "Bearer ci:8:job-ci" });
    expect(otherAgent.status).to.equal(403);
    expect(JSON.parse(otherAgent.text).message).to.match(/^GitLab Agent Server: forbidden: project 5 .* may not use agent 8/);
    const pat = await get("/api/v1/namespaces", { authorization: "Bearer pat:9:glpat-good" });
    expect(pat.status).to.equal(403);
  });

  it("re-reads the agent's credentials once credentialTtlMs has passed (a rotated token is used)", async () => {
    const rereading = await kubeConfig(api.url, "token-1");
    const caching = await kubeConfig(api.url, "token-1");
    const fresh = await kubernetesApiAgentModule({ kubeconfig: rereading, credentialTtlMs: 0, logger });
    const cached = await kubernetesApiAgentModule({ kubeconfig: caching, credentialTtlMs: 3_600_000, logger });
    expect(await authorizationSeenBy(fresh)).to.equal("Bearer token-1");
    expect(await authorizationSeenBy(cached)).to.equal("Bearer token-1");
    // A rotated credential (as an in-cluster token file or an exec plugin would produce).
    for (const kc of [rereading, caching]) Object.assign(kc.getCurrentUser()!, { token: "token-2" });
    expect(await authorizationSeenBy(fresh)).to.equal("Bearer token-2");
    expect(await authorizationSeenBy(cached)).to.equal("Bearer token-1");
  });

  it("records allowed and refused requests in the audit trail with who, which agent and as whom, never a credential", async () => {
    audited.length = 0;
    const answered = (await get("/api/v1/namespaces/default/pods/web?watch=false", { authorization: "Bearer ci:7:job-ci" })).status;
    await get("/api/v1/namespaces/default/configmaps?watch=1", { authorization: "Bearer ci:7:job-forged" });
    await get("/api/v1/namespaces?audited=1", { authorization: "Bearer pat:7:glpat-good" });
    // Requests of earlier tests (watches) may end and be audited meanwhile: pick these three by path.
    const requests = () => audited.filter((e): e is Extract<KasAuditEvent, { kind: "k8s_api_request" }> => e.kind === "k8s_api_request");
    const byPath = (path: string) => requests().find((e) => e.path === path);
    await waitFor(() => Boolean(byPath("/api/v1/namespaces/default/pods/web") && byPath("/api/v1/namespaces/default/configmaps") && requests().some((e) => e.path === "/api/v1/namespaces" && e.actor.kind === "user")), undefined, "the three requests audited");
    const ci = byPath("/api/v1/namespaces/default/pods/web");
    const refused = byPath("/api/v1/namespaces/default/configmaps");
    const user = requests().find((e) => e.path === "/api/v1/namespaces" && e.actor.kind === "user");
    expect(ci).to.deep.include({
      agent_id: 7,
      actor: { kind: "ci_job", user_id: 4, username: "dev", job_id: 11, project_id: 5, pipeline_id: 10 },
      method: "GET",
      path: "/api/v1/namespaces/default/pods/web",
      verb: "get",
      resource: "pods",
      namespace: "default",
      name: "web",
      status: answered,
      error: null,
    });
    expect(ci!.impersonated?.username).to.equal("gitlab:ci_job:11");
    expect(refused).to.deep.include({ agent_id: 7, actor: { kind: "refused", credential: "ci" }, impersonated: null, verb: "watch", resource: "configmaps", status: 401 });
    expect(user).to.deep.include({ verb: "list", resource: "namespaces", status: 200 });
    expect(user!.actor).to.include({ kind: "user", username: "dev", access_type: "personal_access_token" });
    const all = JSON.stringify(audited);
    for (const secret of ["job-ci", "job-forged", "glpat-good", "agent-sa-token"]) expect(all).to.not.contain(secret);
  });

  it("refuses client impersonation headers", async () => {
    const r = await get("/api/v1/namespaces", { authorization: "Bearer ci:7:job-agent", "impersonate-user": "admin" });
    expect(r.status).to.equal(400);
    expect(JSON.parse(r.text).message).to.contain("Impersonate-User");
  });

  it("answers 503 when the agent is not connected", async () => {
    platform.jobs.set("job-99", { ...job({}), allowedAgents: [{ id: 99, configProject: { id: 3 }, configuration: {} }] });
    const r = await get("/api/v1/namespaces", { authorization: "Bearer ci:99:job-99" });
    expect(r.status).to.equal(503);
    expect(JSON.parse(r.text).message).to.equal("GitLab Agent Server: agent 99 is not connected");
  });

  it("takes no tunnel for a client that left during authorization", async () => {
    platform.jobs.set("job-slow", job({}));
    const acquired: Array<Promise<unknown>> = [];
    const registry = kas.registry;
    const acquire = registry.acquire;
    registry.acquire = function (this: typeof registry, ...args: Parameters<typeof acquire>) {
      const result = acquire.apply(this, args);
      acquired.push(result.then((tunnel) => tunnel, (e: unknown) => ConnectError.from(e)));
      return result;
    };
    try {
      const client = new AbortController();
      const request = fetch(`${proxy.url}/api/v1/namespaces`, { headers: { authorization: "Bearer ci:7:job-slow" }, signal: client.signal }).catch(
        (e: unknown) => e,
      );
      await waitFor(() => platform.slowLookups === 1);
      client.abort();
      await request;
      await waitFor(() => acquired.length === 1);
      // The wait for a tunnel ends at once with the client's abort; no tunnel is taken.
      expect(await acquired[0]).to.be.instanceOf(ConnectError);
    } finally {
      registry.acquire = acquire;
    }
  });

  it("streams a response as it comes (watch)", async () => {
    const res = await fetch(`${proxy.url}/watch`, { headers: { authorization: "Bearer ci:7:job-ci" } });
    const reader = res.body!.getReader();
    // The first event arrives while the API server still holds the response open.
    const first = await reader.read();
    expect(Buffer.from(first.value!).toString()).to.contain("ADDED");
    api.endWatches();
    let rest = "";
    for (;;) {
      const n = await reader.read();
      if (n.done) break;
      rest += Buffer.from(n.value).toString();
    }
    expect(rest).to.contain("DELETED");
  });

  it("streams a large request body to the API server intact", async () => {
    const body = Buffer.alloc(8 * 1024 * 1024 + 3, 7);
    for (let i = 0; i < body.length; i += 4096) body[i] = i & 0xff;
    const res = await fetch(`${proxy.url}/echo`, { method: "POST", body, headers: { authorization: "Bearer ci:7:job-ci", "content-type": "application/octet-stream" } });
    expect(res.status).to.equal(201);
    expect(await res.text()).to.equal(`${body.length} ${createHash("sha256").update(body).digest("hex")}`);
  });

  it("switches protocols (SPDY upgrade) and pipes bytes both ways", async () => {
    const port = proxy.address.port;
    const socket = net.connect(port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    socket.write(
      "POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci:7:job-ci\r\n" +
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
    );
    let received = "";
    socket.on("data", (d: Buffer) => (received += d.toString()));
    await waitFor(() => received.includes("\r\n\r\n"), undefined, "the upgrade's answer");
    expect(received).to.match(/^HTTP\/1.1 101 /);
    socket.write("hello through the tunnel");
    await waitFor(() => received.includes("HELLO THROUGH THE TUNNEL"), undefined, "the echo through the upgraded connection");
    socket.end();
    await new Promise((r) => socket.once("close", r));
  });

  it("passes an upgrade refusal through as a normal answer", async () => {
    const socket = net.connect(proxy.address.port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    socket.write("GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci:7:job-ci\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let received = "";
    socket.on("data", (d: Buffer) => (received += d.toString()));
    await new Promise((r) => socket.once("close", r));
    expect(received).to.match(/^HTTP\/1.1 403 /);
    expect(received.endsWith("no")).to.equal(true);
  });

  it("speaks HTTP/2 and HTTP/1.1 upgrades over TLS", async () => {
    const cert = selfSignedCertificate();
    const tlsProxy = await createKubernetesApiProxy({ agentCalls: kas.agentCalls, platform, logger, port: 0, tls: cert });
    try {
      expect(tlsProxy.url).to.match(/^https:/);
      const session = http2.connect(tlsProxy.url, { ca: cert.cert });
      const stream = session.request({ ":path": "/watch", authorization: "Bearer ci:7:job-ci" });
      let text = "";
      const status = await new Promise<number>((resolve) => stream.once("response", (h) => resolve(Number(h[":status"]))));
      stream.on("data", (d: Buffer) => {
        text += d.toString();
        if (text.includes("ADDED")) api.endWatches();
      });
      await new Promise((r) => stream.once("end", r));
      // The proxy widened the connection window (beyond Node's 64 KiB), so uploads are not capped.
      expect(session.state.remoteWindowSize).to.be.greaterThan(16 << 20);
      session.close();
      expect(status).to.equal(200);
      expect(text).to.contain("ADDED").and.contain("DELETED");

      const socket = tls.connect({ port: tlsProxy.address.port, host: "127.0.0.1", ca: cert.cert, ALPNProtocols: ["http/1.1"], servername: "localhost" });
      await new Promise((r) => socket.once("secureConnect", r));
      socket.write("POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci:7:job-ci\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n");
      let received = "";
      socket.on("data", (d: Buffer) => {
        received += d.toString();
        if (received.includes("\r\n\r\n") && !received.includes("abc")) socket.write("abc");
      });
      await waitFor(() => received.includes("ABC"), undefined, "the echo over TLS");
      expect(received).to.match(/^HTTP\/1.1 101 /).and.include("ABC");
      socket.destroy();
    } finally {
      await tlsProxy.close(100);
    }
  });

  it("never cuts a silent watch or exec for idleness, and closes connections without a request in progress", async () => {
    const cert = selfSignedCertificate();
    const idle = { idleTimeoutMs: 200, headersTimeoutMs: 200 };
    const tlsProxy = await createKubernetesApiProxy({ agentCalls: kas.agentCalls, platform, logger, port: 0, tls: cert, ...idle });
    const local = new Cleanup();
    try {
      const target = { port: tlsProxy.address.port, tls: true };
      // A watch over HTTP/2 and one over HTTP/1.1, each silent after its first event.
      const session = local.track(http2.connect(tlsProxy.url, { ca: cert.cert }));
      const h2watch = session.request({ ":path": "/watch", authorization: "Bearer ci:7:job-ci" });
      let h2text = "";
      h2watch.on("data", (d: Buffer) => (h2text += d.toString()));
      const h2ended = new Promise((resolve) => h2watch.once("end", resolve));
      const h1 = local.track(tls.connect({ port: target.port, host: "127.0.0.1", ca: cert.cert, ALPNProtocols: ["http/1.1"], servername: "localhost" }));
      let h1text = "";
      h1.on("data", (d: Buffer) => (h1text += d.toString()));
      h1.write("GET /watch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci:7:job-ci\r\n\r\n");
      // An exec (upgraded HTTP/1.1), silent too.
      const exec = local.track(tls.connect({ port: target.port, host: "127.0.0.1", ca: cert.cert, ALPNProtocols: ["http/1.1"], servername: "localhost" }));
      let execText = "";
      exec.on("data", (d: Buffer) => (execText += d.toString()));
      exec.write("POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ci:7:job-ci\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n");
      await waitFor(() => h2text.includes("ADDED") && h1text.includes("ADDED") && execText.startsWith("HTTP/1.1 101"), undefined, "both watches' first event and the exec's upgrade");
      // Connections that never send a request, one after the other, each closed after its timeout:
      // several idle periods go by meanwhile.
      for (let i = 0; i < 3; i++) await expectSilentHttp2SessionClosed(target, local);
      await expectSlowHeadClosed(target, local);
      api.endWatches();
      await within(HUNG_MS, h2ended, "the HTTP/2 watch's end");
      await waitFor(() => h1text.includes("DELETED"), undefined, "the HTTP/1.1 watch's last event");
      expect(h2text).to.contain("DELETED");
      exec.write("still here");
      await waitFor(() => execText.includes("STILL HERE"), undefined, "the exec's echo");
    } finally {
      await local.run();
      await tlsProxy.close(100);
    }
  });

  it("counts requests by code", async () => {
    const text = await metrics.getSingleMetricAsString("kas_k8s_proxy_requests_total");
    expect(text).to.match(/code="200"/);
    expect(text).to.match(/code="401"/);
  });
});
