// user_access end to end: a user's personal access token (`pat:<agent id>:<token>`) with the real
// kubectl, through real `kas` and `agentk` processes, against a real kube-apiserver with RBAC.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { findBinaries, startControlPlane, type ControlPlane, type RunResult } from "../tools/control-plane/control-plane.js";
import { GitClient } from "./git.test-support.js";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { adminToken, api, createAgentWithToken, startAgentk, startKas } from "./harness.test-support.js";

describe("e2e: kubectl as a user (user_access) through kas and agentk", function () {
  this.timeout(300_000);
  let cp: ControlPlane;
  let kas: Awaited<ReturnType<typeof startKas>>;
  let agentk: ReturnType<typeof startAgentk>;
  let agent: Awaited<ReturnType<typeof createAgentWithToken>>;
  // Released last to first, each step even when another throws (no control plane left running).
  const cleanups = new Cleanup();
  const git = new GitClient();
  const dir = mkdtempSync(join(tmpdir(), "kubeproxy-user-e2e-"));
  cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));
  const { certFile, keyFile } = selfSignedCertificateFiles(dir, "tls");
  let app: { id: number; path: string };
  let configRepo: string;
  const users: Record<string, { id: number; token: string; readOnlyToken?: string }> = {};

  before(async () => {
    findBinaries(); // throws "... Run `npm run control-plane` ..." when the binaries are missing
    cp = await startControlPlane({ kwok: false, agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }] });
    cleanups.add(() => cp.stop());
    // Usage counters go to the platform every second (GitLab's default: a minute).
    kas = await startKas({ KAS_AGENT_TLS_CERT_FILE: certFile, KAS_AGENT_TLS_KEY_FILE: keyFile, KAS_USAGE_REPORTING_PERIOD_SECONDS: "1" });
    cleanups.add(() => kas.cleanup());
    agent = await createAgentWithToken(kas, "dev");
    const p = await api(kas, "POST", "/projects", { name: "app" });
    expect(p.status).to.equal(201);
    app = { id: p.json.id as number, path: p.json.path_with_namespace as string };
    for (const name of ["alice", "bob"]) {
      const u = await api(kas, "POST", "/users", { username: name, name, email: `${name}@example.com` });
      expect(u.status, JSON.stringify(u.json)).to.equal(201);
      const t = await api(kas, "POST", `/users/${u.json.id}/personal_access_tokens`, { name: "kubectl", scopes: ["k8s_proxy"] });
      expect(t.status, JSON.stringify(t.json)).to.equal(201);
      users[name] = { id: u.json.id as number, token: t.json.token as string };
    }
    const readOnly = await api(kas, "POST", `/users/${users.alice!.id}/personal_access_tokens`, { name: "api", scopes: ["read_api"] });
    users.alice!.readOnlyToken = readOnly.json.token as string;
    // alice is a Developer of app; bob is nobody there.
    const member = await api(kas, "POST", `/projects/${app.id}/members`, { user_id: users.alice!.id, access_level: 30 });
    expect(member.status, JSON.stringify(member.json)).to.equal(201);

    const configProject = (await api(kas, "GET", `/projects/${agent.projectId}`)).json.path_with_namespace as string;
    configRepo = await git.clone(`http://root:${adminToken}@${new URL(kas.addresses.platform!).host}/${configProject}.git`);
    await pushConfig("user");
    agentk = startAgentk(kas.addresses.agent, agent.token, {}, ["--kubeconfig", cp.agentKubeconfigPath, "--ca-cert-file", certFile]);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/kubeconfig loaded/);
    await waitFor(async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/connections`)).json.length === 1, 15_000, "agent connected");
  });

  after(() => cleanups.run());

  async function pushConfig(accessAs: "user" | "agent"): Promise<void> {
    const commit = await git.commit(configRepo, {
      ".gitlab/agents/dev/config.yaml": `user_access:\n  access_as:\n    ${accessAs}: {}\n  projects:\n    - id: ${app.path}\n`,
    });
    await git.push(configRepo);
    await waitFor(
      async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json.config_commit_id === commit,
      10_000,
      "config accepted",
    );
  }

  /** The real kubectl against the proxy with `pat:<agent id>:<token>`, as README's "Use kubectl as a user". */
  function kubectlAs(token: string, args: string[]): Promise<RunResult> {
    const kubeconfig = join(dir, "empty-kubeconfig");
    writeFileSync(kubeconfig, "apiVersion: v1\nkind: Config\n");
    const server = (kas.addresses as typeof kas.addresses & { k8sProxy: string }).k8sProxy;
    return cp.runKubectl(["--server", server, "--certificate-authority", certFile, "--token", `pat:${agent.agentId}:${token}`, ...args], {
      kubeconfig,
      allowFailure: true,
      timeoutMs: 60_000,
    });
  }

  async function whoami(token: string): Promise<{ username: string; groups: string[]; extra?: Record<string, string[]> }> {
    const r = await kubectlAs(token, ["auth", "whoami", "-o", "json"]);
    expect(r.code, r.stderr).to.equal(0);
    return JSON.parse(r.stdout).status.userInfo;
  }

  it("access_as user: the cluster sees gitlab:user:<name> with the user's project roles, and RBAC decides", async () => {
    const me = await whoami(users.alice!.token);
    expect(me.username).to.equal("gitlab:user:alice");
    expect(me.groups).to.include.members(["gitlab:user", `gitlab:project_role:${app.id}:developer`, `gitlab:project_role:${app.id}:reporter`]);
    expect(me.groups).to.not.include(`gitlab:project_role:${app.id}:maintainer`);

    await cp.runKubectl(["create", "namespace", "team-u"]);
    const denied = await kubectlAs(users.alice!.token, ["get", "configmaps", "-n", "team-u"]);
    expect(denied.code).to.not.equal(0);
    expect(denied.stderr).to.include('User "gitlab:user:alice" cannot list resource "configmaps"');

    await cp.runKubectl(["create", "role", "cm-read", "-n", "team-u", "--verb", "get,list", "--resource", "configmaps"]);
    await cp.runKubectl(["create", "rolebinding", "app-developers", "-n", "team-u", "--role", "cm-read", "--group", `gitlab:project_role:${app.id}:developer`]);
    await cp.runKubectl(["create", "configmap", "team-settings", "-n", "team-u", "--from-literal", "k=v"]);
    let last: RunResult | undefined;
    await waitFor(async () => (last = await kubectlAs(users.alice!.token, ["get", "configmaps", "-n", "team-u", "-o", "name"])).code === 0, 30_000, "RoleBinding effective").catch(
      (e: Error) => {
        throw new Error(`${e.message}: ${last?.stderr}`);
      },
    );
    expect(last!.stdout).to.include("configmap/team-settings");
    // Read only, and only in that namespace.
    const write = await kubectlAs(users.alice!.token, ["create", "configmap", "by-alice", "-n", "team-u", "--from-literal", "a=b"]);
    expect(write.code).to.not.equal(0);
    expect(write.stderr).to.include("forbidden");
    const elsewhere = await kubectlAs(users.alice!.token, ["get", "configmaps", "-n", "default"]);
    expect(elsewhere.code).to.not.equal(0);
    expect(elsewhere.stderr).to.include("forbidden");
    // The audit log names the user and the agent, never the token.
    expect(kas.output).to.not.include(users.alice!.token);
  });

  it("refuses a user without access to any authorized project, and a token without the k8s_proxy scope", async () => {
    const bob = await kubectlAs(users.bob!.token, ["get", "ns"]);
    expect(bob.code).to.not.equal(0);
    expect(bob.stderr).to.include(`access to agent ${agent.agentId} denied`);
    const scoped = await kubectlAs(users.alice!.readOnlyToken!, ["get", "ns"]);
    expect(scoped.code).to.not.equal(0);
    expect(scoped.stderr).to.match(/Unauthorized|unauthorized|forbidden/);
    const forged = await kubectlAs("glpat-not-a-real-token-000000", ["get", "ns"]);
    expect(forged.code).to.not.equal(0);
    expect(forged.stderr).to.match(/Unauthorized|unauthorized/);
  });

  it("access_as agent: a config change switches the user to the agent's own identity", async () => {
    await pushConfig("agent");
    let who = "";
    // KAS caches authorization answers for a few seconds.
    await waitFor(async () => (who = (await whoami(users.alice!.token)).username) === cp.agentUsername, 30_000, "agent identity").catch((e: Error) => {
      throw new Error(`${e.message}: still ${who}`);
    });
    const ns = await kubectlAs(users.alice!.token, ["get", "ns", "-o", "name"]);
    expect(ns.code, ns.stderr).to.equal(0);
    expect(ns.stdout).to.include("namespace/team-u");
    // Still only for members of an authorized project.
    expect((await kubectlAs(users.bob!.token, ["get", "ns"])).code).to.not.equal(0);
    await pushConfig("user");
  });

  it("usage metrics reach the platform with the counts of the proxied requests; agentk counts them too", async () => {
    const totals = async () => (await api(kas, "GET", "/usage_metrics/kubernetes")).json as { counters: Record<string, number>; unique_counters: Record<string, number> };
    // Whatever came before has been sent: the totals stop moving with the proxy's request log.
    const authorized = () => kas.count(/"caller":"user"[^\n]*"msg":"k8s proxy request"/);
    await waitFor(async () => ((await totals()).counters.k8s_api_proxy_requests_via_pat_access ?? 0) === authorized(), 15_000, "earlier requests reported");
    const before = await totals();
    const seen = authorized();
    expect((await kubectlAs(users.alice!.token, ["get", "configmaps", "-n", "team-u"])).code).to.equal(0);
    await whoami(users.alice!.token);
    const made = authorized() - seen;
    expect(made).to.be.greaterThan(1);
    let after = before;
    await waitFor(async () => ((after = await totals()).counters.k8s_api_proxy_requests_via_pat_access ?? 0) - (before.counters.k8s_api_proxy_requests_via_pat_access ?? 0) === made, 15_000, "this traffic reported");
    expect(after.counters.k8s_api_proxy_request - before.counters.k8s_api_proxy_request).to.equal(made);
    expect(after.unique_counters.k8s_api_proxy_requests_unique_users_via_pat_access).to.be.greaterThan(0);
    expect(after.unique_counters.k8s_api_proxy_requests_unique_agents_via_pat_access).to.equal(1);
    // The agent's own view of the same traffic, on its observability listener.
    const url = (await agentk.waitFor(/"url":"(http:\/\/127\.0\.0\.1:\d+)"[^\n]*observability listening/))[1]!;
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).to.match(/^agentk_tunnel_calls_total\{module="kubernetes_api",code="OK"\} [1-9]/m);
    expect(metrics).to.match(/^agentk_k8s_api_requests_total\{verb="list",code="200"\} [1-9]/m);
    // The platform shows the agent's health.
    const health = (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/health`)).json;
    expect(health).to.include({ connected: true, last_error: null });
    expect(health.pods).to.have.length(1);
    expect(health.pods[0]).to.include({ pod_name: "agentk-e2e-pod", pod_namespace: "gitlab-agent" });
    expect(health.config_commit_id).to.match(/^[0-9a-f]{40}$/);
    // The audit trail: alice's requests with her identity and the one the cluster saw, and agent activity.
    type Entry = { kind: string; actor: Record<string, unknown>; impersonated: { username: string } | null; request: { verb: string; status: number } | null };
    let audit: Entry[] = [];
    await waitFor(async () => (audit = (await api(kas, "GET", `/kubernetes_audit_events?user_id=${users.alice!.id}&per_page=100`)).json).length >= made, 15_000, "alice's requests audited");
    expect(audit.every((e) => e.actor.kind === "user" && e.actor.username === "alice" && e.actor.access_type === "personal_access_token")).to.equal(true);
    expect(audit.some((e) => e.impersonated?.username === "gitlab:user:alice" && e.request?.verb === "list" && e.request.status === 200)).to.equal(true);
    expect(audit.some((e) => e.request?.status === 403)).to.equal(true);
    const activity = (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/activity_events?per_page=100`)).json as Entry[];
    expect(activity.map((e) => e.kind)).to.include.members(["agent_connected", "config_applied", "token_created", "k8s_api_request"]);
    expect(JSON.stringify(activity)).to.not.include(users.alice!.token);
  });
});
