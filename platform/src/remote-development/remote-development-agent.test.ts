// The agent's remote_development module against this platform's reconcile endpoint and a real
// kube-apiserver with the controllers and kwok (tools/control-plane): a real agent (createAgent
// with the module, leader election on), a real KAS (gitlab_access, agent_configuration), the
// platform's services with a git repository holding the devfile. The agent has only the RBAC
// rules the module documents (plus its Lease). A recording PlatformClient in front of the
// in-process one keeps each reconcile request as the platform received it.
import { expect } from "chai";
import { KubeConfig } from "@kubernetes/client-node";
import pino from "pino";
import { Registry } from "prom-client";
import { createAgent, KubeHttp } from "@kasbridge/sdk/agent";
import { createKasServer } from "@kasbridge/sdk/kas";
import { agentConfigurationAgentModule } from "@kasbridge/sdk/modules/agent_configuration/agent";
import { agentConfigurationServerModule } from "@kasbridge/sdk/modules/agent_configuration/server";
import { gitlabAccessServerModule } from "@kasbridge/sdk/modules/gitlab_access/server";
import { REMOTE_DEVELOPMENT_RBAC_RULES, remoteDevelopmentAgentModule } from "@kasbridge/sdk/modules/remote_development/agent";
import type { ModuleRequest, ModuleResponse, PlatformClient } from "@kasbridge/sdk/platform-client";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { AGENT_NAMESPACE, findBinaries, startControlPlane, type ControlPlane } from "../../../tools/control-plane/control-plane.js";
import { createInProcessPlatformClient } from "../client/in-process-platform-client.js";
import { GitClient, startGitPlatform, type GitTestPlatform } from "../git/git-fixtures.test-support.js";
import { AccessLevel } from "../services/access-levels.js";
import { useTestStore } from "../testing/fixtures.test-support.js";
import { VALID_DEVFILE } from "./devfile.test-support.js";
import type { Workspace } from "./workspaces.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const AGENT_RULES = [...REMOTE_DEVELOPMENT_RBAC_RULES, { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] }];
const rdConfig = (options: { enabled?: boolean; partial?: string; full?: string; networkPolicy?: boolean } = {}) =>
  `remote_development:\n  enabled: ${options.enabled ?? true}\n  dns_zone: ws.example.dev\n  partial_sync_interval: ${options.partial ?? "1s"}\n  full_sync_interval: ${options.full ?? "3600s"}\n  network_policy:\n    enabled: ${options.networkPolicy ?? true}\n`;

/** A reconcile request as the platform received it. */
interface Recorded {
  method: string;
  urlPath: string;
  contentType: string | undefined;
  body: { update_type: string; workspace_agent_infos: Array<Record<string, unknown> & { name: string }> };
  raw: string;
}

/** The in-process PlatformClient, recording the remote_development module requests it forwards. */
function recordingClient(inner: PlatformClient, recorded: Recorded[]): PlatformClient {
  return Object.assign(Object.create(inner) as PlatformClient, {
    async makeModuleRequest(request: ModuleRequest, signal?: AbortSignal): Promise<ModuleResponse> {
      const chunks: Uint8Array[] = [];
      for await (const chunk of request.body) chunks.push(chunk);
      const raw = Buffer.concat(chunks).toString("utf8");
      if (request.module === "remote_development") {
        const contentType = request.headers["Content-Type"] ?? request.headers["content-type"];
        recorded.push({ method: request.method, urlPath: request.urlPath, contentType: contentType?.[0], body: JSON.parse(raw), raw });
      }
      return inner.makeModuleRequest!(
        {
          ...request,
          body: (async function* () {
            yield Buffer.from(raw);
          })(),
        },
        signal,
      );
    },
  });
}

describe("remote_development agent module (real KAS, this platform's reconcile endpoint, real API server with controllers)", function () {
  this.timeout(180_000);
  const db = useTestStore("sqlite");
  const cleanup = new Cleanup();
  let cp: ControlPlane;
  let kube: KubeHttp;
  let p: GitTestPlatform;
  let agentId: number;
  let project: Awaited<ReturnType<GitTestPlatform["project"]>>;
  let dev: { id: number; token: string };
  let recorded: Recorded[];
  let metrics: Registry;

  before(async () => {
    findBinaries();
    cp = await startControlPlane({ controllers: true, agentRules: AGENT_RULES });
    const kc = new KubeConfig();
    kc.loadFromFile(cp.agentKubeconfigPath);
    kube = new KubeHttp(kc);
  });
  after(async () => {
    kube?.close();
    await cp?.stop();
  });

  beforeEach(async () => {
    p = await startGitPlatform(db.store);
    cleanup.add(() => p.close());
    project = await p.project(`app-${Math.random().toString(36).slice(2, 8)}`);
    const git = await GitClient.create();
    cleanup.add(() => git.dispose());
    await git.ok(["clone", "-q", p.url(project, p.adminToken), "wc"]);
    await git.commit("wc", { ".devfile.yaml": VALID_DEVFILE });
    await git.ok(["push", "-q", "origin", "HEAD:refs/heads/main"], "wc");
    const agent = await p.services.agents.create(project.id, "dev-cluster", null);
    agentId = agent.id;
    const token = (await p.services.agentTokens.create(agent.id, { name: "t" }, null)).secret;
    dev = await p.user(`dev${agentId}`);
    await p.addMember(project, dev.id, AccessLevel.DEVELOPER);
    recorded = [];
    metrics = new Registry();

    const kas = await createKasServer({
      platform: recordingClient(createInProcessPlatformClient(p.services), recorded),
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: new Uint8Array(32) },
      modules: [agentConfigurationServerModule(), gitlabAccessServerModule()],
    });
    cleanup.add(() => kas.close(100));
    const agentProcess = createAgent({
      kasAddress: kas.agentApi.url("grpc"),
      token,
      logger,
      modules: [agentConfigurationAgentModule(), remoteDevelopmentAgentModule({ kube, metrics })],
      podName: `agentk-${agentId}`,
      podNamespace: AGENT_NAMESPACE,
      leaderElection: { kubeConfig: kube.kubeconfig, leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 250 },
    });
    agentProcess.start();
    cleanup.add(() => agentProcess.stop(100));
  });
  afterEach(() => cleanup.run());

  const configure = async (yaml: string, commit: string) => {
    const result = await p.services.agentConfigs.apply(agentId, commit, yaml);
    expect(result.status, "state" in result ? result.state.error?.message : result.status).to.equal("accepted");
  };
  const createWorkspace = () => p.services.workspaces.create(dev.id, project, { agentId, devfileRef: "main", devfilePath: ".devfile.yaml" });
  const workspace = async (ws: Workspace) => (await p.services.workspaces.get(project.id, ws.id))!;
  const actualState = (ws: Workspace, state: string) => waitFor(async () => (await workspace(ws)).actualState === state, 60_000, `actual state ${state}`);
  const counter = async (name: string, labels: Record<string, string>) =>
    (await metrics.getSingleMetric(name)?.get())?.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value ?? 0;
  const exists = async (path: string) =>
    kube.json("GET", path).then(
      () => true,
      (error: { status?: number }) => (error.status === 404 ? false : Promise.reject(error)),
    );

  it("sends GitLab's reconcile requests: POST /reconcile, JSON, a full sync first, then partial ones with the changed Deployments", async () => {
    await configure(rdConfig(), "c1");
    const ws = await createWorkspace();
    await actualState(ws, "Running");
    await waitFor(() => recorded.length >= 3, 30_000, "three reconcile requests");

    for (const r of recorded) {
      expect(r.method).to.equal("POST");
      expect(r.urlPath).to.equal("/reconcile");
      expect(r.contentType).to.equal("application/json");
      expect(Object.keys(r.body)).to.deep.equal(["update_type", "workspace_agent_infos"]);
    }
    expect(recorded[0]!.body).to.deep.equal({ update_type: "full", workspace_agent_infos: [] });
    expect(recorded.slice(1).every((r) => r.body.update_type === "partial")).to.equal(true);
    // The Deployment as the API server serves it, reported when its version changed only.
    const reports = recorded.flatMap((r) => r.body.workspace_agent_infos);
    const first = reports.find((i) => i.latest_k8s_deployment_info)!;
    expect(Object.keys(first)).to.deep.equal(["name", "namespace", "latest_k8s_deployment_info"]);
    expect(first).to.deep.include({ name: ws.name, namespace: ws.namespace });
    const deployment = first.latest_k8s_deployment_info as { apiVersion: string; kind: string; metadata: { labels: Record<string, string>; resourceVersion: string } };
    expect(deployment.apiVersion).to.equal("apps/v1");
    expect(deployment.kind).to.equal("Deployment");
    expect(deployment.metadata.labels["agent.gitlab.com/id"]).to.equal(String(agentId));
    const versions = reports.filter((i) => i.latest_k8s_deployment_info).map((i) => (i.latest_k8s_deployment_info as typeof deployment).metadata.resourceVersion);
    expect(new Set(versions).size, "each version reported once").to.equal(versions.length);
    expect(await counter("agentk_remote_development_reconciles_total", { update_type: "full", result: "success" })).to.be.greaterThan(0);
    expect(await counter("agentk_remote_development_workspace_applies_total", { result: "success" })).to.be.greaterThan(0);
  });

  it("follows the configuration live: starts when enabled, restarts with new intervals, prunes what a new configuration drops", async () => {
    await configure(rdConfig({ enabled: false }), "c1");
    expect(((await createWorkspace().catch((e: Error) => e)) as Error).message).to.include("does not have remote development enabled");

    // Enabled, with a full sync every 2 s: the NetworkPolicy comes, then goes with network_policy disabled.
    await configure(rdConfig({ full: "2s" }), "c2");
    const created = await createWorkspace();
    const policy = `/apis/networking.k8s.io/v1/namespaces/${created.namespace}/networkpolicies/${created.name}`;
    await waitFor(() => exists(policy), 60_000, "the NetworkPolicy applied");
    await configure(rdConfig({ full: "2s", networkPolicy: false }), "c3");
    await waitFor(async () => !(await exists(policy)), 60_000, "the NetworkPolicy pruned");
    const inventory = await kube.json<{ data: Record<string, string> }>("GET", `/api/v1/namespaces/${created.namespace}/configmaps/${created.name}-workspace-inventory`);
    expect(Object.keys(inventory.data).some((k) => k.endsWith("_NetworkPolicy"))).to.equal(false);
    expect(await exists(`/apis/apps/v1/namespaces/${created.namespace}/deployments/${created.name}`)).to.equal(true);
  });

  it("reports an object it may not apply (inventory policy must_match) as an applier error, and recovers at the next full sync", async () => {
    // One full sync at start, then nothing for an hour: the test prepares the cluster meanwhile.
    await configure(rdConfig({ partial: "3600s" }), "c1");
    await waitFor(() => recorded.length === 1, 30_000, "the first full sync");
    const ws = await createWorkspace();
    // Before the agent gets to it: the namespace exists and holds a claim of another inventory.
    await cp.runKubectl(["create", "namespace", ws.namespace]);
    const claim = {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: `${ws.name}-cache`, namespace: ws.namespace, annotations: { "config.k8s.io/owning-inventory": "someone-else" } },
      spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "2Gi" } } },
    };
    await cp.runKubectl(["apply", "-f", "-"], { input: JSON.stringify(claim) });
    // New intervals restart the loop: a full sync at once, then every 2 s.
    await configure(rdConfig({ full: "2s" }), "c2");
    await actualState(ws, "Error");
    const withError = recorded.flatMap((r) => r.body.workspace_agent_infos).find((i) => i.error_details)!;
    expect(withError.error_details).to.deep.equal({
      error_type: "applier",
      error_message: `PersistentVolumeClaim ${ws.namespace}/${ws.name}-cache: not applied: it belongs to inventory someone-else (inventory policy must_match)`,
    });
    // Everything else was applied.
    expect(await exists(`/apis/apps/v1/namespaces/${ws.namespace}/deployments/${ws.name}`)).to.equal(true);

    await cp.runKubectl(["annotate", "pvc", `${ws.name}-cache`, "-n", ws.namespace, `config.k8s.io/owning-inventory=${ws.name}-workspace-inventory`, "--overwrite"]);
    await actualState(ws, "Running");
  });
});
