import { beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import type { TokenRevocation } from "@kasbridge/sdk/platform-client";
import { describeEachStore } from "../testing/fixtures.test-support.js";
import { AccessLevel } from "./access-levels.js";
import { ServiceError } from "./errors.js";
import { rejectionOf } from "@kasbridge/testing/wait";
import { createPlatformServices, type PlatformServices } from "./platform-services.js";

const serviceError = (p: Promise<unknown>) => rejectionOf(p, ServiceError);

describeEachStore("platform/services", (getStore) => {
  let clock: Date;
  let svc: PlatformServices;
  beforeEach(() => {
    clock = new Date("2030-01-01T00:00:00Z");
    svc = createPlatformServices({ store: getStore(), now: () => clock });
  });
  const advance = (ms: number) => {
    clock = new Date(clock.getTime() + ms);
  };

  describe("users", () => {
    it("creates a user with a personal namespace", async () => {
      const user = await svc.users.create({ username: "alice", name: "Alice A", email: "alice@example.com" });
      expect(user).to.include({ username: "alice", name: "Alice A", admin: false, state: "active" });
      const ns = await svc.namespaces.personalNamespaceOf(user.id);
      expect(ns).to.include({ kind: "user", path: "alice", fullPath: "alice", fullName: "Alice A", ownerId: user.id });
      expect(await svc.users.count()).to.equal(1);
    });

    it("refuses duplicate usernames and emails as conflicts", async () => {
      await svc.users.create({ username: "bob", name: "Bob", email: "bob@example.com" });
      expect(await serviceError(svc.users.create({ username: "BOB", name: "B" }))).to.include({
        kind: "conflict",
        message: "Username has already been taken",
      });
      expect(await serviceError(svc.users.create({ username: "bob2", name: "B", email: "BOB@example.com" }))).to.include({
        kind: "conflict",
        message: "Email has already been taken",
      });
      expect((await serviceError(svc.users.create({ username: "-bad", name: "B" }))).kind).to.equal("invalid");
    });
  });

  describe("groups and projects", () => {
    it("nests groups with full paths and full names", async () => {
      const owner = await svc.users.create({ username: "owner", name: "Owner" });
      const top = await svc.namespaces.createGroup({ name: "Top Group", path: "top" }, owner.id);
      const mid = await svc.namespaces.createGroup({ name: "Mid", path: "mid", parentId: top.id }, owner.id);
      const leaf = await svc.namespaces.createGroup({ name: "Leaf", path: "leaf", parentId: mid.id }, owner.id);
      expect(leaf).to.include({ fullPath: "top/mid/leaf", fullName: "Top Group / Mid / Leaf", parentId: mid.id, kind: "group" });
      expect(await svc.namespaces.selfAndAncestorIds(leaf)).to.deep.equal([leaf.id, mid.id, top.id]);
      expect((await svc.namespaces.getByFullPath("top/mid"))?.id).to.equal(mid.id);
      expect(await svc.members.groupAccessLevel(owner.id, leaf)).to.equal(AccessLevel.OWNER);

      const dup = await serviceError(svc.namespaces.createGroup({ name: "Other", path: "mid", parentId: top.id }, owner.id));
      expect(dup.kind).to.equal("invalid");
      expect(dup.message).to.contain("has already been taken");
      // Same path under another parent is fine.
      await svc.namespaces.createGroup({ name: "Mid", path: "mid" }, owner.id);
      expect((await serviceError(svc.namespaces.createGroup({ name: "X", path: "x", parentId: 9999 }, null))).kind).to.equal(
        "not_found",
      );
      // A group cannot take a username's top-level path.
      expect((await serviceError(svc.namespaces.createGroup({ name: "Owner", path: "owner" }, null))).kind).to.equal("invalid");
    });

    it("creates projects with path_with_namespace, default branch main, and the creator as owner", async () => {
      const alice = await svc.users.create({ username: "alice", name: "Alice" });
      const ns = (await svc.namespaces.personalNamespaceOf(alice.id))!;
      const project = await svc.projects.create({ name: "My Project", namespaceId: ns.id }, alice.id);
      expect(project).to.include({
        name: "My Project",
        path: "my-project",
        pathWithNamespace: "alice/my-project",
        nameWithNamespace: "Alice / My Project",
        defaultBranch: "main",
        visibility: "private",
        creatorId: alice.id,
      });
      expect((await svc.projects.find("alice/my-project"))?.id).to.equal(project.id);
      expect((await svc.projects.find(String(project.id)))?.id).to.equal(project.id);
      expect(await svc.projects.find("alice/nope")).to.equal(undefined);
      expect(await svc.members.projectAccessLevel(alice.id, project)).to.equal(AccessLevel.OWNER);

      const dup = await serviceError(svc.projects.create({ name: "My Project", namespaceId: ns.id }, alice.id));
      expect(dup.kind).to.equal("invalid");
      expect(dup.fieldErrors).to.deep.equal({ name: ["has already been taken"], path: ["has already been taken"] });
      expect((await serviceError(svc.projects.create({ name: "x", namespaceId: 9999 }, alice.id))).kind).to.equal("not_found");
      expect((await serviceError(svc.projects.create({ name: "x", path: "bad path", namespaceId: ns.id }, alice.id))).fieldErrors)
        .to.have.property("path");
      for (const bad of ["bad branch", "x..y", "end.lock", "/lead", "tilde~", "ctl\u0001"]) {
        const err = await serviceError(svc.projects.create({ name: `b${bad.length}`, namespaceId: ns.id, defaultBranch: bad }, alice.id));
        expect(err.fieldErrors, bad).to.have.property("default_branch");
      }
      const feature = await svc.projects.create({ name: "feat", namespaceId: ns.id, defaultBranch: "release/v1.2" }, alice.id);
      expect(feature.defaultBranch).to.equal("release/v1.2");
    });

    it("computes access from project membership and ancestor groups, and visibility", async () => {
      const owner = await svc.users.create({ username: "owner", name: "Owner" });
      const dev = await svc.users.create({ username: "dev", name: "Dev" });
      const rep = await svc.users.create({ username: "rep", name: "Rep" });
      const stranger = await svc.users.create({ username: "stranger", name: "Stranger" });
      const admin = await svc.users.create({ username: "admin", name: "Admin", admin: true });
      const top = await svc.namespaces.createGroup({ name: "Top", path: "top" }, owner.id);
      const sub = await svc.namespaces.createGroup({ name: "Sub", path: "sub", parentId: top.id }, owner.id);
      const project = await svc.projects.create({ name: "app", namespaceId: sub.id }, owner.id);
      expect(project.pathWithNamespace).to.equal("top/sub/app");

      await svc.members.addGroupMember(top.id, dev.id, AccessLevel.DEVELOPER);
      await svc.members.addProjectMember(project.id, rep.id, AccessLevel.REPORTER);
      await svc.members.addGroupMember(sub.id, rep.id, AccessLevel.GUEST);
      expect(await svc.members.projectAccessLevel(dev.id, project)).to.equal(AccessLevel.DEVELOPER);
      expect(await svc.members.projectAccessLevel(rep.id, project)).to.equal(AccessLevel.REPORTER);
      expect(await svc.members.projectAccessLevel(stranger.id, project)).to.equal(AccessLevel.NO_ACCESS);
      expect(await svc.members.canReadProject(stranger, project)).to.equal(false);
      expect(await svc.members.canReadProject(rep, project)).to.equal(true);
      expect(await svc.members.canReadProject(admin, project)).to.equal(true);
      expect(await svc.members.canReadProject(undefined, project)).to.equal(false);

      expect((await serviceError(svc.members.addProjectMember(project.id, rep.id, AccessLevel.DEVELOPER))).kind).to.equal("conflict");
      expect((await serviceError(svc.members.addProjectMember(project.id, dev.id, 35))).kind).to.equal("invalid");
      expect((await serviceError(svc.members.addProjectMember(project.id, 9999, 30))).kind).to.equal("not_found");
    });
  });

  describe("agents and agent tokens", () => {
    async function setup() {
      const user = await svc.users.create({ username: "root", name: "Administrator", admin: true });
      const ns = (await svc.namespaces.personalNamespaceOf(user.id))!;
      const project = await svc.projects.create({ name: "cfg", namespaceId: ns.id }, user.id);
      const agent = await svc.agents.create(project.id, "my-agent", user.id);
      return { user, project, agent };
    }

    it("validates agent names as GitLab does and keeps them unique per project", async () => {
      const { user, project, agent } = await setup();
      expect(agent).to.include({ name: "my-agent", projectId: project.id, createdByUserId: user.id });
      for (const bad of ["My-Agent", "-agent", "agent-", "a_b", "", "a".repeat(64)]) {
        expect((await serviceError(svc.agents.create(project.id, bad, user.id))).kind, bad).to.equal("invalid");
      }
      await svc.agents.create(project.id, "a".repeat(63), user.id);
      const dup = await serviceError(svc.agents.create(project.id, "my-agent", user.id));
      expect(dup.message).to.equal('["Name has already been taken"]');
      const other = await svc.projects.create({ name: "other", namespaceId: project.namespace.id }, user.id);
      await svc.agents.create(other.id, "my-agent", user.id);
      expect((await svc.agents.list(project.id)).map((a) => a.name)).to.deep.equal(["my-agent", "a".repeat(63)]);
      expect(await svc.agents.get(other.id, agent.id)).to.equal(undefined);
    });

    it("issues at most two active tokens, stores only digests, and authenticates", async () => {
      const { user, project, agent } = await setup();
      const first = await svc.agentTokens.create(agent.id, { name: "t1", description: "first" }, user.id);
      expect(first.secret).to.match(/^glagent-[A-Za-z0-9]{50}$/);
      expect(first.token).to.include({ name: "t1", description: "first", status: "active", agentId: agent.id, lastUsedAt: null });
      const second = await svc.agentTokens.create(agent.id, { name: "t2" }, user.id);
      const third = await serviceError(svc.agentTokens.create(agent.id, { name: "t3" }, user.id));
      expect(third).to.include({ kind: "invalid", message: "An agent can have only two active tokens at a time" });

      const stored = (await getStore().knex("cluster_agent_tokens").select("*")) as Record<string, unknown>[];
      expect(JSON.stringify(stored)).to.not.contain(first.secret.slice(8));

      const auth = await svc.agentTokens.authenticate(first.secret);
      expect(auth?.agent.id).to.equal(agent.id);
      expect(auth?.token.id).to.equal(first.token.id);
      expect(auth?.project.pathWithNamespace).to.equal(project.pathWithNamespace);
      expect(await svc.agentTokens.authenticate(first.secret + "x")).to.equal(undefined);
      expect(await svc.agentTokens.authenticate("")).to.equal(undefined);

      // Revoking frees a slot.
      await svc.agentTokens.revoke(agent.id, second.token.id);
      await svc.agentTokens.create(agent.id, { name: "t3" }, user.id);
      expect((await svc.agentTokens.list(agent.id)).map((t) => t.name)).to.deep.equal(["t1", "t3"]);
      expect((await svc.agentTokens.list(agent.id, { includeRevoked: true })).length).to.equal(3);
    });

    it("announces a revocation synchronously, records it in the feed, and refuses the token at once", async () => {
      const { user, agent } = await setup();
      const { token, secret } = await svc.agentTokens.create(agent.id, { name: "t" }, user.id);
      const start = await svc.revocations.feed(undefined);
      const seen: TokenRevocation[] = [];
      const unsubscribe = svc.revocations.subscribe((r) => seen.push(r));
      svc.revocations.subscribe(() => {
        throw new Error("a failing listener must not break the others");
      });

      const { token: revoked, revokedNow } = await svc.agentTokens.revoke(agent.id, token.id);
      expect(revoked.status).to.equal("revoked");
      expect(revokedNow).to.equal(true);
      expect(seen).to.deep.equal([{ kind: "agent_token", agentId: agent.id, tokenId: token.id }]);
      expect(await svc.agentTokens.authenticate(secret)).to.equal(undefined);

      const page = await svc.revocations.feed(start.cursor);
      expect(page.revocations).to.deep.equal([{ kind: "agent_token", agentId: agent.id, tokenId: token.id }]);
      expect(page.cursor).to.be.greaterThan(start.cursor);
      expect((await svc.revocations.feed(page.cursor)).revocations).to.deep.equal([]);
      // A cursor from a replaced database restarts at the current position.
      expect(await svc.revocations.feed(page.cursor + 100)).to.deep.equal({ revocations: [], cursor: page.cursor });

      // Revoking again is a no-op: no second announcement.
      expect((await svc.agentTokens.revoke(agent.id, token.id)).revokedNow).to.equal(false);
      expect(seen).to.have.length(1);
      unsubscribe();
      expect((await serviceError(svc.agentTokens.revoke(agent.id, 9999))).kind).to.equal("not_found");
    });

    it("revokes and announces an agent's active tokens when the agent is deleted", async () => {
      const { user, project, agent } = await setup();
      const a = await svc.agentTokens.create(agent.id, { name: "a" }, user.id);
      const b = await svc.agentTokens.create(agent.id, { name: "b" }, user.id);
      await svc.agentTokens.revoke(agent.id, b.token.id);
      const seen: TokenRevocation[] = [];
      svc.revocations.subscribe((r) => seen.push(r));
      const start = await svc.revocations.feed(undefined);
      expect(await svc.agents.delete(project.id, agent.id)).to.equal(true);
      expect(seen).to.deep.equal([{ kind: "agent_token", agentId: agent.id, tokenId: a.token.id }]);
      expect((await svc.revocations.feed(start.cursor)).revocations).to.deep.equal(seen);
      expect(await svc.agentTokens.authenticate(a.secret)).to.equal(undefined);
      expect(await svc.agents.delete(project.id, agent.id)).to.equal(false);
      expect(await getStore().knex("cluster_agent_tokens").where({ agent_id: agent.id })).to.deep.equal([]);
    });

    it("writes last_used_at at most once per minute per token", async () => {
      const { user, agent } = await setup();
      const { token, secret } = await svc.agentTokens.create(agent.id, { name: "t" }, user.id);
      const lastUsed = async () => (await svc.agentTokens.get(agent.id, token.id))!.lastUsedAt?.toISOString();
      const t0 = clock.toISOString();
      await svc.agentTokens.authenticate(secret);
      expect(await lastUsed()).to.equal(t0);
      advance(30_000);
      await svc.agentTokens.authenticate(secret);
      expect(await lastUsed()).to.equal(t0);
      advance(31_000);
      const t1 = clock.toISOString();
      await svc.agentTokens.authenticate(secret);
      expect(await lastUsed()).to.equal(t1);

      // A second process (fresh in-memory throttle) sharing the database also respects the interval.
      const other = createPlatformServices({ store: getStore(), now: () => clock });
      advance(1_000);
      await other.agentTokens.authenticate(secret);
      expect(await lastUsed()).to.equal(t1);
    });
  });

  describe("personal access tokens", () => {
    it("authenticates active tokens only", async () => {
      const user = await svc.users.create({ username: "pat", name: "Pat" });
      const { token, secret } = await svc.personalAccessTokens.create(user.id, {
        name: "ci",
        scopes: ["api", "read_api"],
        expiresAt: "2030-01-03",
      });
      expect(secret).to.match(/^glpat-/);
      expect(token).to.include({ name: "ci", active: true, revoked: false, expiresAt: "2030-01-03" });
      expect((await svc.personalAccessTokens.authenticate(secret))?.user.username).to.equal("pat");
      expect(await svc.personalAccessTokens.authenticate("glpat-unknown-unknown-unknown")).to.equal(undefined);

      advance(2 * 24 * 3600_000); // 2030-01-03T00:00Z: expired
      expect(await svc.personalAccessTokens.authenticate(secret)).to.equal(undefined);

      const other = await svc.personalAccessTokens.create(user.id, { name: "x", scopes: ["read_api"] });
      await svc.personalAccessTokens.revoke(user.id, other.token.id);
      expect(await svc.personalAccessTokens.authenticate(other.secret)).to.equal(undefined);
      await getStore().knex("users").where({ id: user.id }).update({ state: "blocked" });
      const third = await svc.personalAccessTokens.create(user.id, { name: "y", scopes: ["api"] });
      expect(await svc.personalAccessTokens.authenticate(third.secret)).to.equal(undefined);
    });

    it("validates scopes, expiry and supplied secrets", async () => {
      const user = await svc.users.create({ username: "pat", name: "Pat" });
      const create = (input: object, secret?: string) =>
        serviceError(svc.personalAccessTokens.create(user.id, { name: "n", scopes: ["api"], ...input }, { secret }));
      expect((await create({ scopes: [] })).message).to.equal("scopes is missing");
      expect((await create({ scopes: ["everything"] })).message).to.equal("scopes does not have a valid value");
      expect((await create({ expiresAt: "2029-12-31" })).message).to.equal("Expiration date must be in the future");
      expect((await create({ expiresAt: "2030-02-30" })).message).to.equal("expires_at is invalid");
      expect((await create({}, "short")).kind).to.equal("invalid");
      const supplied = "my-operator-chosen-admin-token";
      await svc.personalAccessTokens.create(user.id, { name: "n", scopes: ["api"] }, { secret: supplied });
      expect(await svc.personalAccessTokens.exists(supplied)).to.equal(true);
      expect((await create({}, supplied)).kind).to.equal("conflict");
    });
  });
});
