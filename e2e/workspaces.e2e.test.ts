// Remote development workspaces end to end: real `kas` (with the embedded platform) and `agentk`
// processes, a real kube-apiserver with the controllers and kwok (tools/control-plane), the agent's
// configuration and the devfile pushed over git, workspaces driven over REST. The agent has only
// the RBAC rules docs/workspaces.md lists (plus its Lease). Nothing is stood in for: the
// Deployment controller rolls the workspace out to a kwok pod, whose readiness the Deployment's
// conditions report, and the platform computes the actual state from them.
import { rmSync } from "node:fs";
import { expect } from "chai";
import { AGENT_NAMESPACE, findBinaries, startControlPlane, type ControlPlane } from "../tools/control-plane/control-plane.js";
import { REMOTE_DEVELOPMENT_RBAC_RULES } from "../sdk/src/modules/remote_development/agent/rbac-rules.js";
import { VALID_DEVFILE } from "../platform/src/remote-development/devfile.test-support.js";
import { GitClient } from "./git.test-support.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { adminToken, api, createAgentWithToken, startAgentk, startKas, type Proc } from "./harness.test-support.js";

const AGENT_RULES = [...REMOTE_DEVELOPMENT_RBAC_RULES, { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] }];
const STATE_TIMEOUT_MS = 60_000;

interface WorkspaceEntity {
  id: number;
  name: string;
  namespace: string;
  desired_state: string;
  actual_state: string;
}

describe("e2e: remote development workspaces (REST -> platform -> kas -> agentk -> kube-apiserver)", function () {
  this.timeout(300_000);
  let cp: ControlPlane;
  let kas: Awaited<ReturnType<typeof startKas>>;
  let agent: Awaited<ReturnType<typeof createAgentWithToken>>;
  let agentk: Proc & { cleanup(): Promise<void> };
  let wc: string;
  let ws: WorkspaceEntity;
  const git = new GitClient();
  const cleanups = new Cleanup();
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));

  before(async () => {
    findBinaries();
    cp = await startControlPlane({ controllers: true, agentRules: AGENT_RULES });
    cleanups.add(() => cp.stop());
    kas = await startKas();
    cleanups.add(() => kas.cleanup());
    agent = await createAgentWithToken(kas, "dev");
    const project = (await api(kas, "GET", `/projects/${agent.projectId}`)).json;
    wc = await git.clone(`http://root:${adminToken}@${new URL(kas.addresses.platform!).host}/${project.path_with_namespace}.git`);
    // Short sync intervals: a partial sync every second, a full one every 20 s.
    const commit = await git.commit(wc, {
      ".gitlab/agents/dev/config.yaml": "remote_development:\n  enabled: true\n  dns_zone: workspaces.example.dev\n  partial_sync_interval: 1s\n  full_sync_interval: 20s\n",
      ".devfile.yaml": VALID_DEVFILE,
      "broken/.devfile.yaml": VALID_DEVFILE.replace("gl/inject-editor: true", "gl/inject-editor: false"),
    });
    await git.push(wc);
    await waitFor(async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json.config_commit_id === commit, undefined, "config accepted");
    agentk = startPod();
    await agentk.waitFor(/remote development: reconciling workspaces/, "the reconcile loop started", 30_000);
  });
  after(() => cleanups.run());

  function startPod() {
    const proc = startAgentk(kas.addresses.agent, agent.token, { POD_NAME: "agentk-rd", POD_NAMESPACE: AGENT_NAMESPACE, KUBECONFIG: cp.agentKubeconfigPath });
    cleanups.add(() => proc.cleanup());
    return proc;
  }

  const workspacesPath = () => `/projects/${agent.projectId}/workspaces`;
  const get = async (): Promise<WorkspaceEntity> => (await api(kas, "GET", `${workspacesPath()}/${ws.id}`)).json;
  const setDesired = async (desired_state: string) => {
    const r = await api(kas, "PUT", `${workspacesPath()}/${ws.id}`, { desired_state });
    expect(r.status, JSON.stringify(r.json)).to.equal(200);
  };
  /** Waits for the actual state; fails early, naming it, on a state that should not come. */
  async function actualState(expected: string, allowed: string[]): Promise<void> {
    let last = "";
    await waitFor(
      async () => {
        last = (await get()).actual_state;
        if (last !== expected && !allowed.includes(last)) throw new Error(`actual state ${last} while waiting for ${expected}`);
        return last === expected;
      },
      STATE_TIMEOUT_MS,
      `actual state ${expected} (last: ${last})`,
    ).catch((error: Error) => {
      throw new Error(`${error.message}; agentk said:\n${agentk.output.slice(-3000)}`);
    });
  }
  const kubectlJson = async (args: string[]) => JSON.parse((await cp.runKubectl([...args, "-o", "json"])).stdout);
  const replicas = async () => (await kubectlJson(["get", "deployment", ws.name, "-n", ws.namespace])).spec.replicas as number;
  const workspaceNamespaces = async () =>
    ((await kubectlJson(["get", "namespaces"])).items as Array<{ metadata: { name: string } }>).map((n) => n.metadata.name).filter((n) => n.startsWith("gl-rd-ns-"));

  it("creates a workspace: objects applied by agentk with inventories, Starting until a pod runs, then Running", async () => {
    // No node takes pods yet: the rollout cannot finish and the workspace stays Starting.
    await cp.runKubectl(["cordon", "kwok-node-0"]);
    const created = await api(kas, "POST", workspacesPath(), { cluster_agent_id: agent.agentId, devfile_ref: "main", devfile_path: ".devfile.yaml" });
    expect(created.status, JSON.stringify(created.json)).to.equal(201);
    ws = created.json;
    expect(ws.actual_state).to.equal("CreationRequested");
    // Unknown: a Deployment reported before the controller gave it conditions.
    await actualState("Starting", ["CreationRequested", "Unknown"]);

    const objects = await kubectlJson(["get", "deployment,service,pvc,configmap,secret,networkpolicy", "-n", ws.namespace, "-l", `agent.gitlab.com/id=${agent.agentId}`]);
    const names = (objects.items as Array<{ kind: string; metadata: { name: string } }>).map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(names).to.deep.equal(
      [
        `ConfigMap/${ws.name}-secrets-inventory`,
        `ConfigMap/${ws.name}-workspace-inventory`,
        `Deployment/${ws.name}`,
        `NetworkPolicy/${ws.name}`,
        `PersistentVolumeClaim/${ws.name}-cache`,
        `PersistentVolumeClaim/${ws.name}-gl-workspace-data`,
        `Secret/${ws.name}-env-var`,
        `Secret/${ws.name}-file`,
        `Service/${ws.name}`,
      ].sort(),
    );
    const deployment = await kubectlJson(["get", "deployment", ws.name, "-n", ws.namespace, "--show-managed-fields"]);
    expect(deployment.metadata.managedFields.map((f: { manager: string; operation: string }) => `${f.manager}:${f.operation}`)).to.include("agentk:Apply");
    expect(deployment.metadata.annotations["config.k8s.io/owning-inventory"]).to.equal(`${ws.name}-workspace-inventory`);
    expect(deployment.spec.replicas).to.equal(1);
    // cli-utils' inventory: one key per object it owns.
    const inventory = await kubectlJson(["get", "configmap", `${ws.name}-workspace-inventory`, "-n", ws.namespace]);
    expect(Object.keys(inventory.data).sort()).to.deep.equal(
      [`${ws.namespace}_${ws.name}_apps_Deployment`, `${ws.namespace}_${ws.name}__Service`, `${ws.namespace}_${ws.name}-cache__PersistentVolumeClaim`,
        `${ws.namespace}_${ws.name}-gl-workspace-data__PersistentVolumeClaim`,
        `${ws.namespace}_${ws.name}_networking.k8s.io_NetworkPolicy`].sort(),
    );
    expect(Object.values(inventory.data).every((v) => v === "")).to.equal(true);
    const secretsInventory = await kubectlJson(["get", "configmap", `${ws.name}-secrets-inventory`, "-n", ws.namespace]);
    expect(Object.keys(secretsInventory.data).sort()).to.deep.equal([`${ws.namespace}_${ws.name}-env-var__Secret`, `${ws.namespace}_${ws.name}-file__Secret`]);

    await cp.runKubectl(["uncordon", "kwok-node-0"]);
    await actualState("Running", ["Starting"]);
    expect((await get()).desired_state).to.equal("Running");
  });

  it("stops a workspace (replicas 0, Stopped) and restarts it (Running)", async () => {
    await setDesired("Stopped");
    await actualState("Stopped", ["Running", "Stopping"]);
    expect(await replicas()).to.equal(0);

    await setDesired("RestartRequested");
    await actualState("Running", ["Stopped", "Starting"]);
    expect(await replicas()).to.equal(1);
    expect((await get()).desired_state).to.equal("Running");
  });

  it("converges after agentk was down while the workspace changed", async () => {
    await agentk.stop("SIGKILL");
    await setDesired("Stopped");
    // Nothing applies the change while agentk is down.
    expect(await replicas()).to.equal(1);
    agentk = startPod();
    await actualState("Stopped", ["Running", "Stopping"]);
    expect(await replicas()).to.equal(0);
    await setDesired("Running");
    await actualState("Running", ["Stopped", "Starting"]);
  });

  it("terminates a workspace: its namespace is deleted, then it is Terminated", async () => {
    await setDesired("Terminated");
    await actualState("Terminated", ["Running", "Terminating"]);
    expect(await workspaceNamespaces()).to.not.include(ws.namespace);
    expect((await api(kas, "PUT", `${workspacesPath()}/${ws.id}`, { desired_state: "Running" })).status).to.equal(409);
  });

  it("refuses an invalid devfile with a clear error and applies nothing", async () => {
    const before = await workspaceNamespaces();
    const r = await api(kas, "POST", workspacesPath(), { cluster_agent_id: agent.agentId, devfile_ref: "main", devfile_path: "broken/.devfile.yaml" });
    expect(r.status).to.equal(400);
    expect(JSON.stringify(r.json)).to.include("Invalid devfile broken/.devfile.yaml: No component has 'gl/inject-editor' attribute");
    // A full sync later, still nothing new in the cluster, and no workspace stored.
    const fullSyncs = agentk.count(/remote development: full sync/);
    await waitFor(() => agentk.count(/remote development: full sync/) > fullSyncs, 60_000, "another full sync");
    expect(await workspaceNamespaces()).to.deep.equal(before);
    const listed = (await api(kas, "GET", workspacesPath())).json as WorkspaceEntity[];
    expect(listed.map((w) => w.id)).to.deep.equal([ws.id]);
  });
});
