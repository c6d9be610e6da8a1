/**
 * Test fixture (a *.test-support.ts file: no tests, not in the package): a small GitLab-like world for the
 * CI and proxy-user tests, made through the services.
 *
 *   ops (group)                    agent "prod" in ops/config:
 *   ├── config   agents prod, dev    ci_access: project ops/api (api-ns, ci_job),
 *   ├── api                                     group ops/apps (apps, environments production, review/*)
 *   ├── other                        user_access: agent, project ops/api
 *   └── apps (group)               agent "dev" in ops/config:
 *       └── web                      ci_access: group ops
 *   elsewhere (group)                user_access: user, project ops/api, group ops/apps
 *   └── lonely                     (no agent authorizes elsewhere/*)
 */
import { expect } from "chai";
import { AccessLevel } from "../services/access-levels.js";
import type { PlatformServices } from "../services/platform-services.js";
import type { Project } from "../services/projects.js";
import type { User } from "../services/users.js";

export const PROD_CONFIG = `
ci_access:
  projects:
  - id: ops/api
    default_namespace: api-ns
    access_as:
      ci_job: {}
  groups:
  - id: ops/apps
    default_namespace: apps
    environments: ["production", "review/*"]
user_access:
  access_as:
    agent: {}
  projects:
  - id: ops/api
`;

export const DEV_CONFIG = `
ci_access:
  groups:
  - id: ops
user_access:
  access_as:
    user: {}
  projects:
  - id: ops/api
  groups:
  - id: ops/apps
`;

export interface CiWorld {
  owner: User;
  /** Developer on ops/api (direct) and Maintainer of ops/apps. */
  dev: User;
  /** Reporter on ops/api only. */
  reporter: User;
  /** No membership anywhere. */
  stranger: User;
  groups: { ops: number; apps: number; elsewhere: number };
  projects: { config: Project; api: Project; other: Project; web: Project; lonely: Project };
  agents: { prod: number; dev: number };
}

export async function buildCiWorld(services: PlatformServices): Promise<CiWorld> {
  const owner = await services.users.create({ username: "owner", name: "Owner" });
  const dev = await services.users.create({ username: "dev", name: "Dev" });
  const reporter = await services.users.create({ username: "rep", name: "Reporter" });
  const stranger = await services.users.create({ username: "stranger", name: "Stranger" });
  const ops = await services.namespaces.createGroup({ name: "Ops", path: "ops" }, owner.id);
  const apps = await services.namespaces.createGroup({ name: "Apps", path: "apps", parentId: ops.id }, owner.id);
  const elsewhere = await services.namespaces.createGroup({ name: "Elsewhere", path: "elsewhere" }, owner.id);
  const project = (name: string, namespaceId: number) => services.projects.create({ name, namespaceId }, owner.id);
  const projects = {
    config: await project("config", ops.id),
    api: await project("api", ops.id),
    other: await project("other", ops.id),
    web: await project("web", apps.id),
    lonely: await project("lonely", elsewhere.id),
  };
  await services.members.addProjectMember(projects.api.id, dev.id, AccessLevel.DEVELOPER);
  await services.members.addGroupMember(apps.id, dev.id, AccessLevel.MAINTAINER);
  await services.members.addProjectMember(projects.api.id, reporter.id, AccessLevel.REPORTER);
  const prod = await services.agents.create(projects.config.id, "prod", owner.id);
  const devAgent = await services.agents.create(projects.config.id, "dev", owner.id);
  expect((await services.agentConfigs.apply(prod.id, "a".repeat(40), PROD_CONFIG)).status).to.equal("accepted");
  expect((await services.agentConfigs.apply(devAgent.id, "b".repeat(40), DEV_CONFIG)).status).to.equal("accepted");
  return {
    owner,
    dev,
    reporter,
    stranger,
    groups: { ops: ops.id, apps: apps.id, elsewhere: elsewhere.id },
    projects,
    agents: { prod: prod.id, dev: devAgent.id },
  };
}
