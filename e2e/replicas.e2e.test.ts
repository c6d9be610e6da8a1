// Three `kas` replicas on one Redis and one PostgreSQL database, agentk connected to one of them,
// a real kube-apiserver (tools/control-plane) and the real kubectl: every request, sent to each
// replica, reaches the agent, through the private API of the replica holding its tunnels when it
// is another one.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { findBinaries, startControlPlane, type ControlPlane, type RunResult } from "../tools/control-plane/control-plane.js";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { rejection, waitFor, within } from "@kasbridge/testing/wait";
import { GitClient } from "./git.test-support.js";
import { Proc, adminToken, api, createAgentWithToken, echoClient, startAgentk } from "./harness.test-support.js";
import { createWebPod, longRunningRequests, roundTrip, runWithInput, sha256, startForwardTarget, type ForwardTarget } from "./kubectl.test-support.js";
import { ReplicaSet, type Replica } from "./replicas.test-support.js";

const FORWARDED_POD_PORT = 8080;

describe("e2e: three kas replicas on Redis and PostgreSQL (routing through the private API)", function () {
  this.timeout(300_000);
  const cleanups = new Cleanup();
  const dir = mkdtempSync(join(tmpdir(), "replicas-e2e-"));
  cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
  const git = new GitClient();
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));
  const agentApiCert = selfSignedCertificateFiles(dir, "agent-api", "kas-agent-api");
  const proxyCert = selfSignedCertificateFiles(dir, "k8s-proxy", "kas-k8s-proxy");
  const set = new ReplicaSet({
    KAS_AGENT_TLS_CERT_FILE: agentApiCert.certFile,
    KAS_AGENT_TLS_KEY_FILE: agentApiCert.keyFile,
    KAS_K8S_PROXY_TLS_CERT_FILE: proxyCert.certFile,
    KAS_K8S_PROXY_TLS_KEY_FILE: proxyCert.keyFile,
  });
  let cp: ControlPlane;
  let target: ForwardTarget;
  let replicas: Replica[];
  let agent: Awaited<ReturnType<typeof createAgentWithToken>>;
  let configProjectPath: string;
  let job: { id: number; path: string };
  let jobProjectId: number;

  before(async () => {
    findBinaries();
    target = await startForwardTarget();
    cleanups.add(() => target.close());
    cp = await startControlPlane({ agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }], portForwards: [{ podPort: FORWARDED_POD_PORT, port: target.port }] });
    cleanups.add(() => cp.stop());
    await set.open();
    cleanups.add(() => set.close());
    // The first replica creates the schema and the shared secrets; then two more.
    replicas = [await set.start()];
    replicas.push(...(await Promise.all([set.start(), set.start()])));
    const [a] = replicas;
    agent = await createAgentWithToken(a!, "ha");
    configProjectPath = (await api(a!, "GET", `/projects/${agent.projectId}`)).json.path_with_namespace as string;
    const app = await api(a!, "POST", "/projects", { name: "app" });
    // The agent's configuration, pushed to the second replica (the repositories are shared).
    const u = new URL(replicas[1]!.addresses.platform!);
    const wc = await git.clone(`http://root:${adminToken}@${u.host}/${configProjectPath}.git`);
    const commit = await git.commit(wc, {
      ".gitlab/agents/ha/config.yaml": `ci_access:\n  projects:\n    - id: ${app.json.path_with_namespace}\n      default_namespace: default\n`,
    });
    await git.push(wc);
    await waitFor(
      async () => (await api(replicas[2]!, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json.config_commit_id === commit,
      undefined,
      "config accepted",
    );
    // agentk holds tunnels on the first replica only.
    const agentk = startAgentk(a!.addresses.agent, agent.token, {}, ["--kubeconfig", cp.agentKubeconfigPath, "--ca-cert-file", agentApiCert.certFile]);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/kubeconfig loaded/);
    // Every replica lists the connection (from Redis).
    for (const r of replicas) {
      await waitFor(async () => (await connections(r)).length === 1, 15_000, `agentk listed by ${r.name}`);
    }
    jobProjectId = app.json.id as number;
    const created = await api(replicas[2]!, "POST", `/projects/${app.json.id}/jobs`, {});
    expect(created.status).to.equal(201);
    job = { id: created.json.id, path: join(dir, "kubeconfig") };
    writeFileSync(job.path, created.json.kubeconfig as string, { mode: 0o600 });
    await createWebPod(cp, FORWARDED_POD_PORT);
    await cp.runKubectl(["wait", "-n", "default", "--for=jsonpath={.status.phase}=Running", "pod/web", "--timeout=60s"]);
  });

  after(() => cleanups.run());

  const connections = async (r: Replica) =>
    (await api(r, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/connections`)).json as Array<{ kas_instance: string }>;

  /** Calls the replica routed to another replica's tunnel (its kas_routing_duration_seconds count). */
  async function routedViaPeer(r: Replica): Promise<number> {
    const metrics = await (await fetch(`${r.addresses.observability}/metrics`)).text();
    const line = metrics.split("\n").find((l) => l.startsWith('kas_routing_duration_seconds_count{via="peer"}'));
    return line ? Number(line.split(" ").pop()) : 0;
  }

  /** kubectl with the CI job's KUBECONFIG, against replica `r`'s Kubernetes API proxy. */
  const kubectlArgs = (r: Replica, args: string[]) => [
    "--kubeconfig", job.path, "--server", r.addresses.k8sProxy!, "--certificate-authority", proxyCert.certFile,
    "--context", `${configProjectPath}:ha`, ...args,
  ];
  function kubectl(r: Replica, args: string[], env: Record<string, string> = {}): Promise<RunResult> {
    return runWithInput(cp.kubectl, kubectlArgs(r, args), undefined, { KUBECACHEDIR: join(dir, "kube-cache"), ...env });
  }
  function startKubectl(r: Replica, args: string[], env: Record<string, string> = {}): Proc {
    const child = spawn(cp.kubectl, kubectlArgs(r, args), { env: { ...process.env, KUBECACHEDIR: join(dir, "kube-cache"), ...env }, stdio: ["pipe", "pipe", "pipe"] });
    const k = new Proc(child);
    cleanups.add(() => k.stop("SIGKILL"));
    return k;
  }

  it("holds the agent's tunnels on one replica and lists its connection on every replica", async () => {
    const listed = await Promise.all(replicas.map(connections));
    for (const l of listed) expect(l.map((c) => c.kas_instance)).to.deep.equal(listed[0]!.map((c) => c.kas_instance));
    expect(replicas[0]!.output).to.match(/"kasInstance":"([^"]+)"/);
  });

  it("serves unary and streaming calls sent to every replica", async () => {
    for (const r of replicas) {
      const echo = echoClient(r, agent.agentId);
      try {
        const reply = await echo.client.echo({ payload: new TextEncoder().encode(r.name) });
        expect(new TextDecoder().decode(reply.payload)).to.equal(r.name);
        let bytes = 0;
        for await (const m of echo.client.serverStream({ count: 100, size: 32 * 1024 })) bytes += m.payload.byteLength;
        expect(bytes, r.name).to.equal(100 * 32 * 1024);
        const words = (async function* () {
          for (const w of ["x", "y"]) yield { payload: new TextEncoder().encode(w) };
        })();
        const echoed: string[] = [];
        for await (const m of echo.client.bidi(words)) echoed.push(new TextDecoder().decode(m.payload));
        expect(echoed, r.name).to.deep.equal(["x", "y"]);
        const err = await rejection(echo.client.fail({ code: Code.PermissionDenied, message: `denied via ${r.name}` }));
        expect([err.code, err.rawMessage]).to.deep.equal([Code.PermissionDenied, `denied via ${r.name}`]);
      } finally {
        echo.close();
      }
    }
  });

  it("kubectl get, apply and a watch through each replica", async () => {
    const watching = await longRunningRequests(cp, "WATCH", "configmaps");
    const watch = startKubectl(replicas[2]!, ["get", "configmaps", "-n", "default", "-w", "-o", "name", "--output-watch-events"]);
    await waitFor(async () => (await longRunningRequests(cp, "WATCH", "configmaps")) === watching + 1, 30_000, "the watch open at the API server");
    for (const r of replicas) {
      const ns = await kubectl(r, ["get", "ns", "-o", "name"]);
      expect(ns.code, `${r.name}: ${ns.stderr}`).to.equal(0);
      expect(ns.stdout).to.include("namespace/default");
      const apply = await kubectl(r, ["create", "configmap", `via-${r.name}`, "--from-literal=a=1"]);
      expect(apply.code, `${r.name}: ${apply.stderr}`).to.equal(0);
    }
    for (const r of replicas) await watch.waitFor(new RegExp(`configmap/via-${r.name}`), `the watch's event for ${r.name}`);
    // The replicas without tunnels found them on the first one (routing metrics).
    for (const r of replicas.slice(1)) expect(await routedViaPeer(r), r.name).to.be.greaterThan(0);
    expect(await routedViaPeer(replicas[0]!)).to.equal(0);
  });

  it("logs -f, exec and port-forward through replicas without the agent's tunnels", async () => {
    const [, b, c] = replicas;
    await cp.appendPodLog("first line");
    const logs = startKubectl(b!, ["logs", "-f", "web"]);
    await logs.waitFor(/first line/, "first log line");
    await cp.appendPodLog("appended while following");
    await logs.waitFor(/appended while following/, "followed log line");
    logs.child.kill("SIGTERM");

    for (const env of [{}, { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: "false" }] as Array<Record<string, string>>) {
      const exec = await kubectl(c!, ["exec", "web", "--", "echo", "exec through kas-3"], env);
      expect(exec.code, exec.stderr).to.equal(0);
      expect(exec.stdout.trim()).to.equal("exec through kas-3");
    }

    for (const env of [{}, { KUBECTL_PORT_FORWARD_WEBSOCKETS: "false" }] as Array<Record<string, string>>) {
      const pf = startKubectl(b!, ["port-forward", "pod/web", `:${FORWARDED_POD_PORT}`], env);
      const localPort = Number((await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+)/, "port-forward listening"))[1]);
      const payload = randomBytes(256 * 1024);
      const received = await roundTrip(localPort, payload, target.banner.length + payload.length);
      expect(received.subarray(0, target.banner.length).toString()).to.equal(target.banner);
      expect(sha256(received.subarray(target.banner.length))).to.equal(sha256(payload));
      pf.child.kill("SIGTERM");
      await pf.exited;
    }
  });

  /** The replica's open tunnels (idle and busy), from its metrics. */
  async function openTunnels(r: Replica): Promise<number> {
    const metrics = await (await fetch(`${r.addresses.observability}/metrics`)).text();
    return metrics
      .split("\n")
      .filter((l) => l.startsWith("kas_tunnels{"))
      .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
  }

  it("a configuration pushed to one replica reaches an agent connected to another", async () => {
    const [a, b] = replicas;
    const other = await createAgentWithToken(a!, "elsewhere");
    const project = (await api(a!, "GET", `/projects/${other.projectId}`)).json.path_with_namespace as string;
    const agentk = startAgentk(b!.addresses.agent, other.token, {}, ["--ca-cert-file", agentApiCert.certFile]);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/applied agent configuration/);
    const wc = await git.clone(`http://root:${adminToken}@${new URL(a!.addresses.platform!).host}/${project}.git`);
    const commit = await git.commit(wc, { ".gitlab/agents/elsewhere/config.yaml": "observability:\n  logging:\n    level: debug\n" });
    await git.push(wc);
    await agentk.waitFor(new RegExp(`"commitId":"${commit}"[^\\n]*applied agent configuration|applied agent configuration[^\\n]*"commitId":"${commit}"`), "the pushed config applied");
  });

  it("revoking a token on one replica closes its agent's tunnels on another (events on Redis)", async () => {
    const [a, , c] = replicas;
    const other = await createAgentWithToken(a!, "revoked");
    const agentk = startAgentk(c!.addresses.agent, other.token, {}, ["--ca-cert-file", agentApiCert.certFile]);
    cleanups.add(() => agentk.cleanup());
    await waitFor(async () => (await openTunnels(c!)) > 0, 15_000, "the agent's tunnels on kas-3");
    const res = await api(a!, "DELETE", `/projects/${other.projectId}/cluster_agents/${other.agentId}/tokens/${other.tokenId}`);
    expect(res.status).to.equal(204);
    // How fast (bench: "revocation on another replica -> tunnels closed").
    await waitFor(async () => (await openTunnels(c!)) === 0, 10_000, "kas-3 to close the revoked token's tunnels");
    await agentk.waitFor(/KAS rejected the agent token/);
    await waitFor(async () => (await api(a!, "GET", `/projects/${other.projectId}/cluster_agents/${other.agentId}/connections`)).json.length === 0, undefined, "the connection gone from every listing");
  });

  it("a CI job finished on one replica ends its watch on another", async () => {
    const [a, b] = replicas;
    const created = await api(a!, "POST", `/projects/${jobProjectId}/jobs`, {});
    const path = join(dir, `kubeconfig-${created.json.id}`);
    writeFileSync(path, created.json.kubeconfig as string, { mode: 0o600 });
    const args = ["--kubeconfig", path, "--server", b!.addresses.k8sProxy!, "--certificate-authority", proxyCert.certFile, "--context", `${configProjectPath}:ha`];
    const child = spawn(cp.kubectl, [...args, "get", "configmaps", "-w", "-o", "name", "--request-timeout=0"], { env: { ...process.env, KUBECACHEDIR: join(dir, "kube-cache") }, stdio: ["ignore", "pipe", "pipe"] });
    const watch = new Proc(child);
    cleanups.add(() => watch.stop("SIGKILL"));
    await watch.waitFor(/configmap\//, "the watch's first list");
    const finished = await api(a!, "POST", `/projects/${jobProjectId}/jobs/${created.json.id}/finish`, {});
    expect(finished.status).to.equal(200);
    // kubectl's watch ends when kas-2 closes the request of the finished job.
    await within(15_000, watch.exited, "the watch to end");
  });

});
