// The Kubernetes API proxy end to end: real `kas` and `agentk` processes, a real kube-apiserver
// with RBAC (tools/control-plane, `npm run control-plane`) and the real kubectl, driven with the
// KUBECONFIG a CI job gets from the platform.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { KWOK_NODE_NAME, findBinaries, startControlPlane, type ControlPlane, type RunResult } from "../tools/control-plane/control-plane.js";
import { GitClient } from "./git.js";
import { adminToken, api, createAgentWithToken, delay, startAgentk, startKas, waitUntil } from "./harness.js";

describe("e2e: Kubernetes API proxy (kubectl -> kas -> agentk -> kube-apiserver)", function () {
  this.timeout(300_000);
  let cp: ControlPlane;
  let kas: Awaited<ReturnType<typeof startKas>>;
  let agentk: ReturnType<typeof startAgentk>;
  const git = new GitClient();
  const dir = mkdtempSync(join(tmpdir(), "kubeproxy-e2e-"));
  const certFile = join(dir, "tls.crt");
  const keyFile = join(dir, "tls.key");
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  let agent: Awaited<ReturnType<typeof createAgentWithToken>>;
  let configProjectPath: string;
  const projects: Record<string, { id: number; path: string }> = {};

  before(async () => {
    findBinaries(); // throws "... Run `npm run control-plane` ..." when the binaries are missing
    const t0 = Date.now();
    // The agent's own identity may do everything (access_as: agent); impersonated users get only
    // what RoleBindings grant them.
    const agentRules = [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }];
    // kwok is required (logs/exec need its kubelet); a failure to start it fails the suite.
    cp = await startControlPlane({ agentRules });
    process.stdout.write(`      control plane ready in ${Date.now() - t0} ms\n`);
    // kubectl sends bearer tokens only over TLS: the proxy serves the agent API's certificate.
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", keyFile, "-out", certFile,
    ], { stdio: "pipe" });
    kas = await startKas({ KAS_AGENT_TLS_CERT_FILE: certFile, KAS_AGENT_TLS_KEY_FILE: keyFile });
    agent = await createAgentWithToken(kas, "prod");
    configProjectPath = (await api(kas, "GET", `/projects/${agent.projectId}`)).json.path_with_namespace as string;
    for (const name of ["app", "jobid", "stranger"]) {
      const p = await api(kas, "POST", "/projects", { name });
      expect(p.status).to.equal(201);
      projects[name] = { id: p.json.id as number, path: p.json.path_with_namespace as string };
    }
    // The agent's config, pushed over git: `app` as the agent, `jobid` as the CI job.
    const u = new URL(kas.addresses.platform!);
    const wc = await git.clone(`http://root:${adminToken}@${u.host}/${configProjectPath}.git`);
    const commit = await git.commit(wc, {
      ".gitlab/agents/prod/config.yaml":
        `ci_access:\n  projects:\n    - id: ${projects.app!.path}\n      default_namespace: default\n` +
        `    - id: ${projects.jobid!.path}\n      access_as:\n        ci_job: {}\n`,
    });
    await git.push(wc);
    await waitUntil(
      async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json.config_commit_id === commit,
      10_000,
      "config accepted",
    );
    agentk = startAgentk(kas.addresses.agent, agent.token, {}, ["--kubeconfig", cp.agentKubeconfigPath, "--ca-cert-file", certFile]);
    await agentk.waitFor(/kubeconfig loaded/);
    await delay(500); // tunnels
  });

  after(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await agentk?.cleanup();
    await kas?.cleanup();
    await cp?.stop();
    rmSync(dir, { recursive: true, force: true });
    rmSync(git.home, { recursive: true, force: true });
  });

  const addresses = () => kas.addresses as typeof kas.addresses & { k8sProxy: string };

  async function startJob(project: string): Promise<{ id: number; token: string; kubeconfig: string | null; path?: string }> {
    const r = await api(kas, "POST", `/projects/${projects[project]!.id}/jobs`, {});
    expect(r.status, JSON.stringify(r.json)).to.equal(201);
    const job = r.json as { id: number; token: string; kubeconfig: string | null; path?: string };
    if (job.kubeconfig) {
      job.path = join(dir, `kubeconfig-${job.id}`);
      writeFileSync(job.path, job.kubeconfig, { mode: 0o600 });
    }
    return job;
  }

  const context = () => `${configProjectPath}:prod`;
  function kubectl(kubeconfig: string, args: string[], input?: string): Promise<RunResult> {
    return cp.runKubectl(["--certificate-authority", certFile, "--context", context(), ...args], { kubeconfig, allowFailure: true, input, timeoutMs: 60_000 });
  }
  /** kubectl against the proxy with a hand-made token (no kubeconfig from the platform). */
  function kubectlWithToken(token: string, args: string[]): Promise<RunResult> {
    const empty = join(dir, "empty-kubeconfig");
    writeFileSync(empty, "apiVersion: v1\nkind: Config\n");
    return cp.runKubectl(["--server", addresses().k8sProxy, "--certificate-authority", certFile, "--token", token, ...args], { kubeconfig: empty, allowFailure: true, timeoutMs: 60_000 });
  }

  it("lists, applies, watches and deletes through the proxy with a CI job's KUBECONFIG", async () => {
    expect(addresses().k8sProxy).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
    const job = await startJob("app");
    expect(job.kubeconfig).to.include(addresses().k8sProxy).and.include(`ci:${agent.agentId}:`);

    const t0 = Date.now();
    const ns = await kubectl(job.path!, ["get", "ns", "-o", "name"]);
    expect(ns.code, ns.stderr).to.equal(0);
    expect(ns.stdout).to.include("namespace/default").and.include("namespace/kube-system");
    process.stdout.write(`      kubectl get ns through the proxy: ${Date.now() - t0} ms (process start included)\n`);

    // A watch, opened before the changes it must see.
    const watch = spawn(cp.kubectl, ["--kubeconfig", job.path!, "--certificate-authority", certFile, "--context", context(), "get", "configmaps", "-n", "default", "-w", "-o", "name", "--output-watch-events"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let watched = "";
    watch.stdout.on("data", (d: Buffer) => (watched += d.toString()));
    watch.stderr.on("data", (d: Buffer) => (watched += d.toString()));
    cleanups.push(() => watch.kill("SIGKILL"));
    await delay(1000);

    const apply = await kubectl(job.path!, ["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "from-ci", namespace: "default" }, data: { a: "1" } }));
    expect(apply.code, apply.stderr).to.equal(0);
    expect(apply.stdout).to.include("configmap/from-ci created");
    const got = await kubectl(job.path!, ["get", "configmap", "from-ci", "-o", "jsonpath={.data.a}"]);
    expect(got.stdout).to.equal("1");
    const del = await kubectl(job.path!, ["delete", "configmap", "from-ci"]);
    expect(del.code, del.stderr).to.equal(0);
    // One line per event (ADDED, then DELETED; -o name prints no event type).
    await waitUntil(() => (watched.match(/configmap\/from-ci/g)?.length ?? 0) >= 2, 10_000, `watch events (${watched})`);
    watch.kill("SIGTERM");

    // The audit log names the job and the agent, never the token.
    expect(kas.output).to.match(new RegExp(`"caller":"ci_job","jobId":${job.id}.*"agentId":${agent.agentId}.*"k8s proxy request"`));
    expect(kas.output).to.not.include(job.token);
  });

  it("measures: GET latency through the proxy vs straight to the API server (keep-alive, sequential)", async () => {
    const job = await startJob("app");
    const ca = readFileSync(certFile);
    const viaProxy = await timeGets(`${addresses().k8sProxy}/api/v1/namespaces/default`, `ci:${agent.agentId}:${job.token}`, ca);
    const direct = await timeGets(`${cp.apiServerUrl}/api/v1/namespaces/default`, cp.agentToken, readFileSync(cp.caCertPath));
    process.stdout.write(
      `      GET namespace x${viaProxy.n}: proxy p50 ${viaProxy.p50.toFixed(2)} ms p95 ${viaProxy.p95.toFixed(2)} ms; ` +
        `direct p50 ${direct.p50.toFixed(2)} ms p95 ${direct.p95.toFixed(2)} ms\n`,
    );
    expect(viaProxy.p50).to.be.lessThan(100);
  });

  it("refuses unauthorized projects, forged and finished tokens, and client impersonation", async () => {
    const stranger = await startJob("stranger");
    expect(stranger.kubeconfig).to.equal(null);
    const refused = await kubectlWithToken(`ci:${agent.agentId}:${stranger.token}`, ["get", "ns"]);
    expect(refused.code).to.not.equal(0);
    expect(refused.stderr).to.match(/GitLab Agent Server: forbidden: project \d+ .*may not use agent/);

    const forged = await kubectlWithToken(`ci:${agent.agentId}:glcbt-forged-0000000000000000000`, ["get", "ns"]);
    expect(forged.stderr).to.match(/Unauthorized|GitLab Agent Server: unauthorized/);

    const job = await startJob("app");
    expect((await kubectl(job.path!, ["get", "ns"])).code).to.equal(0);
    const impersonating = await kubectl(job.path!, ["get", "ns", "--as", "system:admin"]);
    expect(impersonating.code).to.not.equal(0);
    expect(impersonating.stderr).to.include("GitLab Agent Server: impersonation is not allowed");

    const finish = await api(kas, "POST", `/projects/${projects.app!.id}/jobs/${job.id}/finish`, {});
    expect(finish.status).to.equal(200);
    const stoppedAfter = await waitUntil(async () => (await kubectl(job.path!, ["get", "ns"])).code !== 0, 15_000, "finished token refused");
    process.stdout.write(`      finished job's token refused after ${stoppedAfter} ms\n`);
    const after = await kubectl(job.path!, ["get", "ns"]);
    expect(after.stderr).to.match(/Unauthorized|unauthorized/);
  });

  it("access_as ci_job: cluster RBAC for gitlab:project:<id> decides (one namespace only)", async () => {
    await cp.runKubectl(["create", "namespace", "team-a"]);
    const job = await startJob("jobid");
    expect(job.kubeconfig).to.include(context());

    const whoami = JSON.parse((await kubectl(job.path!, ["auth", "whoami", "-o", "json"])).stdout);
    expect(whoami.status.userInfo.username).to.equal(`gitlab:ci_job:${job.id}`);
    expect(whoami.status.userInfo.groups).to.include.members(["gitlab:ci_job", `gitlab:project:${projects.jobid!.id}`]);
    expect(whoami.status.userInfo.extra["agent.gitlab.com/ci_job_id"]).to.deep.equal([String(job.id)]);
    const before = await kubectl(job.path!, ["get", "configmaps", "-n", "team-a"]);
    expect(before.code).to.not.equal(0);
    expect(before.stderr).to.include(`User "gitlab:ci_job:${job.id}" cannot list resource "configmaps"`);

    // An explicit Role: the aggregated "edit" ClusterRole stays empty without kube-controller-manager.
    await cp.runKubectl(["create", "role", "cm-edit", "-n", "team-a", "--verb", "get,list,watch,create,update,delete", "--resource", "configmaps"]);
    await cp.runKubectl(["create", "rolebinding", "ci-edit", "-n", "team-a", "--role", "cm-edit", "--group", `gitlab:project:${projects.jobid!.id}`]);
    let last: RunResult | undefined;
    await waitUntil(async () => (last = await kubectl(job.path!, ["get", "configmaps", "-n", "team-a"])).code === 0, 10_000, "RoleBinding effective").catch((e: Error) => {
      throw new Error(`${e.message}: ${last?.stderr}\n${agentk.output.slice(-2000)}`);
    });
    const create = await kubectl(job.path!, ["create", "configmap", "by-job", "-n", "team-a", "--from-literal", "k=v"]);
    expect(create.code, create.stderr).to.equal(0);
    const other = await kubectl(job.path!, ["get", "configmaps", "-n", "default"]);
    expect(other.code).to.not.equal(0);
    expect(other.stderr).to.include("forbidden");
    const cm = JSON.parse((await cp.runKubectl(["get", "configmap", "by-job", "-n", "team-a", "-o", "json"])).stdout);
    expect(cm.data).to.deep.equal({ k: "v" });
  });

  it("follows logs and execs (WebSocket and SPDY upgrades) through the proxy (kwok pod)", async () => {
    expect(cp.kwokRunning, "kwok must be running for logs/exec").to.equal(true);
    const job = await startJob("app");
    await cp.runKubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: "web", namespace: "default" },
        spec: { nodeName: KWOK_NODE_NAME, containers: [{ name: "web", image: "registry.example/web:1", ports: [{ containerPort: 8080 }] }] },
      }),
    });
    await cp.runKubectl(["wait", "-n", "default", "--for=jsonpath={.status.phase}=Running", "pod/web", "--timeout=60s"]);

    // logs -f: a line appended later arrives on the open stream.
    await cp.appendPodLog("first line");
    const logs = spawn(cp.kubectl, ["--kubeconfig", job.path!, "--certificate-authority", certFile, "--context", context(), "logs", "-f", "web"], { stdio: ["ignore", "pipe", "pipe"] });
    let logged = "";
    logs.stdout.on("data", (d: Buffer) => (logged += d.toString()));
    logs.stderr.on("data", (d: Buffer) => (logged += d.toString()));
    cleanups.push(() => logs.kill("SIGKILL"));
    await waitUntil(() => logged.includes("first line"), 15_000, `first log line (${logged})`);
    await cp.appendPodLog("appended while following");
    await waitUntil(() => logged.includes("appended while following"), 10_000, `followed log line (${logged})`);
    logs.kill("SIGTERM");

    const exec = await kubectl(job.path!, ["exec", "web", "--", "echo", "exec through kas"]);
    expect(exec.code, exec.stderr).to.equal(0);
    expect(exec.stdout.trim()).to.equal("exec through kas");
    // The same over SPDY/3.1 (kubectl's pre-WebSocket protocol, still what older clients use).
    const spdy = await run(cp.kubectl, ["--kubeconfig", job.path!, "--certificate-authority", certFile, "--context", context(), "exec", "web", "--", "echo", "spdy through kas"], {
      KUBECTL_REMOTE_COMMAND_WEBSOCKETS: "false",
    });
    expect(spdy.code, spdy.stderr).to.equal(0);
    expect(spdy.stdout.trim()).to.equal("spdy through kas");
    expect(kas.count(/"path":"\/api\/v1\/namespaces\/default\/pods\/web\/exec","status":101/)).to.be.at.least(2);
  });
});

function run(cmd: string, args: string[], env: Record<string, string>): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** Sequential GETs over one keep-alive HTTPS/1.1 connection; latency percentiles in ms. */
async function timeGets(url: string, token: string, ca: Buffer, n = 200): Promise<{ n: number; p50: number; p95: number }> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
  const times: number[] = [];
  try {
    for (let i = 0; i < n + 20; i++) {
      const t0 = process.hrtime.bigint();
      await new Promise<void>((resolve, reject) => {
        https
          .get(url, { agent, headers: { authorization: `Bearer ${token}`, accept: "application/json" } }, (res) => {
            res.resume();
            res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
          })
          .on("error", reject);
      });
      if (i >= 20) times.push(Number(process.hrtime.bigint() - t0) / 1e6); // 20 warm-up requests
    }
  } finally {
    agent.destroy();
  }
  times.sort((a, b) => a - b);
  return { n, p50: times[Math.floor(n * 0.5)]!, p95: times[Math.floor(n * 0.95)]! };
}
