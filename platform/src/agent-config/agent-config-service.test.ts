import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import pino from "pino";
import { toJson } from "@bufbuild/protobuf";
import { ConfigurationFileSchema } from "@kasbridge/sdk/gen/gitlab/agent/agentcfg/agentcfg_pb";
import { AccessLevel } from "../services/access-levels.js";
import { createPlatformServices, type PlatformServices } from "../services/platform-services.js";
import type { Project } from "../services/projects.js";
import type { User } from "../services/users.js";
import { describeEachStore } from "../testing/fixtures.test-support.js";
import { createAgentConfigService, type AgentConfigChange, type AgentConfigService } from "./agent-config-service.js";
import { TestRepositories } from "./git-fixture.test-support.js";

const CONFIG = (name: string) => `.gitlab/agents/${name}/config.yaml`;

describeEachStore("platform/agent-config: service", (getStore) => {
  let clock: Date;
  let svc: PlatformServices;
  let configs: AgentConfigService;
  let repos: TestRepositories;
  let detach: () => void;
  let root: User;
  let changes: AgentConfigChange[];

  beforeEach(async () => {
    clock = new Date("2030-01-01T00:00:00Z");
    const store = getStore();
    svc = createPlatformServices({ store, now: () => clock });
    configs = createAgentConfigService({ store, knex: store.knex, now: () => clock, logger: pino({ level: "silent" }) });
    repos = new TestRepositories();
    detach = configs.attach(repos);
    root = await svc.users.create({ username: "root", name: "Root", admin: true });
    changes = [];
    configs.subscribe((c) => changes.push(c));
  });
  afterEach(async () => {
    detach();
    await configs.idle();
    await repos.dispose();
  });

  /** A project in `namespacePath` (a group path, or the root user's namespace) with a git repository. */
  async function project(path: string, namespaceId?: number): Promise<Project> {
    const ns = namespaceId ?? (await svc.namespaces.personalNamespaceOf(root.id))!.id;
    const p = await svc.projects.create({ name: path, path, namespaceId: ns }, root.id);
    await repos.init(p.id);
    return p;
  }

  async function push(p: Project, files: Record<string, string | null>, branch?: string) {
    const event = await repos.commit(p.id, files, { branch });
    await configs.idle();
    return event;
  }

  describe("processing pushes", () => {
    it("stores a valid config with its commit and announces it after commit", async () => {
      const p = await project("cfg");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      expect(await configs.get(agent.id)).to.deep.include({ commitId: "", updatedAt: null, error: null });

      let seenInListener: string | undefined;
      configs.subscribe((c) => {
        // Synchronously after commit: the new state is already readable.
        void configs.get(c.agentId).then((s) => (seenInListener = s?.commitId));
      });
      const event = await push(p, { [CONFIG("prod")]: "observability:\n  logging:\n    level: debug\n", "README.md": "hi" });
      const state = (await configs.get(agent.id))!;
      expect(state.commitId).to.equal(event.after);
      expect(state.updatedAt?.toISOString()).to.equal(clock.toISOString());
      expect(state.error).to.equal(null);
      expect(toJson(ConfigurationFileSchema, state.config)).to.deep.equal({ observability: { logging: { level: "debug" } } });
      expect(changes).to.deep.equal([{ agentId: agent.id, commitId: event.after }]);
      await configs.idle();
      expect(seenInListener).to.equal(event.after);
      expect(await configs.snapshot(agent.id)).to.deep.include({ agentId: agent.id, commitId: event.after });
      expect(await configs.snapshot(9999)).to.equal(undefined);
      expect(await configs.get(9999)).to.equal(undefined);
    });

    it("keeps the previous config when a push brings an invalid one, and records the error with line and commit", async () => {
      const p = await project("cfg");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      const good = await push(p, { [CONFIG("prod")]: "ci_access:\n  projects:\n  - id: root/cfg\n" });
      clock = new Date("2030-01-02T00:00:00Z");
      const bad = await push(p, { [CONFIG("prod")]: "ci_access:\n  projects:\n  - id: root/cfg\n    acces_as: {agent: {}}\n" });
      let state = (await configs.get(agent.id))!;
      expect(state.commitId).to.equal(good.after);
      expect(state.updatedAt?.toISOString()).to.equal("2030-01-01T00:00:00.000Z");
      expect(toJson(ConfigurationFileSchema, state.config)).to.deep.equal({ ci_access: { projects: [{ id: "root/cfg" }] } });
      expect(state.error).to.deep.equal({
        message: "ci_access.projects[0].acces_as: unknown key (line 4)",
        commitId: bad.after,
        at: new Date("2030-01-02T00:00:00Z"),
      });
      expect(changes.map((c) => c.commitId)).to.deep.equal([good.after]);
      // Authorizations still come from the accepted config.
      expect((await configs.allowedAgentsForProject(p.id)).map((a) => a.via)).to.deep.equal(["project"]);

      // A later valid commit is accepted and clears the error.
      const fixed = await push(p, { [CONFIG("prod")]: "ci_access:\n  projects:\n  - id: root/cfg\n    access_as: {agent: {}}\n" });
      state = (await configs.get(agent.id))!;
      expect(state).to.deep.include({ commitId: fixed.after, error: null });
      expect(changes.map((c) => c.commitId)).to.deep.equal([good.after, fixed.after]);
    });

    it("an invalid first config leaves the agent on the empty config with the error", async () => {
      const p = await project("cfg");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      const bad = await push(p, { [CONFIG("prod")]: "gitops: [\n" });
      const state = (await configs.get(agent.id))!;
      expect(state).to.deep.include({ commitId: "", updatedAt: null });
      expect(toJson(ConfigurationFileSchema, state.config)).to.deep.equal({});
      expect(state.error?.commitId).to.equal(bad.after);
      expect(state.error?.message).to.match(/^config: invalid YAML: .* \(line 2\)$/);
      expect(changes).to.deep.equal([]);
    });

    it("a push deleting the file gives the empty config at that commit, and drops the authorizations", async () => {
      const p = await project("cfg");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      const first = await push(p, { [CONFIG("prod")]: "user_access:\n  access_as: {agent: {}}\n  projects: [{id: root/cfg}]\nci_access:\n  projects: [{id: root/cfg}]\n" });
      expect(await configs.userAccessAgentsForUser(root)).to.have.length(1);
      const deleted = await push(p, { [CONFIG("prod")]: null });
      const state = (await configs.get(agent.id))!;
      expect(state).to.deep.include({ commitId: deleted.after, error: null });
      expect(toJson(ConfigurationFileSchema, state.config)).to.deep.equal({});
      expect(changes.map((c) => c.commitId)).to.deep.equal([first.after, deleted.after]);
      expect((await configs.allowedAgentsForProject(p.id)).map((a) => a.via)).to.deep.equal(["implicit"]);
      expect(await configs.userAccessAgentsForUser(root)).to.deep.equal([]);
    });

    it("ignores other branches, other files, and files of agents that do not exist; touches only the named agents", async () => {
      const p = await project("cfg");
      const a = await svc.agents.create(p.id, "a", root.id);
      const b = await svc.agents.create(p.id, "b", root.id);
      // The push creating the default branch gives every agent its file (here: none, the empty config).
      const created = await push(p, { "README.md": "x" });
      expect(changes.map((c) => c.agentId)).to.deep.equal([a.id, b.id]);
      changes = [];
      await push(p, { "README.md": "y" });
      await push(p, { [CONFIG("a")]: "flux: {webhook_receiver_url: http://x}\n" }, "feature");
      await push(p, { [CONFIG("ghost")]: "flux: {}\n", ".gitlab/agents/a/other.yaml": "x: 1\n", ".gitlab/agents/Bad_Name/config.yaml": "" });
      expect(changes).to.deep.equal([]);
      const readsBefore = repos.reads;
      const ev = await push(p, { [CONFIG("b")]: "flux: {webhook_receiver_url: http://b}\n" });
      expect(repos.reads - readsBefore).to.equal(1);
      expect(changes).to.deep.equal([{ agentId: b.id, commitId: ev.after }]);
      expect((await configs.get(a.id))!.commitId).to.equal(created.after);
      // A tag or an unknown project is not a branch push of a config project.
      await configs.processPush({ projectId: p.id, ref: "refs/tags/v1", before: "0".repeat(40), after: ev.after, changedPaths: [CONFIG("a")] });
      await configs.processPush({ projectId: 999, ref: "refs/heads/main", before: ev.before, after: ev.after, changedPaths: [CONFIG("a")] });
      // The default branch deleted: nothing to apply.
      await configs.processPush({ projectId: p.id, ref: "refs/heads/main", before: ev.after, after: "0".repeat(40), changedPaths: [CONFIG("b")] });
      expect(changes).to.have.length(1);
    });

    it("never goes back to an older commit when a later push was processed first (another replica took it)", async () => {
      const p = await project("cfg-replicas");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      const first = await repos.commit(p.id, { [CONFIG("prod")]: "flux:\n  webhook_receiver_url: http://hook/first\n" }, { announce: false });
      const second = await repos.commit(p.id, { [CONFIG("prod")]: "flux:\n  webhook_receiver_url: http://hook/second\n" }, { announce: false });
      // The replica that took the second push processes it before the one that took the first.
      await configs.processPush(second);
      await configs.processPush(first);
      const state = (await configs.get(agent.id))!;
      expect(state.commitId).to.equal(second.after);
      expect(state.config.flux?.webhookReceiverUrl).to.equal("http://hook/second");
      expect(changes.map((c) => c.commitId)).to.deep.equal([second.after]);
    });

    it("processes concurrent pushes of a project in order and loses none", async () => {
      const p = await project("cfg");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      const events = [];
      for (let i = 0; i < 6; i++) {
        events.push(await repos.commit(p.id, { [CONFIG("prod")]: `flux:\n  webhook_receiver_url: http://hook/${i}\n` }, { announce: false }));
      }
      // Announced back to back, without waiting: the queue must keep the order.
      for (const e of events) repos.announce(e);
      await configs.idle();
      expect(changes.map((c) => c.commitId)).to.deep.equal(events.map((e) => e.after));
      const state = (await configs.get(agent.id))!;
      expect(state.commitId).to.equal(events[5]!.after);
      expect(state.config.flux?.webhookReceiverUrl).to.equal("http://hook/5");
      const feed = await configs.feed(0);
      expect(feed.changes.map((c) => c.commitId)).to.deep.equal(events.map((e) => e.after));
    });

    it("a re-announced commit is not applied twice", async () => {
      const p = await project("cfg");
      await svc.agents.create(p.id, "prod", root.id);
      const e = await push(p, { [CONFIG("prod")]: "flux: {}\n" });
      repos.announce(e);
      await configs.idle();
      expect(changes).to.have.length(1);
    });

    it("syncs an agent created after its config file exists from the default branch", async () => {
      const p = await project("cfg");
      const e = await push(p, { [CONFIG("late")]: "observability: {logging: {level: warn}}\n" });
      const agent = await svc.agents.create(p.id, "late", root.id);
      const outcome = await configs.syncAgent(agent.id);
      expect(outcome?.status).to.equal("accepted");
      expect((await configs.get(agent.id))!.commitId).to.equal(e.after);
      // Again: unchanged, no second event.
      expect((await configs.syncAgent(agent.id))?.status).to.equal("unchanged");
      expect(changes).to.have.length(1);
      // A project without commits: nothing to read.
      const empty = await project("empty");
      const other = await svc.agents.create(empty.id, "x", root.id);
      expect((await configs.syncAgent(other.id))?.status).to.equal("unchanged");
      expect((await configs.syncAgent(4242))?.status).to.equal("agent_not_found");
    });

    it("a created default branch (first push) applies every agent's file", async () => {
      const p = await project("cfg");
      const a = await svc.agents.create(p.id, "a", root.id);
      const b = await svc.agents.create(p.id, "b", root.id);
      const e = await push(p, { [CONFIG("a")]: "flux: {}\n" });
      expect((await configs.get(a.id))!.commitId).to.equal(e.after);
      // b has no file: the empty config at that commit.
      expect((await configs.get(b.id))!.commitId).to.equal(e.after);
    });

    it("records a repository read failure as the agent's error", async () => {
      const p = await project("cfg");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      repos.failReads = new Error("disk on fire");
      const e = await push(p, { [CONFIG("prod")]: "flux: {}\n" });
      expect((await configs.get(agent.id))!.error).to.deep.include({
        message: "cannot read .gitlab/agents/prod/config.yaml: disk on fire",
        commitId: e.after,
      });
    });

    it("apply() validates content directly and forgets deleted agents' configs", async () => {
      const p = await project("cfg");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      expect((await configs.apply(agent.id, "c1", "flux: {}\n")).status).to.equal("accepted");
      expect((await configs.apply(agent.id, "c2", "flux: 1\n")).status).to.equal("rejected");
      expect((await configs.apply(4242, "c3", "")).status).to.equal("agent_not_found");
      const many = await configs.getMany([agent.id, 4242]);
      expect([...many.keys()]).to.deep.equal([agent.id]);
      expect(many.get(agent.id)).to.deep.include({ commitId: "c1" });
      expect(many.get(agent.id)!.error?.commitId).to.equal("c2");
      await svc.agents.delete(p.id, agent.id);
      expect(await configs.get(agent.id)).to.equal(undefined);
      expect(await getStore().knex("agent_configurations").count({ n: "*" }).first()).to.satisfy((r: { n: unknown }) => Number(r.n) === 0);
    });

    it("detach stops processing pushes", async () => {
      const p = await project("cfg");
      await svc.agents.create(p.id, "prod", root.id);
      detach();
      expect(repos.listenerCount).to.equal(0);
      await push(p, { [CONFIG("prod")]: "flux: {}\n" });
      expect(changes).to.deep.equal([]);
    });
  });

  describe("change feed", () => {
    it("starts at now without a cursor, pages in order, and restarts when the cursor is ahead", async () => {
      const p = await project("cfg");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      const start = await configs.feed(undefined);
      expect(start).to.deep.equal({ changes: [], cursor: 0 });
      await configs.apply(agent.id, "c1", "");
      await configs.apply(agent.id, "c2", "flux: {}\n");
      const page = await configs.feed(start.cursor, 1);
      expect(page.changes).to.deep.equal([{ agentId: agent.id, commitId: "c1" }]);
      const rest = await configs.feed(page.cursor);
      expect(rest.changes).to.deep.equal([{ agentId: agent.id, commitId: "c2" }]);
      expect(await configs.feed(rest.cursor)).to.deep.equal({ changes: [], cursor: rest.cursor });
      expect(await configs.feed(rest.cursor + 100)).to.deep.equal({ changes: [], cursor: rest.cursor });
    });

    it("prunes entries older than the retention", async () => {
      const store = getStore();
      const short = createAgentConfigService(
        { store, knex: store.knex, now: () => clock, logger: pino({ level: "silent" }) },
        { feedRetentionMs: 1000 },
      );
      const p = await project("cfg");
      const agent = await svc.agents.create(p.id, "prod", root.id);
      await short.apply(agent.id, "c1", "");
      clock = new Date(clock.getTime() + 2 * 60 * 60 * 1000);
      await short.apply(agent.id, "c2", "");
      expect((await short.feed(0)).changes.map((c) => c.commitId)).to.deep.equal(["c2"]);
    });
  });

  describe("authorizations", () => {
    /**
     * top (group) ├─ agents (project: config project of agent "k8s")
     *             ├─ sub (group) ─ deep (group) ─ app (project)
     *             └─ web (project)
     * other (group) ─ foreign (project)        root/personal (project, user namespace)
     */
    let top: number, sub: number, deep: number, other: number;
    let agentsProject: Project, app: Project, web: Project, foreign: Project, personal: Project;
    beforeEach(async () => {
      top = (await svc.namespaces.createGroup({ name: "Top", path: "top" }, root.id)).id;
      sub = (await svc.namespaces.createGroup({ name: "Sub", path: "sub", parentId: top }, root.id)).id;
      deep = (await svc.namespaces.createGroup({ name: "Deep", path: "deep", parentId: sub }, root.id)).id;
      other = (await svc.namespaces.createGroup({ name: "Other", path: "other" }, root.id)).id;
      agentsProject = await project("agents", top);
      app = await project("app", deep);
      web = await project("web", top);
      foreign = await project("foreign", other);
      personal = await project("personal");
    });

    /** Runs `fn` and returns the SQL statements it sent. */
    async function queriesOf<T>(fn: () => Promise<T>): Promise<{ result: T; sql: string[] }> {
      const sql: string[] = [];
      const onQuery = (q: { sql: string }) => sql.push(q.sql);
      const knex = getStore().knex;
      knex.on("query", onQuery);
      try {
        return { result: await fn(), sql };
      } finally {
        knex.off("query", onQuery);
      }
    }

    it("authorizes projects and groups (with descendant projects) from ci_access, in one query per project", async () => {
      const agent = await svc.agents.create(agentsProject.id, "k8s", root.id);
      const e = await push(agentsProject, {
        [CONFIG("k8s")]: `ci_access:
  projects:
  - id: top/web
    default_namespace: web
    access_as: {ci_job: {}}
    environments: [production]
  - id: Top/Sub/Deep/App
    default_namespace: app-direct
  - id: other/foreign
  - id: root/personal
  - id: top/missing
  groups:
  - id: top/sub
    default_namespace: from-sub
  - id: top
    default_namespace: from-top
  - id: other
`,
      });
      expect((await configs.get(agent.id))!.commitId).to.equal(e.after);

      const { result: forWeb, sql } = await queriesOf(() => configs.allowedAgentsForProject(web.id));
      expect(sql).to.have.length(1);
      expect(sql[0]).to.match(/^\s*WITH RECURSIVE/);
      expect(forWeb).to.have.length(1);
      expect(forWeb[0]).to.deep.include({
        via: "project",
        configuration: { default_namespace: "web", access_as: { ci_job: {} }, environments: ["production"] },
      });
      expect(forWeb[0]!.agent).to.deep.include({ id: agent.id, name: "k8s", projectId: agentsProject.id });
      expect(forWeb[0]!.configProject).to.deep.include({ id: agentsProject.id, pathWithNamespace: "top/agents" });

      // Project entry (case-insensitive path) beats the group entries of its ancestors.
      const forApp = await configs.allowedAgentsForProject(app.id);
      expect(forApp.map((a) => [a.via, a.configuration.default_namespace])).to.deep.equal([["project", "app-direct"]]);

      // The config project itself: its own agents are implicitly authorized (empty configuration),
      // before the group entry of `top`.
      const forAgents = await configs.allowedAgentsForProject(agentsProject.id);
      expect(forAgents.map((a) => [a.via, a.configuration])).to.deep.equal([["implicit", {}]]);

      // Outside the config project's top-level group, and user namespaces: never authorized.
      expect(await configs.allowedAgentsForProject(foreign.id)).to.deep.equal([]);
      expect(await configs.allowedAgentsForProject(personal.id)).to.deep.equal([]);

      // A project created later below an authorized group is covered; the nearest group wins.
      const late = await project("late", deep);
      const forLate = await configs.allowedAgentsForProject(late.id);
      expect(forLate.map((a) => [a.via, a.groupId, a.configuration.default_namespace])).to.deep.equal([["group", sub, "from-sub"]]);
      const direct = await project("direct", top);
      expect((await configs.allowedAgentsForProject(direct.id)).map((a) => [a.groupId, a.configuration.default_namespace])).to.deep.equal([
        [top, "from-top"],
      ]);

      // Stored rows, for the record: entries naming nothing were dropped.
      const knex = getStore().knex;
      expect(await knex("agent_ci_access_project_authorizations").orderBy("project_id").pluck("project_id")).to.deep.equal(
        [app.id, web.id].sort((x, y) => x - y),
      );
      expect(await knex("agent_ci_access_group_authorizations").orderBy("group_id").pluck("group_id")).to.deep.equal([top, sub]);
    });

    it("lists several agents per project, closest authorization first, and replaces an agent's authorizations on change", async () => {
      const a1 = await svc.agents.create(agentsProject.id, "one", root.id);
      const a2 = await svc.agents.create(agentsProject.id, "two", root.id);
      const webAgent = await svc.agents.create(web.id, "webby", root.id);
      await repos.commit(web.id, { [CONFIG("webby")]: "ci_access:\n  groups: [{id: top/sub/deep, default_namespace: w}]\n" });
      await push(agentsProject, {
        [CONFIG("one")]: "ci_access:\n  groups: [{id: top}]\n",
        [CONFIG("two")]: "ci_access:\n  projects: [{id: top/sub/deep/app}]\n",
      });
      const forApp = await configs.allowedAgentsForProject(app.id);
      expect(forApp.map((a) => [a.agent.id, a.via])).to.deep.equal([
        [a2.id, "project"],
        [webAgent.id, "group"],
        [a1.id, "group"],
      ]);
      expect(forApp.find((a) => a.agent.id === webAgent.id)!.configProject.pathWithNamespace).to.equal("top/web");

      // Agent "two" now authorizes only web: app loses it, web gains it, nothing else is left behind.
      await push(agentsProject, { [CONFIG("two")]: "ci_access:\n  projects: [{id: top/web}]\n" });
      expect((await configs.allowedAgentsForProject(app.id)).map((a) => a.agent.id)).to.deep.equal([webAgent.id, a1.id]);
      expect((await configs.allowedAgentsForProject(web.id)).map((a) => [a.agent.id, a.via])).to.deep.equal([
        [a2.id, "project"],
        [webAgent.id, "implicit"],
        [a1.id, "group"],
      ]);
      const knex = getStore().knex;
      expect(await knex("agent_ci_access_project_authorizations").where({ agent_id: a2.id }).pluck("project_id")).to.deep.equal([web.id]);
    });

    it("takes the first 500 entries of a list, and the last of duplicates", async () => {
      const agent = await svc.agents.create(agentsProject.id, "k8s", root.id);
      const filler = Array.from({ length: 499 }, (_, i) => `  - id: top/nothing-${i}\n`).join("");
      await push(agentsProject, {
        [CONFIG("k8s")]: `ci_access:\n  projects:\n  - id: top/web\n    default_namespace: first\n${filler}  - id: top/web\n    default_namespace: beyond-limit\n`,
      });
      expect((await configs.allowedAgentsForProject(web.id)).map((a) => a.configuration.default_namespace)).to.deep.equal(["first"]);
      await push(agentsProject, {
        [CONFIG("k8s")]: `ci_access:\n  projects:\n  - id: top/web\n    default_namespace: first\n  - id: TOP/WEB\n    default_namespace: second\n`,
      });
      expect((await configs.allowedAgentsForProject(web.id)).map((a) => [a.agent.id, a.configuration.default_namespace])).to.deep.equal([
        [agent.id, "second"],
      ]);
    });

    it("user_access: Developer or more on the project or a covering group, admins everywhere", async () => {
      const agent = await svc.agents.create(agentsProject.id, "k8s", root.id);
      await push(agentsProject, {
        [CONFIG("k8s")]: "user_access:\n  access_as: {agent: {}}\n  projects: [{id: top/web}]\n  groups: [{id: top/sub}]\n",
      });
      const dev = await svc.users.create({ username: "dev", name: "Dev" });
      const reporter = await svc.users.create({ username: "rep", name: "Rep" });
      const groupDev = await svc.users.create({ username: "gdev", name: "GDev" });
      const topMaintainer = await svc.users.create({ username: "tm", name: "TM" });
      await svc.members.addProjectMember(web.id, dev.id, AccessLevel.DEVELOPER);
      await svc.members.addProjectMember(web.id, reporter.id, AccessLevel.REPORTER);
      await svc.members.addGroupMember(sub, groupDev.id, AccessLevel.DEVELOPER);
      await svc.members.addGroupMember(top, topMaintainer.id, AccessLevel.MAINTAINER);
      // A membership below the authorized group does not cover it.
      await svc.members.addGroupMember(deep, reporter.id, AccessLevel.OWNER);

      const summary = async (u: { id: number; admin: boolean }, filter?: { agentId?: number; projectId?: number }) =>
        (await configs.userAccessAgentsForUser(u, filter)).map((x) => [x.agent.id, x.via, x.targetId, x.accessLevel]);

      expect(await summary(dev)).to.deep.equal([[agent.id, "project", web.id, AccessLevel.DEVELOPER]]);
      expect(await summary(reporter)).to.deep.equal([]);
      expect(await summary(groupDev)).to.deep.equal([[agent.id, "group", sub, AccessLevel.DEVELOPER]]);
      // Inherited from the top group: covers both the project (in top) and the group (below top).
      expect(await summary(topMaintainer)).to.deep.equal([
        [agent.id, "project", web.id, AccessLevel.MAINTAINER],
        [agent.id, "group", sub, AccessLevel.MAINTAINER],
      ]);
      expect(await summary(root)).to.deep.equal([
        [agent.id, "project", web.id, AccessLevel.OWNER],
        [agent.id, "group", sub, AccessLevel.OWNER],
      ]);
      // Filters: for a project (its own entry, or a group above it), for an agent.
      expect(await summary(topMaintainer, { projectId: app.id })).to.deep.equal([[agent.id, "group", sub, AccessLevel.MAINTAINER]]);
      expect(await summary(topMaintainer, { projectId: web.id })).to.deep.equal([[agent.id, "project", web.id, AccessLevel.MAINTAINER]]);
      expect(await summary(topMaintainer, { agentId: agent.id + 1 })).to.deep.equal([]);
      const [entry] = await configs.userAccessAgentsForUser(dev);
      expect(entry!.configuration).to.deep.equal({ access_as: { agent: {} } });
      expect(entry!.configProject.pathWithNamespace).to.equal("top/agents");

      const { sql } = await queriesOf(() => configs.userAccessAgentsForUser(dev, { projectId: web.id }));
      expect(sql).to.have.length(1);
    });
  });
});
