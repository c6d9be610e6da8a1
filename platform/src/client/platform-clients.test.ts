import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import http from "node:http";
import express from "express";
import pino from "pino";
import { AgentAuthenticator } from "@kasbridge/sdk/kas";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { waitFor } from "@kasbridge/testing/wait";
import { parseJobAllowedAgents, parseProxyUserAuthorization, type PlatformClient, type TokenRevocation } from "@kasbridge/sdk/platform-client";
import { FeedFetch } from "../testing/feed-fetch.test-support.js";
import { call, platformError, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test-support.js";
import { useTestStore } from "../testing/fixtures.test-support.js";
import { createHttpPlatformClient } from "@kasbridge/sdk/platform-client";
import { createInProcessPlatformClient } from "./in-process-platform-client.js";

const TOKEN_REVOCATIONS = "token_revocations";

/** A throwaway express server; `handler` answers every request. */
async function startServer(handler: express.RequestHandler): Promise<{ url: string; close(): Promise<void> }> {
  const app = express();
  app.use(handler);
  const server = http.createServer(app);
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections();
      await closeServer(server);
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

  /** The agent reads its own project and public ones; private projects of others look absent. */
  function expectProjectAccess(client: PlatformClient) {
    return async () => {
      const admin = { token: p.adminToken };
      await call(p.baseUrl, "POST", "/api/v4/projects", { ...admin, body: { name: "open", visibility: "public" } });
      await call(p.baseUrl, "POST", "/api/v4/projects", { ...admin, body: { name: "closed" } });
      const token = tokens[0]!.secret;
      expect(await client.verifyProjectAccess!(token, "root/cfg")).to.equal(true);
      expect(await client.verifyProjectAccess!(token, "root/open")).to.equal(true);
      expect(await client.verifyProjectAccess!(token, "root/closed")).to.equal(false);
      expect(await client.verifyProjectAccess!(token, "root/missing")).to.equal(false);
      expect((await platformError(client.verifyProjectAccess!("glagent-unknown", "root/cfg"))).kind).to.equal("unauthenticated");
      expect(await client.getProjectInfo!(token, "root/open")).to.deep.include({ defaultBranch: "main", fullPath: "root/open" });
      expect((await client.getProjectInfo!(token, "root/cfg")).projectId).to.equal(projectId);
      expect((await platformError(client.getProjectInfo!(token, "root/closed"))).kind).to.equal("not_found");
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

    it("answers which projects an agent may read (verify_project_access, project_info)", async () => {
      await expectProjectAccess(createInProcessPlatformClient(p.services))();
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

    it("answers which projects an agent may read over GitLab's verify_project_access and project_info", async () => {
      await expectProjectAccess(createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret }))();
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
        let requested!: () => void;
        const arrived = new Promise<void>((resolve) => (requested = resolve));
        const watching: typeof fetch = (input, init) => {
          requested();
          return fetch(input, init);
        };
        const pending = createHttpPlatformClient({ ...opts, baseUrl: hanging.url, fetch: watching }).getAgentInfo("x", controller.signal);
        await arrived;
        controller.abort();
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

    it("polls the feed with one poller for all watchers, delivers revocations to each, stops when the last leaves", async () => {
      const feed = new FeedFetch(TOKEN_REVOCATIONS);
      feed.hold = true;
      const client = createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret, fetch: feed.fetch, revocationPollIntervalMs: 20 });
      const seenA: TokenRevocation[] = [];
      const seenB: TokenRevocation[] = [];
      const a = new AbortController();
      const b = new AbortController();
      clients.push(a, b);
      client.watchTokenRevocations((r) => seenA.push(r), a.signal);
      client.watchTokenRevocations((r) => seenB.push(r), b.signal);

      // The first answer positions the watch at "now"; revocations before it are not replayed.
      const positioning = await feed.next();
      expect(positioning.url.searchParams.has("after")).to.equal(false);
      positioning.pass();
      const polling = await feed.next();
      expect(polling.url.searchParams.has("after")).to.equal(true);
      // One poller however many watchers: one request without a cursor, one request at a time.
      expect(feed.requests.filter((u) => !u.searchParams.has("after"))).to.have.length(1);
      expect(feed.requests).to.have.length(2);

      // A revocation recorded before the platform answers the poll is in its answer.
      await revokeViaApi(tokens[0]!.id);
      polling.pass();
      await waitFor(() => seenA.length === 1 && seenB.length === 1, undefined, "both watchers to see the revocation");
      expect(seenA).to.deep.equal([{ kind: "agent_token", agentId, tokenId: tokens[0]!.id }]);
      expect(seenB).to.deep.equal(seenA);

      // One watcher leaves: the other still receives.
      a.abort();
      const next = await feed.next();
      await revokeViaApi(tokens[1]!.id);
      next.pass();
      await waitFor(() => seenB.length === 2, undefined, "the remaining watcher to see the second revocation");
      expect(seenA).to.have.length(1);

      // All gone: the poller stops, cancelling the request it has made.
      const last = await feed.next();
      b.abort();
      expect(last.signal?.aborted).to.equal(true);
      last.pass();
    });

    it("delivers finished CI jobs, revoked personal access tokens and blocked users over the feed", async () => {
      const feed = new FeedFetch(TOKEN_REVOCATIONS);
      const client = createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret, fetch: feed.fetch, revocationPollIntervalMs: 50 });
      const seen: TokenRevocation[] = [];
      const controller = new AbortController();
      clients.push(controller);
      client.watchTokenRevocations((r) => seen.push(r), controller.signal);
      await waitFor(() => feed.answers >= 1, undefined, "the feed's first answer (the watch positioned at now)");
      const expected = await revokeOneOfEach();
      await waitFor(() => seen.length === expected.length, undefined, "the three revocations");
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
        await waitFor(() => seen.length === 2, undefined, "the two known revocations");
        expect(seen).to.deep.equal([
          { kind: "agent_token", agentId: 3, tokenId: 4 },
          { kind: "ci_job", jobId: 5 },
        ]);
      } finally {
        await feed.close();
      }
    });

    it("backs off while the feed fails and recovers", async () => {
      const feed = new FeedFetch(TOKEN_REVOCATIONS);
      feed.outage = true;
      const log: Array<{ msg: string; failures?: number; retryInMs?: number }> = [];
      const client = createHttpPlatformClient({
        baseUrl: p.baseUrl,
        jwtSecret: p.jwtSecret,
        fetch: feed.fetch,
        revocationPollIntervalMs: 10,
        revocationMaxBackoffMs: 80,
        logger: pino({ level: "info" }, { write: (line: string) => log.push(JSON.parse(line)) }),
      });
      const seen: TokenRevocation[] = [];
      const controller = new AbortController();
      clients.push(controller);
      const started = Date.now();
      client.watchTokenRevocations((r) => seen.push(r), controller.signal);
      await waitFor(() => feed.failures >= 10, undefined, "ten failed polls");
      // Doubling from the interval, capped: 20, 40, 80, 80, ... ms (the log shows failures 1 and 10).
      const warnings = log.filter((l) => l.msg === "cannot poll token revocation feed");
      expect(warnings.map((w) => [w.failures, w.retryInMs])).to.deep.equal([[1, 20], [10, 80]]);
      // And the poller waits that long: a lower bound only (load can only make it later). Without
      // the back-off, ten polls would take nine intervals (90 ms) instead of 20 + 40 + 7 x 80 ms.
      expect(Date.now() - started).to.be.at.least(0.8 * (20 + 40 + 80 * 7));

      feed.outage = false;
      await waitFor(() => feed.answers >= 1, undefined, "the feed to answer again");
      expect(log.some((l) => l.msg === "token revocation feed reachable again")).to.equal(true);
      await revokeViaApi(tokens[0]!.id);
      await waitFor(() => seen.length === 1, undefined, "the revocation after the outage");
    });

    it("delivers a revocation made while the platform was down once it is back, and KAS then closes the token's calls", async () => {
      const feed = new FeedFetch(TOKEN_REVOCATIONS);
      const client = createHttpPlatformClient({
        baseUrl: p.baseUrl,
        jwtSecret: p.jwtSecret,
        fetch: feed.fetch,
        revocationPollIntervalMs: 20,
        revocationMaxBackoffMs: 40,
      });
      const auth = new AgentAuthenticator({ platform: client, logger: pino({ level: "silent" }) });
      try {
        const info = await auth.authenticate(new Headers({ authorization: `Bearer ${tokens[0]!.secret}` }));
        const call = auth.watchToken(info);
        await waitFor(() => feed.answers >= 1, undefined, "the feed's first answer");

        feed.outage = true;
        const failedBefore = feed.failures;
        await waitFor(() => feed.failures > failedBefore, undefined, "a poll during the outage");
        await revokeViaApi(tokens[0]!.id);
        const failedAtRevocation = feed.failures;
        await waitFor(() => feed.failures > failedAtRevocation, undefined, "a poll after the revocation, during the outage");
        expect(call.signal.aborted).to.equal(false);

        // The platform is back: the poll resumes from its cursor, so the revocation is not lost.
        feed.outage = false;
        await waitFor(() => call.signal.aborted, undefined, "the token's calls to be aborted");
        expect((call.signal.reason as Error).message).to.contain("agent token revoked");
        // Its cached agent_info is gone: the token is refused at once, not after the cache's 60 s.
        const refused = await auth.authenticate(new Headers({ authorization: `Bearer ${tokens[0]!.secret}` })).catch((e: Error) => e);
        expect((refused as Error).message).to.contain("invalid or revoked");
        call.release();
      } finally {
        auth.close();
      }
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
