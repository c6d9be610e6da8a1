// Reaching a workspace end to end: real `kas` (embedded platform, workspace proxy) and `agentk`
// processes, a real kube-apiserver with the controllers and kwok (tools/control-plane). The
// workspace is created over REST from a devfile pushed over git; agentk's reconcile loop applies
// its objects and reports its Deployment, so the platform computes its actual state. A kwok pod runs
// no container: kwok's port-forward of pod port 3000 reaches the test's local server, the one
// stand-in here, for the workspace's container. Everything else is the product: the host-based
// proxy on KAS, the platform's authorization and browser login, the tunnel, the agent's check of
// the Service and its port-forward through the API server.
import { rmSync } from "node:fs";
import http from "node:http";
import { expect } from "chai";
import WebSocket, { WebSocketServer } from "ws";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { waitFor } from "@kasbridge/testing/wait";
import { findBinaries, startControlPlane, type ControlPlane } from "../tools/control-plane/control-plane.js";
import { VALID_DEVFILE } from "../platform/src/remote-development/devfile.test-support.js";
import { loopback, request, type Answer } from "../sdk/src/modules/workspaces_proxy/workspaces-proxy.test-support.js";
import { GitClient } from "./git.test-support.js";
import { adminToken, api, createAgentWithToken, startAgentk, startKas } from "./harness.test-support.js";

const ZONE = "workspaces.e2e.test";
/** The devfile's public endpoint: kwok forwards this pod port to the test's workspace stand-in. */
const PUBLIC_PORT = 3000;
/** An endpoint with `exposure: internal`: not reachable through the proxy. */
const INTERNAL_PORT = 9229;

describe("e2e: reaching a workspace through KAS's workspace proxy", function () {
  this.timeout(300_000);
  const cleanups = new Cleanup();
  const git = new GitClient();
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));
  let cp: ControlPlane;
  let kas: Awaited<ReturnType<typeof startKas>>;
  let agent: Awaited<ReturnType<typeof createAgentWithToken>>;
  let proxyPort: number;
  let owner: { id: number; token: string };
  let other: { id: number; token: string };
  let workspace: { id: number; name: string; namespace: string; urls: Array<{ port: number; url: string }> };
  let host: string;
  let standIn: { port: number; seen: string[] };

  before(async () => {
    findBinaries();
    standIn = await startWorkspaceStandIn();
    cp = await startControlPlane({ controllers: true, portForwards: [{ podPort: PUBLIC_PORT, port: standIn.port }], agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }] });
    cleanups.add(() => cp.stop());
    kas = await startKas();
    cleanups.add(() => kas.cleanup());
    proxyPort = Number(new URL(kas.addresses.workspacesProxy!).port);
    agent = await createAgentWithToken(kas, "dev-cluster");
    const project = (await api(kas, "GET", `/projects/${agent.projectId}`)).json;
    owner = await user("owner");
    other = await user("other");

    // The agent's remote_development config and the devfile, in the agent's project.
    const wc = await git.clone(`http://root:${adminToken}@${new URL(kas.addresses.platform!).host}/${project.path_with_namespace}.git`);
    const commit = await git.commit(wc, {
      ".gitlab/agents/dev-cluster/config.yaml": `remote_development:\n  enabled: true\n  dns_zone: ${ZONE}\n  partial_sync_interval: 1s\n  full_sync_interval: 20s\n`,
      ".devfile.yaml": VALID_DEVFILE,
    });
    await git.push(wc);
    await waitFor(async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json.config_commit_id === commit, undefined, "config accepted");

    const agentk = startAgentk(kas.addresses.agent, agent.token, { KUBECONFIG: cp.agentKubeconfigPath });
    cleanups.add(() => agentk.cleanup());

    const created = await api(kas, "POST", `/projects/${agent.projectId}/workspaces`, { cluster_agent_id: agent.agentId, devfile_ref: "main", devfile_path: ".devfile.yaml" }, owner.token);
    expect(created.status, JSON.stringify(created.json)).to.equal(201);
    workspace = created.json;
    host = `${PUBLIC_PORT}-${workspace.name}.${ZONE}`;
    // The devfile's public endpoint (the injected editor adds its own).
    expect(workspace.urls.map((u) => u.url)).to.include(`https://${host}/`);
    await reconcileUntil("Running");
    // agentk forwards once it has its configuration (remote_development enabled) from KAS.
    await waitFor(async () => !(await viaProxy("/", { authorization: `Bearer ${owner.token}` })).text.includes("not enabled"), 30_000, "agentk configured");
  });
  after(() => cleanups.run());

  async function user(username: string): Promise<{ id: number; token: string }> {
    const u = await api(kas, "POST", "/users", { username, name: username, email: `${username}@example.com` });
    expect(u.status, JSON.stringify(u.json)).to.equal(201);
    const pat = await api(kas, "POST", `/users/${u.json.id}/personal_access_tokens`, { name: "api", scopes: ["api"] });
    expect((await api(kas, "POST", `/projects/${agent.projectId}/members`, { user_id: u.json.id, access_level: 30 })).status).to.equal(201);
    return { id: u.json.id as number, token: pat.json.token as string };
  }

  /** Waits until agentk's reconcile loop has brought the workspace to `state` (the platform's actual state). */
  async function reconcileUntil(state: "Running" | "Stopped"): Promise<void> {
    let last = "";
    await waitFor(
      async () => (last = (await api(kas, "GET", `/projects/${agent.projectId}/workspaces/${workspace.id}`, undefined, owner.token)).json.actual_state) === state,
      120_000,
      `workspace ${state}`,
    ).catch((err: Error) => {
      throw new Error(`${err.message} (last actual state ${last})`);
    });
  }

  const viaProxy = (path: string, headers: Record<string, string> = {}, on = host): Promise<Answer> => request(proxyPort, on, path, { headers });

  it("forwards an HTTP request with the owner's token to the workspace (port-forward through the API server)", async () => {
    const res = await viaProxy("/hello?from=e2e", { authorization: `Bearer ${owner.token}`, cookie: "app=1" });
    expect(res.status, res.text).to.equal(200);
    const seen = JSON.parse(res.text) as { url: string; headers: Record<string, string> };
    expect(seen.url).to.equal("/hello?from=e2e");
    expect(seen.headers.host).to.equal(`${host}:${proxyPort}`);
    expect(seen.headers.authorization).to.equal(undefined);
    expect(seen.headers.cookie).to.equal("app=1");
  });

  it("logs a browser in through the platform and carries its WebSocket with the session cookie", async () => {
    // No credential: an API client gets 401, a browser is sent to the platform's login.
    expect((await viaProxy("/ide")).status).to.equal(401);
    const toLogin = await viaProxy("/ide?folder=/projects", { accept: "text/html" });
    expect(toLogin.status).to.equal(302);
    const login = new URL(toLogin.headers.location!);
    expect(login.origin).to.equal(kas.addresses.platform);
    expect(login.pathname).to.equal("/-/kasbridge/workspaces/login");
    expect(login.searchParams.get("return_to")).to.equal(`https://${host}:${proxyPort}/ide?folder=/projects`);

    // The browser logs in (a personal access token as the Basic password): back to the callback.
    const basic = (token: string) => `Basic ${Buffer.from(`x:${token}`).toString("base64")}`;
    expect((await fetch(login, { headers: { authorization: basic(other.token) }, redirect: "manual" })).status).to.equal(404);
    const loggedIn = await fetch(login, { headers: { authorization: basic(owner.token) }, redirect: "manual" });
    expect(loggedIn.status).to.equal(302);
    const callback = new URL(loggedIn.headers.get("location")!);
    expect(callback.host).to.equal(`${host}:${proxyPort}`);
    const cb = await viaProxy(callback.pathname + callback.search);
    expect(cb.status, cb.text).to.equal(302);
    expect(cb.headers.location).to.equal("/ide?folder=/projects");
    const cookie = cb.headers["set-cookie"]![0]!.split(";")[0]!;

    const ws = new WebSocket(`ws://${host}:${proxyPort}/socket`, { headers: { cookie }, lookup: loopback });
    cleanups.add(() => ws.terminate());
    const replies: string[] = [];
    ws.on("message", (m) => replies.push(String(m)));
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    for (const m of ["one", "two", "three"]) ws.send(m);
    await waitFor(() => replies.length === 3, undefined, "three echoes");
    expect(replies).to.deep.equal(["echo: one", "echo: two", "echo: three"]);
    ws.close();
    // The workspace never saw the proxy's session cookie.
    expect(standIn.seen.some((h) => h.includes("_kasbridge_workspace_session"))).to.equal(false);
  });

  it("refuses a user who does not own the workspace, a port that is not public, and bad tokens", async () => {
    const notOwner = await viaProxy("/hello", { authorization: `Bearer ${other.token}` });
    expect(notOwner.status).to.equal(404);
    const internal = await viaProxy("/hello", { authorization: `Bearer ${owner.token}` }, `${INTERNAL_PORT}-${workspace.name}.${ZONE}`);
    expect(internal.status).to.equal(404);
    expect((await viaProxy("/hello", { "private-token": "glpat-not-a-token-at-all-0000" })).status).to.equal(401);
  });

  it("refuses a stopped workspace with 503, and forwards again once it runs", async () => {
    expect((await api(kas, "PUT", `/projects/${agent.projectId}/workspaces/${workspace.id}`, { desired_state: "Stopped" }, owner.token)).status).to.equal(200);
    await reconcileUntil("Stopped");
    // The proxy may answer from its cache for up to 5 s (meanwhile the agent finds no pod to forward to).
    const stopped = `workspace ${workspace.name} is not running (actual state Stopped, desired state Stopped)\n`;
    let last: Answer | undefined;
    await waitFor(async () => (last = await viaProxy("/hello", { authorization: `Bearer ${owner.token}` })).text === stopped, 15_000, "the platform's refusal of the stopped workspace");
    expect(last!.status).to.equal(503);
    expect((await api(kas, "PUT", `/projects/${agent.projectId}/workspaces/${workspace.id}`, { desired_state: "Running" }, owner.token)).status).to.equal(200);
    await reconcileUntil("Running");
    await waitFor(async () => (await viaProxy("/hello", { authorization: `Bearer ${owner.token}` })).status === 200, 30_000, "the workspace reachable again");
  });

  /** The workspace's container: answers what it received (HTTP), echoes (WebSocket); records request heads. */
  async function startWorkspaceStandIn(): Promise<{ port: number; seen: string[] }> {
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(JSON.stringify(req.headers));
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ url: req.url, headers: req.headers }));
    });
    const wss = new WebSocketServer({ server });
    wss.on("connection", (socket, req) => {
      seen.push(JSON.stringify(req.headers));
      socket.on("message", (data) => socket.send(`echo: ${String(data)}`));
    });
    const port = await listen(server);
    cleanups.add(() => {
      for (const c of wss.clients) c.terminate();
      wss.close();
      server.closeAllConnections();
      return closeServer(server);
    });
    return { port, seen };
  }
});
