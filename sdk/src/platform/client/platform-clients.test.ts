import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import express from "express";
import { PlatformError, parseJobAllowedAgents, parseProxyUserAuthorization, type PlatformClient, type TokenRevocation } from "../platform-client.js";
import { call, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test.js";
import { useTestStore } from "../testing/fixtures.test.js";
import { createHttpPlatformClient } from "./http-platform-client.js";
import { createInProcessPlatformClient } from "./in-process-platform-client.js";

async function platformError(p: Promise<unknown>): Promise<PlatformError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof PlatformError) return err;
    throw err;
  }
  throw new Error("expected a PlatformError");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(predicate: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(10);
  }
  return Date.now() - start;
}

/** A throwaway express server; `handler` answers every request. */
async function startServer(handler: express.RequestHandler): Promise<{ url: string; close(): Promise<void> }> {
  const app = express();
  app.use(handler);
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("PlatformClient implementations", () => {
  const db = useTestStore("sqlite");
  let p: TestPlatform;
  let projectId: number;
  let agentId: number;
  let tokens: { id: number; secret: string }[];
  const revokeViaApi = (tokenId: number) =>
    call(p.baseUrl, "DELETE", `/api/v4/projects/${projectId}/cluster_agents/${agentId}/tokens/${tokenId}`, { token: p.adminToken });

  beforeEach(async () => {
    p = await startTestPlatform(db.store);
    const admin = { token: p.adminToken };
    projectId = (await call(p.baseUrl, "POST", "/api/v4/projects", { ...admin, body: { name: "cfg" } })).body.id;
    agentId = (await call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents`, { ...admin, body: { name: "a" } })).body.id;
    tokens = [];
    for (const name of ["t1", "t2"]) {
      const t = await call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents/${agentId}/tokens`, { ...admin, body: { name } });
      tokens.push({ id: t.body.id, secret: t.body.token });
    }
  });
  afterEach(async () => {
    await p.close();
  });

  function expectAgentInfo(client: PlatformClient) {
    return async () => {
      const info = await client.getAgentInfo(tokens[0]!.secret);
      expect(info).to.deep.equal({
        agentId,
        agentName: "a",
        projectId,
        projectPath: "root/cfg",
        defaultBranch: "main",
        tokenId: tokens[0]!.id,
      });
      const err = await platformError(client.getAgentInfo("glagent-unknown"));
      expect(err.kind).to.equal("unauthenticated");
    };
  }

  /** Finishes a CI job, revokes a PAT and blocks a user; the revocations the feed must carry. */
  async function revokeOneOfEach(): Promise<TokenRevocation[]> {
    const user = await p.services.users.create({ username: "blockme", name: "Block Me" });
    const pat = await p.services.personalAccessTokens.create(user.id, { name: "k8s", scopes: ["k8s_proxy"] });
    const { job } = await p.services.ciJobs.create(projectId, 1);
    await p.services.ciJobs.finish(projectId, job.id);
    await p.services.personalAccessTokens.revoke(user.id, pat.token.id);
    await p.services.users.block(user.id);
    return [
      { kind: "ci_job", jobId: job.id },
      { kind: "personal_access_token", userId: user.id, tokenId: pat.token.id },
      { kind: "user", userId: user.id },
    ];
  }

  describe("in-process", () => {
    it("delivers finished CI jobs, revoked personal access tokens and blocked users", async () => {
      const client = createInProcessPlatformClient(p.services);
      const seen: TokenRevocation[] = [];
      const controller = new AbortController();
      client.watchTokenRevocations((r) => seen.push(r), controller.signal);
      try {
        expect(seen).to.deep.equal([]);
        const expected = await revokeOneOfEach();
        expect(seen).to.deep.equal(expected);
      } finally {
        controller.abort();
      }
    });

    it("resolves agent tokens", async () => {
      await expectAgentInfo(createInProcessPlatformClient(p.services))();
    });

    it("delivers revocations before the revoking call returns, until the signal aborts", async () => {
      const client = createInProcessPlatformClient(p.services);
      const seen: TokenRevocation[] = [];
      const controller = new AbortController();
      client.watchTokenRevocations((r) => seen.push(r), controller.signal);
      await p.services.agentTokens.revoke(agentId, tokens[0]!.id);
      expect(seen).to.deep.equal([{ kind: "agent_token", agentId, tokenId: tokens[0]!.id }]);
      expect((await platformError(client.getAgentInfo(tokens[0]!.secret))).kind).to.equal("unauthenticated");
      controller.abort();
      await p.services.agentTokens.revoke(agentId, tokens[1]!.id);
      expect(seen).to.have.length(1);
      // A watch started with an aborted signal never fires.
      client.watchTokenRevocations(() => expect.fail("must not be called"), AbortSignal.abort());
    });
  });

  describe("HTTP", () => {
    const clients: AbortController[] = [];
    afterEach(() => {
      for (const c of clients.splice(0)) c.abort();
    });

    it("resolves agent tokens over the internal API", async () => {
      await expectAgentInfo(createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret }))();
    });

    it("maps a refused JWT, 5xx, timeouts and network errors to 'unavailable'", async () => {
      const wrongSecret = createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: new Uint8Array(randomBytes(32)) });
      const jwtErr = await platformError(wrongSecret.getAgentInfo(tokens[0]!.secret));
      expect(jwtErr.kind).to.equal("unavailable");
      expect(jwtErr.message).to.contain("JWT");

      const failing = await startServer((_req, res) => {
        res.status(502).json({ message: "bad gateway" });
      });
      const hanging = await startServer(() => {
        /* never answers */
      });
      const malformed = await startServer((_req, res) => {
        res.json({ project_id: "nope" });
      });
      try {
        const opts = { jwtSecret: p.jwtSecret };
        expect((await platformError(createHttpPlatformClient({ ...opts, baseUrl: failing.url }).getAgentInfo("x"))).kind).to.equal("unavailable");
        const slow = createHttpPlatformClient({ ...opts, baseUrl: hanging.url, requestTimeoutMs: 150 });
        const timeoutErr = await platformError(slow.getAgentInfo("x"));
        expect(timeoutErr.kind).to.equal("unavailable");
        expect(timeoutErr.message).to.contain("timed out after 150 ms");
        expect((await platformError(createHttpPlatformClient({ ...opts, baseUrl: malformed.url }).getAgentInfo("x"))).message).to.contain(
          "malformed",
        );
        // The caller's abort wins over the timeout and is passed through as-is.
        const controller = new AbortController();
        const pending = createHttpPlatformClient({ ...opts, baseUrl: hanging.url }).getAgentInfo("x", controller.signal);
        setTimeout(() => controller.abort(), 20);
        const aborted = await pending.catch((e: unknown) => e as Error);
        expect((aborted as Error).name).to.equal("AbortError");
      } finally {
        await Promise.all([failing.close(), hanging.close(), malformed.close()]);
      }
      const closedPort = await startServer((_req, res) => {
        res.end();
      });
      const url = closedPort.url;
      await closedPort.close();
      expect((await platformError(createHttpPlatformClient({ baseUrl: url, jwtSecret: p.jwtSecret }).getAgentInfo("x"))).kind).to.equal(
        "unavailable",
      );
    });

    it("polls the feed once per interval for all watchers and delivers revocations within a second", async () => {
      let feedRequests = 0;
      let feedResponses = 0;
      const countingFetch: typeof fetch = async (input, init) => {
        if (!String(input).includes("token_revocations")) return fetch(input, init);
        feedRequests++;
        const res = await fetch(input, init);
        feedResponses++;
        return res;
      };
      const client = createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret, fetch: countingFetch });
      const seenA: TokenRevocation[] = [];
      const seenB: TokenRevocation[] = [];
      const a = new AbortController();
      const b = new AbortController();
      clients.push(a, b);
      client.watchTokenRevocations((r) => seenA.push(r), a.signal);
      client.watchTokenRevocations((r) => seenB.push(r), b.signal);
      // The first answer positions the watch at "now"; revocations before it are not replayed.
      await waitFor(() => feedResponses >= 1, 1000);

      const revokedAt = Date.now();
      await revokeViaApi(tokens[0]!.id);
      await waitFor(() => seenA.length === 1 && seenB.length === 1, 1500);
      expect(Date.now() - revokedAt).to.be.below(1000);
      expect(seenA).to.deep.equal([{ kind: "agent_token", agentId, tokenId: tokens[0]!.id }]);
      expect(seenB).to.deep.equal(seenA);

      // One shared poller: ~2 requests per second however many watchers.
      const before = feedRequests;
      await sleep(1100);
      expect(feedRequests - before).to.be.within(1, 3);

      // One watcher leaves: the other still receives.
      a.abort();
      await revokeViaApi(tokens[1]!.id);
      await waitFor(() => seenB.length === 2, 1500);
      expect(seenA).to.have.length(1);

      // All gone: polling stops.
      b.abort();
      await sleep(50);
      const stopped = feedRequests;
      await sleep(700);
      expect(feedRequests).to.equal(stopped);
    });

    it("delivers finished CI jobs, revoked personal access tokens and blocked users over the feed", async () => {
      let feedResponses = 0;
      const countingFetch: typeof fetch = async (input, init) => {
        const res = await fetch(input, init);
        if (String(input).includes("token_revocations")) feedResponses++;
        return res;
      };
      const client = createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret, fetch: countingFetch, revocationPollIntervalMs: 50 });
      const seen: TokenRevocation[] = [];
      const controller = new AbortController();
      clients.push(controller);
      client.watchTokenRevocations((r) => seen.push(r), controller.signal);
      await waitFor(() => feedResponses >= 1, 2000); // positioned at "now"
      const expected = await revokeOneOfEach();
      await waitFor(() => seen.length === expected.length, 3000);
      expect(seen).to.deep.equal(expected);
    });

    it("reads entries without a kind as agent tokens (older platforms) and skips kinds it does not know", async () => {
      let page = 0;
      const feed = await startServer((_req, res) => {
        page++;
        if (page === 1) {
          res.json({ revocations: [], cursor: "1" });
          return;
        }
        res.json({
          revocations:
            page === 2
              ? [
                  { agent_id: 3, token_id: 4 },
                  { kind: "something_newer", whatever: true },
                  { kind: "ci_job", job_id: 5 },
                ]
              : [],
          cursor: "4",
        });
      });
      try {
        const client = createHttpPlatformClient({ baseUrl: feed.url, jwtSecret: p.jwtSecret, revocationPollIntervalMs: 20 });
        const seen: TokenRevocation[] = [];
        const controller = new AbortController();
        clients.push(controller);
        client.watchTokenRevocations((r) => seen.push(r), controller.signal);
        await waitFor(() => seen.length === 2, 2000);
        expect(seen).to.deep.equal([
          { kind: "agent_token", agentId: 3, tokenId: 4 },
          { kind: "ci_job", jobId: 5 },
        ]);
      } finally {
        await feed.close();
      }
    });

    it("backs off while the feed fails and recovers", async () => {
      let calls = 0;
      let failing = true;
      const flakyFetch: typeof fetch = (input, init) => {
        calls++;
        return failing ? Promise.reject(new TypeError("fetch failed")) : fetch(input, init);
      };
      const client = createHttpPlatformClient({
        baseUrl: p.baseUrl,
        jwtSecret: p.jwtSecret,
        fetch: flakyFetch,
        revocationPollIntervalMs: 50,
        revocationMaxBackoffMs: 400,
      });
      const seen: TokenRevocation[] = [];
      const controller = new AbortController();
      clients.push(controller);
      client.watchTokenRevocations((r) => seen.push(r), controller.signal);
      await sleep(1000);
      // Without back-off: ~20 calls; with 100, 200, 400, 400… ms: about 4.
      expect(calls).to.be.within(2, 6);
      failing = false;
      await sleep(500); // next attempt positions the cursor
      await revokeViaApi(tokens[0]!.id);
      await waitFor(() => seen.length === 1, 1500);
    });
  });
});

describe("platform answers KAS reads", () => {
  const job = { allowed_agents: [], job: { id: 1 }, pipeline: { id: 2 }, project: { id: 3 }, user: { id: 4, username: "u" } };
  const user = { agent: { id: 7, config_project: { id: 3 } }, user: { id: 4, username: "u" }, access_as: { agent: {} } };

  it("takes a job token's expiry (kasbridge's job.token_expires_at) when the platform sends it", () => {
    expect(parseJobAllowedAgents({ ...job, job: { id: 1, token_expires_at: "2030-01-02T03:04:05.000Z" } }).job).to.deep.equal({
      id: 1,
      tokenExpiresAt: Date.parse("2030-01-02T03:04:05.000Z"),
    });
    expect(parseJobAllowedAgents(job).job).to.deep.equal({ id: 1 }); // GitLab's answer
    expect(parseJobAllowedAgents({ ...job, job: { id: 1, token_expires_at: "soon" } }).job).to.deep.equal({ id: 1 });
  });

  it("takes the personal access token's id and expiry date (kasbridge's personal_access_token) when the platform sends them", () => {
    expect(parseProxyUserAuthorization({ ...user, personal_access_token: { id: 9, expires_at: "2030-01-02" } }).personalAccessToken).to.deep.equal({
      id: 9,
      expiresAt: Date.parse("2030-01-02T00:00:00Z"),
    });
    expect(parseProxyUserAuthorization({ ...user, personal_access_token: { id: 9, expires_at: null } }).personalAccessToken).to.deep.equal({ id: 9 });
    expect(parseProxyUserAuthorization(user).personalAccessToken).to.equal(undefined); // GitLab's answer
  });
});
