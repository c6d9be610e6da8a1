/**
 * What a push may do to protected branches, decided as GitLab's `Gitlab::Checks::BranchCheck`
 * does, from the pushed commands (read before git runs, see receive-pack-commands.ts). Only
 * whether a push to a protected branch is a force push needs the pushed objects: that is left to
 * the repository's pre-receive hook as a `no-force` decision.
 */
import { AccessLevel } from "../services/access-levels.js";
import { protectedAccessAllows, protectedBranchMatches, type ProtectedBranch } from "../services/protected-branches.js";
import { isZeroOid } from "./git-names.js";

/** One `<old> <new> <ref>` command of a push. */
export interface PushCommand {
  before: string;
  after: string;
  ref: string;
}

/**
 * The decision on one pushed ref, handed to the pre-receive hook: `allow`; `deny` with GitLab's
 * message (one or more lines); or `no-force`: allowed if `before` is an ancestor of `after`.
 */
export type RefDecision =
  | { ref: string; action: "allow" }
  | { ref: string; action: "deny"; message: string[] }
  | { ref: string; action: "no-force"; message: string[] };

export interface PushPolicyInput {
  commands: readonly PushCommand[];
  /** The project's protected branch rules. */
  rules: readonly ProtectedBranch[];
  /** The pusher's role in the project (OWNER for admins). */
  access: number;
  isAdmin: boolean;
  defaultBranch: string;
  /** The project's full path, for messages. */
  projectPath: string;
  /** The repository has no branch yet. */
  emptyRepository: boolean;
}

// GitLab's wording (Gitlab::Checks::BranchCheck::ERROR_MESSAGES).
export const BRANCH_PROTECTION_MESSAGES = {
  deleteDefaultBranch: "The default branch of a project cannot be deleted.",
  forcePush: "You are not allowed to force push code to a protected branch on this project.",
  nonMaintainerDelete:
    "You are not allowed to delete protected branches from this project. Only a project maintainer or owner can delete a protected branch.",
  nonWebDelete: "You can only delete protected branches using the web interface.",
  push: "You are not allowed to push code to protected branches on this project.",
  create: "You are not allowed to create protected branches on this project.",
  nonWebCreate: "You can only create protected branches using the web interface and API.",
  hexBranchName: "You cannot create a branch with a 40-character hexadecimal branch name.",
} as const;

const BRANCH_PREFIX = "refs/heads/";

/** One decision per command, in order. Refs outside `refs/heads/` (tags, notes) are not branches: allowed. */
export function decidePush(input: PushPolicyInput): RefDecision[] {
  return input.commands.map((command) => decideRef(input, command));
}

function decideRef(input: PushPolicyInput, { before, after, ref }: PushCommand): RefDecision {
  if (!ref.startsWith(BRANCH_PREFIX)) return { ref, action: "allow" };
  const branch = ref.slice(BRANCH_PREFIX.length);
  const creation = isZeroOid(before);
  const deletion = isZeroOid(after);
  const deny = (...message: string[]): RefDecision => ({ ref, action: "deny", message });

  if (deletion && branch === input.defaultBranch) return deny(BRANCH_PROTECTION_MESSAGES.deleteDefaultBranch);
  // A branch named like a commit id would make revisions ambiguous.
  if (!deletion && /^[0-9a-f]{40}(?:-\/|\/|$)/i.test(branch)) return deny(BRANCH_PROTECTION_MESSAGES.hexBranchName);

  const rules = input.rules.filter((rule) => protectedBranchMatches(rule, branch));
  const canPush = rules.some((rule) => protectedAccessAllows(rule.pushAccessLevel, input.access, input.isAdmin));
  const maintainer = input.isAdmin || input.access >= AccessLevel.MAINTAINER;

  // An empty repository with a protected default branch: every first branch is the default
  // branch to be, so only Maintainers (or a rule that lets the pusher push it) may create it.
  if (input.emptyRepository && input.rules.some((rule) => protectedBranchMatches(rule, input.defaultBranch))) {
    if (maintainer || canPush) return { ref, action: "allow" };
    return deny(
      `A default branch (e.g. ${input.defaultBranch}) does not yet exist for ${input.projectPath}`,
      "Ask a project Owner or Maintainer to create a default branch.",
    );
  }
  if (rules.length === 0) return { ref, action: "allow" };

  if (creation) {
    if (canPush) return { ref, action: "allow" };
    const canMerge = rules.some((rule) => protectedAccessAllows(rule.mergeAccessLevel, input.access, input.isAdmin));
    return deny(canMerge ? BRANCH_PROTECTION_MESSAGES.nonWebCreate : BRANCH_PROTECTION_MESSAGES.create);
  }
  if (deletion) return deny(maintainer ? BRANCH_PROTECTION_MESSAGES.nonWebDelete : BRANCH_PROTECTION_MESSAGES.nonMaintainerDelete);
  if (!canPush) return deny(BRANCH_PROTECTION_MESSAGES.push);
  // GitLab's `allow_force_push?`: any matching rule allowing it.
  if (rules.some((rule) => rule.allowForcePush)) return { ref, action: "allow" };
  return { ref, action: "no-force", message: [BRANCH_PROTECTION_MESSAGES.forcePush] };
}
