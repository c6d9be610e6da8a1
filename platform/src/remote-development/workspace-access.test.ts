// Reaching a workspace, the platform's half: KAS's question over the internal API (through the
// SDK's HTTP platform client), the browser's login redirect and the one-time callback and session
// tokens, on SQLite and PostgreSQL.
import { randomBytes } from "node:crypto";
import http from "node:http";
import { expect } from "chai";
import express from "express";
import { createHttpPlatformClient, type PlatformClient } from "@kasbridge/sdk/platform-client";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { createInternalApi } from "../api/internal-api.js";
import { AccessLevel } from "../services/access-levels.js";
import { GitClient, startGitPlatform, type GitTestPlatform } from "../git/git-fixtures.test-support.js";
import { describeEachStore } from "../testing/fixtures.test-support.js";
import { platformError } from "../testing/http-fixtures.test-support.js";
import { VALID_DEVFILE } from "./devfile.test-support.js";
import type { Workspace } from "./workspaces.js";

const RD_CONFIG = "remote_development:\n  enabled: true\n  dns_zone: ws.example.dev\n";

describeEachStore("reaching a workspace: platform", (getStore) => {
  const cleanup = new Cleanup();
  let p: GitTestPlatform;
  let platform: PlatformClient;
  let workspace: Workspace;
  let dev: { id: number; token: string };
  let host: string;

  beforeEach(async function () {
    this.timeout(30_000);
    p = await startGitPlatform(getStore());
    cleanup.add(() => p.close());
    const project = await p.project("app");
    const git = await GitClient.create();
    cleanup.add(() => git.dispose());
    await git.ok(["clone", "-q", p.url(project, p.adminToken), "wc"]);
    await git.commit("wc", { ".devfile.yaml": VALID_DEVFILE });
    await git.ok(["push", "-q", "origin", "HEAD:refs/heads/main"], "wc");
    const agent = await p.services.agents.create(project.id, "dev-cluster", null);
    expect((await p.services.agentConfigs.apply(agent.id, "c1", RD_CONFIG)).status).to.equal("accepted");
    dev = await p.user("dev");
    await p.addMember(project, dev.id, AccessLevel.DEVELOPER);
    workspace = await p.services.workspaces.create(dev.id, project, { agentId: agent.id, devfileRef: "main", devfilePath: ".devfile.yaml" });
    host = `3000-${workspace.name}.ws.example.dev`;

    // KAS's view: the internal API behind the KAS JWT, through the SDK's HTTP client.
    const secret = randomBytes(32);
    const app = express();
    app.use(createInternalApi({ services: p.services, jwtSecret: secret }));
    const server = http.createServer(app);
    const port = await listen(server);
    cleanup.add(() => closeServer(server));
    platform = createHttpPlatformClient({ baseUrl: `http://127.0.0.1:${port}`, jwtSecret: secret });
  });
  afterEach(() => cleanup.run());

  const pat = (accessKey: string, on = host) => platform.authorizeWorkspaceAccess!({ host: on, accessType: "personal_access_token", accessKey });

  it("answers the owner's token with the workspace's Service, port and state", async () => {
    const a = await pat(dev.token, `${host}:8443`);
    expect(a.workspace).to.deep.equal({ id: workspace.id, name: workspace.name, namespace: workspace.namespace, actualState: "CreationRequested", desiredState: "Running" });
    expect(a.agentId).to.equal(workspace.agentId);
    expect(a.user).to.deep.equal({ id: dev.id, username: "dev" });
    expect(a.target).to.deep.equal({ namespace: workspace.namespace, service: workspace.name, port: 3000 });
    expect(a.personalAccessToken.id).to.be.a("number");
    expect(a.session).to.equal(undefined);
    // The editor the platform adds (60001) is reachable too; its ssh port (60022, internal) is not.
    expect((await pat(dev.token, `60001-${workspace.name}.ws.example.dev`)).target.port).to.equal(60001);
    expect((await platformError(pat(dev.token, `60022-${workspace.name}.ws.example.dev`))).kind).to.equal("not_found");
  });

  it("refuses others (404), tokens without the api scope (403), ports that are not public (404), bad tokens (401)", async () => {
    const other = await p.user("other");
    expect((await platformError(pat(other.token))).kind).to.equal("not_found");
    const readOnly = await p.user("reader", ["read_api"]);
    expect((await platformError(pat(readOnly.token))).kind).to.equal("forbidden");
    // 9229 is an endpoint with exposure internal; 4000 none at all.
    expect((await platformError(pat(dev.token, `9229-${workspace.name}.ws.example.dev`))).kind).to.equal("not_found");
    expect((await platformError(pat(dev.token, `4000-${workspace.name}.ws.example.dev`))).kind).to.equal("not_found");
    expect((await platformError(pat(dev.token, `3000-${workspace.name}.other-zone.dev`))).kind).to.equal("not_found");
    expect((await platformError(pat("glpat-nonsense-nonsense-nonsense"))).kind).to.equal("unauthenticated");
  });

  it("logs a browser in: 401 asking for Basic credentials, then a redirect to the workspace host's callback", async () => {
    const returnTo = `https://${host}:8443/ide?folder=%2Fprojects`;
    const login = (headers: Record<string, string> = {}) =>
      fetch(`${p.baseUrl}/-/kasbridge/workspaces/login?return_to=${encodeURIComponent(returnTo)}`, { headers, redirect: "manual" });
    const anonymous = await login();
    expect(anonymous.status).to.equal(401);
    expect(anonymous.headers.get("www-authenticate")).to.equal('Basic realm="kasbridge workspaces"');
    const other = await p.user("other");
    expect((await login({ authorization: `Basic ${Buffer.from(`other:${other.token}`).toString("base64")}` })).status).to.equal(404);

    const res = await login({ authorization: `Basic ${Buffer.from(`dev:${dev.token}`).toString("base64")}` });
    expect(res.status).to.equal(302);
    expect(res.headers.get("cache-control")).to.equal("no-store");
    const callback = new URL(res.headers.get("location")!);
    expect(callback.origin + callback.pathname).to.equal(`https://${host}:8443/.kasbridge/workspace-callback`);
    expect(callback.searchParams.get("return_to")).to.equal("/ide?folder=%2Fprojects");
    const token = callback.searchParams.get("token")!;

    // The token is for this host only, and works once: it becomes a session bound to the host.
    expect((await platformError(platform.authorizeWorkspaceAccess!({ host: `8080-${workspace.name}.ws.example.dev`, accessType: "workspace_callback", accessKey: token }))).kind).to.equal("unauthenticated");
    const exchanged = await platform.authorizeWorkspaceAccess!({ host, accessType: "workspace_callback", accessKey: token });
    expect(exchanged.user.id).to.equal(dev.id);
    expect(exchanged.session!.expiresAt).to.be.greaterThan(Date.now() + 3_600_000);
    expect((await platformError(platform.authorizeWorkspaceAccess!({ host, accessType: "workspace_callback", accessKey: token }))).kind).to.equal("unauthenticated");
    // A callback token is no session token.
    expect((await platformError(platform.authorizeWorkspaceAccess!({ host, accessType: "workspace_session", accessKey: token }))).kind).to.equal("unauthenticated");

    const session = exchanged.session!.token;
    const bySession = await platform.authorizeWorkspaceAccess!({ host, accessType: "workspace_session", accessKey: session });
    expect(bySession.target.port).to.equal(3000);
    expect((await platformError(platform.authorizeWorkspaceAccess!({ host: `9229-${workspace.name}.ws.example.dev`, accessType: "workspace_session", accessKey: session }))).kind).to.equal("unauthenticated");

    // The session ends with the personal access token that logged the browser in.
    await p.services.personalAccessTokens.revoke(dev.id, bySession.personalAccessToken.id);
    expect((await platformError(platform.authorizeWorkspaceAccess!({ host, accessType: "workspace_session", accessKey: session }))).kind).to.equal("unauthenticated");
  });

  it("refuses a return_to that is no http(s) URL", async () => {
    const res = await fetch(`${p.baseUrl}/-/kasbridge/workspaces/login?return_to=javascript:alert(1)`, { headers: { "private-token": dev.token }, redirect: "manual" });
    expect(res.status).to.equal(400);
  });
});
