import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile as readFsFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import type { Logger } from "pino";
import type { ServiceContext } from "../services/context.js";
import { invalid, notFound } from "../services/errors.js";
import type { Project, ProjectService } from "../services/projects.js";
import type { RefDecision } from "./branch-protection.js";
import { GitCommandError, gitEnvironment, runGit } from "./git-command.js";
import { OID_RE, isValidPathPrefix, isValidRefName, isValidRepoPath, isValidRevision, isZeroOid } from "./git-names.js";
import { PushDispatcher, type PushEvent, type PushListener, type RefUpdate } from "./push-events.js";

/** A file (blob) in a repository, found by `openFile`. */
export interface RepositoryFile {
  /** The commit the ref resolved to. */
  commit: string;
  path: string;
  blobId: string;
  /** Git file mode: "100644", "100755" or "120000" (a symlink; its content is the target). */
  mode: string;
  size: number;
  /** Streams the content (`git cat-file blob`); aborting `signal` or destroying the stream stops git. */
  stream(signal?: AbortSignal): Readable;
}

/** A file listed by `listFiles`. */
export interface RepositoryEntry {
  path: string;
  blobId: string;
  mode: string;
}

/** What a git transport adds around one receive-pack so the push is reported (see beginPush). */
export interface PushSession {
  /** Variables to add to the environment of the process that runs receive-pack (hooks inherit them). */
  readonly env: Readonly<Record<string, string>>;
  /**
   * Call once receive-pack has exited, whatever its outcome: reads what the hook reported and
   * resolves once the push's events have been delivered to the listeners. Idempotent.
   */
  finish(): Promise<void>;
}

/**
 * One bare git repository per project (`<repositoriesDir>/<project id>.git`), created with the
 * project and served by the smart HTTP router (createGitHttpRouter).
 *
 * Revisions must be branch or tag names or object ids (no `main~1`); paths relative,
 * "/"-separated, without "." or ".." components. Anything else throws ServiceError("invalid").
 */
export interface RepositoryService {
  /** False when the platform was started without a repositories directory; every method then throws. */
  readonly enabled: boolean;
  /** The git executable the service runs. */
  readonly gitBinary: string;
  /**
   * Creates the project's repository when it does not exist yet (HEAD = the project's default
   * branch, the push hook installed) and returns its directory. Throws ServiceError("not_found")
   * for an unknown project.
   */
  ensureRepository(projectId: number): Promise<string>;
  /** The commit a branch, tag or object id names; undefined when there is none (or the repository is empty). */
  resolveRef(projectId: number, ref: string): Promise<string | undefined>;
  /** Whether commit `ancestor` is reachable from commit `descendant` (equal commits included). */
  isAncestor(projectId: number, ancestor: string, descendant: string): Promise<boolean>;
  /** The file at `path` in `ref`'s commit; undefined when the ref or the file (a blob) is missing. */
  openFile(projectId: number, ref: string, path: string): Promise<RepositoryFile | undefined>;
  /**
   * The content of `path` in `ref`'s commit; undefined when the ref or the file is missing. Throws
   * ServiceError("invalid") for a file larger than `maxBytes` (default 10 MiB).
   */
  readFile(projectId: number, ref: string, path: string, options?: { maxBytes?: number }): Promise<Buffer | undefined>;
  /**
   * Every file (blob, recursively) of `revision`'s tree whose path starts with `prefix` (a plain
   * string prefix: ".gitlab/agents/" lists that folder), sorted by path; undefined when the
   * revision does not exist.
   */
  listFiles(projectId: number, revision: string, prefix?: string): Promise<RepositoryEntry[] | undefined>;
  /**
   * Calls `listener` for every ref a push updates, after the push; events of one project arrive
   * one at a time, in push order. Returns the unsubscribe function. Listener errors are logged.
   */
  onPush(listener: PushListener): () => void;
  /** Whether the repository has at least one branch (GitLab's "empty repository" is one without). */
  hasBranches(projectId: number): Promise<boolean>;
  /**
   * For git transports: prepares one receive-pack on the project's repository. Its pre-receive
   * hook applies `decisions` (one per pushed ref, see decidePush; a ref without one is refused),
   * its post-receive hook appends the pushed `<old> <new> <ref>` lines to a file named in `env`,
   * and `finish()` turns them into PushEvents.
   */
  beginPush(projectId: number, decisions: readonly RefDecision[]): Promise<PushSession>;
  /**
   * The environment for git processes started on the service's repositories (hooks see it):
   * a minimal allow-list of the platform's variables, system and global git config shut out.
   */
  gitEnvironment(extra?: Record<string, string>): Record<string, string>;
}

export interface RepositoryServiceOptions {
  /** Holds `<project id>.git` bare repositories. Undefined: repositories are disabled. */
  repositoriesDir?: string;
  /** Default "git" (from PATH). */
  gitBinary?: string;
  /** Default file size limit of readFile. Default 10 MiB. */
  readFileMaxBytes?: number;
  /** See PushDispatcherOptions.reorderWaitMs. Default 2000 ms. */
  pushReorderWaitMs?: number;
}

/** The service plus what createPlatformServices needs. */
export interface RepositoryServiceInternal extends RepositoryService {
  /** Creates a new project's repository; failures are logged (the repository is then created on first access). */
  projectCreated(project: Project): Promise<void>;
}

/** Name of the environment variable that tells the post-receive hook where to report. */
export const PUSH_REPORT_ENV = "KASBRIDGE_PUSH_REPORT";
/** Name of the environment variable that names the pre-receive hook's decisions file. */
export const PUSH_RULES_ENV = "KASBRIDGE_PUSH_RULES";

/**
 * The pre-receive hook installed in every repository. For pushes through our transports it
 * applies the platform's decision on each ref (lines `allow <ref>`, `deny <ref> <message>`,
 * `no-force <ref> <message>` in the file named in $KASBRIDGE_PUSH_RULES): `no-force` refuses an
 * update unless the old commit is an ancestor of the new one, which only now, with the pushed
 * objects in quarantine, can be checked. A ref without a decision, or an unreadable file, refuses
 * the push; refusing it leaves the repository as it was (git drops the quarantined objects).
 */
export const PRE_RECEIVE_HOOK = `#!/bin/sh
# Installed and kept up to date by the kasbridge platform; local edits are overwritten.
# Enforces branch protection as the platform decided it, in the file named in $${PUSH_RULES_ENV}.
test -n "$${PUSH_RULES_ENV}" || exit 0
if ! test -r "$${PUSH_RULES_ENV}"; then
  printf '%s\n' "GitLab: The branch protection of this push cannot be checked." >&2
  exit 1
fi
status=0
while read -r old new ref; do
  decided=
  while read -r action rule_ref message; do
    test "x$rule_ref" = "x$ref" || continue
    decided=1
    case $action in
      allow) ;;
      deny) printf 'GitLab: %s\n' "$message" >&2; status=1 ;;
      no-force)
        case $old in *[!0]*) ;; *) continue ;; esac
        case $new in *[!0]*) ;; *) continue ;; esac
        if ! git merge-base --is-ancestor "$old" "$new" </dev/null; then
          printf 'GitLab: %s\n' "$message" >&2
          status=1
        fi ;;
      *) printf '%s\n' "GitLab: The branch protection of this push cannot be checked." >&2; status=1 ;;
    esac
  done <"$${PUSH_RULES_ENV}"
  if test -z "$decided"; then
    printf 'GitLab: The branch protection of %s cannot be checked.\n' "$ref" >&2
    status=1
  fi
done
exit $status
`;

/**
 * The post-receive hook installed in every repository. It only acts when the platform named a
 * report file (pushes through our transports), and copies git's `<old> <new> <ref>` lines there.
 */
export const POST_RECEIVE_HOOK = `#!/bin/sh
# Installed and kept up to date by the kasbridge platform; local edits are overwritten.
# Reports the updated refs of a push to the platform, which named the file in $${PUSH_REPORT_ENV}.
test -n "$${PUSH_REPORT_ENV}" || exit 0
exec cat >>"$${PUSH_REPORT_ENV}"
`;

/** Every hook the platform installs, by file name. */
const HOOKS: Readonly<Record<string, string>> = { "pre-receive": PRE_RECEIVE_HOOK, "post-receive": POST_RECEIVE_HOOK };

const REPORTS_DIR_NAME = ".push-reports";

export function createRepositoryService(
  ctx: ServiceContext,
  deps: { projects: ProjectService },
  options: RepositoryServiceOptions,
): RepositoryServiceInternal {
  const root = options.repositoriesDir;
  const git = options.gitBinary ?? "git";
  const defaultMaxBytes = options.readFileMaxBytes ?? 10 * 1024 * 1024;
  const logger: Logger = ctx.logger;
  const listeners = new Set<PushListener>();
  /** Repositories known to exist with a current hook, per project (one check per process). */
  const ready = new Map<number, Promise<string>>();
  let reportsDir: Promise<string> | undefined;

  const env = (extra?: Record<string, string>) => gitEnvironment(extra);
  const cmdEnv = env({ GIT_LITERAL_PATHSPECS: "1" });

  function requireRoot(): string {
    if (root === undefined) throw new Error("git repositories are disabled (PlatformServicesOptions.repositoriesDir is not set)");
    return root;
  }

  function repoDir(projectId: number): string {
    if (!Number.isSafeInteger(projectId) || projectId < 1) throw notFound("Project");
    return join(requireRoot(), `${projectId}.git`);
  }

  function gitIn(dir: string, args: string[], maxOutputBytes?: number): Promise<Buffer> {
    return runGit(git, ["-C", dir, ...args], { env: cmdEnv, maxOutputBytes });
  }

  async function exists(path: string): Promise<boolean> {
    try {
      await stat(path);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  async function installHooks(dir: string): Promise<void> {
    const hooks = join(dir, "hooks");
    for (const [name, content] of Object.entries(HOOKS)) {
      const hook = join(hooks, name);
      let current: string | undefined;
      try {
        current = await readFsFile(hook, "utf8");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
      if (current === content && ((await stat(hook)).mode & 0o100) !== 0) continue;
      await mkdir(hooks, { recursive: true });
      // Write-then-rename, so a push never runs a half-written hook.
      const tmp = `${hook}.${randomUUID()}.tmp`;
      await writeFile(tmp, content, { mode: 0o755 });
      await chmod(tmp, 0o755);
      await rename(tmp, hook);
    }
  }

  async function create(projectId: number, known?: Project): Promise<string> {
    const dir = repoDir(projectId);
    if (await exists(join(dir, "HEAD"))) {
      await installHooks(dir);
      return dir;
    }
    const project = known ?? (await deps.projects.get(projectId));
    if (!project) throw notFound("Project");
    const branch = project.defaultBranch;
    if (!isValidRefName(branch)) throw invalid(`default branch ${JSON.stringify(branch)} is not a valid branch name`);
    await mkdir(requireRoot(), { recursive: true, mode: 0o700 });
    // Built aside and renamed into place: concurrent creators (or processes) never see half a repository.
    const tmp = await mkdtemp(join(requireRoot(), `.tmp-${projectId}-`));
    try {
      await runGit(git, ["init", "--bare", "--quiet", "--template=", `--initial-branch=${branch}`, tmp], { env: cmdEnv });
      await installHooks(tmp);
      try {
        await rename(tmp, dir);
        logger.info({ projectId, dir }, "created git repository");
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== "EEXIST" && code !== "ENOTEMPTY") || !(await exists(join(dir, "HEAD")))) throw err;
        await installHooks(dir); // someone else created it first
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return dir;
  }

  function ensure(projectId: number, known?: Project): Promise<string> {
    let found = ready.get(projectId);
    if (!found) {
      found = create(projectId, known);
      ready.set(projectId, found);
      found.catch(() => ready.delete(projectId));
    }
    return found;
  }

  function checkRevision(revision: string, what = "ref"): void {
    if (!isValidRevision(revision)) throw invalid(`${what} ${JSON.stringify(revision)} is not a valid branch, tag or commit id`);
  }

  async function resolveIn(dir: string, revision: string): Promise<string | undefined> {
    try {
      const out = await gitIn(dir, ["rev-parse", "--verify", "--quiet", "--end-of-options", `${revision}^{commit}`]);
      const oid = out.toString("utf8").trim();
      return OID_RE.test(oid) ? oid : undefined;
    } catch (err) {
      if (err instanceof GitCommandError && err.exitCode === 1) return undefined;
      throw err;
    }
  }

  /** Parses `git ls-tree -z [-l]` output: `<mode> <type> <oid>[ <size>]\t<path>\0...`. */
  function parseLsTree(out: Buffer): Array<{ mode: string; type: string; oid: string; size: string; path: string }> {
    const entries = [];
    for (const record of out.toString("utf8").split("\0")) {
      if (record === "") continue;
      const tab = record.indexOf("\t");
      const [mode = "", type = "", oid = "", size = ""] = record.slice(0, tab).split(/ +/);
      entries.push({ mode, type, oid, size, path: record.slice(tab + 1) });
    }
    return entries;
  }

  function blobStream(dir: string, blobId: string, signal?: AbortSignal): Readable {
    const out = new PassThrough();
    const child = spawn(git, ["-C", dir, "cat-file", "blob", blobId], {
      env: cmdEnv,
      stdio: ["ignore", "pipe", "pipe"],
      signal,
      windowsHide: true,
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < 2000) stderr += d;
    });
    child.stdout.pipe(out, { end: false });
    child.on("error", (err) => out.destroy(err));
    child.on("close", (code) => {
      if (code === 0) out.end();
      else out.destroy(new GitCommandError(["cat-file", "blob"], code, stderr));
    });
    out.on("close", () => {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    });
    return out;
  }

  async function openFile(projectId: number, ref: string, path: string): Promise<RepositoryFile | undefined> {
    checkRevision(ref);
    if (!isValidRepoPath(path)) throw invalid(`path ${JSON.stringify(path)} is not a valid file path`);
    const dir = await ensure(projectId);
    const commit = await resolveIn(dir, ref);
    if (!commit) return undefined;
    const entry = parseLsTree(await gitIn(dir, ["ls-tree", "-z", "-l", "--full-tree", commit, "--", path])).find(
      (e) => e.path === path,
    );
    if (!entry || entry.type !== "blob") return undefined;
    return {
      commit,
      path,
      blobId: entry.oid,
      mode: entry.mode,
      size: Number(entry.size),
      stream: (signal) => blobStream(dir, entry.oid, signal),
    };
  }

  async function changedPaths(projectId: number, update: RefUpdate): Promise<string[]> {
    const dir = repoDir(projectId);
    const names = (out: Buffer) => out.toString("utf8").split("\0").filter((p) => p !== "");
    const tree = async (oid: string) => names(await gitIn(dir, ["ls-tree", "-r", "-z", "--name-only", "--full-tree", oid]));
    if (isZeroOid(update.before) && isZeroOid(update.after)) return [];
    if (isZeroOid(update.after)) return tree(update.before);
    if (isZeroOid(update.before)) return tree(update.after);
    return names(await gitIn(dir, ["diff-tree", "-r", "-z", "--name-only", "--no-renames", update.before, update.after]));
  }

  const dispatcher = new PushDispatcher({
    changedPaths,
    reorderWaitMs: options.pushReorderWaitMs,
    logger,
    deliver(event: PushEvent) {
      logger.debug({ projectId: event.projectId, ref: event.ref, paths: event.changedPaths.length }, "push");
      for (const listener of [...listeners]) {
        try {
          listener(event);
        } catch (err) {
          logger.error({ err, projectId: event.projectId, ref: event.ref }, "push listener failed");
        }
      }
    },
  });

  function parseReport(text: string): RefUpdate[] {
    const updates: RefUpdate[] = [];
    for (const line of text.split("\n")) {
      const m = /^([0-9a-f]{40}|[0-9a-f]{64}) ([0-9a-f]{40}|[0-9a-f]{64}) (refs\/\S.*)$/.exec(line);
      if (m) updates.push({ before: m[1]!, after: m[2]!, ref: m[3]! });
      else if (line !== "") logger.warn({ line: line.slice(0, 200) }, "ignoring a malformed push report line");
    }
    return updates;
  }

  return {
    enabled: root !== undefined,
    gitBinary: git,

    ensureRepository: (projectId) => ensure(projectId),

    async projectCreated(project) {
      if (root === undefined) return;
      try {
        await ensure(project.id, project);
      } catch (err) {
        logger.error({ err, projectId: project.id }, "cannot create the project's git repository; will retry on first access");
      }
    },

    async resolveRef(projectId, ref) {
      checkRevision(ref);
      return resolveIn(await ensure(projectId), ref);
    },

    async isAncestor(projectId, ancestor, descendant) {
      if (!OID_RE.test(ancestor) || !OID_RE.test(descendant)) throw invalid("isAncestor takes full commit ids");
      try {
        await gitIn(await ensure(projectId), ["merge-base", "--is-ancestor", ancestor, descendant]);
        return true;
      } catch (err) {
        if (err instanceof GitCommandError && err.exitCode === 1) return false;
        throw err;
      }
    },

    openFile,

    async readFile(projectId, ref, path, readOptions = {}) {
      const maxBytes = readOptions.maxBytes ?? defaultMaxBytes;
      const file = await openFile(projectId, ref, path);
      if (!file) return undefined;
      if (file.size > maxBytes) throw invalid(`${path} is ${file.size} bytes, more than the ${maxBytes}-byte limit`);
      const chunks: Buffer[] = [];
      let total = 0;
      for await (const chunk of file.stream()) {
        total += (chunk as Buffer).length;
        if (total > maxBytes) throw invalid(`${path} is more than the ${maxBytes}-byte limit`);
        chunks.push(chunk as Buffer);
      }
      return Buffer.concat(chunks, total);
    },

    async listFiles(projectId, revision, prefix = "") {
      checkRevision(revision, "revision");
      if (!isValidPathPrefix(prefix)) throw invalid(`prefix ${JSON.stringify(prefix)} is not a valid path prefix`);
      const dir = await ensure(projectId);
      const commit = await resolveIn(dir, revision);
      if (!commit) return undefined;
      const slash = prefix.lastIndexOf("/");
      const limit = slash > 0 ? ["--", prefix.slice(0, slash + 1)] : [];
      return parseLsTree(await gitIn(dir, ["ls-tree", "-r", "-z", "--full-tree", commit, ...limit]))
        .filter((e) => e.type === "blob" && e.path.startsWith(prefix))
        .map((e) => ({ path: e.path, blobId: e.oid, mode: e.mode }));
    },

    onPush(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },

    async hasBranches(projectId) {
      const out = await gitIn(await ensure(projectId), ["for-each-ref", "--count=1", "--format=%(refname)", "refs/heads/"]);
      return out.length > 0;
    },

    async beginPush(projectId, decisions) {
      await ensure(projectId);
      reportsDir ??= mkdir(join(requireRoot(), REPORTS_DIR_NAME), { recursive: true, mode: 0o700 }).then(() =>
        join(requireRoot(), REPORTS_DIR_NAME),
      );
      reportsDir.catch(() => (reportsDir = undefined));
      const file = join(await reportsDir, `${projectId}-${randomUUID()}`);
      const rulesFile = `${file}.rules`;
      await writeFile(rulesFile, formatDecisions(decisions), { mode: 0o600, flag: "wx" });
      let finished: Promise<void> | undefined;
      return {
        env: { [PUSH_REPORT_ENV]: file, [PUSH_RULES_ENV]: rulesFile },
        finish: () =>
          (finished ??= (async () => {
            await unlink(rulesFile).catch((err: unknown) => logger.warn({ err, file: rulesFile }, "cannot remove a push's rules"));
            let text: string;
            try {
              text = await readFsFile(file, "utf8");
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code === "ENOENT") return; // nothing was updated
              throw err;
            }
            await unlink(file).catch((err: unknown) => logger.warn({ err, file }, "cannot remove a push report"));
            await dispatcher.submit(projectId, parseReport(text));
          })()),
      };
    },

    gitEnvironment: env,
  };
}

/** The pre-receive hook's decisions file: one line per ref (or per message line), see PRE_RECEIVE_HOOK. */
export function formatDecisions(decisions: readonly RefDecision[]): string {
  const lines: string[] = [];
  for (const d of decisions) {
    if (!isValidRefName(d.ref)) throw new Error(`not a ref name: ${JSON.stringify(d.ref)}`);
    if (d.action === "allow") {
      lines.push(`allow ${d.ref}`);
      continue;
    }
    for (const line of d.message) lines.push(`${d.action} ${d.ref} ${line.replace(/[\r\n]+/g, " ")}`);
  }
  return lines.map((line) => `${line}\n`).join("");
}
