// The Kubernetes API proxy end to end: real `kas` and `agentk` processes, a real kube-apiserver
// with RBAC and kwok's simulated kubelet (tools/control-plane, `npm run control-plane`) and the
// real kubectl, driven with the KUBECONFIG a CI job gets from the platform. The proxy has its own
// certificate and serves under a path prefix, as behind a reverse proxy. What kwok cannot do
// (stdin EOF, exit codes, the pty's last output) is explained where a test works around it.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import { findBinaries, startControlPlane, type ControlPlane, type RunResult } from "../tools/control-plane/control-plane.js";
import { GitClient } from "./git.test-support.js";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { Proc, adminToken, api, createAgentWithToken, startAgentk, startKas } from "./harness.test-support.js";
import { createWebPod, longRunningRequests, roundTrip, runWithInput, sha256, startForwardTarget, type ForwardTarget } from "./kubectl.test-support.js";

/**
 * How long the long-watch test keeps a watch idle before it must still deliver an event: longer
 * than every timeout on the path (see that test). It runs alongside the other tests, so only
 * what they leave of it is spent waiting.
 */
const IDLE_WATCH_MS = 65_000;
/** The pod port kwok's port-forward connects to the test's own TCP server (`target`). */
const FORWARDED_POD_PORT = 8080;

describe("e2e: Kubernetes API proxy (kubectl -> kas -> agentk -> kube-apiserver)", function () {
  this.timeout(300_000);
  let cp: ControlPlane;
  let kas: Awaited<ReturnType<typeof startKas>>;
  let agentk: ReturnType<typeof startAgentk>;
  // Released last to first, each step even when another throws: no etcd, kube-apiserver, kwok,
  // kas or agentk is left running by a failing step.
  const cleanups = new Cleanup();
  const git = new GitClient();
  const dir = mkdtempSync(join(tmpdir(), "kubeproxy-e2e-"));
  cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));
  // Separate certificates: the agent API's (agentk trusts it) and the proxy's (kubectl trusts it).
  const agentApiCert = selfSignedCertificateFiles(dir, "agent-api", "kas-agent-api");
  const { certFile, keyFile } = selfSignedCertificateFiles(dir, "k8s-proxy", "kas-k8s-proxy");
  /** Where kwok forwards pod port FORWARDED_POD_PORT: greets with a banner, then echoes. */
  let target: ForwardTarget;
  const idleWatches: Array<{ name: string; watch: Proc; since: number }> = [];
  let agent: Awaited<ReturnType<typeof createAgentWithToken>>;
  let configProjectPath: string;
  const projects: Record<string, { id: number; path: string }> = {};

  before(async () => {
    findBinaries(); // throws "... Run `npm run control-plane` ..." when the binaries are missing
    // The agent's own identity may do everything (access_as: agent); impersonated users get only
    // what RoleBindings grant them.
    const agentRules = [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }];
    target = await startForwardTarget();
    cleanups.add(() => target.close());
    // kwok is required (logs/exec/attach/port-forward need its kubelet); a failure to start it fails the suite.
    cp = await startControlPlane({ agentRules, portForwards: [{ podPort: FORWARDED_POD_PORT, port: target.port }] });
    cleanups.add(() => cp.stop());
    // kubectl sends bearer tokens only over TLS: the proxy has its own certificate.
    kas = await startKas({
      KAS_AGENT_TLS_CERT_FILE: agentApiCert.certFile,
      KAS_AGENT_TLS_KEY_FILE: agentApiCert.keyFile,
      KAS_K8S_PROXY_TLS_CERT_FILE: certFile,
      KAS_K8S_PROXY_TLS_KEY_FILE: keyFile,
      // As behind a reverse proxy that forwards one path of its host: kubectl's server URL has a path.
      KAS_K8S_PROXY_URL_PATH_PREFIX: "/-/k8s-proxy/",
    });
    cleanups.add(() => kas.cleanup());
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
    await waitFor(
      async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json.config_commit_id === commit,
      undefined,
      "config accepted",
    );
    agentk = startAgentk(kas.addresses.agent, agent.token, {}, ["--kubeconfig", cp.agentKubeconfigPath, "--ca-cert-file", agentApiCert.certFile]);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/kubeconfig loaded/);
    await waitFor(
      async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/connections`)).json.length === 1,
      15_000,
      "agentk connected",
    );

    // The pod of the logs/exec/attach/cp/port-forward tests, on kwok's node.
    await createWebPod(cp, FORWARDED_POD_PORT);

    // Watches that stay idle while the other tests run (checked by the last test), over HTTP/2
    // (kubectl's default with TLS) and over HTTP/1.1.
    await cp.runKubectl(["create", "namespace", "idle"]);
    const job = await startJob("app");
    const watching = await longRunning("WATCH", "configmaps");
    for (const [name, env] of [["HTTP/2", {}], ["HTTP/1.1", { DISABLE_HTTP2: "1" }]] as const) {
      const watch = startKubectl(job.path!, ["get", "configmaps", "-n", "idle", "-w", "-o", "name", "--output-watch-events", "--request-timeout=0"], env);
      idleWatches.push({ name, watch, since: Date.now() });
    }
    // Both watches are open at the API server (kubectl prints nothing for an empty namespace).
    await upstreamOpen("WATCH", "configmaps", "", watching + 2);
  });

  after(() => cleanups.run());

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

  /** A long-running kubectl (watch, logs -f, attach, port-forward, proxy) with the job's KUBECONFIG; killed after the suite. */
  function startKubectl(kubeconfig: string, args: string[], env: Record<string, string> = {}): Proc {
    const child = spawn(cp.kubectl, ["--kubeconfig", kubeconfig, "--certificate-authority", certFile, "--context", context(), ...args], {
      env: { ...process.env, KUBECACHEDIR: join(dir, "kube-cache"), ...env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const k = new Proc(child);
    cleanups.add(() => k.stop("SIGKILL"));
    return k;
  }
  function kubectl(kubeconfig: string, args: string[], input?: string, env?: Record<string, string>): Promise<RunResult> {
    if (env) return run(cp.kubectl, ["--kubeconfig", kubeconfig, "--certificate-authority", certFile, "--context", context(), ...args], env);
    return cp.runKubectl(["--certificate-authority", certFile, "--context", context(), ...args], { kubeconfig, allowFailure: true, input, timeoutMs: 60_000 });
  }

  /** The audit line of an upgraded request is written when its connection ends. */
  const auditedUpgrades = (subresource: string, atLeast: number) =>
    waitFor(() => kas.count(new RegExp(`"path":"/api/v1/namespaces/default/pods/web/${subresource}","status":101`)) >= atLeast, 10_000, `${atLeast} audited ${subresource} upgrades`);

  /** The API server's count of its open long-running requests (watches, upgrades) of one kind. */
  const longRunning = (verb: string, resource: string, subresource = "") => longRunningRequests(cp, verb, resource, subresource);
  /** Waits until the API server counts `count` open long-running requests of the kind. */
  const upstreamOpen = (verb: string, resource: string, subresource: string, count: number) =>
    waitFor(async () => (await longRunning(verb, resource, subresource)) === count, 30_000, `${count} open ${verb} ${resource}/${subresource} at the API server`);
  /** When a client goes away, the agent ends its request to the API server too (nothing leaks). */
  const upstreamGone = upstreamOpen;

  const podRunning = () => cp.runKubectl(["wait", "-n", "default", "--for=jsonpath={.status.phase}=Running", "pod/web", "--timeout=60s"]);
  /** kubectl against the proxy with a hand-made token (no kubeconfig from the platform). */
  function kubectlWithToken(token: string, args: string[]): Promise<RunResult> {
    const empty = join(dir, "empty-kubeconfig");
    writeFileSync(empty, "apiVersion: v1\nkind: Config\n");
    return cp.runKubectl(["--server", addresses().k8sProxy, "--certificate-authority", certFile, "--token", token, ...args], { kubeconfig: empty, allowFailure: true, timeoutMs: 60_000 });
  }

  it("lists, applies, watches and deletes through the proxy with a CI job's KUBECONFIG", async () => {
    expect(addresses().k8sProxy).to.match(/^https:\/\/127\.0\.0\.1:\d+\/-\/k8s-proxy$/);
    const job = await startJob("app");
    expect(job.kubeconfig).to.include(addresses().k8sProxy).and.include(`ci:${agent.agentId}:`);

    const ns = await kubectl(job.path!, ["get", "ns", "-o", "name"]);
    expect(ns.code, ns.stderr).to.equal(0);
    expect(ns.stdout).to.include("namespace/default").and.include("namespace/kube-system");

    // A watch, open at the API server before the changes it must see.
    const watching = await longRunning("WATCH", "configmaps");
    const watch = startKubectl(job.path!, ["get", "configmaps", "-n", "default", "-w", "-o", "name", "--output-watch-events"]);
    await upstreamOpen("WATCH", "configmaps", "", watching + 1);

    const apply = await kubectl(job.path!, ["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "from-ci", namespace: "default" }, data: { a: "1" } }));
    expect(apply.code, apply.stderr).to.equal(0);
    expect(apply.stdout).to.include("configmap/from-ci created");
    const got = await kubectl(job.path!, ["get", "configmap", "from-ci", "-o", "jsonpath={.data.a}"]);
    expect(got.stdout).to.equal("1");
    const del = await kubectl(job.path!, ["delete", "configmap", "from-ci"]);
    expect(del.code, del.stderr).to.equal(0);
    // One line per event (ADDED, then DELETED; -o name prints no event type).
    await waitFor(() => (watch.output.match(/configmap\/from-ci/g)?.length ?? 0) >= 2, undefined, "the watch's ADDED and DELETED events").catch((e: Error) => {
      throw new Error(`${e.message}; the watch printed: ${watch.output}`);
    });
    watch.child.kill("SIGTERM");

    // The audit log names the job and the agent, never the token.
    expect(kas.output).to.match(new RegExp(`"caller":"ci_job","jobId":${job.id}.*"agentId":${agent.agentId}.*"k8s proxy request"`));
    expect(kas.output).to.not.include(job.token);
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
    await waitFor(async () => (await kubectl(job.path!, ["get", "ns"])).code !== 0, 15_000, "finished token refused");
    const after = await kubectl(job.path!, ["get", "ns"]);
    expect(after.stderr).to.match(/Unauthorized|unauthorized/);

    // The audit trail has each of them: who, which agent, as whom, what, the answer; never a token.
    type Entry = { actor: Record<string, unknown>; impersonated: { username: string } | null; request: { verb: string; resource: string; status: number }; agent_id: number };
    const entries = async (query: string) => (await api(kas, "GET", `/kubernetes_audit_events?per_page=100&${query}`)).json as Entry[];
    let mine: Entry[] = [];
    await waitFor(async () => (mine = await entries(`job_id=${job.id}`)).some((e) => e.request.status === 400), 15_000, "the job's requests in the audit trail");
    const allowed = mine.find((e) => e.request.status === 200 && e.request.resource === "namespaces")!;
    expect(allowed.actor).to.deep.include({ kind: "ci_job", job_id: job.id, project_id: projects.app!.id, username: "root" });
    expect(allowed).to.deep.include({ agent_id: agent.agentId });
    expect(allowed.request.verb).to.equal("list");
    const refusedEntries = await entries(`agent_id=${agent.agentId}&status=401`);
    expect(refusedEntries.some((e) => e.actor.kind === "refused" && e.actor.credential === "ci")).to.equal(true);
    expect((await entries(`agent_id=${agent.agentId}&status=403`)).length).to.be.greaterThan(0);
    const everything = JSON.stringify(await entries(`agent_id=${agent.agentId}`));
    for (const secret of [job.token, stranger.token, "glcbt-forged"]) expect(everything).to.not.include(secret);
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
    await waitFor(async () => (last = await kubectl(job.path!, ["get", "configmaps", "-n", "team-a"])).code === 0, 30_000, "RoleBinding effective").catch((e: Error) => {
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

  it("follows logs and execs (WebSocket and SPDY upgrades; stdout, stderr, exit code) through the proxy (kwok pod)", async () => {
    expect(cp.kwokRunning, "kwok must be running for logs/exec").to.equal(true);
    const job = await startJob("app");
    await podRunning();

    // logs -f: a line appended later arrives on the open stream.
    await cp.appendPodLog("first line");
    const logs = startKubectl(job.path!, ["logs", "-f", "web"]);
    await logs.waitFor(/first line/, "first log line");
    await cp.appendPodLog("appended while following");
    await logs.waitFor(/appended while following/, "followed log line");
    logs.child.kill("SIGTERM");

    const exec = await kubectl(job.path!, ["exec", "web", "--", "echo", "exec through kas"]);
    expect(exec.code, exec.stderr).to.equal(0);
    expect(exec.stdout.trim()).to.equal("exec through kas");
    // The same over SPDY/3.1 (kubectl's pre-WebSocket protocol, still what older clients use).
    const spdy = await kubectl(job.path!, ["exec", "web", "--", "echo", "spdy through kas"], undefined, { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: "false" });
    expect(spdy.code, spdy.stderr).to.equal(0);
    expect(spdy.stdout.trim()).to.equal("spdy through kas");
    // stdout, stderr and the failure (the error channel's Status) come back apart. kwok v0.8.0
    // wraps the command's exit error (`cmd wait: …: exit status 3`), so the Status says
    // InternalError with that text, not NonZeroExitCode: kubectl exits 1, not 3.
    for (const env of [{}, { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: "false" }] as Array<Record<string, string>>) {
      const failed = await kubectl(job.path!, ["exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], undefined, env);
      expect(failed.code, failed.stderr).to.equal(1);
      expect(failed.stdout).to.equal("out\n");
      expect(failed.stderr).to.match(/^err\n/).and.include("exit status 3");
    }
    await auditedUpgrades("exec", 2);
  });

  it("exec -it: a terminal of the client's size, input and output (kwok runs the command on a pty)", async () => {
    const job = await startJob("app");
    await podRunning();
    // `script` gives kubectl a terminal (33 rows, 101 columns); kubectl sends its size on the
    // resize channel (kwok applies it concurrently with the start of the command: the command
    // polls for it), and the line typed in it on stdin. kwok v0.8.0 closes the pty as soon as the
    // command exits, racing its own copy of the last output (seen over SPDY straight to the API
    // server too): the command lingers half a second after its last line.
    const remote = 'read line; for i in $(seq 50); do size=$(stty size); [ "$size" != "0 0" ] && break; sleep 0.1; done; echo size:$size; echo got:$line; sleep 0.5';
    const command = [cp.kubectl, "--kubeconfig", job.path!, "--certificate-authority", certFile, "--context", `'${context()}'`, "exec", "-it", "web", "--", "sh", "-c", `'${remote}'`].join(" ");
    for (const [protocol, env] of [["WebSocket", {}], ["SPDY", { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: "false" }]] as const) {
      const r = await runWithInput("script", ["-qec", `stty rows 33 cols 101; ${command}`, "/dev/null"], "typed in a terminal\n", env);
      expect(r.code, `${protocol}: ${r.stdout}${r.stderr}`).to.equal(0);
      expect(r.stdout, protocol).to.include("size:33 101").and.include("got:typed in a terminal");
    }
  });

  it("port-forwards to a local TCP server through kwok, bytes intact both ways (WebSocket and SPDY)", async () => {
    const job = await startJob("app");
    await podRunning();
    for (const [protocol, env] of [["WebSocket", {}], ["SPDY", { KUBECTL_PORT_FORWARD_WEBSOCKETS: "false" }]] as const) {
      const pf = startKubectl(job.path!, ["port-forward", "pod/web", `:${FORWARDED_POD_PORT}`], env);
      const localPort = Number((await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+)/, `${protocol} port-forward listening`))[1]);
      // Three connections at once, each its own stream on the one upgraded connection, then one more.
      const banner = target.banner;
      const connection = async (i: number) => {
        const payload = randomBytes(512 * 1024 + i);
        const received = await roundTrip(localPort, payload, banner.length + payload.length);
        expect(received.subarray(0, banner.length).toString(), protocol).to.equal(banner);
        expect(sha256(received.subarray(banner.length)), `${protocol} connection ${i}`).to.equal(sha256(payload));
      };
      await Promise.all([0, 1, 2].map(connection));
      await connection(3);
      pf.child.kill("SIGTERM");
      await pf.exited;
    }
    await auditedUpgrades("portforward", 2);
    await upstreamGone("CONNECT", "pods", "portforward", 0);
  });

  it("attaches to a running container (kwok streams the container's output from then on)", async () => {
    const job = await startJob("app");
    await podRunning();
    const attach = startKubectl(job.path!, ["attach", "web"]);
    // kwok follows the log file from its end once attached; until then appended lines are not shown.
    let n = 0;
    await waitFor(
      async () => {
        await cp.appendPodLog(`before-attach-check ${n++}`);
        return attach.output.includes("before-attach-check") || !attach.running;
      },
      15_000,
      "attach streaming",
    );
    expect(attach.running, attach.output).to.equal(true);
    await cp.appendPodLog("written while attached");
    await attach.waitFor(/written while attached/, "output while attached");
    expect(await longRunning("CONNECT", "pods", "attach")).to.equal(1);
    attach.child.kill("SIGTERM");
    await auditedUpgrades("attach", 1);
    await upstreamGone("CONNECT", "pods", "attach", 0);
  });

  it("copies files into and out of a pod with kubectl cp (tar over exec, stdin and stdout), large output", async () => {
    const job = await startJob("app");
    await podRunning();
    // Into the pod: kwok runs the container's `tar -xmf -` as a local process in cp.execDir.
    // kwok v0.8.0 never closes that process's stdin (pkg/utils/exec/exec.go copies the stream into
    // cmd.StdinPipe() and does not Close() it), so `tar` never sees EOF although kubectl closes
    // stdin (the v5 CLOSE signal; SPDY: stream half-close), and GNU tar reading a pipe waits for
    // whole 10 KiB records: an archive of any other size hangs (directly against the API server
    // too). kubectl's archive of one file is a 512-byte header, the data in 512-byte blocks and a
    // 1 KiB end marker: this size makes it exactly 30 records, and tar ends at the marker.
    const upload = randomBytes(30 * 10_240 - 1536);
    const local = join(dir, "upload.bin");
    writeFileSync(local, upload);
    const into = await kubectl(job.path!, ["cp", local, "web:uploaded.bin"]);
    expect(into.code, into.stderr).to.equal(0);
    expect(sha256(readFileSync(join(cp.execDir, "uploaded.bin")))).to.equal(sha256(upload));
    // stdin through exec -i, to a command that stops by itself (see above).
    const stdin = await kubectl(job.path!, ["exec", "-i", "web", "--", "head", "-c", "11"], "stdin works and more");
    expect(stdin.code, stdin.stderr).to.equal(0);
    expect(stdin.stdout).to.equal("stdin works");
    // A large stdout (8 MiB) through the upgraded connection, with backpressure on every hop.
    const large = randomBytes(6 * 1024 * 1024).toString("base64");
    writeFileSync(join(cp.execDir, "large.txt"), large);
    const cat = await kubectl(job.path!, ["exec", "web", "--", "cat", "large.txt"]);
    expect(cat.code, cat.stderr).to.equal(0);
    expect(cat.stdout.length).to.equal(large.length);
    expect(cat.stdout === large, "8 MiB through exec intact").to.equal(true);
    // Out of the pod: `tar cf - from-pod.txt` there, unpacked here.
    const download = `${randomBytes(3 * 1024 * 1024).toString("base64")}\n`;
    writeFileSync(join(cp.execDir, "from-pod.txt"), download);
    const copied = join(dir, "downloaded.txt");
    const out = await kubectl(job.path!, ["cp", "web:from-pod.txt", copied]);
    expect(out.code, out.stderr).to.equal(0);
    expect(readFileSync(copied, "utf8")).to.equal(download);
  });

  it("server-side apply: applies, reports a field-manager conflict as kubectl prints it, forces", async () => {
    const job = await startJob("app");
    const manifest = (value: string) => JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "ssa", namespace: "default" }, data: { owner: value } });
    const first = await kubectl(job.path!, ["apply", "--server-side", "--field-manager=team-a", "-f", "-"], manifest("a"));
    expect(first.code, first.stderr).to.equal(0);
    expect(first.stdout).to.include("configmap/ssa serverside-applied");

    const conflict = await kubectl(job.path!, ["apply", "--server-side", "--field-manager=team-b", "-f", "-"], manifest("b"));
    expect(conflict.code).to.not.equal(0);
    expect(conflict.stderr).to.include('Apply failed with 1 conflict: conflict with "team-a": .data.owner');
    expect(conflict.stderr).to.include("--force-conflicts");
    // The audit line is written once the request body is through, which may be after kubectl is done.
    await waitFor(() => /"method":"PATCH","path":"\/api\/v1\/namespaces\/default\/configmaps\/ssa","status":409/.test(kas.output), 5_000, "audited 409");

    const forced = await kubectl(job.path!, ["apply", "--server-side", "--field-manager=team-b", "--force-conflicts", "-f", "-"], manifest("b"));
    expect(forced.code, forced.stderr).to.equal(0);
    const cm = JSON.parse((await kubectl(job.path!, ["get", "configmap", "ssa", "-o", "json", "--show-managed-fields"])).stdout);
    expect(cm.data).to.deep.equal({ owner: "b" });
    expect(cm.metadata.managedFields.map((f: { manager: string; operation: string }) => `${f.manager}/${f.operation}`)).to.include("team-b/Apply");
  });

  it("serves raw paths, OpenAPI and discovery as the API server does (get --raw, api-resources, explain, kubectl proxy)", async () => {
    const job = await startJob("app");
    const direct = (args: string[]) => cp.runKubectl(args);
    const raw = async (path: string) => {
      const r = await kubectl(job.path!, ["get", "--raw", path]);
      expect(r.code, `${path}: ${r.stderr}`).to.equal(0);
      return r.stdout;
    };

    expect(JSON.parse(await raw("/version")).gitVersion).to.equal(JSON.parse((await direct(["get", "--raw", "/version"])).stdout).gitVersion);
    const pods = JSON.parse(await raw("/api/v1/namespaces/default/pods"));
    expect(pods.kind).to.equal("PodList");
    expect(pods.items.map((p: { metadata: { name: string } }) => p.metadata.name)).to.include("web");
    expect(JSON.parse(await raw("/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb&limit=1")).items).to.have.length(1);
    // The OpenAPI documents, several MiB, byte for byte as the API server sends them.
    const v2 = await raw("/openapi/v2");
    expect(JSON.parse(v2).swagger).to.equal("2.0");
    expect(sha256(Buffer.from(v2)), `/openapi/v2 (${v2.length} bytes)`).to.equal(sha256(Buffer.from((await direct(["get", "--raw", "/openapi/v2"])).stdout)));
    const v3 = JSON.parse(await raw("/openapi/v3"));
    expect(v3.paths).to.have.property("api/v1");
    expect(JSON.parse(await raw("/openapi/v3/api/v1")).openapi).to.match(/^3\./);

    // Discovery (aggregated /api and /apis) and what is built on it.
    const resources = await kubectl(job.path!, ["api-resources", "-o", "name"]);
    expect(resources.code, resources.stderr).to.equal(0);
    expect(resources.stdout.split("\n").sort()).to.deep.equal((await direct(["api-resources", "-o", "name"])).stdout.split("\n").sort());
    expect(resources.stdout).to.include("configmaps").and.include("deployments.apps").and.include("roles.rbac.authorization.k8s.io");
    const explain = await kubectl(job.path!, ["explain", "configmap.data"]);
    expect(explain.code, explain.stderr).to.equal(0);
    expect(explain.stdout).to.include("FIELD: data <map[string]string>");

    // kubectl proxy: a local plain-HTTP front whose requests reach the cluster through KAS. It drops
    // the path of the server URL (here /-/k8s-proxy) unless told to keep it.
    const proxy = startKubectl(job.path!, ["proxy", "--port=0", "--append-server-path"]);
    const proxyPort = Number((await proxy.waitFor(/Starting to serve on 127\.0\.0\.1:(\d+)/, "kubectl proxy listening"))[1]);
    const viaProxy = await fetch(`http://127.0.0.1:${proxyPort}/api/v1/namespaces/default/pods/web`);
    expect(viaProxy.status, await viaProxy.clone().text()).to.equal(200);
    expect(((await viaProxy.json()) as { metadata: { name: string } }).metadata.name).to.equal("web");
    const missing = await fetch(`http://127.0.0.1:${proxyPort}/api/v1/namespaces/default/configmaps/does-not-exist`);
    expect(missing.status).to.equal(404);
    expect(((await missing.json()) as { reason: string }).reason).to.equal("NotFound");
    proxy.child.kill("SIGTERM");
  });

  it("carries large bodies, paginated lists, refused upgrades, dry runs, diff and access reviews", async () => {
    const job = await startJob("app");
    await cp.runKubectl(["create", "namespace", "bulk"]);
    // A request body of several tunnel frames (1 MiB each): just under the ConfigMap limit it is
    // stored, and read back whole; just over, the API server's own validation answers.
    const big = randomBytes(700 * 1024).toString("base64").slice(0, 1_000_000);
    const configMap = (name: string, value: string) => JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: "bulk" }, data: { big: value } });
    const stored = await kubectl(job.path!, ["create", "-f", "-"], configMap("big", big));
    expect(stored.code, stored.stderr).to.equal(0);
    expect((await kubectl(job.path!, ["get", "configmap", "big", "-n", "bulk", "-o", "jsonpath={.data.big}"])).stdout).to.equal(big);
    const tooBig = await kubectl(job.path!, ["create", "-f", "-"], configMap("too-big", `${big}${big.slice(0, 100_000)}`));
    expect(tooBig.code).to.not.equal(0);
    expect(tooBig.stderr, tooBig.stderr.slice(0, 300)).to.include('ConfigMap "too-big" is invalid').and.include("Too long");

    // Chunked lists: the continue token (base64: '+', '/', '=') goes back through the query.
    for (let i = 0; i < 5; i++) await cp.runKubectl(["create", "configmap", `page-${i}`, "-n", "bulk"]);
    const paged = await kubectl(job.path!, ["get", "configmaps", "-n", "bulk", "--chunk-size=2", "-l", "!absent", "-o", "name", "-v=6"]);
    expect(paged.code, paged.stderr).to.equal(0);
    expect(paged.stdout.split("\n").filter((l) => l.startsWith("configmap/page-"))).to.have.length(5);
    expect(paged.stderr).to.match(/continue=/);

    // An upgrade the API server refuses is answered as a normal Status, not a broken stream.
    const noPod = await kubectl(job.path!, ["exec", "no-such-pod", "--", "true"]);
    expect(noPod.code).to.not.equal(0);
    expect(noPod.stderr).to.include('pods "no-such-pod" not found');

    // Dry runs and diff (server-side dry-run PATCH) change nothing; access reviews are POSTs.
    const dry = await kubectl(job.path!, ["apply", "--dry-run=server", "-f", "-"], configMap("dry", "x"));
    expect(dry.code, dry.stderr).to.equal(0);
    expect(dry.stdout).to.include("configmap/dry created (server dry run)");
    expect((await kubectl(job.path!, ["get", "configmap", "dry", "-n", "bulk"])).stderr).to.include("NotFound");
    // The API server's warnings (a multi-valued Warning header) reach kubectl, which prints each.
    const deprecated = JSON.stringify({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "deprecated", namespace: "bulk" },
      spec: { nodeSelector: { "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64" }, containers: [{ name: "c", image: "registry.example/c:1" }] },
    });
    const warned = await kubectl(job.path!, ["apply", "--dry-run=server", "-f", "-"], deprecated);
    expect(warned.code, warned.stderr).to.equal(0);
    expect(warned.stderr).to.match(/Warning: spec\.nodeSelector\[beta\.kubernetes\.io\/os\]: deprecated/);
    expect(warned.stderr).to.match(/Warning: spec\.nodeSelector\[beta\.kubernetes\.io\/arch\]: deprecated/);
    const diff = await kubectl(job.path!, ["diff", "-f", "-"], configMap("page-0", "changed"));
    expect(diff.code, diff.stderr).to.equal(1); // 1: differences found
    expect(diff.stdout).to.include("+  big: changed");
    const canI = await kubectl(job.path!, ["auth", "can-i", "delete", "configmaps", "-n", "bulk"]);
    expect(canI.stdout.trim()).to.equal("yes");
  });

  it("works over HTTP/1.1 as over HTTP/2 (kubectl with DISABLE_HTTP2)", async () => {
    const job = await startJob("app");
    const http1 = await kubectl(job.path!, ["get", "pods", "-o", "name"], undefined, { DISABLE_HTTP2: "1" });
    expect(http1.code, http1.stderr).to.equal(0);
    expect(http1.stdout).to.include("pod/web");
    expect(http1.stderr).to.include("HTTP2 has been explicitly disabled");
  });

  it(`keeps a watch that stays idle for ${IDLE_WATCH_MS / 1000} s, then delivers its event (HTTP/2 and HTTP/1.1)`, async function () {
    // Longer than every timeout on the path: kubectl's HTTP/2 read-idle PING (30 s, then 15 s for
    // the answer), the proxy listener's TCP keepalive (30 s), Node's HTTP/1.1 headersTimeout
    // (60 s; its requestTimeout, 300 s, ends with the request, before the response streams),
    // KAS's agent-session PING (50 s) and agentk's (55 s), and agentk's idle-tunnel reaping
    // (60 s; a tunnel carrying a watch is busy, not idle). The API server ends watches itself
    // after 30 to 60 min (--min-request-timeout), which kubectl handles.
    // The watches were opened before the other tests; only what is left of the time is waited here.
    this.timeout(IDLE_WATCH_MS + 60_000);
    const oldest = Math.min(...idleWatches.map((w) => w.since));
    const remaining = oldest + IDLE_WATCH_MS - Date.now();
    if (remaining > 0) await sleep(remaining); // the idle time is what this test is about
    for (const w of idleWatches) {
      expect(w.watch.running, `${w.name} watch still open: ${w.watch.output}`).to.equal(true);
      expect(w.watch.stdout, `${w.name} watch saw nothing while idle`).to.equal("");
      if (w.name === "HTTP/1.1") expect(w.watch.output).to.include("HTTP2 has been explicitly disabled");
    }
    await cp.runKubectl(["create", "configmap", "after-idle", "-n", "idle"]);
    for (const w of idleWatches) {
      await w.watch.waitFor(/configmap\/after-idle/, `${w.name} watch event after ${Math.round((Date.now() - w.since) / 1000)} s`);
    }
    const open = await longRunning("WATCH", "configmaps");
    for (const w of idleWatches) w.watch.child.kill("SIGTERM");
    await upstreamGone("WATCH", "configmaps", "", open - idleWatches.length);
  });
});

function run(cmd: string, args: string[], env: Record<string, string>): Promise<RunResult> {
  return runWithInput(cmd, args, undefined, env);
}

