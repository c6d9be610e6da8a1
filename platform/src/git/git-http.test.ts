import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { gzipSync } from "node:zlib";
import { expect } from "chai";
import { beforeEach, describe, it } from "mocha";
import { AccessLevel } from "../services/access-levels.js";
import { createPlatformServices } from "../services/platform-services.js";
import { tcpProxy } from "@kasbridge/testing/tcp-proxy";
import { rejectionOf, waitFor } from "@kasbridge/testing/wait";
import { ZERO_OID, pkt, useGitPlatform, type GitTestPlatform } from "./git-fixtures.test-support.js";

describe("git smart HTTP", function () {
  // Real git clients against a real server: seconds each, more on a busy machine.
  this.timeout(60_000);
  const fixture = useGitPlatform();
  const client = fixture.client;
  let p: GitTestPlatform;
  beforeEach(() => (p = fixture.platform));

  it("clones an empty project, pushes, reports the push and serves the file over REST", async () => {
    const alice = await p.user("alice");
    const project = await p.project("app");
    // A Maintainer: the default branch is protected (Developers' pushes: branch-protection tests).
    await p.addMember(project, alice.id, AccessLevel.MAINTAINER);
    const git = await client();

    const cloned = await git.run(["clone", p.url(project, alice.token), "app"]);
    expect(cloned.code, cloned.stderr).to.equal(0);
    expect(cloned.stderr).to.include("empty repository");
    // HEAD of the new repository is the project's default branch.
    expect((await git.ok(["symbolic-ref", "--short", "HEAD"], "app")).trim()).to.equal("main");

    const first = await git.commit("app", { "README.md": "# app\n", ".gitlab/agents/a1/config.yaml": "observability: {}\n" });
    await git.ok(["push", "-q", "origin", "main"], "app");
    // The push's events are delivered before `git push` returns.
    expect(p.events).to.have.length(1);
    expect(p.events[0]).to.deep.equal({
      projectId: project.id,
      ref: "refs/heads/main",
      before: ZERO_OID,
      after: first,
      changedPaths: [".gitlab/agents/a1/config.yaml", "README.md"],
    });

    const second = await git.commit("app", { "README.md": "# app v2\n", "src/main.ts": "export {};\n" });
    await git.ok(["push", "-q", "origin", "main"], "app");
    expect(p.events[1]).to.deep.equal({
      projectId: project.id,
      ref: "refs/heads/main",
      before: first,
      after: second,
      changedPaths: ["README.md", "src/main.ts"],
    });

    // A deleted branch lists the files it had.
    await git.ok(["push", "-q", "origin", "main:refs/heads/topic"], "app");
    await git.ok(["push", "-q", "origin", ":topic"], "app");
    expect(p.events.slice(2).map((e) => [e.ref, e.before === ZERO_OID, e.after === ZERO_OID, e.changedPaths.length])).to.deep.equal([
      ["refs/heads/topic", true, false, 3],
      ["refs/heads/topic", false, true, 3],
    ]);

    // REST: raw file, default ref = default branch, ref by commit id, 404s.
    const raw = await fetch(`${p.baseUrl}/api/v4/projects/${project.id}/repository/files/src%2Fmain.ts/raw`, {
      headers: { "private-token": alice.token },
    });
    expect(raw.status).to.equal(200);
    expect(raw.headers.get("content-type")).to.equal("text/plain; charset=utf-8");
    expect(raw.headers.get("x-gitlab-commit-id")).to.equal(second);
    expect(await raw.text()).to.equal("export {};\n");
    const old = await fetch(
      `${p.baseUrl}/api/v4/projects/${encodeURIComponent(project.pathWithNamespace)}/repository/files/README.md/raw?ref=${first}`,
      { headers: { "private-token": alice.token } },
    );
    expect(await old.text()).to.equal("# app\n");
    const missing = await fetch(`${p.baseUrl}/api/v4/projects/${project.id}/repository/files/nope.txt/raw`, {
      headers: { "private-token": alice.token },
    });
    expect(missing.status).to.equal(404);
    expect(await missing.json()).to.deep.equal({ message: "404 File Not Found" });
    const badRef = await fetch(`${p.baseUrl}/api/v4/projects/${project.id}/repository/files/README.md/raw?ref=nope`, {
      headers: { "private-token": alice.token },
    });
    expect(badRef.status).to.equal(404);
    expect(await badRef.json()).to.deep.equal({ message: "404 Commit Not Found" });
    const traversal = await fetch(`${p.baseUrl}/api/v4/projects/${project.id}/repository/files/..%2Fsecret/raw`, {
      headers: { "private-token": alice.token },
    });
    expect(traversal.status).to.equal(400);

    // The service API sees the same.
    expect(await p.services.repositories.resolveRef(project.id, "main")).to.equal(second);
    expect((await p.services.repositories.readFile(project.id, "main", "README.md"))?.toString()).to.equal("# app v2\n");
    expect(await p.services.repositories.readFile(project.id, first, "src/main.ts")).to.equal(undefined);
    expect((await p.services.repositories.listFiles(project.id, "main", ".gitlab/"))?.map((e) => e.path)).to.deep.equal([
      ".gitlab/agents/a1/config.yaml",
    ]);
  });

  it("lets a reporter clone but not push; hides private projects from strangers; refuses bad tokens", async () => {
    const dev = await p.user("dev");
    const reporter = await p.user("reporter");
    const guest = await p.user("guest");
    const stranger = await p.user("stranger");
    const project = await p.project("secret");
    await p.addMember(project, dev.id, AccessLevel.MAINTAINER);
    await p.addMember(project, reporter.id, AccessLevel.REPORTER);
    await p.addMember(project, guest.id, AccessLevel.GUEST);
    const devGit = await client();
    await devGit.ok(["clone", "-q", p.url(project, dev.token), "w"]);
    const head = await devGit.commit("w", { "a.txt": "a\n" });
    await devGit.ok(["push", "-q", "origin", "main"], "w");

    const git = await client();
    await git.ok(["clone", "-q", p.url(project, reporter.token), "r"]);
    expect((await git.ok(["rev-parse", "HEAD"], "r")).trim()).to.equal(head);
    await git.commit("r", { "b.txt": "b\n" });
    const push = await git.run(["push", "origin", "main"], "r");
    expect(push.code).to.not.equal(0);
    expect(push.stderr).to.include("You are not allowed to push code to this project.");
    expect(await p.services.repositories.resolveRef(project.id, "main")).to.equal(head);
    expect(p.events).to.have.length(1);

    const guestClone = await git.run(["clone", p.url(project, guest.token), "g"]);
    expect(guestClone.code).to.not.equal(0);
    expect(guestClone.stderr).to.include("You are not allowed to download code from this project.");

    const strangerClone = await git.run(["clone", p.url(project, stranger.token), "s"]);
    expect(strangerClone.code).to.not.equal(0);
    expect(strangerClone.stderr).to.match(/could not be found|not found/);
    const status = await fetch(`${p.baseUrl}/${project.pathWithNamespace}.git/info/refs?service=git-upload-pack`, {
      headers: { authorization: basic("x", stranger.token) },
    });
    expect(status.status).to.equal(404);

    const wrong = await git.run(["clone", p.url(project, "glpat-wrong"), "x"]);
    expect(wrong.code).to.not.equal(0);
    expect(wrong.stderr).to.match(/Authentication failed|401/);
    for (const authorization of [basic("x", "glpat-wrong"), undefined]) {
      const res = await fetch(`${p.baseUrl}/${project.pathWithNamespace}.git/info/refs?service=git-upload-pack`, {
        headers: authorization ? { authorization } : {},
      });
      expect(res.status).to.equal(401);
      expect(res.headers.get("www-authenticate")).to.equal('Basic realm="GitLab"');
    }
    // Anonymous requests for a project that does not exist are challenged too (nothing leaks).
    const none = await fetch(`${p.baseUrl}/group/none.git/info/refs?service=git-upload-pack`);
    expect(none.status).to.equal(401);

    // A read-only token may fetch but not push, even for a developer.
    const readOnly = await p.services.personalAccessTokens.create(dev.id, { name: "ro", scopes: ["read_repository"] });
    const roPush = await fetch(`${p.baseUrl}/${project.pathWithNamespace}.git/info/refs?service=git-receive-pack`, {
      headers: { authorization: basic("dev", readOnly.secret) },
    });
    expect(roPush.status).to.equal(403);
    const roFetch = await fetch(`${p.baseUrl}/${project.pathWithNamespace}.git/info/refs?service=git-upload-pack`, {
      headers: { authorization: basic("dev", readOnly.secret) },
    });
    expect(roFetch.status).to.equal(200);
    expect(roFetch.headers.get("content-type")).to.equal("application/x-git-upload-pack-advertisement");
  });

  it("serves public projects anonymously for fetch only, and redirects URLs without .git", async () => {
    const owner = await p.user("owner");
    const project = await p.project("open", { visibility: "public" });
    await p.addMember(project, owner.id, AccessLevel.MAINTAINER);
    const git = await client();
    await git.ok(["clone", "-q", p.url(project, owner.token), "w"]);
    await git.commit("w", { "x.txt": "x\n" });
    await git.ok(["push", "-q", "origin", "main"], "w");

    await git.ok(["clone", "-q", `http://${p.host}/${project.pathWithNamespace}`, "anon"]);
    expect((await git.ok(["log", "--format=%s"], "anon")).trim()).to.equal("change");
    await git.commit("anon", { "y.txt": "y\n" });
    const push = await git.run(["push", "origin", "main"], "anon");
    expect(push.code).to.not.equal(0);
    expect(push.stderr).to.match(/terminal prompts disabled|Authentication failed|401/);
  });

  it("lands concurrent pushes to different branches from several clients, one event each", async () => {
    const maintainer = await p.user("maintainer");
    const dev = await p.user("dev");
    const project = await p.project("busy");
    await p.addMember(project, maintainer.id, AccessLevel.MAINTAINER);
    await p.addMember(project, dev.id, AccessLevel.DEVELOPER);
    const seed = await client();
    await seed.ok(["clone", "-q", p.url(project, maintainer.token), "w"]);
    await seed.commit("w", { "base.txt": "base\n" });
    await seed.ok(["push", "-q", "origin", "main"], "w");

    const count = 6;
    const heads = await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        const git = await client();
        await git.ok(["clone", "-q", p.url(project, dev.token), "w"]);
        await git.ok(["checkout", "-q", "-b", `b${i}`], "w");
        const head = await git.commit("w", { [`dir${i}/f.txt`]: `${i}\n` });
        await git.ok(["push", "-q", "origin", `b${i}`], "w");
        return head;
      }),
    );
    const branchEvents = p.events.filter((e) => e.ref !== "refs/heads/main");
    expect(branchEvents).to.have.length(count);
    for (let i = 0; i < count; i++) {
      expect(await p.services.repositories.resolveRef(project.id, `b${i}`)).to.equal(heads[i]);
      const event = branchEvents.find((e) => e.ref === `refs/heads/b${i}`);
      expect(event, `event for b${i}`).to.deep.include({ after: heads[i], before: ZERO_OID });
      expect(event!.changedPaths).to.have.members(["base.txt", `dir${i}/f.txt`]);
    }
    // Nothing left behind in the report directory.
    expect(await readdir(join(p.repositoriesDir, ".push-reports"))).to.deep.equal([]);
  });

  it("streams a 20 MB push and clone without holding the pack in memory", async function () {
    this.timeout(120_000);
    const dev = await p.user("dev");
    const project = await p.project("big");
    await p.addMember(project, dev.id, AccessLevel.MAINTAINER);
    const MB = 1024 * 1024;
    // Live Buffer memory, sampled after full GCs (garbage from streamed chunks is not "held"), for
    // every MiB that passes between git and the server: a proxy in this process takes the samples
    // as the bytes flow (with backpressure, the transfer waits for each sample). A timer was used
    // before: a fast machine finished push and clone between too few of its ticks.
    v8.setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const live = () => {
      gc();
      gc();
      return process.memoryUsage().arrayBuffers;
    };
    let transferred = 0;
    let samples = 0;
    let base = 0;
    let peak = 0;
    const proxy = await tcpProxy(p.port, {
      onData(chunk) {
        const before = Math.floor(transferred / MB);
        transferred += chunk.length;
        if (Math.floor(transferred / MB) === before) return;
        peak = Math.max(peak, live());
        samples++;
      },
    });
    const url = p.url(project, dev.token).replace(p.host, `127.0.0.1:${proxy.port}`);
    try {
      const git = await client();
      await git.ok(["clone", "-q", url, "w"]);
      const big = randomBytes(20 * MB); // incompressible: the pack is as large
      await git.commit("w", { "big.bin": big });
      base = peak = live();
      samples = 0;
      transferred = 0;
      await git.ok(["push", "-q", "origin", "main"], "w");
      await git.ok(["clone", "-q", url, "copy"]);
    } finally {
      await proxy.close();
    }
    // The 20 MB pack went through this process twice (push, clone), a chunk at a time
    // (measured: ~0.1 MB; holding the pack would be >= 20 MB), sampled once per MiB.
    expect(samples, "samples during push and clone").to.be.at.least(40);
    expect(peak - base, "live Buffer growth").to.be.below(4 * MB);
    expect(p.events.at(-1)!.changedPaths).to.deep.equal(["big.bin"]);
    const file = await p.services.repositories.openFile(project.id, "main", "big.bin");
    expect(file?.size).to.equal(20 * MB);
    await expectRejected(p.services.repositories.readFile(project.id, "main", "big.bin"), /limit/);
  });

  it("inflates gzip request bodies (git gzips large fetch negotiations)", async () => {
    const dev = await p.user("dev");
    const project = await p.project("gz");
    await p.addMember(project, dev.id, AccessLevel.MAINTAINER);
    const git = await client();
    await git.ok(["clone", "-q", p.url(project, dev.token), "w"]);
    const head = await git.commit("w", { "z.txt": "z\n" });
    await git.ok(["push", "-q", "origin", "main"], "w");

    // A protocol v0 upload-pack request: want <head>, done.
    const body = gzipSync(Buffer.from(pkt(`want ${head} ofs-delta\n`) + "0000" + pkt("done\n")));
    const res = await fetch(`${p.baseUrl}/${project.pathWithNamespace}.git/git-upload-pack`, {
      method: "POST",
      headers: {
        authorization: basic("dev", dev.token),
        "content-type": "application/x-git-upload-pack-request",
        "content-encoding": "gzip",
      },
      body,
    });
    expect(res.status).to.equal(200);
    expect(res.headers.get("content-type")).to.equal("application/x-git-upload-pack-result");
    const out = Buffer.from(await res.arrayBuffer());
    expect(out.subarray(0, 8).toString()).to.equal("0008NAK\n");
    expect(out.includes(Buffer.from("PACK"))).to.equal(true);
  });

  it("stops git when the client disconnects mid-push and keeps serving", async function () {
    this.timeout(60_000);
    const dev = await p.user("dev");
    const project = await p.project("cut");
    await p.addMember(project, dev.id, AccessLevel.MAINTAINER);
    const objects = join(p.repositoriesDir, `${project.id}.git`, "objects");
    const quarantines = async () => (await readdir(objects)).filter((n) => n.startsWith("tmp_objdir-incoming"));

    // A receive-pack request whose pack never completes: git waits in its quarantine directory.
    const header = Buffer.alloc(12);
    header.write("PACK");
    header.writeUInt32BE(2, 4);
    header.writeUInt32BE(1000, 8);
    const req = request(`${p.baseUrl}/${project.pathWithNamespace}.git/git-receive-pack`, {
      method: "POST",
      headers: { authorization: basic("dev", dev.token), "content-type": "application/x-git-receive-pack-request" },
    });
    req.on("response", (res) => res.resume()); // http-backend sends its headers at once
    req.on("error", () => {});
    req.write(pkt(`${ZERO_OID} ${"1".repeat(40)} refs/heads/x\0report-status\n`) + "0000");
    // First object: a 1000-byte commit whose zlib stream has only begun.
    req.write(Buffer.concat([header, Buffer.from([0x98, 0x3e, 0x78, 0x9c])]));
    await waitFor(async () => (await quarantines()).length > 0, undefined, "receive-pack to start");
    req.destroy();
    // Git sees EOF, removes its quarantine and exits: nothing of the half push stays.
    await waitFor(async () => (await quarantines()).length === 0, undefined, "git to stop after the client left");

    // The repository is unharmed: a normal push still works.
    const git = await client();
    await git.ok(["clone", "-q", p.url(project, dev.token), "w"]);
    await git.commit("w", { "ok.txt": "ok\n" });
    await git.ok(["push", "-q", "origin", "main"], "w");
    expect(p.events.map((e) => e.ref)).to.deep.equal(["refs/heads/main"]);
  });

  it("creates the repository on first access for a project that has none", async () => {
    const dev = await p.user("dev");
    // Created by a platform without repositories (an older version): no repository on disk.
    const group = await p.services.namespaces.createGroup({ name: "old", path: "old" }, dev.id);
    const withoutRepos = createPlatformServices({ store: p.services.store });
    const project = await withoutRepos.projects.create({ path: "late", namespaceId: group.id, defaultBranch: "trunk" }, dev.id);
    expect(await readdir(p.repositoriesDir)).to.not.include(`${project.id}.git`);

    const git = await client();
    await git.ok(["clone", "-q", p.url(project, dev.token), "w"]);
    expect((await git.ok(["symbolic-ref", "--short", "HEAD"], "w")).trim()).to.equal("trunk");
    await git.commit("w", { "t.txt": "t\n" });
    await git.ok(["push", "-q", "origin", "trunk"], "w");
    expect(p.events.map((e) => [e.ref, e.changedPaths])).to.deep.equal([["refs/heads/trunk", ["t.txt"]]]);
    await expectRejected(withoutRepos.repositories.resolveRef(project.id, "trunk"), /repositories are disabled/);
  });
});

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

async function expectRejected(promise: Promise<unknown>, message: RegExp): Promise<void> {
  expect((await rejectionOf(promise, Error)).message).to.match(message);
}
