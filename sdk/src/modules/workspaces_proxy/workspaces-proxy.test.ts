import { create } from "@bufbuild/protobuf";
import { expect } from "chai";
import { createHash, randomBytes } from "node:crypto";
import pino from "pino";
import WebSocket from "ws";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer } from "@kasbridge/testing/servers";
import { waitFor } from "@kasbridge/testing/wait";
import { createAgent } from "../../agent/create-agent.js";
import { AgentConfigurationSchema } from "../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { createKasServer } from "../../kas/kas-server.js";
import { kubeConfig } from "../kubernetes_api/kubernetes-api.test-support.js";
import { workspacesProxyAgentModule } from "./agent/workspaces-proxy-agent-module.js";
import { WORKSPACE_SESSION_COOKIE, cookieValue, createWorkspacesProxy, withoutCookie } from "./server/workspaces-proxy.js";
import { parseWorkspaceHost } from "./workspace-host.js";
import { selfSignedCertificate } from "@kasbridge/testing/tls";
import { expectConnectionsBeyondMaxClosed, expectSlowHeadClosed } from "../../transport/listener-limits.test-support.js";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";
import type { AgentCalls } from "../../tunnel/server/agent-calls.js";
import {
  HOST,
  NAMESPACE,
  WORKSPACE,
  WorkspacePlatform,
  ZONE,
  answer,
  fakeApiServer,
  fakeWorkspace,
  loopback,
  request,
  workspaceService,
} from "./workspaces-proxy.test-support.js";

describe("workspaces_proxy: hosts and cookies", () => {
  it("parses <port>-<workspace>.<dns zone>, with or without a port suffix", () => {
    expect(parseWorkspaceHost("3000-workspace-1-2-abc.Example.dev:8443")).to.deep.equal({ port: 3000, workspaceName: "workspace-1-2-abc", dnsZone: "example.dev" });
    for (const bad of ["workspace.example.dev", "0-w.example.dev", "70000-w.example.dev", "3000-.example.dev", "3000-w", "3000-w_x.example.dev", "3000-w.example.dev."]) {
      expect(parseWorkspaceHost(bad), bad).to.equal(undefined);
    }
  });

  it("reads and removes one cookie, keeping the workspace's own", () => {
    const header = `app=1; ${WORKSPACE_SESSION_COOKIE}=tok.en; other=x=y`;
    expect(cookieValue(header, WORKSPACE_SESSION_COOKIE)).to.equal("tok.en");
    expect(withoutCookie(header, WORKSPACE_SESSION_COOKIE)).to.equal("app=1; other=x=y");
    expect(withoutCookie(`${WORKSPACE_SESSION_COOKIE}=a`, WORKSPACE_SESSION_COOKIE)).to.equal(undefined);
  });
});

describe("workspaces_proxy: KAS -> agent tunnel -> workspace", function () {
  this.timeout(30_000);
  const cleanup = new Cleanup();
  const logger = pino({ level: "silent" });
  let platform: WorkspacePlatform;
  let proxyPort: number;
  let workspace: Awaited<ReturnType<typeof fakeWorkspace>>;
  let agentModule: ReturnType<typeof workspacesProxyAgentModule>;

  before(async () => {
    platform = new WorkspacePlatform();
    platform.addToken("glagent-k", { agentId: 7, agentName: "a", projectId: 1, projectPath: "g/p", defaultBranch: "main" });
    platform.pats.set("glpat-owner", { host: HOST, answer: answer() });
    platform.pats.set("glpat-stopped", { host: HOST, answer: answer({ actualState: "Stopped", desiredState: "Stopped" }) });
    // The platform points at Services the agent must refuse: another agent's, and a port its Service lacks.
    platform.pats.set("glpat-foreign", { host: HOST, answer: answer({ namespace: "other-ns" }) });
    platform.pats.set("glpat-port", { host: `4000-${WORKSPACE}.${ZONE}`, answer: answer({}, 4000) });
    workspace = await fakeWorkspace();
    cleanup.add(() => closeServer(workspace.server));
    const api = await fakeApiServer(
      new Map([
        [`${NAMESPACE}/${WORKSPACE}`, workspaceService("7", "42", [3000])],
        [`other-ns/${WORKSPACE}`, workspaceService("8", "42", [3000])],
      ]),
    );
    cleanup.add(() => closeServer(api.server));

    const kas = await createKasServer({ platform, logger, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: new Uint8Array(32) } });
    cleanup.add(() => kas.close(100));
    const proxy = await createWorkspacesProxy({
      agentCalls: kas.agentCalls,
      platform,
      logger,
      port: 0,
      platformUrl: "https://platform.test",
      tunnelWaitMs: 2000,
      authCacheTtlMs: 60_000,
      reauthorizeIntervalMs: 0,
    });
    cleanup.add(() => proxy.close(100));
    proxyPort = proxy.address.port;

    agentModule = workspacesProxyAgentModule({
      kubeconfig: await kubeConfig(api.url, "agent-sa-token"),
      mode: "service",
      // The Service "listens" where the stand-in workspace does.
      serviceAddress: () => ({ host: "127.0.0.1", port: workspace.port }),
      logger,
    });
    agentModule.applyConfiguration!(create(AgentConfigurationSchema, { agentId: 7n, remoteDevelopment: { enabled: true, dnsZone: ZONE } }), "c1");
    const agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token: "glagent-k", logger, modules: [agentModule] });
    agent.start();
    cleanup.add(() => agent.stop(100));
    await waitFor(() => kas.registry.stats().idleTunnels > 0, undefined, "a tunnel from the agent");
  });

  after(() => cleanup.run());

  it("forwards a request with a personal access token; the workspace sees no credential of the proxy's", async () => {
    const res = await request(proxyPort, HOST, "/headers?a=1%202&b", {
      headers: { authorization: "Bearer glpat-owner", "private-token": "x", cookie: `app=1; ${WORKSPACE_SESSION_COOKIE}=zzz`, "x-custom": "yes" },
    });
    expect(res.status, res.text).to.equal(200);
    expect(res.headers["set-cookie"]).to.deep.equal(["app=1; Path=/"]);
    const seen = JSON.parse(res.text) as { url: string; headers: Record<string, string> };
    expect(seen.url).to.equal("/headers?a=1%202&b");
    expect(seen.headers.host).to.equal(`${HOST}:${proxyPort}`);
    expect(seen.headers.authorization).to.equal(undefined);
    expect(seen.headers["private-token"]).to.equal(undefined);
    expect(seen.headers.cookie).to.equal("app=1");
    expect(seen.headers["x-custom"]).to.equal("yes");
    expect(seen.headers["x-forwarded-host"]).to.equal(`${HOST}:${proxyPort}`);
    expect(seen.headers["x-forwarded-proto"]).to.equal("https");
  });

  it("streams a large upload to the workspace intact", async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    const res = await request(proxyPort, HOST, "/upload", { method: "POST", headers: { "private-token": "glpat-owner" }, body });
    expect(res.status).to.equal(201);
    expect(res.text).to.equal(`${body.length} ${createHash("sha256").update(body).digest("hex")}`);
  });

  it("answers 401 to an API client without a token and sends a browser to the platform's login", async () => {
    const api = await request(proxyPort, HOST, "/headers");
    expect(api.status).to.equal(401);
    expect(api.headers["www-authenticate"]).to.match(/^Bearer/);
    const browser = await request(proxyPort, HOST, "/index.html?x=1", { headers: { accept: "text/html,application/xhtml+xml" } });
    expect(browser.status).to.equal(302);
    const location = new URL(browser.headers.location!);
    expect(location.origin + location.pathname).to.equal("https://platform.test/-/kasbridge/workspaces/login");
    expect(location.searchParams.get("return_to")).to.equal(`https://${HOST}:${proxyPort}/index.html?x=1`);
  });

  it("logs a browser in through the callback and carries its WebSocket (echo) with the session cookie", async () => {
    platform.callbacks.set("cb-1", { host: HOST, answer: answer() });
    const cb = await request(proxyPort, HOST, "/.kasbridge/workspace-callback?token=cb-1&return_to=%2Fide%3Ffolder%3D%2Fprojects");
    expect(cb.status).to.equal(302);
    expect(cb.headers.location).to.equal("/ide?folder=/projects");
    const setCookie = cb.headers["set-cookie"]![0]!;
    expect(setCookie).to.match(new RegExp(`^${WORKSPACE_SESSION_COOKIE}=session-cb-1; Path=/; Max-Age=\\d+; HttpOnly; Secure; SameSite=Lax$`));
    expect(setCookie).to.not.match(/Domain=/i);
    // The one-time token does not work twice.
    expect((await request(proxyPort, HOST, "/.kasbridge/workspace-callback?token=cb-1")).status).to.equal(401);
    // An absolute return_to would make the proxy an open redirect: it goes to "/".
    platform.callbacks.set("cb-2", { host: HOST, answer: answer() });
    expect((await request(proxyPort, HOST, "/.kasbridge/workspace-callback?token=cb-2&return_to=//evil.test/x")).headers.location).to.equal("/");

    const ws = new WebSocket(`ws://${HOST}:${proxyPort}/socket`, { headers: { cookie: `${WORKSPACE_SESSION_COOKIE}=session-cb-1` }, lookup: loopback });
    const replies: string[] = [];
    ws.on("message", (m) => replies.push(String(m)));
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    ws.send("hello");
    ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await waitFor(() => replies.length === 2, undefined, "two echoes");
    expect(replies[0]).to.equal("echo: hello");
    ws.close();
    await waitFor(() => workspace.openSockets() === 0, undefined, "the workspace's WebSocket closed");
  });

  it("ends an open WebSocket when the token behind it is revoked", async () => {
    platform.pats.set("glpat-revoked-later", { host: HOST, answer: { ...answer(), personalAccessToken: { id: 77 } } });
    const ws = new WebSocket(`ws://${HOST}:${proxyPort}/socket`, { headers: { authorization: "Bearer glpat-revoked-later" }, lookup: loopback });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    const closed = new Promise<void>((resolve) => ws.once("close", () => resolve()));
    platform.pats.delete("glpat-revoked-later");
    platform.publish({ kind: "personal_access_token", userId: 4, tokenId: 77 });
    await closed;
    const again = await request(proxyPort, HOST, "/headers", { headers: { authorization: "Bearer glpat-revoked-later" } });
    expect(again.status).to.equal(401);
  });

  it("refuses a stopped workspace (503), an unknown host (404), a token the platform does not know (401)", async () => {
    const stopped = await request(proxyPort, HOST, "/", { headers: { authorization: "Bearer glpat-stopped" } });
    expect(stopped.status).to.equal(503);
    expect(stopped.text).to.equal(`workspace ${WORKSPACE} is not running (actual state Stopped, desired state Stopped)\n`);
    expect((await request(proxyPort, "platform.test", "/", { headers: { authorization: "Bearer glpat-owner" } })).status).to.equal(404);
    expect((await request(proxyPort, HOST, "/", { headers: { authorization: "Bearer nope" } })).status).to.equal(401);
    // The owner's token for this host is no use on another workspace's host.
    expect((await request(proxyPort, `3000-workspace-9-9-zzzzzz.${ZONE}`, "/", { headers: { authorization: "Bearer glpat-owner" } })).status).to.equal(404);
  });

  it("the agent forwards only while remote development is enabled in its configuration", async () => {
    agentModule.applyConfiguration!(create(AgentConfigurationSchema, { agentId: 7n }), "c2");
    try {
      const res = await request(proxyPort, HOST, "/headers", { headers: { authorization: "Bearer glpat-owner" } });
      expect(res.status).to.equal(503);
      expect(res.text).to.contain("remote development is not enabled");
    } finally {
      agentModule.applyConfiguration!(create(AgentConfigurationSchema, { agentId: 7n, remoteDevelopment: { enabled: true, dnsZone: ZONE } }), "c3");
    }
  });

  it("the agent forwards only to Services of its own workspaces, on ports they declare", async () => {
    const foreign = await request(proxyPort, HOST, "/headers", { headers: { authorization: "Bearer glpat-foreign" } });
    expect(foreign.status).to.equal(403);
    expect(foreign.text).to.contain(`service other-ns/${WORKSPACE} is not workspace 42 of agent 7`);
    const port = await request(proxyPort, `4000-${WORKSPACE}.${ZONE}`, "/headers", { headers: { authorization: "Bearer glpat-port" } });
    expect(port.status).to.equal(404);
    expect(port.text).to.contain("has no TCP port 4000");
  });
});

describe("workspaces_proxy: listener limits", () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  it("closes connections beyond maxConnections and those whose request head does not come (TLS listener)", async () => {
    const { cert, key } = selfSignedCertificate("*.ws.test");
    const proxy = await createWorkspacesProxy({
      agentCalls: {} as AgentCalls,
      platform: new StaticPlatformClient(),
      port: 0,
      tls: { cert, key },
      maxConnections: 3,
      headersTimeoutMs: 300,
    });
    cleanup.add(() => proxy.close(0));
    expect(proxy.url).to.match(/^https:/);
    const target = { port: proxy.address.port, tls: true };
    await expectSlowHeadClosed(target, cleanup);
    await expectConnectionsBeyondMaxClosed(target, 3, cleanup);
  });
});
