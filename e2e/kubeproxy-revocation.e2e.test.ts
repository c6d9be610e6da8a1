// Open streams through the Kubernetes API proxy end when their credential does: real kubectl
// watches, `logs -f`, `exec` and `port-forward` through real `kas` and `agentk` processes against
// a real kube-apiserver with kwok's simulated kubelet, ended by a finished CI job, a revoked
// personal access token, a blocked user and an expired job token. KAS's periodic
// re-authorization is off here, so what ends them is the platform's revocation feed (or the
// expiry timer), each waited for as an event.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { findBinaries, startControlPlane, type ControlPlane } from "../tools/control-plane/control-plane.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { waitFor } from "@kasbridge/testing/wait";
import { GitClient } from "./git.test-support.js";
import { Proc, adminToken, api, createAgentWithToken, startAgentk, startKas } from "./harness.test-support.js";
import { createWebPod, longRunningRequests, startForwardTarget, type ForwardTarget } from "./kubectl.test-support.js";

/** The pod port kwok's port-forward connects to the test's own TCP server. */
const FORWARDED_POD_PORT = 8080;
/** Lifetime of the CI job tokens of this suite's platform: the expiry test waits for it. */
const JOB_TOKEN_TTL_SECONDS = 40;
/** Longest wait for a stream to end (only to end a hung test; the ends are awaited as events). */
const END_TIMEOUT_MS = 20_000;

describe("e2e: open Kubernetes API proxy streams end with their credential (kubectl, kas, agentk, kube-apiserver)", function () {
  this.timeout(300_000);
  let cp: ControlPlane;
  let kas: Awaited<ReturnType<typeof startKas>>;
  let agentk: ReturnType<typeof startAgentk>;
  let agent: Awaited<ReturnType<typeof createAgentWithToken>>;
  let target: ForwardTarget;
  // Released last to first, each step even when another throws: nothing is left running.
  const cleanups = new Cleanup();
  const git = new GitClient();
  const dir = mkdtempSync(join(tmpdir(), "kubeproxy-revocation-e2e-"));
  cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));
  const { certFile, keyFile } = selfSignedCertificateFiles(dir, "tls");
  /** alice: a Developer of the agent's configuration project (user_access), with an `api` token to run jobs. */
  let alice: { id: number; apiToken: string };

  before(async () => {
    findBinaries(); // throws "... Run `npm run control-plane` ..." when the binaries are missing
    target = await startForwardTarget();
    cleanups.add(() => target.close());
    cp = await startControlPlane({
      agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }],
      portForwards: [{ podPort: FORWARDED_POD_PORT, port: target.port }],
    });
    cleanups.add(() => cp.stop());
    kas = await startKas({
      KAS_AGENT_TLS_CERT_FILE: certFile,
      KAS_AGENT_TLS_KEY_FILE: keyFile,
      KAS_CI_JOB_TOKEN_TTL_SECONDS: String(JOB_TOKEN_TTL_SECONDS),
      // Off: the streams must end by the revocation feed and the expiry timer, not the backstop.
      KAS_K8S_PROXY_REAUTHORIZE_INTERVAL_SECONDS: "0",
    });
    cleanups.add(() => kas.cleanup());
    agent = await createAgentWithToken(kas, "prod");
    const configProject = (await api(kas, "GET", `/projects/${agent.projectId}`)).json.path_with_namespace as string;

    const u = await api(kas, "POST", "/users", { username: "alice", name: "Alice", email: "alice@example.com" });
    expect(u.status, JSON.stringify(u.json)).to.equal(201);
    const apiToken = await api(kas, "POST", `/users/${u.json.id}/personal_access_tokens`, { name: "api", scopes: ["api"] });
    alice = { id: u.json.id as number, apiToken: apiToken.json.token as string };
    expect((await api(kas, "POST", `/projects/${agent.projectId}/members`, { user_id: alice.id, access_level: 30 })).status).to.equal(201);

    // Users reach the cluster as the agent (user_access); CI jobs of the project use it implicitly.
    const repo = await git.clone(`http://root:${adminToken}@${new URL(kas.addresses.platform!).host}/${configProject}.git`);
    const commit = await git.commit(repo, {
      ".gitlab/agents/prod/config.yaml": `user_access:\n  access_as:\n    agent: {}\n  projects:\n    - id: ${configProject}\n`,
    });
    await git.push(repo);
    await waitFor(
      async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json.config_commit_id === commit,
      undefined,
      "config accepted",
    );
    agentk = startAgentk(kas.addresses.agent, agent.token, {}, ["--kubeconfig", cp.agentKubeconfigPath, "--ca-cert-file", certFile]);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/kubeconfig loaded/);
    await waitFor(async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/connections`)).json.length === 1, 15_000, "agent connected");

    await cp.runKubectl(["create", "namespace", "streams"]);
    await cp.runKubectl(["create", "configmap", "seed", "-n", "streams"]);
    await createWebPod(cp, FORWARDED_POD_PORT);
    await cp.runKubectl(["wait", "-n", "default", "--for=jsonpath={.status.phase}=Running", "pod/web", "--timeout=60s"]);
    await cp.appendPodLog("a line to follow");
  });

  after(() => cleanups.run());

  const proxyUrl = () => (kas.addresses as { k8sProxy: string }).k8sProxy;

  /** A long-running kubectl with `token`; killed after the suite. */
  function startKubectl(token: string, args: string[]): Proc {
    const empty = join(dir, "empty-kubeconfig");
    writeFileSync(empty, "apiVersion: v1\nkind: Config\n");
    const child = spawn(cp.kubectl, ["--kubeconfig", empty, "--server", proxyUrl(), "--certificate-authority", certFile, "--token", token, ...args], {
      env: { ...process.env, KUBECACHEDIR: join(dir, "kube-cache") },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const k = new Proc(child);
    cleanups.add(() => k.stop("SIGKILL"));
    return k;
  }

  const longRunning = (verb: string, resource: string, subresource = "") => longRunningRequests(cp, verb, resource, subresource);

  type Stream = { name: string; kubectl: Proc };

  /** Opens a watch, `logs -f`, `exec -i … cat` and a port-forward with `token`; resolves once each works. */
  async function openStreams(token: string, label: string, kinds = ["watch", "logs -f", "exec", "port-forward"]): Promise<Stream[]> {
    const streams: Stream[] = [];
    for (const kind of kinds) {
      const name = `${label} ${kind}`;
      if (kind === "watch") {
        const open = await longRunning("WATCH", "configmaps");
        const k = startKubectl(token, ["get", "configmaps", "-n", "streams", "-w", "-o", "name", "--request-timeout=0"]);
        await k.waitFor(/configmap\/seed/, `${name}: initial list`);
        await waitFor(async () => (await longRunning("WATCH", "configmaps")) > open || !k.running, 15_000, `${name} open at the API server`);
        streams.push({ name, kubectl: k });
      } else if (kind === "logs -f") {
        const k = startKubectl(token, ["logs", "-f", "web", "-n", "default"]);
        await k.waitFor(/a line to follow/, `${name}: first line`);
        streams.push({ name, kubectl: k });
      } else if (kind === "exec") {
        const k = startKubectl(token, ["exec", "-i", "web", "-n", "default", "--", "cat"]);
        k.child.stdin!.write("echoed through exec\n");
        await k.waitFor(/echoed through exec/, `${name}: echo`);
        streams.push({ name, kubectl: k });
      } else {
        const k = startKubectl(token, ["port-forward", "-n", "default", "pod/web", `:${FORWARDED_POD_PORT}`]);
        const port = Number((await k.waitFor(/Forwarding from 127\.0\.0\.1:(\d+)/, `${name}: listening`))[1]);
        expect(await banner(port), `${name}: a connection through it`).to.equal(target.banner);
        streams.push({ name, kubectl: k });
      }
      expect(streams.at(-1)!.kubectl.running, `${name}: ${streams.at(-1)!.kubectl.output}`).to.equal(true);
    }
    return streams;
  }

  /** Waits for every stream's kubectl to exit (`timeoutMs` only ends a hung test). */
  async function allEnd(streams: Stream[], what: string, timeoutMs = END_TIMEOUT_MS): Promise<void> {
    await Promise.all(
      streams.map((s) =>
        waitFor(() => !s.kubectl.running, timeoutMs, `${s.name} to end after ${what}`).catch((e: Error) => {
          throw new Error(`${e.message}; kubectl said: ${s.kubectl.output}`);
        }),
      ),
    );
  }

  /** A new request with the token: its HTTP status and the Status message of a refusal. */
  async function statusWith(token: string): Promise<{ status: number; message?: string }> {
    const url = new URL(proxyUrl());
    return new Promise((resolve, reject) => {
      https
        .get(
          { host: url.hostname, port: url.port, path: "/api/v1/namespaces/default", headers: { authorization: `Bearer ${token}` }, ca: readFileSync(certFile), servername: "localhost", agent: false },
          (res) => {
            let body = "";
            res.on("data", (d: Buffer) => (body += d.toString()));
            res.on("end", () => resolve({ status: res.statusCode!, ...(res.statusCode === 200 ? {} : { message: (JSON.parse(body) as { message: string }).message }) }));
          },
        )
        .on("error", reject);
    });
  }
  const refused = { status: 401, message: "GitLab Agent Server: unauthorized: invalid, expired or revoked CI job token" };
  const patRefused = { status: 401, message: "GitLab Agent Server: unauthorized: invalid, expired or revoked personal access token" };

  async function newJob(userToken = adminToken): Promise<{ id: number; token: string; expiresAt: string }> {
    const r = await api(kas, "POST", `/projects/${agent.projectId}/jobs`, {}, userToken);
    expect(r.status, JSON.stringify(r.json)).to.equal(201);
    return { id: r.json.id as number, token: `ci:${agent.agentId}:${r.json.token}`, expiresAt: r.json.expires_at as string };
  }

  async function newPat(name: string): Promise<{ id: number; token: string }> {
    const r = await api(kas, "POST", `/users/${alice.id}/personal_access_tokens`, { name, scopes: ["k8s_proxy"] });
    expect(r.status, JSON.stringify(r.json)).to.equal(201);
    return { id: r.json.id as number, token: `pat:${agent.agentId}:${r.json.token}` };
  }

  const upstreamKinds = [["WATCH", "configmaps", ""], ["GET", "pods", "log"], ["CONNECT", "pods", "exec"], ["CONNECT", "pods", "portforward"]] as const;

  /** The API server's open long-running requests of the kinds the tests open (its own watches count too). */
  async function upstreamCounts(): Promise<number[]> {
    return Promise.all(upstreamKinds.map(([verb, resource, sub]) => longRunning(verb, resource, sub)));
  }

  /** The agent ended its requests to the API server too: back to what was open before the test. */
  async function upstreamClosed(before: number[]): Promise<void> {
    for (const [i, [verb, resource, sub]] of upstreamKinds.entries()) {
      await waitFor(async () => (await longRunning(verb, resource, sub)) === before[i], 15_000, `open ${verb} ${resource}/${sub} at the API server back to ${before[i]}`);
    }
  }

  it("ends a CI job's watch, logs -f, exec and port-forward when the job finishes", async () => {
    const job = await newJob();
    const before = await upstreamCounts();
    const streams = await openStreams(job.token, "CI job");
    expect((await api(kas, "POST", `/projects/${agent.projectId}/jobs/${job.id}/finish`, {})).status).to.equal(200);
    await allEnd(streams, "job finished");
    expect(await statusWith(job.token)).to.deep.equal(refused);
    await upstreamClosed(before);
    expect(kas.output).to.include('"why":"revoked"').and.include(`CI job ${job.id} finished`);
  });

  it("ends a user's streams when their personal access token is revoked, and only those", async () => {
    const revoked = await newPat("revoked");
    const kept = await newPat("kept");
    const before = await upstreamCounts();
    const streams = await openStreams(revoked.token, "PAT");
    const bystander = (await openStreams(kept.token, "other PAT", ["watch"]))[0]!;
    expect((await api(kas, "DELETE", `/personal_access_tokens/${revoked.id}`)).status).to.equal(204);
    await allEnd(streams, "PAT revoked");
    expect(await statusWith(revoked.token)).to.deep.equal(patRefused);
    // The user's other token is not concerned: its watch still delivers events.
    await cp.runKubectl(["create", "configmap", "after-revocation", "-n", "streams"]);
    await bystander.kubectl.waitFor(/configmap\/after-revocation/, "the other token's watch still delivering");
    bystander.kubectl.child.kill("SIGTERM");
    await bystander.kubectl.exited;
    await upstreamClosed(before);
  });

  it("ends a blocked user's streams, personal access token and CI job alike; unblocked, the tokens work again", async () => {
    const pat = await newPat("blocked");
    const job = await newJob(alice.apiToken);
    const before = await upstreamCounts();
    const streams = [...(await openStreams(pat.token, "blocked user's PAT")), ...(await openStreams(job.token, "blocked user's CI job", ["watch", "port-forward"]))];
    const block = await api(kas, "POST", `/users/${alice.id}/block`);
    expect([block.status, block.json]).to.deep.equal([201, true]);
    await allEnd(streams, "user blocked");
    expect(await statusWith(pat.token)).to.deep.equal(patRefused);
    expect(await statusWith(job.token)).to.deep.equal(refused);
    await upstreamClosed(before);

    const unblock = await api(kas, "POST", `/users/${alice.id}/unblock`);
    expect([unblock.status, unblock.json]).to.deep.equal([201, true]);
    expect(await statusWith(pat.token)).to.deep.equal({ status: 200 });
    expect(await statusWith(job.token)).to.deep.equal({ status: 200 });
  });

  it("ends a CI job's streams when its job token expires, the job still running", async function () {
    this.timeout((JOB_TOKEN_TTL_SECONDS + 60) * 1000);
    const job = await newJob();
    const before = await upstreamCounts();
    const streams = await openStreams(job.token, "expiring CI job");
    const expiresAt = Date.parse(job.expiresAt);
    // Waited for as an event (each kubectl exits), not timed: up to the token's lifetime and then some.
    await allEnd(streams, "the job token expired", JOB_TOKEN_TTL_SECONDS * 1000 + END_TIMEOUT_MS);
    // Ended by the expiry, not before it.
    expect(Date.now()).to.be.at.least(expiresAt);
    expect(kas.output).to.include('"why":"expired"');
    expect(await statusWith(job.token)).to.deep.equal(refused);
    await upstreamClosed(before);
  });
});

/** Connects to a forwarded port and reads the target's greeting line. */
function banner(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = "";
    const socket = connect(port, "127.0.0.1");
    socket.on("data", (d: Buffer) => {
      received += d.toString();
      if (received.includes("\n")) {
        socket.destroy();
        resolve(received);
      }
    });
    socket.on("error", reject);
  });
}
