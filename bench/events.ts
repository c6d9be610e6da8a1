/**
 * Section 5 of `npm run bench`: how soon KAS acts on a platform event, with the real `kas` and
 * `agentk` processes (as the e2e tests start them):
 *
 * - revocation: a token revoked over REST -> KAS closes the token's streams (KAS's log line), with
 *   the platform in process and with KAS on a remote platform (HTTP revocation feed, polled every
 *   500 ms);
 * - configuration: `git push` of an agent's config.yaml -> agentk has applied it (agentk's log
 *   line), from the start of the push (the git client's own time included, shown apart).
 *
 * These were timing assertions in the e2e tests (< 1 s), where a busy machine made them fail by
 * chance; here they are figures with that target. Each round uses a new agent (revocation) or a new
 * commit (configuration). Knob: BENCH_EVENT_ROUNDS (10).
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { Cleanup } from "../testing/src/cleanup.js";
import { waitFor } from "../testing/src/wait.js";
import { GitClient } from "../e2e/git.test-support.js";
import { adminToken, api, createAgentWithToken, echoClient, startAgentk, startKas, type KasProcess, type Proc } from "../e2e/harness.test-support.js";
import { fmt, median, percentile } from "./common.js";

export interface EventsResult {
  /** ms from the REST call revoking a token to KAS closing its streams. */
  revocationInProcess: number[];
  revocationRemote: number[];
  /** ms from the start of `git push` to agentk having applied the config, and the push alone. */
  pushToApplied: number[];
  push: number[];
}

type Table = (head: string[], rows: string[][]) => void;

const rounds = Number(process.env.BENCH_EVENT_ROUNDS ?? 10);
const TARGET_MS = 1000;

/** The `time` (epoch ms) of the first JSON log line of `proc` for which `match` holds. */
export async function loggedAt(proc: Proc, match: (line: Record<string, unknown>) => boolean, what: string): Promise<number> {
  let time: number | undefined;
  await waitFor(
    () => {
      for (const line of proc.output.split("\n")) {
        if (!line.startsWith("{")) continue;
        const entry = JSON.parse(line) as Record<string, unknown>;
        if (match(entry)) {
          time = entry.time as number;
          return true;
        }
      }
      return false;
    },
    30_000,
    what,
  );
  return time!;
}

type AgentRecord = Awaited<ReturnType<typeof createAgentWithToken>>;

/**
 * `rounds` times: a new agent connects to `kas`, its token is revoked on `platform`; the ms until
 * `kas` closes the token's streams.
 */
async function revocations(name: string, platform: KasProcess, kas: KasProcess, connected: (a: AgentRecord) => Promise<void>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const cleanup = new Cleanup();
    try {
      const a = await createAgentWithToken(platform, `${name}-${i}`);
      const agentk = startAgentk(kas.addresses.agent, a.token, {}, ["--log-level", "info"]);
      cleanup.add(() => agentk.cleanup());
      await connected(a);
      const revokedAt = Date.now();
      const res = await api(platform, "DELETE", `/projects/${a.projectId}/cluster_agents/${a.agentId}/tokens/${a.tokenId}`);
      if (res.status !== 204) throw new Error(`revoke: HTTP ${res.status}`);
      const closedAt = await loggedAt(
        kas,
        (l) => l.msg === "agent token revoked: closing its streams" && l.tokenId === a.tokenId,
        "KAS to close the revoked token's streams",
      );
      times.push(closedAt - revokedAt);
    } finally {
      await cleanup.run();
    }
  }
  return times;
}

/** `rounds` config pushes to a connected agent: ms from the start of each push to agentk applying it, and of the push alone. */
async function pushes(kas: KasProcess, git: GitClient, cleanup: Cleanup): Promise<{ pushToApplied: number[]; push: number[] }> {
  const a = await createAgentWithToken(kas, "pushed");
  const project = (await api(kas, "GET", `/projects/${a.projectId}`)).json as { path_with_namespace: string };
  const agentk = startAgentk(kas.addresses.agent, a.token, {}, ["--log-level", "info"]);
  cleanup.add(() => agentk.cleanup());
  const applied = (commitId: string) => (l: Record<string, unknown>) => l.msg === "applied agent configuration" && l.commitId === commitId;
  await loggedAt(agentk, applied("0".repeat(40)), "agentk's first (empty) configuration");
  const wc = await git.clone(`http://root:${adminToken}@${new URL(kas.addresses.platform!).host}/${project.path_with_namespace}.git`);
  const result = { pushToApplied: [] as number[], push: [] as number[] };
  for (let i = 0; i < rounds; i++) {
    // Alternating log levels: each commit is a change (and agentk's own log level stays usable).
    const commit = await git.commit(wc, { ".gitlab/agents/pushed/config.yaml": `observability:\n  logging:\n    level: ${i % 2 ? "info" : "debug"}\n# round ${i}\n` });
    const started = Date.now();
    await git.push(wc);
    result.push.push(Date.now() - started);
    result.pushToApplied.push((await loggedAt(agentk, applied(commit), `agentk to apply commit ${commit}`)) - started);
  }
  return result;
}

/** Runs section 5 and prints its table. */
export async function measureEvents(table: Table, verdict: (ok: boolean) => string): Promise<EventsResult> {
  const cleanup = new Cleanup();
  const git = new GitClient();
  cleanup.add(() => rmSync(git.home, { recursive: true, force: true }));
  try {
    const kas = await startKas({ KAS_LOG_LEVEL: "info" });
    cleanup.add(() => kas.cleanup());
    // A second KAS on the first one's platform, over HTTP (GitLab's internal API and our feeds).
    const remote = await startKas({
      KAS_LOG_LEVEL: "info",
      KAS_PLATFORM_ENABLED: "false",
      KAS_PLATFORM_URL: kas.addresses.platform!,
      KAS_API_SECRET_FILE: join(kas.dataDir, ".gitlab_kas_secret"),
    });
    cleanup.add(() => remote.cleanup());

    const revocationInProcess = await revocations("in-process", kas, kas, (a) =>
      waitFor(async () => (await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}/connections`)).json.length === 1, 30_000, "agentk to connect"),
    );
    const revocationRemote = await revocations("remote", kas, remote, async (a) => {
      // The remote KAS's connections are not the platform's to list: a call through it proves the tunnel.
      const echo = echoClient(remote, a.agentId);
      try {
        await echo.client.echo({}, { timeoutMs: 30_000 });
      } finally {
        echo.close();
      }
    });
    const { pushToApplied, push } = await pushes(kas, git, cleanup);

    const row = (label: string, values: number[]) => {
      const sorted = [...values].sort((x, y) => x - y);
      return [label, String(values.length), fmt(median(values), 0), fmt(percentile(sorted, 90), 0), fmt(sorted.at(-1)!, 0), verdict(median(values) <= TARGET_MS)];
    };
    table(
      ["event -> effect (ms)", "rounds", "median", "p90", "max", `target: median <= ${TARGET_MS} ms`],
      [
        row("token revoked -> KAS closes its streams (platform in process)", revocationInProcess),
        row("token revoked -> KAS closes its streams (remote platform, feed polled every 500 ms)", revocationRemote),
        row("git push started -> agentk applied the config", pushToApplied),
        ["  of which the git push itself", String(push.length), fmt(median(push), 0), fmt(percentile([...push].sort((x, y) => x - y), 90), 0), fmt(Math.max(...push), 0), ""],
      ],
    );
    return { revocationInProcess, revocationRemote, pushToApplied, push };
  } finally {
    await cleanup.run();
  }
}
