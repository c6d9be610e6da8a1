import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { AccessLevel } from "../services/access-levels.js";
import { call, startTestPlatform, type ApiResponse, type RequestOptions, type TestPlatform } from "../testing/http-fixtures.test-support.js";
import { useTestStore } from "../testing/fixtures.test-support.js";

describe("platform REST API", () => {
  const db = useTestStore("sqlite");
  let p: TestPlatform;
  let admin: string;
  const api = (method: string, path: string, options: RequestOptions = {}): Promise<ApiResponse> =>
    call(p.baseUrl, method, path, { token: admin, ...options });

  beforeEach(async () => {
    p = await startTestPlatform(db.store);
    admin = p.adminToken;
  });
  afterEach(async () => {
    await p.close();
  });

  /** Creates a user through the API and returns it with a PAT (scopes default: api). */
  async function userWithToken(username: string, scopes = ["api"]) {
    const user = await api("POST", "/api/v4/users", { body: { username, name: username.toUpperCase(), email: `${username}@example.com` } });
    expect(user.status, JSON.stringify(user.body)).to.equal(201);
    const pat = await api("POST", `/api/v4/users/${user.body.id}/personal_access_tokens`, { body: { name: "t", scopes } });
    expect(pat.status, JSON.stringify(pat.body)).to.equal(201);
    return { id: user.body.id as number, token: pat.body.token as string };
  }

  describe("authentication", () => {
    it("answers 401 without or with a bad token, accepts PRIVATE-TOKEN and Bearer", async () => {
      for (const token of [undefined, "glpat-nope", ""]) {
        const res = await call(p.baseUrl, "GET", "/api/v4/user", { token });
        expect(res.status).to.equal(401);
        expect(res.body).to.deep.equal({ message: "401 Unauthorized" });
      }
      expect((await api("GET", "/api/v4/user")).body).to.include({ username: "root", is_admin: true });
      expect((await api("GET", "/api/v4/user", { bearer: true })).body.username).to.equal("root");
    });

    it("refuses writes with a read_api token and anything with a k8s_proxy-only token", async () => {
      const reader = await userWithToken("reader", ["read_api"]);
      expect((await call(p.baseUrl, "GET", "/api/v4/user", { token: reader.token })).status).to.equal(200);
      const write = await call(p.baseUrl, "POST", "/api/v4/projects", { token: reader.token, body: { name: "x" } });
      expect(write.status).to.equal(403);
      expect(write.body.error).to.equal("insufficient_scope");
      const proxyOnly = await userWithToken("proxy", ["k8s_proxy"]);
      expect((await call(p.baseUrl, "GET", "/api/v4/user", { token: proxyOnly.token })).status).to.equal(403);
    });
  });

  describe("users and tokens (admin only)", () => {
    it("creates users and personal access tokens; refuses non-admins and duplicates", async () => {
      const alice = await userWithToken("alice");
      const me = await call(p.baseUrl, "GET", "/api/v4/user", { token: alice.token });
      expect(me.body).to.include({ id: alice.id, username: "alice", is_admin: false, web_url: "https://platform.test/alice" });

      const denied = await call(p.baseUrl, "POST", "/api/v4/users", { token: alice.token, body: { username: "x", name: "X" } });
      expect(denied.status).to.equal(403);
      expect(denied.body).to.deep.equal({ message: "403 Forbidden" });
      const deniedPat = await call(p.baseUrl, "POST", `/api/v4/users/${alice.id}/personal_access_tokens`, {
        token: alice.token,
        body: { name: "t", scopes: ["api"] },
      });
      expect(deniedPat.status).to.equal(403);

      const dup = await api("POST", "/api/v4/users", { body: { username: "alice", name: "Again" } });
      expect(dup.status).to.equal(409);
      expect(dup.body).to.deep.equal({ message: "Username has already been taken" });

      const pat = await api("POST", `/api/v4/users/${alice.id}/personal_access_tokens`, {
        body: { name: "ci", scopes: ["read_api"], expires_at: "2999-01-01" },
      });
      expect(pat.body).to.include({ name: "ci", active: true, revoked: false, user_id: alice.id, expires_at: "2999-01-01" });
      expect(pat.body.token).to.match(/^glpat-/);
      expect((await api("POST", `/api/v4/users/${alice.id}/personal_access_tokens`, { body: { name: "x" } })).body).to.include({
        error: "scopes is missing",
      });
      expect((await api("POST", "/api/v4/users/999/personal_access_tokens", { body: { name: "x", scopes: ["api"] } })).status).to.equal(404);
    });

    it("blocks and unblocks users as GitLab does: their tokens stop and start working, the feed tells KAS", async () => {
      const alice = await userWithToken("alice");
      const bob = await userWithToken("bob");
      const feed = await p.services.revocations.feed(undefined);
      expect((await call(p.baseUrl, "POST", `/api/v4/users/${bob.id}/block`, { token: alice.token })).status).to.equal(403);
      const self = await api("POST", "/api/v4/users/1/block");
      expect([self.status, self.body]).to.deep.equal([403, { message: "403 Forbidden - The API initiating user cannot be blocked by the API" }]);
      expect((await api("POST", "/api/v4/users/999/block")).body).to.deep.equal({ message: "404 User Not Found" });

      const blocked = await api("POST", `/api/v4/users/${alice.id}/block`);
      expect([blocked.status, blocked.body]).to.deep.equal([201, true]);
      expect((await api("GET", `/api/v4/users/${alice.id}`)).body.state).to.equal("blocked");
      expect((await call(p.baseUrl, "GET", "/api/v4/user", { token: alice.token })).status).to.equal(401);
      // Blocking a blocked user changes nothing and answers null, as GitLab.
      expect((await api("POST", `/api/v4/users/${alice.id}/block`)).body).to.equal(null);
      expect((await p.services.revocations.feed(feed.cursor)).revocations).to.deep.equal([{ kind: "user", userId: alice.id }]);

      const unblocked = await api("POST", `/api/v4/users/${alice.id}/unblock`);
      expect([unblocked.status, unblocked.body]).to.deep.equal([201, true]);
      expect((await call(p.baseUrl, "GET", "/api/v4/user", { token: alice.token })).status).to.equal(200);
      expect((await api("POST", `/api/v4/users/${alice.id}/unblock`)).body).to.equal(false);
      expect((await call(p.baseUrl, "POST", `/api/v4/users/${alice.id}/unblock`, { token: bob.token })).status).to.equal(403);
    });

    it("revokes personal access tokens (admins any, users their own and the one they use), and tells KAS", async () => {
      const alice = await userWithToken("alice");
      const bob = await userWithToken("bob");
      const second = await api("POST", `/api/v4/users/${alice.id}/personal_access_tokens`, { body: { name: "k8s", scopes: ["k8s_proxy"] } });
      const feed = await p.services.revocations.feed(undefined);
      const bobsTokenId = (await p.services.personalAccessTokens.list(bob.id))[0]!.id;
      const foreign = await call(p.baseUrl, "DELETE", `/api/v4/personal_access_tokens/${bobsTokenId}`, { token: alice.token });
      expect([foreign.status, foreign.body]).to.deep.equal([400, { message: "400 Bad request" }]);
      expect((await call(p.baseUrl, "DELETE", `/api/v4/personal_access_tokens/${second.body.id}`, { token: alice.token })).status).to.equal(204);
      expect((await api("DELETE", "/api/v4/personal_access_tokens/9999")).status).to.equal(404);
      expect((await api("DELETE", `/api/v4/personal_access_tokens/${bobsTokenId}`)).status).to.equal(204);
      expect((await call(p.baseUrl, "GET", "/api/v4/user", { token: bob.token })).status).to.equal(401);
      expect((await call(p.baseUrl, "DELETE", "/api/v4/personal_access_tokens/self", { token: alice.token })).status).to.equal(204);
      expect((await call(p.baseUrl, "GET", "/api/v4/user", { token: alice.token })).status).to.equal(401);
      const aliceFirst = (await p.services.personalAccessTokens.list(alice.id))[0]!.id;
      expect((await p.services.revocations.feed(feed.cursor)).revocations).to.deep.equal([
        { kind: "personal_access_token", userId: alice.id, tokenId: second.body.id },
        { kind: "personal_access_token", userId: bob.id, tokenId: bobsTokenId },
        { kind: "personal_access_token", userId: alice.id, tokenId: aliceFirst },
      ]);
    });
  });

  describe("projects and groups", () => {
    it("creates a project in the personal namespace and finds it by id and by encoded path", async () => {
      const created = await api("POST", "/api/v4/projects", { body: { name: "My Proj", path: "my-proj" } });
      expect(created.status).to.equal(201);
      const project = created.body;
      expect(project).to.include({
        name: "My Proj",
        path: "my-proj",
        path_with_namespace: "root/my-proj",
        name_with_namespace: "Administrator / My Proj",
        default_branch: "main",
        visibility: "private",
        web_url: "https://platform.test/root/my-proj",
      });
      expect(project.namespace).to.deep.include({ name: "Administrator", path: "root", kind: "user", full_path: "root" });
      expect(project.owner).to.include({ username: "root" });
      expect(Date.parse(project.created_at)).to.be.a("number").and.not.NaN;

      expect((await api("GET", `/api/v4/projects/${project.id}`)).body.id).to.equal(project.id);
      expect((await api("GET", "/api/v4/projects/root%2Fmy-proj")).body.id).to.equal(project.id);
      const missing = await api("GET", "/api/v4/projects/root%2Fnope");
      expect(missing.status).to.equal(404);
      expect(missing.body).to.deep.equal({ message: "404 Project Not Found" });
      expect((await api("GET", "/api/v4/projects/99999999999")).status).to.equal(404);
    });

    it("reports duplicate and invalid projects as GitLab does", async () => {
      await api("POST", "/api/v4/projects", { body: { name: "dup" } });
      const dup = await api("POST", "/api/v4/projects", { body: { name: "dup" } });
      expect(dup.status).to.equal(400);
      expect(dup.body).to.deep.equal({ message: { name: ["has already been taken"], path: ["has already been taken"] } });
      expect((await api("POST", "/api/v4/projects", { body: {} })).status).to.equal(400);
      expect((await api("POST", "/api/v4/projects", { body: { name: "x", namespace_id: 424242 } })).body).to.deep.equal({
        message: "404 Namespace Not Found",
      });
    });

    it("nests groups and builds full paths for their projects", async () => {
      const top = await api("POST", "/api/v4/groups", { body: { name: "Top", path: "top" } });
      expect(top.status).to.equal(201);
      expect(top.body).to.include({ full_path: "top", full_name: "Top", parent_id: null, visibility: "private" });
      const sub = await api("POST", "/api/v4/groups", { body: { name: "Sub", path: "sub", parent_id: top.body.id } });
      expect(sub.body).to.include({ full_path: "top/sub", full_name: "Top / Sub", parent_id: top.body.id });
      expect(sub.body.web_url).to.equal("https://platform.test/groups/top/sub");
      const leaf = await api("POST", "/api/v4/groups", { body: { name: "Leaf", path: "leaf", parent_id: sub.body.id } });
      expect(leaf.body.full_path).to.equal("top/sub/leaf");

      const project = await api("POST", "/api/v4/projects", { body: { name: "app", namespace_id: leaf.body.id } });
      expect(project.body.path_with_namespace).to.equal("top/sub/leaf/app");
      expect(project.body.namespace).to.include({ kind: "group", full_path: "top/sub/leaf", parent_id: sub.body.id });
      expect((await api("GET", "/api/v4/projects/top%2Fsub%2Fleaf%2Fapp")).body.id).to.equal(project.body.id);
      expect((await api("GET", "/api/v4/groups/top%2Fsub")).body.id).to.equal(sub.body.id);

      const dup = await api("POST", "/api/v4/groups", { body: { name: "Sub2", path: "sub", parent_id: top.body.id } });
      expect(dup.status).to.equal(400);
      expect(dup.body.message).to.contain("has already been taken");
      expect((await api("POST", "/api/v4/groups", { body: { name: "NoPath" } })).body).to.include({ error: "path is missing" });

      // A non-member cannot see the private group, so cannot nest under it.
      const bob = await userWithToken("bob");
      const hidden = await call(p.baseUrl, "POST", "/api/v4/groups", {
        token: bob.token,
        body: { name: "X", path: "x", parent_id: top.body.id },
      });
      expect(hidden.status).to.equal(404);
      // A developer of the group sees it but may not create subgroups (Maintainer needed)…
      await api("POST", `/api/v4/groups/${top.body.id}/members`, { body: { user_id: bob.id, access_level: AccessLevel.DEVELOPER } });
      const tooLow = await call(p.baseUrl, "POST", "/api/v4/groups", {
        token: bob.token,
        body: { name: "X", path: "x", parent_id: top.body.id },
      });
      expect(tooLow.status).to.equal(403);
      // …but may create projects in it (GitLab's default project_creation_level).
      const bobsProject = await call(p.baseUrl, "POST", "/api/v4/projects", {
        token: bob.token,
        body: { name: "bobs", namespace_id: "top/sub" },
      });
      expect(bobsProject.status).to.equal(201);
      expect(bobsProject.body.path_with_namespace).to.equal("top/sub/bobs");
    });

    it("answers 400 with a message for a malformed JSON body", async () => {
      const res = await api("POST", "/api/v4/projects", { rawBody: "{not json" });
      expect(res.status).to.equal(400);
      expect(res.body.message).to.match(/^400 Bad request/);
    });
  });

  describe("cluster agents and tokens", () => {
    let projectId: number;
    beforeEach(async () => {
      projectId = (await api("POST", "/api/v4/projects", { body: { name: "cfg" } })).body.id;
    });

    it("registers, lists, shows and deletes agents", async () => {
      const created = await api("POST", `/api/v4/projects/${projectId}/cluster_agents`, { body: { name: "my-agent" } });
      expect(created.status).to.equal(201);
      expect(created.body).to.include({ name: "my-agent", created_by_user_id: 1 });
      expect(created.body.config_project).to.include({ id: projectId, path_with_namespace: "root/cfg", name_with_namespace: "Administrator / cfg" });
      const agentId = created.body.id as number;

      const list = await api("GET", "/api/v4/projects/root%2Fcfg/cluster_agents");
      expect(list.body.map((a: { name: string }) => a.name)).to.deep.equal(["my-agent"]);
      expect(list.headers.get("x-total")).to.equal("1");
      expect((await api("GET", `/api/v4/projects/${projectId}/cluster_agents/${agentId}`)).body.id).to.equal(agentId);

      const dup = await api("POST", `/api/v4/projects/${projectId}/cluster_agents`, { body: { name: "my-agent" } });
      expect(dup.status).to.equal(400);
      expect(dup.body).to.deep.equal({ message: '400 Bad request - ["Name has already been taken"]' });
      const bad = await api("POST", `/api/v4/projects/${projectId}/cluster_agents`, { body: { name: "Bad_Name" } });
      expect(bad.status).to.equal(400);
      expect(bad.body.message).to.contain("lowercase letters, digits, and '-'");
      expect((await api("POST", `/api/v4/projects/${projectId}/cluster_agents`, { body: {} })).body).to.include({ error: "name is missing" });
      expect((await api("GET", `/api/v4/projects/${projectId}/cluster_agents/abc`)).status).to.equal(400);

      expect((await api("DELETE", `/api/v4/projects/${projectId}/cluster_agents/${agentId}`)).status).to.equal(204);
      expect((await api("GET", `/api/v4/projects/${projectId}/cluster_agents/${agentId}`)).status).to.equal(404);
      expect((await api("DELETE", `/api/v4/projects/${projectId}/cluster_agents/${agentId}`)).status).to.equal(404);
    });

    it("creates tokens (plaintext once), refuses a third, revokes", async () => {
      const agentId = (await api("POST", `/api/v4/projects/${projectId}/cluster_agents`, { body: { name: "a" } })).body.id;
      const base = `/api/v4/projects/${projectId}/cluster_agents/${agentId}/tokens`;
      const t1 = await api("POST", base, { body: { name: "one", description: "first token" } });
      expect(t1.status).to.equal(201);
      expect(t1.body).to.include({ name: "one", description: "first token", agent_id: agentId, status: "active", created_by_user_id: 1, last_used_at: null });
      expect(t1.body.token).to.match(/^glagent-[A-Za-z0-9]{50}$/);
      const t2 = await api("POST", base, { body: { name: "two" } });
      expect(t2.body.description).to.equal(null);

      const third = await api("POST", base, { body: { name: "three" } });
      expect(third.status).to.equal(400);
      expect(third.body).to.deep.equal({ message: "400 Bad request - An agent can have only two active tokens at a time" });

      const list = await api("GET", base);
      expect(list.body).to.have.length(2);
      for (const t of list.body) expect(t).to.not.have.property("token");
      const single = await api("GET", `${base}/${t1.body.id}`);
      expect(single.body).to.include({ id: t1.body.id, status: "active" }).and.not.have.property("token");

      expect((await api("DELETE", `${base}/${t1.body.id}`)).status).to.equal(204);
      expect((await api("GET", `${base}/${t1.body.id}`)).status).to.equal(404);
      expect((await api("GET", base)).body.map((t: { id: number }) => t.id)).to.deep.equal([t2.body.id]);
      expect((await api("POST", base, { body: { name: "three" } })).status).to.equal(201);
      expect((await api("DELETE", `${base}/99999`)).status).to.equal(404);
      expect((await api("POST", `/api/v4/projects/${projectId}/cluster_agents/99999/tokens`, { body: { name: "x" } })).status).to.equal(404);
    });

    it("applies GitLab's roles: developers read, maintainers manage, strangers see nothing", async () => {
      const agentId = (await api("POST", `/api/v4/projects/${projectId}/cluster_agents`, { body: { name: "a" } })).body.id;
      const tokens = `/api/v4/projects/${projectId}/cluster_agents/${agentId}/tokens`;
      const tokenId = (await api("POST", tokens, { body: { name: "t" } })).body.id;
      const users: Record<string, { id: number; token: string }> = {};
      for (const [name, level] of [
        ["reporter", AccessLevel.REPORTER],
        ["developer", AccessLevel.DEVELOPER],
        ["maintainer", AccessLevel.MAINTAINER],
      ] as const) {
        users[name] = await userWithToken(name);
        const m = await api("POST", `/api/v4/projects/${projectId}/members`, { body: { user_id: users[name].id, access_level: level } });
        expect(m.status).to.equal(201);
        expect(m.body).to.include({ username: name, access_level: level });
      }
      users.stranger = await userWithToken("stranger");
      const as = (who: string, method: string, path: string, body?: unknown) =>
        call(p.baseUrl, method, path, { token: users[who]!.token, body });

      expect((await as("stranger", "GET", `/api/v4/projects/${projectId}`)).status).to.equal(404);
      expect((await as("stranger", "GET", `/api/v4/projects/${projectId}/cluster_agents`)).body).to.deep.equal({
        message: "404 Project Not Found",
      });

      expect((await as("reporter", "GET", `/api/v4/projects/${projectId}`)).status).to.equal(200);
      expect((await as("reporter", "GET", `/api/v4/projects/${projectId}/cluster_agents`)).body).to.deep.equal({
        message: "404 ClusterAgents Not Found",
      });

      expect((await as("developer", "GET", `/api/v4/projects/${projectId}/cluster_agents`)).status).to.equal(200);
      expect((await as("developer", "GET", tokens)).status).to.equal(200);
      expect((await as("developer", "POST", `/api/v4/projects/${projectId}/cluster_agents`, { name: "b" })).status).to.equal(403);
      expect((await as("developer", "POST", tokens, { name: "x" })).status).to.equal(403);
      expect((await as("developer", "DELETE", `${tokens}/${tokenId}`)).status).to.equal(403);
      expect((await as("developer", "DELETE", `/api/v4/projects/${projectId}/cluster_agents/${agentId}`)).status).to.equal(403);
      // Adding members needs Maintainer.
      expect((await as("developer", "POST", `/api/v4/projects/${projectId}/members`, { user_id: users.stranger!.id, access_level: 10 })).status).to.equal(403);

      const byMaintainer = await as("maintainer", "POST", `/api/v4/projects/${projectId}/cluster_agents`, { name: "b" });
      expect(byMaintainer.status).to.equal(201);
      expect((await as("maintainer", "POST", tokens, { name: "x" })).status).to.equal(201);
      expect((await as("maintainer", "DELETE", `${tokens}/${tokenId}`)).status).to.equal(204);
      // A maintainer cannot grant Owner.
      expect((await as("maintainer", "POST", `/api/v4/projects/${projectId}/members`, { user_id: users.stranger!.id, access_level: 50 })).status).to.equal(403);
      const dupMember = await api("POST", `/api/v4/projects/${projectId}/members`, { body: { user_id: users.reporter!.id, access_level: 30 } });
      expect(dupMember.status).to.equal(409);
    });

    it("lists the agent's connections from the AgentConnectionsSource", async () => {
      const agentId = (await api("POST", `/api/v4/projects/${projectId}/cluster_agents`, { body: { name: "a" } })).body.id;
      const path = `/api/v4/projects/${projectId}/cluster_agents/${agentId}/connections`;
      expect((await api("GET", path)).body).to.deep.equal([]);
      p.connections.byAgent.set(agentId, [
        {
          connectionId: "9007199254740993",
          agentId,
          projectId,
          agentVersion: "v16.5.0",
          agentCommit: "abc123",
          podName: "agentk-0",
          podNamespace: "gitlab-agent",
          connectedAt: new Date("2030-01-01T00:00:00Z"),
          kasInstance: "kas-1",
        },
      ]);
      expect((await api("GET", path)).body).to.deep.equal([
        {
          connection_id: "9007199254740993",
          agent_version: "v16.5.0",
          agent_commit: "abc123",
          pod_name: "agentk-0",
          pod_namespace: "gitlab-agent",
          connected_at: "2030-01-01T00:00:00.000Z",
          kas_instance: "kas-1",
        },
      ]);
      p.connections.failWith = new Error("tracker down");
      expect((await api("GET", path)).status).to.equal(503);
      expect((await api("GET", `/api/v4/projects/${projectId}/cluster_agents/9999/connections`)).status).to.equal(404);
    });

    it("answers the agent's health: connected pods and versions, last seen, config commit, last error", async () => {
      const agentId = (await api("POST", `/api/v4/projects/${projectId}/cluster_agents`, { body: { name: "h" } })).body.id;
      const path = `/api/v4/projects/${projectId}/cluster_agents/${agentId}/health`;
      const never = (await api("GET", path)).body;
      expect(never).to.include({ id: agentId, name: "h", connected: false, last_seen_at: null, config_commit_id: null, last_error: null });
      expect(never.pods).to.deep.equal([]);
      expect(never.config_project.id).to.equal(projectId);
      const pod = (n: number, version: string) => ({
        connectionId: String(n),
        agentId,
        projectId,
        agentVersion: version,
        agentCommit: "c",
        podName: `agentk-${n}`,
        podNamespace: "gitlab-agent",
        connectedAt: new Date("2030-01-01T00:00:00Z"),
        kasInstance: "kas-1",
      });
      p.connections.byAgent.set(agentId, [pod(1, "v16.5.0"), pod(2, "v16.4.0"), pod(3, "v16.5.0")]);
      const up = (await api("GET", path)).body;
      expect(up.connected).to.equal(true);
      expect(up.versions).to.deep.equal(["v16.4.0", "v16.5.0"]);
      expect(up.pods.map((x: { pod_name: string }) => x.pod_name)).to.deep.equal(["agentk-1", "agentk-2", "agentk-3"]);
      expect(Date.parse(up.last_seen_at)).to.be.greaterThan(0);
      p.connections.failWith = new Error("tracker down");
      expect((await api("GET", path)).status).to.equal(503);
    });
  });
});
