// Built-in GitOps end to end (gitops.manifest_projects): real `kas` (platform, git hosting, KAS)
// and `agentk` processes, real git pushes, a real kube-apiserver with kube-controller-manager and
// kwok (Deployments roll out, so readiness is real). The agent pulls each pushed commit's
// manifests through KAS and applies them; the platform's REST API shows the sync status.
import { expect } from "chai";
import { waitFor } from "@kasbridge/testing/wait";
import { clusterSuite } from "./cluster-suite.test-support.js";
import { getJson } from "./gitops.test-support.js";
import { api, createAgentWithToken, startAgentk, type Proc } from "./harness.test-support.js";

/** What `GET …/cluster_agents/:agent_id/gitops` answers for one manifest project. */
interface ProjectStatus {
  project: string;
  commit_seen: string | null;
  commit_applied: string | null;
  last_error: string | null;
  objects: Array<{ kind: string; namespace: string | null; name: string; status: string; message: string | null; source: string | null }>;
}

const configMap = (name: string, data: Record<string, string>, namespace?: string) =>
  `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${name}\n${namespace ? `  namespace: ${namespace}\n` : ""}data:\n${Object.entries(data)
    .map(([k, v]) => `  ${k}: "${v}"\n`)
    .join("")}`;
const namespace = (name: string) => `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${name}\n`;

describe("e2e: built-in GitOps (push -> KAS -> agentk applies manifests)", function () {
  this.timeout(300_000);
  // Controllers: Deployments roll out on kwok's node, so readiness waits are real.
  const suite = clusterSuite({ controllers: true });
  const { git, cleanups, repoUrl } = suite;

  /** A public project (any agent may read it) with a working copy. */
  async function manifestProject(name: string): Promise<{ path: string; wc: string }> {
    const p = await api(suite.kas, "POST", "/projects", { name, visibility: "public" });
    expect(p.status).to.equal(201);
    return { path: p.json.path_with_namespace as string, wc: await git.clone(repoUrl(p.json.path_with_namespace as string)) };
  }

  /** An agent whose config (pushed to its own project) lists `manifestProjects`, and its running agentk. */
  async function agentWithConfig(name: string, config: string): Promise<{ agentId: number; projectId: number; agentk: Proc & { cleanup(): Promise<void> }; token: string }> {
    const a = await createAgentWithToken(suite.kas, name);
    const project = (await api(suite.kas, "GET", `/projects/${a.projectId}`)).json;
    const wc = await git.clone(repoUrl(project.path_with_namespace));
    await git.commit(wc, { [`.gitlab/agents/${name}/config.yaml`]: config });
    await git.push(wc);
    const agentk = startAgentk(suite.kas.addresses.agent, a.token, {}, ["--kubeconfig", suite.cp.agentKubeconfigPath]);
    cleanups.add(() => agentk.cleanup());
    return { agentId: a.agentId, projectId: a.projectId, agentk, token: a.token };
  }

  async function status(agent: { agentId: number; projectId: number }, project: string): Promise<ProjectStatus | undefined> {
    const res = await api(suite.kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/gitops`);
    expect(res.status).to.equal(200);
    return (res.json.manifest_projects as ProjectStatus[]).find((p) => p.project === project);
  }

  async function waitForStatus(agent: { agentId: number; projectId: number }, project: string, done: (s: ProjectStatus) => boolean, what: string, timeoutMs = 90_000): Promise<ProjectStatus> {
    let last: ProjectStatus | undefined;
    await waitFor(async () => (last = await status(agent, project)) !== undefined && done(last), timeoutMs, what).catch((e: Error) => {
      throw new Error(`${e.message}; last status: ${JSON.stringify(last)}`);
    });
    return last!;
  }

  /** Milliseconds from `since` to agentk's log line saying `commit` was synchronized. */
  function syncedAt(agentk: Proc, commit: string): number | undefined {
    const line = agentk.output.split("\n").find((l) => l.includes('"msg":"manifests synchronized"') && l.includes(commit));
    return line ? (JSON.parse(line) as { time: number }).time : undefined;
  }

  const cm = (ns: string, name: string) => getJson(suite.cp, ["configmap", "-n", ns, name]);

  it("applies a push (creates, waits for a Deployment), applies changes, prunes what left git, reports status", async () => {
    const m = await manifestProject("apps");
    const agent = await agentWithConfig(
      "apps",
      `gitops:\n  manifest_projects:\n  - id: ${m.path}\n    default_namespace: gitops-apps\n    paths:\n    - glob: 'deploy/**/*.yaml'\n    reconcile_timeout: 120s\n`,
    );
    await agent.agentk.waitFor(/synchronizing manifest project/, "the manifest project worker", 60_000);
    const deployment = `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: registry.example/web:1\n`;
    const pushedAt = Date.now();
    const first = await git.commit(m.wc, {
      "deploy/00-namespace.yaml": namespace("gitops-apps"),
      "deploy/app/config.yaml": `${configMap("settings", { color: "blue" })}---\n${configMap("extra", { a: "1" })}`,
      "deploy/app/web.yaml": deployment,
      "README.md": "not a manifest\n",
      "other/ignored.yaml": configMap("ignored", { x: "1" }, "gitops-apps"),
    });
    await git.push(m.wc);
    let s = await waitForStatus(agent, m.path, (x) => x.commit_applied === first, "the first commit applied");
    console.log(`      git push -> objects applied (ConfigMaps, Namespace, Deployment ready): ${syncedAt(agent.agentk, first)! - pushedAt} ms`);
    expect(s.last_error).to.equal(null);
    expect(s.objects.map((o) => `${o.kind}/${o.namespace ?? ""}/${o.name}:${o.status}`).sort()).to.deep.equal([
      "ConfigMap/gitops-apps/extra:Current",
      "ConfigMap/gitops-apps/settings:Current",
      "Deployment/gitops-apps/web:Current",
      "Namespace//gitops-apps:Current",
    ]);
    const settings = (await cm("gitops-apps", "settings"))!;
    expect(settings.data).to.deep.equal({ color: "blue" });
    expect(settings.metadata.annotations["config.k8s.io/owning-inventory"]).to.equal(`${agent.agentId}-${(await api(suite.kas, "GET", `/projects/${encodeURIComponent(m.path)}`)).json.id}`);
    const web = (await getJson(suite.cp, ["deployment", "-n", "gitops-apps", "web", "--show-managed-fields"]))!;
    expect(web.status.availableReplicas).to.equal(1);
    expect(web.metadata.managedFields.map((f: { manager: string }) => f.manager)).to.include("agentk");
    expect(await cm("gitops-apps", "ignored")).to.equal(undefined);
    // The inventory lists what was applied.
    const inventory = (await getJson(suite.cp, ["configmap", "-n", "gitops-apps", "-l", "cli-utils.sigs.k8s.io/inventory-id"]))!.items;
    expect(inventory).to.have.length(1);
    expect(Object.keys(inventory[0].data).sort()).to.deep.equal(["_gitops-apps__Namespace", "gitops-apps_extra__ConfigMap", "gitops-apps_settings__ConfigMap", "gitops-apps_web_apps_Deployment"]);

    // A change is applied; a file removed from git is pruned.
    const second = await git.commit(m.wc, { "deploy/app/config.yaml": configMap("settings", { color: "green" }) });
    await git.push(m.wc);
    s = await waitForStatus(agent, m.path, (x) => x.commit_applied === second, "the change applied");
    expect((await cm("gitops-apps", "settings"))!.data).to.deep.equal({ color: "green" });
    expect(await cm("gitops-apps", "extra")).to.equal(undefined);
    expect(s.objects.find((o) => o.name === "extra")).to.deep.include({ status: "Pruned" });

    const metrics = await (await fetch(`${suite.kas.addresses.observability}/metrics`)).text();
    expect(metrics).to.match(/^gitops_sync_total [1-9]/m);
  });

  it("with prune off leaves objects removed from git in the cluster", async () => {
    const m = await manifestProject("keep");
    await suite.cp.runKubectl(["create", "namespace", "gitops-keep"]);
    const agent = await agentWithConfig("keep", `gitops:\n  manifest_projects:\n  - id: ${m.path}\n    default_namespace: gitops-keep\n    prune: false\n`);
    const first = await git.commit(m.wc, { "a.yaml": configMap("a", { v: "1" }), "b.yaml": configMap("b", { v: "1" }) });
    await git.push(m.wc);
    await waitForStatus(agent, m.path, (x) => x.commit_applied === first, "the first commit applied");
    await git.git(m.wc, "rm", "-q", "b.yaml");
    const second = await git.commit(m.wc, { "a.yaml": configMap("a", { v: "2" }) });
    await git.push(m.wc);
    await waitForStatus(agent, m.path, (x) => x.commit_applied === second, "the second commit applied");
    expect((await cm("gitops-keep", "a"))!.data).to.deep.equal({ v: "2" });
    expect((await cm("gitops-keep", "b"))!.data).to.deep.equal({ v: "1" });
  });

  it("refuses a commit with an invalid manifest as a whole: the error names file and line, the cluster is unchanged", async () => {
    const m = await manifestProject("broken");
    await suite.cp.runKubectl(["create", "namespace", "gitops-broken"]);
    const agent = await agentWithConfig("broken", `gitops:\n  manifest_projects:\n  - id: ${m.path}\n    default_namespace: gitops-broken\n`);
    const good = await git.commit(m.wc, { "a.yaml": configMap("a", { v: "1" }) });
    await git.push(m.wc);
    await waitForStatus(agent, m.path, (x) => x.commit_applied === good, "the good commit applied");

    // A valid change next to a file with a YAML error on line 4: nothing of the commit is applied.
    const bad = await git.commit(m.wc, { "a.yaml": configMap("a", { v: "2" }), "z.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a: b\n" });
    await git.push(m.wc);
    let s = await waitForStatus(agent, m.path, (x) => x.commit_seen === bad && x.last_error !== null, "the error reported");
    expect(s.commit_applied).to.equal(good);
    expect(s.last_error).to.match(/z\.yaml:4: invalid YAML/);
    expect((await cm("gitops-broken", "a"))!.data).to.deep.equal({ v: "1" });

    // An object the API server refuses (a ConfigMap's data must be strings): caught by the dry run.
    const refused = await git.commit(m.wc, {
      "z.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: z\ndata:\n  n: {nested: map}\n",
      "c.yaml": configMap("c", { v: "1" }),
    });
    await git.push(m.wc);
    s = await waitForStatus(agent, m.path, (x) => x.commit_seen === refused && x.last_error !== null, "the refusal reported");
    expect(s.last_error).to.match(/z\.yaml:1: ConfigMap gitops-broken\/z is invalid/);
    expect(s.commit_applied).to.equal(good);
    expect(await cm("gitops-broken", "c")).to.equal(undefined);
    expect((await cm("gitops-broken", "a"))!.data).to.deep.equal({ v: "1" });

    // Fixed: applied.
    const fixed = await git.commit(m.wc, { "z.yaml": configMap("z", { n: "1" }) });
    await git.push(m.wc);
    s = await waitForStatus(agent, m.path, (x) => x.commit_applied === fixed, "the fixed commit applied");
    expect(s.last_error).to.equal(null);
    expect((await cm("gitops-broken", "a"))!.data).to.deep.equal({ v: "2" });
  });

  it("converges after the agent is killed in the middle of an apply (prunes what the interrupted commit removed)", async () => {
    const m = await manifestProject("restart");
    await suite.cp.runKubectl(["create", "namespace", "gitops-restart"]);
    const config = `gitops:\n  manifest_projects:\n  - id: ${m.path}\n    default_namespace: gitops-restart\n`;
    const agent = await agentWithConfig("restart", config);
    const first = await git.commit(m.wc, { "old.yaml": configMap("old", { v: "1" }) });
    await git.push(m.wc);
    await waitForStatus(agent, m.path, (x) => x.commit_applied === first, "the first commit applied");

    // Many objects, so that the apply takes a while; the old one leaves git.
    const total = 300;
    await git.git(m.wc, "rm", "-q", "old.yaml");
    const many = Array.from({ length: total }, (_, i) => configMap(`new-${String(i).padStart(3, "0")}`, { i: String(i) })).join("---\n");
    const second = await git.commit(m.wc, { "many.yaml": many });
    await git.push(m.wc);
    const count = async () => ((await getJson(suite.cp, ["configmap", "-n", "gitops-restart"]))!.items as Array<{ metadata: { name: string } }>).filter((i) => i.metadata.name.startsWith("new-")).length;
    await waitFor(async () => (await count()) > 0, 60_000, "the apply to begin");
    await agent.agentk.stop("SIGKILL");
    const atKill = await count();
    console.log(`      agent killed with ${atKill} of ${total} objects applied`);

    const restarted = startAgentk(suite.kas.addresses.agent, agent.token, {}, ["--kubeconfig", suite.cp.agentKubeconfigPath]);
    cleanups.add(() => restarted.cleanup());
    await waitFor(() => syncedAt(restarted, second) !== undefined, 120_000, "the restarted agent to synchronize");
    expect(await count()).to.equal(total);
    expect(await cm("gitops-restart", "old")).to.equal(undefined);
    const s = await waitForStatus(agent, m.path, (x) => x.commit_applied === second, "the status of the restarted agent");
    expect(s.objects.filter((o) => o.status === "Current")).to.have.length(total);
  });

  it("syncs one project into two agents' clusters (two agents watching one project)", async () => {
    const m = await manifestProject("shared");
    await suite.cp.runKubectl(["create", "namespace", "gitops-one"]);
    await suite.cp.runKubectl(["create", "namespace", "gitops-two"]);
    const one = await agentWithConfig("one", `gitops:\n  manifest_projects:\n  - id: ${m.path}\n    default_namespace: gitops-one\n`);
    const two = await agentWithConfig("two", `gitops:\n  manifest_projects:\n  - id: ${m.path}\n    default_namespace: gitops-two\n`);
    const commit = await git.commit(m.wc, { "shared.yaml": configMap("shared", { v: "1" }) });
    await git.push(m.wc);
    await waitForStatus(one, m.path, (x) => x.commit_applied === commit, "agent one applied");
    await waitForStatus(two, m.path, (x) => x.commit_applied === commit, "agent two applied");
    expect((await cm("gitops-one", "shared"))!.data).to.deep.equal({ v: "1" });
    expect((await cm("gitops-two", "shared"))!.data).to.deep.equal({ v: "1" });
    const next = await git.commit(m.wc, { "shared.yaml": configMap("shared", { v: "2" }) });
    await git.push(m.wc);
    await waitForStatus(one, m.path, (x) => x.commit_applied === next, "agent one applied the change");
    await waitForStatus(two, m.path, (x) => x.commit_applied === next, "agent two applied the change");
    expect((await cm("gitops-two", "shared"))!.data).to.deep.equal({ v: "2" });
  });
});
