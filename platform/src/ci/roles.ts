/**
 * GitLab role names for an access level, as `Gitlab::Access.sym_options_with_owner` lists them and
 * the `allowed_agents` and `authorize_proxy_user` APIs report them: every role at or below the
 * level, lowest first (a Developer is `["guest", "planner", "reporter", "developer"]`).
 */
import { AccessLevel } from "../services/access-levels.js";

/** GitLab's Planner role (GitLab 17.7+). We store no such membership, but report the name as GitLab does. */
export const PLANNER_ACCESS_LEVEL = 15;

const ROLES: readonly (readonly [string, number])[] = [
  ["guest", AccessLevel.GUEST],
  ["planner", PLANNER_ACCESS_LEVEL],
  ["reporter", AccessLevel.REPORTER],
  ["developer", AccessLevel.DEVELOPER],
  ["maintainer", AccessLevel.MAINTAINER],
  ["owner", AccessLevel.OWNER],
];

/** Role names up to `accessLevel`; empty for no access. */
export function rolesForAccessLevel(accessLevel: number): string[] {
  return ROLES.filter(([, level]) => level <= accessLevel).map(([name]) => name);
}
