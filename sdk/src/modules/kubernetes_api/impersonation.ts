/**
 * Who the agent impersonates for a Kubernetes API proxy request, as GitLab KAS decides it
 * (`constructJobImpersonationConfig`, `constructUserImpersonationConfig`): the ci_access entry's
 * `access_as` for CI jobs, the user_access `access_as` for users. An empty config means "the
 * agent's own identity".
 */
import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { CiAccessAsCFSchema, type CiAccessAsCF } from "../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { ImpersonationConfigSchema, type ImpersonationConfig } from "../../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import type { JobAllowedAgents, ProxyUserAuthorizationAnswer } from "../../platform-client/platform-client.js";

/** Extra keys GitLab sets (`agent.gitlab.com/...`). */
export const EXTRA_PREFIX = "agent.gitlab.com/";

type AllowedAgent = JobAllowedAgents["allowedAgents"][number];

/** True when the config impersonates nobody (the agent's own identity). */
export function isEmptyImpersonation(c: ImpersonationConfig): boolean {
  return c.username === "" && c.groups.length === 0 && c.uid === "" && c.extra.length === 0;
}

/** The `access_as` of a ci_access entry; undefined (= agent) when absent or unreadable. */
export function ciAccessAs(configuration: Record<string, unknown>): CiAccessAsCF["as"] {
  const raw = configuration.access_as;
  if (raw === undefined || raw === null) return { case: undefined };
  return fromJson(CiAccessAsCFSchema, raw as JsonValue, { ignoreUnknownFields: true }).as;
}

const extra = (key: string, ...val: string[]) => ({ key: EXTRA_PREFIX + key, val });

/** The ci_job identity: user `gitlab:ci_job:<job id>`, GitLab's groups and extras (in GitLab's order). */
export function ciJobIdentity(job: JobAllowedAgents, agent: AllowedAgent): ImpersonationConfig {
  const env = job.environment;
  const groups = ["gitlab:ci_job"];
  for (const g of job.project.groups) {
    groups.push(`gitlab:group:${g.id}`);
    if (env) groups.push(`gitlab:group_env_tier:${g.id}:${env.tier}`);
  }
  groups.push(`gitlab:project:${job.project.id}`);
  if (env) groups.push(`gitlab:project_env:${job.project.id}:${env.slug}`, `gitlab:project_env_tier:${job.project.id}:${env.tier}`);
  const extras = [
    extra("id", String(agent.id)),
    extra("config_project_id", String(agent.configProject.id)),
    extra("project_id", String(job.project.id)),
    extra("ci_pipeline_id", String(job.pipeline.id)),
    extra("ci_job_id", String(job.job.id)),
    extra("username", job.user.username),
  ];
  if (env) extras.push(extra("environment_slug", env.slug), extra("environment_tier", env.tier));
  return create(ImpersonationConfigSchema, { username: `gitlab:ci_job:${job.job.id}`, groups, extra: extras });
}

/** Impersonation for a CI job using `agent` (its ci_access entry's `access_as`). */
export function ciJobImpersonation(job: JobAllowedAgents, agent: AllowedAgent): ImpersonationConfig {
  const as = ciAccessAs(agent.configuration);
  switch (as.case) {
    case undefined:
    case "agent":
      return create(ImpersonationConfigSchema);
    case "impersonate": {
      const i = as.value;
      return create(ImpersonationConfigSchema, {
        username: i.username,
        groups: [...i.groups],
        uid: i.uid,
        extra: i.extra.map((e) => ({ key: e.key, val: [...e.val] })),
      });
    }
    case "ciJob":
      return ciJobIdentity(job, agent);
    default:
      // A newer access_as this KAS does not know: refuse rather than fall back to the agent's identity.
      throw new Error(`unsupported ci_access access_as: ${String((as as { case: string }).case)}`);
  }
}

/** Impersonation for a user authorized by `authorize_proxy_user` (access_as agent or user). */
export function userImpersonation(auth: ProxyUserAuthorizationAnswer, accessType: string): ImpersonationConfig {
  if (!("user" in auth.accessAs)) return create(ImpersonationConfigSchema);
  const groups = ["gitlab:user"];
  for (const p of auth.accessAs.user.projects) for (const role of p.roles) groups.push(`gitlab:project_role:${p.id}:${role}`);
  for (const g of auth.accessAs.user.groups) for (const role of g.roles) groups.push(`gitlab:group_role:${g.id}:${role}`);
  return create(ImpersonationConfigSchema, {
    username: `gitlab:user:${auth.user.username}`,
    groups,
    extra: [
      extra("id", String(auth.agent.id)),
      extra("username", auth.user.username),
      extra("access_type", accessType),
      extra("config_project_id", String(auth.agent.configProject.id)),
    ],
  });
}

/** Kubernetes impersonation headers for `c` (Impersonate-Extra-<key> with the key URL-escaped, as client-go). */
export function impersonationHeaders(c: ImpersonationConfig): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (c.username !== "") out.push(["Impersonate-User", c.username]);
  for (const g of c.groups) out.push(["Impersonate-Group", g]);
  if (c.uid !== "") out.push(["Impersonate-Uid", c.uid]);
  for (const e of c.extra) for (const v of e.val) out.push([`Impersonate-Extra-${encodeURIComponent(e.key)}`, v]);
  return out;
}

/** Whether a header name is one of Kubernetes' impersonation headers. */
export function isImpersonationHeader(name: string): boolean {
  return name.toLowerCase().startsWith("impersonate-");
}
