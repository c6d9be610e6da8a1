// What the replicas share besides Redis: the PostgreSQL database (a brief outage gives clean
// errors, not a crash) and the git repositories in one data directory (pushes to one project
// through two replicas at once, git's own locking).
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { tcpProxy, type TcpProxy } from "@kasbridge/testing/tcp-proxy";
import { waitFor } from "@kasbridge/testing/wait";
import { GitClient } from "./git.test-support.js";
import { adminToken, api, createAgentWithToken, echoClient, startAgentk } from "./harness.test-support.js";
import { ReplicaSet, type Replica } from "./replicas.test-support.js";

const run = promisify(execFile);

describe("e2e: kas replicas sharing PostgreSQL and the git repositories", function () {
  this.timeout(300_000);
  const cleanups = new Cleanup();
  const set = new ReplicaSet();
  const git = new GitClient();
  let db: TcpProxy;
  let replicas: Replica[];

  before(async () => {
    await set.open();
    cleanups.add(() => set.close());
    // Every replica reaches PostgreSQL through this proxy: the test takes the database down.
    const url = new URL(set.databaseUrl);
    db = await tcpProxy(Number(url.port || 5432));
    cleanups.add(() => db.close());
    url.port = String(db.port);
    url.hostname = "127.0.0.1";
    replicas = [await set.start({ KAS_DATABASE_URL: url.href, KAS_DATABASE_POOL_SIZE: "3" })];
    replicas.push(await set.start({ KAS_DATABASE_URL: url.href, KAS_DATABASE_POOL_SIZE: "3" }));
  });
  after(() => cleanups.run());

  it("answers 503 while the database is down, keeps serving connected agents, and recovers", async () => {
    const [a, b] = replicas;
    const agent = await createAgentWithToken(a!, "db");
    const agentk = startAgentk(a!.addresses.agent, agent.token);
    cleanups.add(() => agentk.cleanup());
    await waitFor(async () => (await api(b!, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/connections`)).json.length === 1, 15_000, "agentk connected");
    const echo = echoClient(b!, agent.agentId);
    cleanups.add(() => echo.close());
    await echo.client.echo({ payload: new Uint8Array([1]) });

    db.down = true;
    for (const r of replicas) {
      const res = await api(r, "GET", `/projects/${agent.projectId}`);
      expect(res.status, `${r.name}: ${JSON.stringify(res.json)}`).to.equal(503);
      expect(res.json).to.deep.equal({ message: "503 Service Unavailable - the database is unavailable" });
    }
    // Calls to the connected agent do not need the database (its identity is cached).
    const reply = await echo.client.echo({ payload: new Uint8Array([2]) });
    expect(reply.payload).to.deep.equal(new Uint8Array([2]));
    for (const r of replicas) expect(r.running, r.output.slice(-2000)).to.equal(true);

    db.down = false;
    await waitFor(async () => (await api(a!, "GET", `/projects/${agent.projectId}`)).status === 200, 30_000, "the API back");
    expect((await api(b!, "GET", `/projects/${agent.projectId}`)).status).to.equal(200);
    for (const r of replicas) expect(r.running).to.equal(true);
  });

  it("takes pushes to one project through two replicas at once without corrupting it", async () => {
    const [a, b] = replicas;
    const project = await api(a!, "POST", "/projects", { name: "busy" });
    const path = project.json.path_with_namespace as string;
    const clone = (r: Replica) => git.clone(`http://root:${adminToken}@${new URL(r.addresses.platform!).host}/${path}.git`);
    const seed = await clone(a!);
    await git.commit(seed, { "README.md": "seed\n" });
    await git.push(seed);
    const [wa, wb] = [await clone(a!), await clone(b!)];
    // Each writer pushes its own branch ten times, both at once.
    const writer = async (wc: string, name: string) => {
      for (let i = 0; i < 10; i++) {
        await git.commit(wc, { [`${name}.txt`]: `${name} ${i}\n` });
        await git.push(wc, name);
      }
    };
    await git.git(wa, "checkout", "-q", "-b", "left");
    await git.git(wb, "checkout", "-q", "-b", "right");
    await Promise.all([writer(wa, "left"), writer(wb, "right")]);
    // And both to main at once: git's ref lock lets one in; the other is refused, not merged into garbage.
    await git.git(wa, "checkout", "-q", "main");
    await git.git(wb, "checkout", "-q", "main");
    await git.commit(wa, { "race.txt": "a\n" });
    await git.commit(wb, { "race.txt": "b\n" });
    const results = await Promise.allSettled([git.push(wa, "main"), git.push(wb, "main")]);
    expect(results.filter((r) => r.status === "fulfilled"), JSON.stringify(results)).to.have.length(1);
    const refused = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(String(refused.reason)).to.match(/rejected|failed to (update|lock)|cannot lock/);

    const repos = join(set.dataDir, "repositories");
    const bare = readdirSync(repos).find((d) => d === `${project.json.id}.git`)!;
    await run("git", ["-C", join(repos, bare), "fsck", "--full", "--strict"]);
    const refs = (await run("git", ["-C", join(repos, bare), "for-each-ref", "--format=%(refname)"])).stdout.split("\n").filter(Boolean);
    expect(refs).to.include.members(["refs/heads/main", "refs/heads/left", "refs/heads/right"]);
    const left = (await run("git", ["-C", join(repos, bare), "show", "left:left.txt"])).stdout;
    expect(left).to.equal("left 9\n");
    const right = (await run("git", ["-C", join(repos, bare), "show", "right:right.txt"])).stdout;
    expect(right).to.equal("right 9\n");
  });
});
