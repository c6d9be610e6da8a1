// Distributed tracing end to end: real `kas` and `agentk` processes exporting over OTLP/HTTP to a
// receiver the test runs on loopback, the real kubectl through the Kubernetes API proxy, the real
// kube-apiserver behind the agent (tools/control-plane). One `kubectl get` yields spans from both
// processes in one trace, linked parent to child across the tunnel; with tracing off nothing is
// exported.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import { findBinaries, startControlPlane, type ControlPlane, type RunResult } from "../tools/control-plane/control-plane.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { SPAN_KIND_CLIENT, SPAN_KIND_SERVER, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "@kasbridge/testing/otlp-receiver";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { waitFor } from "@kasbridge/testing/wait";
import { GitClient } from "./git.test-support.js";
import { adminToken, api, createAgentWithToken, startAgentk, startKas, type KasProcess, type Proc } from "./harness.test-support.js";

const MAKE_REQUEST = "gitlab.agent.kubernetes_api.rpc.KubernetesApi/MakeRequest";
const OTLP_TOKEN = "otlp-e2e-token-4b1d";
/** Spans leave in batches every 100 ms (OpenTelemetry's OTEL_BSP_SCHEDULE_DELAY), not every 5 s. */
const BATCH_ENV = { OTEL_BSP_SCHEDULE_DELAY: "100" };

interface AuditEntry {
  request: { path: string; verb: string; trace_id: string | null } | null;
}

describe("e2e: distributed tracing (kubectl -> kas -> agentk -> kube-apiserver, spans over OTLP)", function () {
  this.timeout(300_000);
  let cp: ControlPlane;
  let receiver: OtlpReceiver;
  const cleanups = new Cleanup();
  const git = new GitClient();
  const dir = mkdtempSync(join(tmpdir(), "tracing-e2e-"));
  cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));
  const { certFile, keyFile } = selfSignedCertificateFiles(dir, "tls");
  const tokenFile = join(dir, "otlp-token");
  writeFileSync(tokenFile, `${OTLP_TOKEN}\n`, { mode: 0o600 });

  before(async () => {
    findBinaries(); // throws "... Run `npm run control-plane` ..." when the binaries are missing
    cp = await startControlPlane({ kwok: false, agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }] });
    cleanups.add(() => cp.stop());
    receiver = await startOtlpReceiver();
    cleanups.add(() => receiver.close());
  });
  after(() => cleanups.run());

  /**
   * A kas and an agentk connected to it, the agent's user_access open to a project whose Developer
   * has a personal access token. `tracing`: both export spans to the receiver (true), to the
   * endpoints given, or not at all (false).
   */
  async function startPair(tracing: boolean | { kas: string; agent: string }) {
    const kasEnv: Record<string, string> = { KAS_AGENT_TLS_CERT_FILE: certFile, KAS_AGENT_TLS_KEY_FILE: keyFile, ...BATCH_ENV };
    const agentArgs = ["--kubeconfig", cp.agentKubeconfigPath, "--ca-cert-file", certFile];
    if (tracing) {
      const endpoints = tracing === true ? { kas: receiver.url, agent: receiver.url } : tracing;
      Object.assign(kasEnv, { KAS_OTLP_ENDPOINT: endpoints.kas, KAS_OTLP_TOKEN_SECRET_FILE: tokenFile });
      agentArgs.push("--otlp-endpoint", endpoints.agent, "--otlp-token-secret-file", tokenFile);
    } else {
      // OpenTelemetry's generic exporter variable does not turn tracing on (only KAS_OTLP_ENDPOINT,
      // --otlp-endpoint or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT do): nothing must reach the receiver.
      kasEnv.OTEL_EXPORTER_OTLP_ENDPOINT = new URL(receiver.url).origin;
    }
    const kas = await startKas(kasEnv);
    cleanups.add(() => kas.cleanup());
    const agent = await createAgentWithToken(kas, "traced");
    const project = await api(kas, "POST", "/projects", { name: "app" });
    expect(project.status).to.equal(201);
    const user = await api(kas, "POST", "/users", { username: "alice", name: "alice", email: "alice@example.com" });
    expect(user.status, JSON.stringify(user.json)).to.equal(201);
    const pat = await api(kas, "POST", `/users/${user.json.id}/personal_access_tokens`, { name: "kubectl", scopes: ["k8s_proxy"] });
    expect(pat.status, JSON.stringify(pat.json)).to.equal(201);
    expect((await api(kas, "POST", `/projects/${project.json.id}/members`, { user_id: user.json.id, access_level: 30 })).status).to.equal(201);
    const configProject = (await api(kas, "GET", `/projects/${agent.projectId}`)).json.path_with_namespace as string;
    const repo = await git.clone(`http://root:${adminToken}@${new URL(kas.addresses.platform!).host}/${configProject}.git`);
    const commit = await git.commit(repo, {
      ".gitlab/agents/traced/config.yaml": `user_access:\n  access_as:\n    agent: {}\n  projects:\n    - id: ${project.json.path_with_namespace as string}\n`,
    });
    await git.push(repo);
    await waitFor(async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json.config_commit_id === commit, 10_000, "config accepted");
    const agentk = startAgentk(kas.addresses.agent, agent.token, BATCH_ENV, agentArgs);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/kubeconfig loaded/);
    await waitFor(async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/connections`)).json.length === 1, 15_000, "agent connected");
    const kubectl = (args: string[]): Promise<RunResult> => {
      const kubeconfig = join(dir, "empty-kubeconfig");
      writeFileSync(kubeconfig, "apiVersion: v1\nkind: Config\n");
      return cp.runKubectl(["--server", kas.addresses.k8sProxy!, "--certificate-authority", certFile, "--token", `pat:${agent.agentId}:${pat.json.token as string}`, ...args], {
        kubeconfig,
        allowFailure: true,
        timeoutMs: 60_000,
      });
    };
    return { kas, agentk, kubectl };
  }

  /** The audit entry of the proxy request to `path` (the platform stores it within a second or so). */
  async function auditEntry(kas: KasProcess, path: string): Promise<AuditEntry> {
    let found: AuditEntry | undefined;
    await waitFor(
      async () => Boolean((found = ((await api(kas, "GET", "/kubernetes_audit_events?kind=k8s_api_request&per_page=100")).json as AuditEntry[]).find((e) => e.request?.path === path))),
      15_000,
      `the audit entry of ${path}`,
    );
    return found!;
  }

  it("one kubectl get: spans of kas and agentk in one trace, parent to child across the tunnel, to the test's OTLP receiver", async () => {
    const { kas, agentk, kubectl } = await startPair(true);
    const r = await kubectl(["get", "namespaces", "kube-system", "-o", "name"]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal("namespace/kube-system");

    const path = "/api/v1/namespaces/kube-system";
    let server: ReceivedSpan | undefined;
    await waitFor(() => Boolean((server = receiver.spans.find((s) => s.serviceName === "kas" && s.kind === SPAN_KIND_SERVER && s.attributes["url.path"] === path))), 15_000, "kas's span of the request");
    const trace = () => receiver.spans.filter((s) => s.traceId === server!.traceId);
    await waitFor(() => trace().length >= 4, 15_000, "the four spans of the request");
    const one = (service: string, kind: number, name: string) => {
      const found = trace().filter((s) => s.serviceName === service && s.kind === kind && s.name === name);
      expect(found, `${service} ${name} in ${JSON.stringify(trace().map((s) => [s.serviceName, s.name]))}`).to.have.length(1);
      return found[0]!;
    };
    const call = one("kas", SPAN_KIND_CLIENT, MAKE_REQUEST);
    const served = one("agentk", SPAN_KIND_SERVER, MAKE_REQUEST);
    const apiRequest = one("agentk", SPAN_KIND_CLIENT, "GET");
    // kubectl sends no traceparent: kas's span is the root.
    expect(server!.parentSpanId).to.equal("");
    expect(call.parentSpanId).to.equal(server!.spanId);
    expect(served.parentSpanId).to.equal(call.spanId);
    expect(apiRequest.parentSpanId).to.equal(served.spanId);

    expect(server!.name).to.equal("GET /api/v1/namespaces/{name}");
    expect(server!.attributes).to.deep.include({
      "http.request.method": "GET",
      "http.response.status_code": 200,
      "url.scheme": "https",
      "gitlab.agent.module": "kubernetes_api",
      "gitlab.caller.kind": "user",
      "k8s.request.verb": "get",
      "k8s.request.resource": "namespaces",
    });
    expect(server!.attributes["gitlab.agent.id"]).to.be.a("number");
    expect(String(server!.attributes["user_agent.original"])).to.match(/^kubectl\//);
    expect(served.attributes).to.deep.include({ "rpc.system": "grpc", "rpc.grpc.status_code": 0, "gitlab.agent.module": "kubernetes_api" });
    expect(apiRequest.attributes).to.deep.include({ "http.request.method": "GET", "http.response.status_code": 200, "k8s.request.verb": "get" });
    expect(String(apiRequest.attributes["url.full"])).to.match(/^https:\/\/127\.0\.0\.1:\d+\/api\/v1\/namespaces\/kube-system$/);

    // Both processes sent GitLab's Private-Token; neither logged it, and no span carries a credential.
    expect(receiver.requests.length).to.be.greaterThan(1);
    for (const headers of receiver.requests) expect(headers["private-token"]).to.equal(OTLP_TOKEN);
    expect(kas.output + agentk.output).to.not.contain(OTLP_TOKEN);
    expect(JSON.stringify(receiver.spans)).to.not.match(/pat:\d+:|glpat-|Bearer/);
    // The audit entry of the request carries its trace id.
    expect((await auditEntry(kas, path)).request!.trace_id).to.equal(server!.traceId);
  });

  it("tracing off (the default): nothing is exported, the audit entry has no trace id", async () => {
    const { kas, agentk, kubectl } = await startPair(false);
    const before = receiver.spans.length;
    const requests = receiver.requests.length;
    const r = await kubectl(["get", "namespaces", "default", "-o", "name"]);
    expect(r.code, r.stderr).to.equal(0);
    expect((await auditEntry(kas, "/api/v1/namespaces/default")).request!.trace_id).to.equal(null);
    // A tracing process would have exported within 100 ms of the request's end (its batch delay):
    // ten times that passes with nothing sent.
    await sleep(1_000);
    expect(receiver.spans.length).to.equal(before);
    expect(receiver.requests.length).to.equal(requests);
    expect(kas.output + agentk.output).to.not.contain("exporting spans over OTLP");
    await stopBoth(kas, agentk);
    expect(receiver.requests.length).to.equal(requests);
  });

  it("an endpoint that refuses connections or never answers: kubectl works, the failure is logged without the token", async () => {
    // Nothing listens on kas's endpoint; agentk's takes connections and never answers.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const sockets = new Set<Socket>();
    const hanging = createServer(() => {});
    hanging.on("connection", (s: Socket) => sockets.add(s));
    await new Promise<void>((resolve) => hanging.listen(0, "127.0.0.1", resolve));
    cleanups.add(
      () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          hanging.close(() => resolve());
        }),
    );
    const hangingUrl = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}/v1/traces`;
    const { kas, agentk, kubectl } = await startPair({ kas: `http://127.0.0.1:${closedPort}/v1/traces`, agent: hangingUrl });
    for (let i = 0; i < 5; i++) {
      const r = await kubectl(["get", "namespaces", "default", "-o", "name"]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.trim()).to.equal("namespace/default");
    }
    await kas.waitFor(/tracing: cannot export spans/, "kas's export failure logged");
    await waitFor(() => sockets.size > 0, 15_000, "agentk's exporter connected to the hanging endpoint");
    expect(kas.output + agentk.output).to.not.contain(OTLP_TOKEN);
    // Both still stop promptly: the exports in flight do not hold a shutdown beyond its bound.
    await stopBoth(kas, agentk);
    expect(kas.child.exitCode).to.equal(0);
    expect(agentk.child.exitCode).to.equal(0);
  });
});

/** Stops agentk, then kas, as on a shutdown (their final flush included). */
async function stopBoth(kas: Proc, agentk: Proc): Promise<void> {
  await agentk.stop();
  await kas.stop();
}
