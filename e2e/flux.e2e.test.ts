// Flux mode end to end: real `kas` (platform, git hosting, KAS) and `agentk` processes, a real
// kube-apiserver with Flux's GitRepository and Receiver CRDs installed, and real git pushes. No
// Flux controller runs: the test plays the notification-controller only where Flux would act (it
// sets the Receiver's status.webhookPath and serves the receiver URL). Everything else is the
// product's code: agentk creates the Secret and Receiver, opens ReconcileProjects, and POSTs the
// webhook when the platform tells KAS about a push (Notifications/GitPushEvent).
import { join } from "node:path";
import { expect } from "chai";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { clusterSuite } from "./cluster-suite.test-support.js";
import { getJson, installFluxCrds, startWebhookReceiver } from "./gitops.test-support.js";
import { api, createAgentWithToken, startAgentk, startKas } from "./harness.test-support.js";
import { TEST_REDIS_URL, uniqueRedisName } from "@kasbridge/testing/redis";

describe("e2e: Flux (push -> KAS -> agentk -> Flux webhook)", function () {
  this.timeout(240_000);
  // Agents match GitRepository URLs to the platform by host name (gitlab_external_url).
  // Redis: the second test runs two KAS replicas, which share push events on kas_events.
  // This run's own keys in the machine's shared Redis (the replicas' registries).
  const keyPrefix = uniqueRedisName("kasbridge-flux-e2e");
  const suite = clusterSuite({ kwok: false }, { KAS_EXTERNAL_URL: "http://127.0.0.1", KAS_REDIS_URL: TEST_REDIS_URL, KAS_REDIS_KEY_PREFIX: keyPrefix });
  const { git } = suite;
  before(() => installFluxCrds(suite.cp));
  // Each test's agents and servers go with it: two agents in one cluster would both manage every
  // GitRepository (as GitLab's agents would), fighting over the Receivers.
  const cleanups = new Cleanup();
  afterEach(() => cleanups.run());

  it("creates the Receiver for GitRepositories on the platform and triggers it on every push", async () => {
    const { cp, kas } = suite;
    const receiverServer = await startWebhookReceiver();
    cleanups.add(() => receiverServer.close());
    const a = await createAgentWithToken(kas, "flux");
    const project = (await api(kas, "GET", `/projects/${a.projectId}`)).json;
    const wc = await git.clone(suite.repoUrl(project.path_with_namespace));
    await git.commit(wc, { ".gitlab/agents/flux/config.yaml": `flux:\n  webhook_receiver_url: ${receiverServer.url}\n` });
    await git.push(wc);

    const agentk = startAgentk(kas.addresses.agent, a.token, {}, ["--kubeconfig", cp.agentKubeconfigPath]);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/Flux module running/, "the Flux module to start", 60_000);

    await cp.runKubectl(["create", "namespace", "flux-system"]);
    const gitRepository = (name: string, url: string) => ({
      apiVersion: "source.toolkit.fluxcd.io/v1",
      kind: "GitRepository",
      metadata: { name, namespace: "flux-system" },
      spec: { url, interval: "10m", ref: { branch: "main" } },
    });
    const platformHost = new URL(kas.addresses.platform!).host;
    await cp.runKubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: [gitRepository("app", `http://${platformHost}/${project.path_with_namespace}.git`), gitRepository("elsewhere", "https://git.example.org/x/y.git")],
      }),
    });

    // agentk applies the Secret and the Receiver, owned by the GitRepository.
    let receiver: Record<string, any> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
    await waitFor(async () => (receiver = await getJson(cp, ["receivers.notification.toolkit.fluxcd.io", "-n", "flux-system", "gitlab-app", "--show-managed-fields"])) !== undefined, 60_000, "Receiver gitlab-app");
    const repo = (await getJson(cp, ["gitrepositories.source.toolkit.fluxcd.io", "-n", "flux-system", "app"]))!;
    expect(receiver!.metadata.annotations).to.include({
      "app.kubernetes.io/managed-by": "gitlab",
      "agent.gitlab.com/id": String(a.agentId),
      "agent.gitlab.com/project": project.path_with_namespace,
    });
    expect(receiver!.metadata.ownerReferences).to.deep.equal([
      { apiVersion: "source.toolkit.fluxcd.io/v1", kind: "GitRepository", name: "app", uid: repo.metadata.uid, controller: true, blockOwnerDeletion: true },
    ]);
    expect(receiver!.spec).to.deep.include({ type: "generic", interval: "5m", secretRef: { name: "gitlab-receiver-app" } });
    expect(receiver!.metadata.managedFields.map((f: { manager: string }) => f.manager)).to.include("agentk");
    const secret = (await getJson(cp, ["secret", "-n", "flux-system", "gitlab-receiver-app"]))!;
    expect(secret.data).to.deep.equal({ token: "" });
    expect(secret.metadata.annotations).to.include({ "agent.gitlab.com/id": String(a.agentId) });
    // A GitRepository on another host is left alone.
    expect(await getJson(cp, ["receivers.notification.toolkit.fluxcd.io", "-n", "flux-system", "gitlab-elsewhere"])).to.equal(undefined);

    // Flux's notification-controller would now publish the receiver's webhook path.
    await cp.runKubectl([
      "patch", "receivers.notification.toolkit.fluxcd.io", "gitlab-app", "-n", "flux-system",
      "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { webhookPath: "/hook/0123abcd" } }),
    ]);
    // agentk opens ReconcileProjects for the project (after its 10 s quiet time); KAS logs the stream.
    await kas.waitFor(/ReconcileProjects stream opened/, "KAS to hold the ReconcileProjects stream", 60_000);

    const pushedAt = Date.now();
    await git.commit(wc, { "deploy/app.yaml": "kind: ConfigMap\n" });
    await git.push(wc);
    await waitFor(() => receiverServer.hooks.length > 0, 30_000, "the Flux webhook POST");
    const hook = receiverServer.hooks[0]!;
    expect(hook).to.deep.include({ method: "POST", path: "/hook/0123abcd", body: "" });
    // A figure for the notes, not a bound: git push (client side) -> webhook received.
    console.log(`      git push -> Flux webhook: ${hook.at - pushedAt} ms`);

    const metrics = await (await fetch(`${kas.addresses.observability}/metrics`)).text();
    expect(metrics).to.match(/^flux_git_push_notifications_total [1-9]/m);
    expect(metrics).to.match(/^git_push_events_received_total\{outcome="published"\} [1-9]/m);
  });

  it("with two KAS replicas on one Redis, a push the platform reports to one reaches an agent connected to the other", async () => {
    const { cp, kas } = suite;
    // Replica B serves no platform: it reaches A's over HTTP and hears A's push events on Redis.
    const replica = await startKas({
      KAS_PLATFORM_ENABLED: "false",
      KAS_PLATFORM_URL: kas.addresses.platform!,
      KAS_API_SECRET_FILE: join(kas.dataDir, ".gitlab_kas_secret"),
      KAS_PRIVATE_API_SECRET_FILE: join(kas.dataDir, ".gitlab_kas_private_api_secret"),
      KAS_REDIS_URL: TEST_REDIS_URL,
      KAS_REDIS_KEY_PREFIX: keyPrefix,
      KAS_EXTERNAL_URL: "http://127.0.0.1",
    });
    cleanups.add(() => replica.cleanup());
    const receiverServer = await startWebhookReceiver();
    cleanups.add(() => receiverServer.close());
    const a = await createAgentWithToken(kas);
    const project = (await api(kas, "GET", `/projects/${a.projectId}`)).json;
    const wc = await git.clone(suite.repoUrl(project.path_with_namespace));
    const agentName = (await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}`)).json.name as string;
    await git.commit(wc, { [`.gitlab/agents/${agentName}/config.yaml`]: `flux:\n  webhook_receiver_url: ${receiverServer.url}\n` });
    await git.push(wc);
    const agentk = startAgentk(replica.addresses.agent, a.token, {}, ["--kubeconfig", cp.agentKubeconfigPath]);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/Flux module running/, "the Flux module to start", 60_000);

    await cp.runKubectl(["create", "namespace", "flux-replicas"]);
    await cp.runKubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "source.toolkit.fluxcd.io/v1",
        kind: "GitRepository",
        metadata: { name: "app", namespace: "flux-replicas" },
        spec: { url: `http://${new URL(kas.addresses.platform!).host}/${project.path_with_namespace}.git`, interval: "10m" },
      }),
    });
    await waitFor(async () => (await getJson(cp, ["receivers.notification.toolkit.fluxcd.io", "-n", "flux-replicas", "gitlab-app"])) !== undefined, 60_000, "Receiver gitlab-app");
    await cp.runKubectl([
      "patch", "receivers.notification.toolkit.fluxcd.io", "gitlab-app", "-n", "flux-replicas",
      "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { webhookPath: "/hook/replica" } }),
    ]);
    await replica.waitFor(/ReconcileProjects stream opened/, "replica B to hold the ReconcileProjects stream", 60_000);

    // The platform (in A's process) tells A; B's stream gets it through Redis.
    await git.commit(wc, { "deploy/app.yaml": "kind: ConfigMap\n" });
    await git.push(wc);
    await waitFor(() => receiverServer.hooks.some((h) => h.path === "/hook/replica"), 30_000, "the Flux webhook POST through replica B");
    // The agent's stream was on B only: A had no stream of this agent to deliver to itself.
    const opened = kas.output.split("\n").filter((l) => l.includes('"msg":"ReconcileProjects stream opened"') && l.includes(`"agentId":${a.agentId},`));
    expect(opened).to.deep.equal([]);
  });
});
