import { beforeEach, it } from "mocha";
import { expect } from "chai";
import { digestToken } from "@kasbridge/sdk/auth";
import { createPlatformServices, type PlatformServices } from "../services/platform-services.js";
import { ServiceError } from "../services/errors.js";
import { rejectionOf } from "@kasbridge/testing/wait";
import { describeEachStore } from "../testing/fixtures.test-support.js";
import { buildCiWorld, type CiWorld } from "./ci-fixture.test-support.js";
import { generateCiJobToken } from "./job-tokens.js";

const serviceError = (p: Promise<unknown>) => rejectionOf(p, ServiceError);

describeEachStore("platform/ci jobs", (getStore) => {
  let services: PlatformServices;
  let clock: Date;
  let w: CiWorld;

  beforeEach(async () => {
    clock = new Date("2030-01-01T00:00:00Z");
    services = createPlatformServices({ store: getStore(), now: () => clock, ciJobTokenTtlMs: 10 * 60_000 });
    w = await buildCiWorld(services);
  });

  const agentIds = (list: { agent: { id: number } }[]) => list.map((a) => a.agent.id);

  it("issues a job token stored only as its digest, which authenticates until the job finishes", async () => {
    const { job, token } = await services.ciJobs.create(w.projects.api.id, w.dev.id);
    expect(token).to.match(/^glcbt-[A-Za-z0-9]{40}$/);
    expect(job).to.deep.include({ projectId: w.projects.api.id, userId: w.dev.id, ref: "main", status: "running", environment: null, finishedAt: null });
    expect(job.tokenExpiresAt.toISOString()).to.equal("2030-01-01T00:10:00.000Z");
    const rows = await getStore().knex("ci_jobs").select("token_digest");
    expect(rows).to.deep.equal([{ token_digest: digestToken(token) }]);
    expect(JSON.stringify(await getStore().knex("ci_jobs").select())).not.to.include(token);

    const auth = await services.ciJobs.authenticate(token);
    expect(auth?.job.id).to.equal(job.id);
    expect(auth?.project.pathWithNamespace).to.equal("ops/api");
    expect(auth?.user.username).to.equal("dev");

    const finished = await services.ciJobs.finish(w.projects.api.id, job.id, "failed");
    expect(finished).to.deep.include({ status: "failed" });
    expect(finished.finishedAt?.toISOString()).to.equal("2030-01-01T00:00:00.000Z");
    expect(await services.ciJobs.authenticate(token)).to.equal(undefined);
    // Finishing again changes nothing.
    expect((await services.ciJobs.finish(w.projects.api.id, job.id)).status).to.equal("failed");
    expect((await serviceError(services.ciJobs.finish(w.projects.other.id, job.id))).kind).to.equal("not_found");
  });

  it("refuses expired, forged, malformed tokens and jobs of blocked users", async () => {
    const { token } = await services.ciJobs.create(w.projects.api.id, w.dev.id);
    const second = await services.ciJobs.create(w.projects.api.id, w.reporter.id);
    expect(await services.ciJobs.authenticate(generateCiJobToken())).to.equal(undefined);
    expect(await services.ciJobs.authenticate(token.slice(0, -1))).to.equal(undefined);
    expect(await services.ciJobs.authenticate(token.replace("glcbt-", "glpat-"))).to.equal(undefined);
    expect(await services.ciJobs.authenticate("")).to.equal(undefined);
    expect(await services.ciJobs.authenticate(`glcbt-${"x".repeat(2000)}`)).to.equal(undefined);

    await getStore().knex("users").where({ id: w.reporter.id }).update({ state: "blocked" });
    expect(await services.ciJobs.authenticate(second.token)).to.equal(undefined);

    clock = new Date("2030-01-01T00:09:59.999Z");
    expect(await services.ciJobs.authenticate(token)).not.to.equal(undefined);
    clock = new Date("2030-01-01T00:10:00Z");
    expect(await services.ciJobs.authenticate(token)).to.equal(undefined);
    expect(await services.ciJobs.allowedAgentsForJob(token)).to.equal(undefined);
  });

  it("creates an environment with GitLab's slug and guessed tier, reuses it, and updates an explicit tier", async () => {
    const a = await services.ciJobs.create(w.projects.web.id, w.dev.id, { environment: "review/Feature 1", ref: "feature" });
    expect(a.job.ref).to.equal("feature");
    expect(a.job.environment).to.deep.include({ name: "review/Feature 1", tier: "development" });
    expect(a.job.environment!.slug).to.match(/^review-feature-1-[a-z0-9]{6}$/);
    const b = await services.ciJobs.create(w.projects.web.id, w.dev.id, { environment: "review/Feature 1" });
    expect(b.job.environment).to.deep.equal(a.job.environment);
    const c = await services.ciJobs.create(w.projects.web.id, w.dev.id, { environment: "review/Feature 1", environmentTier: "staging" });
    expect(c.job.environment).to.deep.include({ id: a.job.environment!.id, tier: "staging" });
    const prod = await services.ciJobs.create(w.projects.web.id, w.dev.id, { environment: "production" });
    expect(prod.job.environment).to.deep.include({ name: "production", slug: "production", tier: "production" });

    for (const input of [
      { environment: "/leading-slash" },
      { environment: "bad\nname" },
      { environment: "x".repeat(256) },
      { environment: "prod", environmentTier: "prod" },
      { environmentTier: "production" },
      { ref: "main~1" },
    ]) {
      expect((await serviceError(services.ciJobs.create(w.projects.web.id, w.dev.id, input))).kind, JSON.stringify(input)).to.equal("invalid");
    }
    expect((await serviceError(services.ciJobs.create(424242, w.dev.id))).kind).to.equal("not_found");
  });

  it("lists agents authorized by project, by parent group and implicitly, closest authorization first", async () => {
    const { token } = await services.ciJobs.create(w.projects.api.id, w.dev.id);
    const allowed = (await services.ciJobs.allowedAgentsForJob(token))!;
    expect(agentIds(allowed.allowedAgents)).to.deep.equal([w.agents.prod, w.agents.dev]);
    expect(allowed.allowedAgents[0]).to.deep.include({
      via: "project",
      configuration: { default_namespace: "api-ns", access_as: { ci_job: {} } },
    });
    expect(allowed.allowedAgents[1]).to.deep.include({ via: "group", groupId: w.groups.ops, configuration: {} });
    expect(allowed.projectGroupIds).to.deep.equal([w.groups.ops]);
    expect(allowed.rolesInProject).to.deep.equal(["guest", "planner", "reporter", "developer"]);
    expect(allowed.environment).to.equal(null);

    // The config project itself: implicit authorization (empty configuration) wins over the group's.
    const own = (await services.ciJobs.allowedAgentsForJob((await services.ciJobs.create(w.projects.config.id, w.owner.id)).token))!;
    expect(own.allowedAgents.map((a) => [a.agent.id, a.via, a.configuration])).to.deep.equal([
      [w.agents.prod, "implicit", {}],
      [w.agents.dev, "implicit", {}],
    ]);
    expect(own.rolesInProject).to.deep.equal(["guest", "planner", "reporter", "developer", "maintainer", "owner"]);

    // Another top-level group: nothing.
    const lonely = (await services.ciJobs.allowedAgentsForJob((await services.ciJobs.create(w.projects.lonely.id, w.owner.id)).token))!;
    expect(lonely.allowedAgents).to.deep.equal([]);
    expect(lonely.projectGroupIds).to.deep.equal([w.groups.elsewhere]);
  });

  it("applies an authorization with environments only to jobs whose environment matches one of them", async () => {
    const agentsFor = async (environment?: string) => {
      const { token } = await services.ciJobs.create(w.projects.web.id, w.dev.id, { environment });
      const allowed = (await services.ciJobs.allowedAgentsForJob(token))!;
      return { ids: agentIds(allowed.allowedAgents), allowed };
    };
    const production = await agentsFor("production");
    expect(production.ids).to.deep.equal([w.agents.prod, w.agents.dev]);
    expect(production.allowed.allowedAgents[0]).to.deep.include({ via: "group", groupId: w.groups.apps });
    expect(production.allowed.projectGroupIds).to.deep.equal([w.groups.apps, w.groups.ops]);
    expect(production.allowed.environment).to.deep.include({ name: "production", slug: "production", tier: "production" });
    expect((await agentsFor("review/feature-1")).ids).to.deep.equal([w.agents.prod, w.agents.dev]);
    expect((await agentsFor("staging")).ids).to.deep.equal([w.agents.dev]);
    expect((await agentsFor("production-eu")).ids).to.deep.equal([w.agents.dev]);
    expect((await agentsFor()).ids).to.deep.equal([w.agents.dev]);
  });
});
