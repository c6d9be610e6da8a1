/**
 * What agent configuration processing needs from the platform's git repositories: the shape of
 * `services.repositories` (sdk/src/platform/git/), kept to the few members used here so it can be
 * tested against any implementation.
 */
import { agentNameErrors } from "../services/validation.js";

/** A ref update in a project repository, announced after it is committed. */
export interface PushEvent {
  projectId: number;
  /** The updated ref, `refs/heads/<branch>` (a bare branch name is accepted too). */
  ref: string;
  /** Commit before the push; all zeros when the ref was created. */
  before: string;
  /** Commit after the push; all zeros when the ref was deleted. */
  after: string;
  /** Paths added, modified or deleted between `before` and `after`. */
  changedPaths: string[];
}

export type PushListener = (event: PushEvent) => void;

export interface PushSource {
  /** Calls `listener` after every push; returns an unsubscribe function (or nothing). */
  onPush(listener: PushListener): (() => void) | void;
}

export interface RepositoryReader {
  /** The file at `ref` (branch name, `refs/heads/...` or commit id); undefined when absent. */
  readFile(projectId: number, ref: string, path: string): Promise<Buffer | Uint8Array | undefined>;
  /** The commit id `ref` points at; undefined when the ref (or repository) does not exist. */
  resolveRef(projectId: number, ref: string): Promise<string | undefined>;
  /**
   * Whether commit `ancestor` is reachable from `descendant`. Optional: without it, a push's config
   * is applied even when a later push's was applied first (possible only with several replicas).
   */
  isAncestor?(projectId: number, ancestor: string, descendant: string): Promise<boolean>;
}

export type AgentConfigRepositories = PushSource & RepositoryReader;

/** Directory holding agent folders in a config project, as GitLab. */
export const AGENT_CONFIG_DIRECTORY = ".gitlab/agents";
export const AGENT_CONFIG_FILE_NAME = "config.yaml";

/** `.gitlab/agents/<name>/config.yaml`. */
export function agentConfigPath(agentName: string): string {
  return `${AGENT_CONFIG_DIRECTORY}/${agentName}/${AGENT_CONFIG_FILE_NAME}`;
}

/** The agent name of a config file path, or undefined when the path is no agent's config file. */
export function agentNameOfConfigPath(path: string): string | undefined {
  const prefix = `${AGENT_CONFIG_DIRECTORY}/`;
  const suffix = `/${AGENT_CONFIG_FILE_NAME}`;
  if (!path.startsWith(prefix) || !path.endsWith(suffix)) return undefined;
  const name = path.slice(prefix.length, path.length - suffix.length);
  return name.length > 0 && !name.includes("/") && agentNameErrors(name).length === 0 ? name : undefined;
}

const ZERO_OID_RE = /^0+$/;

/** True for git's all-zeros object id (a created or deleted ref). */
export function isZeroOid(oid: string): boolean {
  return ZERO_OID_RE.test(oid);
}

/** The branch name of `refs/heads/<branch>` (or a bare name); undefined for tags and other refs. */
export function branchOfRef(ref: string): string | undefined {
  if (ref.startsWith("refs/heads/")) return ref.slice("refs/heads/".length);
  if (ref.startsWith("refs/")) return undefined;
  return ref;
}
