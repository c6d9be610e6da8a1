// Running requests through the Kubernetes API proxy end when their credential stops being valid:
// a KAS, two proxy listeners (plain HTTP/1.1 and TLS with HTTP/2) and an agent in this process,
// a stand-in API server, all over real sockets; the platform is a stand-in whose revocation feed
// the tests drive.
import { create } from "@bufbuild/protobuf";
import { expect } from "chai";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import net from "node:net";
import pino from "pino";
import { createAgent } from "../../../agent/create-agent.js";
import { ConfigurationFileSchema } from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { PlatformError, type JobAllowedAgents } from "../../../platform-client/platform-client.js";
import { createKasServer } from "../../../kas/kas-server.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer } from "@kasbridge/testing/servers";
import { selfSignedCertificate } from "@kasbridge/testing/tls";
import { waitFor } from "@kasbridge/testing/wait";
import { kubernetesApiAgentModule } from "../agent/kubernetes-api-agent-module.js";
import { createKubernetesApiProxy, type KubernetesApiProxy, type KubernetesApiProxyOptions } from "./kubernetes-api-proxy.js";
import { ProxyPlatform, fakeApiServer, job, kubeConfig } from "../kubernetes-api.test-support.js";

/** A job answer for job `jobId` of user `userId`, agent 7 allowed as itself unless `configuration` says otherwise. */
const jobOf = (jobId: number, userId = 4, configuration: Record<string, unknown> = {}, tokenExpiresAt?: number): JobAllowedAgents => {
  const j = job(configuration);
  return { ...j, job: { id: jobId, ...(tokenExpiresAt !== undefined ? { tokenExpiresAt } : {}) }, user: { ...j.user, id: userId } };
};

/** A platform whose answers for some job tokens wait for the test, or fail as an outage. */
class GatedPlatform extends ProxyPlatform {
  gates = new Map<string, Promise<void>>();
  /** Look-ups waiting at a gate so far. */
  gated = 0;
  down = new Set<string>();
  override async allowedAgentsForJob(token: string, signal?: AbortSignal): Promise<JobAllowedAgents> {
    const gate = this.gates.get(token);
    if (gate) {
      this.gated++;
      await gate;
    }
    if (this.down.has(token)) {
      this.lookups++;
      throw new PlatformError("unavailable", "platform down");
    }
    return super.allowedAgentsForJob(token, signal);
  }
}

/** How a stream ended: "complete" (the answer ended normally) or "cut" (reset, aborted, closed). */
type Ending = "complete" | "cut";
interface OpenStream {
  ended: Promise<Ending>;
  /** True once it ended. */
  readonly done: boolean;
}

describe("kubeproxy: open streams end with their credential (in process)", function () {
  this.timeout(30_000);
  const logger = pino({ level: "silent" });
  const cert = selfSignedCertificate();
  let api: Awaited<ReturnType<typeof fakeApiServer>>;
  let kas: Awaited<ReturnType<typeof createKasServer>>;
  let agent: ReturnType<typeof createAgent>;
  let platform: GatedPlatform;
  const proxies: KubernetesApiProxy[] = [];
  const clients: Array<() => void> = [];
  const cleanup = new Cleanup();

  before(async () => {
    api = await fakeApiServer();
    cleanup.add(() => closeServer(api.server));
    platform = new GatedPlatform();
    platform.addToken("glagent-k", { agentId: 7, agentName: "a", projectId: 3, projectPath: "g/cfg", defaultBranch: "main", tokenId: 70 });
    kas = await createKasServer({ platform, logger, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: new Uint8Array(32) } });
    cleanup.add(() => kas.close(100));
    const kc = await kubeConfig(api.url, "agent-sa-token");
    agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token: "glagent-k", logger, modules: [await kubernetesApiAgentModule({ kubeconfig: kc, logger })] });
    agent.start();
    cleanup.add(() => agent.stop(100));
    await waitFor(() => kas.registry.stats().idleTunnels > 0, undefined, "a tunnel from the agent");
  });

  afterEach(async () => {
    for (const close of clients.splice(0)) close();
    for (const p of proxies.splice(0)) await p.close(100);
  });

  after(() => cleanup.run());

  async function proxy(options: Partial<KubernetesApiProxyOptions> = {}): Promise<KubernetesApiProxy> {
    const p = await createKubernetesApiProxy({ agentCalls: kas.agentCalls, platform, logger, port: 0, reauthorizeIntervalMs: 0, ...options });
    proxies.push(p);
    return p;
  }

  function tracked(ended: Promise<Ending>): OpenStream {
    const s = { ended, done: false };
    void ended.then(() => (s.done = true));
    return s;
  }

  /** A watch over HTTP/1.1 (TLS or not); resolves once its first event is in. */
  function watchHttp1(p: KubernetesApiProxy, token: string): Promise<OpenStream> {
    return new Promise((resolve, reject) => {
      const client = p.url.startsWith("https:") ? https : http;
      const req = client.get(`${p.url}/watch-forever`, { headers: { authorization: `Bearer ${token}` }, agent: false, ca: cert.cert, servername: "localhost" }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}`));
        const ended = new Promise<Ending>((done) => {
          res.on("end", () => done("complete"));
          res.on("aborted", () => done("cut"));
          res.on("error", () => done("cut"));
          res.on("close", () => done(res.complete ? "complete" : "cut"));
        });
        res.once("data", () => resolve(tracked(ended)));
      });
      req.on("error", reject);
      clients.push(() => req.destroy());
    });
  }

  /** A watch over HTTP/2 (TLS); resolves once its first event is in. */
  function watchHttp2(p: KubernetesApiProxy, token: string): Promise<OpenStream> {
    const session = http2.connect(p.url, { ca: cert.cert, servername: "localhost" });
    session.on("error", () => {});
    clients.push(() => session.destroy());
    return new Promise((resolve, reject) => {
      const stream = session.request({ ":path": "/watch-forever", authorization: `Bearer ${token}` });
      stream.on("error", () => {});
      const ended = new Promise<Ending>((done) => stream.on("close", () => done(stream.rstCode === http2.constants.NGHTTP2_NO_ERROR ? "complete" : "cut")));
      stream.once("response", (h) => (h[":status"] === 200 ? stream.once("data", () => resolve(tracked(ended))) : reject(new Error(`HTTP ${h[":status"]}`))));
    });
  }

  /** An upgraded (SPDY) connection; resolves once bytes went through it both ways. */
  function upgraded(p: KubernetesApiProxy, token: string): Promise<OpenStream> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(p.address.port, "127.0.0.1");
      clients.push(() => socket.destroy());
      socket.on("error", () => {});
      const ended = new Promise<Ending>((done) => socket.on("close", () => done("cut")));
      let received = "";
      socket.on("data", (d: Buffer) => {
        received += d.toString();
        if (/^HTTP\/1\.1 (?!101)/.test(received)) reject(new Error(received));
        if (received.includes("\r\n\r\n") && !received.includes("PING")) socket.write("ping");
        if (received.includes("PING")) resolve(tracked(ended));
      });
      socket.write(`POST /api/v1/namespaces/default/pods/p/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n`);
    });
  }

  /** A new request with the token: status and Status message. */
  function request(p: KubernetesApiProxy, token: string): Promise<{ status: number; message?: string }> {
    const client = p.url.startsWith("https:") ? https : http;
    return new Promise((resolve, reject) => {
      client
        .get(`${p.url}/api/v1/namespaces`, { headers: { authorization: `Bearer ${token}` }, agent: false, ca: cert.cert, servername: "localhost" }, (res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString()));
          res.on("end", () => resolve(res.statusCode === 200 ? { status: 200 } : { status: res.statusCode!, message: (JSON.parse(body) as { message: string }).message }));
        })
        .on("error", reject);
    });
  }

  it("ends a revoked CI job's watches and upgrades on every listener of the process, and nothing else", async () => {
    platform.jobs.set("job-a", jobOf(21));
    platform.jobs.set("job-b", jobOf(22, 5));
    const plain = await proxy();
    const tls = await proxy({ tls: cert });
    const held = api.openStreams();
    const streams = [await watchHttp1(plain, "ci:7:job-a"), await watchHttp2(tls, "ci:7:job-a"), await upgraded(plain, "ci:7:job-a")];
    const other = await watchHttp1(tls, "ci:7:job-b");
    expect(api.openStreams()).to.equal(held + 4);

    platform.jobs.delete("job-a"); // the platform no longer accepts it …
    platform.publish({ kind: "ci_job", jobId: 21 }); // … and says so on its feed
    expect(await Promise.all(streams.map((s) => s.ended))).to.deep.equal(["cut", "cut", "cut"]);
    expect(other.done).to.equal(false);
    // The agent ended its requests to the API server too.
    await waitFor(() => api.openStreams() === held + 1, undefined, "the agent to end its requests to the API server");
    for (const p of [plain, tls]) {
      expect(await request(p, "ci:7:job-a")).to.deep.equal({ status: 401, message: "GitLab Agent Server: unauthorized: invalid, expired or revoked CI job token" });
    }
    platform.publish({ kind: "ci_job", jobId: 22 });
    expect(await other.ended).to.equal("cut");
  });

  it("ends a revoked personal access token's streams, and a blocked user's streams of every credential", async () => {
    platform.users.set("glpat-other", {
      agent: { id: 7, configProject: { id: 3 } },
      user: { id: 4, username: "dev" },
      accessAs: { agent: {} },
      personalAccessToken: { id: 42 },
    });
    platform.jobs.set("job-of-dev", jobOf(23, 4));
    platform.jobs.set("job-of-someone-else", jobOf(24, 6));
    const p = await proxy();
    const pat = await watchHttp1(p, "pat:7:glpat-good");
    const otherPat = await upgraded(p, "pat:7:glpat-other");
    const devJob = await watchHttp1(p, "ci:7:job-of-dev");
    const someoneElse = await watchHttp1(p, "ci:7:job-of-someone-else");

    platform.publish({ kind: "personal_access_token", userId: 4, tokenId: 40 });
    expect(await pat.ended).to.equal("cut");
    expect([otherPat.done, devJob.done, someoneElse.done]).to.deep.equal([false, false, false]);

    platform.publish({ kind: "user", userId: 4 });
    expect(await Promise.all([otherPat.ended, devJob.ended])).to.deep.equal(["cut", "cut"]);
    expect(someoneElse.done).to.equal(false);
  });

  it("refuses an answer that was on its way when its revocation came (no stream, 401)", async () => {
    let release!: () => void;
    platform.jobs.set("job-racing", jobOf(25));
    platform.gates.set("job-racing", new Promise<void>((resolve) => (release = resolve)));
    const p = await proxy();
    const gated = platform.gated;
    const pending = request(p, "ci:7:job-racing");
    await waitFor(() => platform.gated === gated + 1, undefined, "the look-up to wait at its gate");
    platform.publish({ kind: "ci_job", jobId: 25 }); // while the platform's (stale) answer is on its way
    release();
    expect(await pending).to.deep.equal({ status: 401, message: "GitLab Agent Server: unauthorized: CI job 25 finished, its job token is no longer valid" });
  });

  it("ends streams when their job token or personal access token expires", async () => {
    // Long enough for both watches to open on a busy machine; their end is then awaited as an event.
    const expiresAt = Date.now() + 2_000;
    platform.jobs.set("job-expiring", jobOf(26, 4, {}, expiresAt));
    platform.users.set("glpat-expiring", {
      agent: { id: 7, configProject: { id: 3 } },
      user: { id: 8, username: "temp" },
      accessAs: { agent: {} },
      personalAccessToken: { id: 43, expiresAt },
    });
    const p = await proxy({ tls: cert });
    const streams = [await watchHttp2(p, "ci:7:job-expiring"), await watchHttp2(p, "pat:7:glpat-expiring")];
    expect(await Promise.all(streams.map((s) => s.ended))).to.deep.equal(["cut", "cut"]);
    // An answer for a credential already past its expiry opens nothing.
    expect(await request(p, "ci:7:job-expiring")).to.deep.equal({ status: 401, message: "GitLab Agent Server: unauthorized: the job token of CI job 26 expired" });
  });

  it("re-authorizes open streams periodically: an outage keeps them, a refusal ends them", async () => {
    platform.jobs.set("job-recheck", jobOf(27));
    const p = await proxy({ reauthorizeIntervalMs: 50, authCacheTtlMs: 60_000 });
    const stream = await watchHttp1(p, "ci:7:job-recheck");
    platform.down.add("job-recheck");
    const lookups = platform.lookups;
    await waitFor(() => platform.lookups >= lookups + 3, undefined, "three re-authorizations during the outage");
    expect(stream.done).to.equal(false);
    platform.down.delete("job-recheck");
    platform.jobs.delete("job-recheck"); // refused from now on, without a word on the feed
    expect(await stream.ended).to.equal("cut");
  });

  it("re-authorizes at once when the agent's configuration changes: a project no longer allowed, another identity", async () => {
    platform.jobs.set("job-dropped", jobOf(28));
    platform.jobs.set("job-reidentified", jobOf(29));
    const p = await proxy();
    const dropped = await watchHttp1(p, "ci:7:job-dropped");
    const reidentified = await upgraded(p, "ci:7:job-reidentified");
    platform.jobs.set("job-dropped", { ...jobOf(28), allowedAgents: [] });
    platform.jobs.set("job-reidentified", jobOf(29, 4, { access_as: { ci_job: {} } }));
    platform.setConfiguration(7, "c2", create(ConfigurationFileSchema));
    expect(await Promise.all([dropped.ended, reidentified.ended])).to.deep.equal(["cut", "cut"]);
    // New requests get the new decision.
    expect((await request(p, "ci:7:job-dropped")).status).to.equal(403);
    expect((await request(p, "ci:7:job-reidentified")).status).to.equal(200);
  });
});
