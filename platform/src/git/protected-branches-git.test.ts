import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";
import { expect } from "chai";
import pino from "pino";
import { beforeEach, describe, it } from "mocha";
import { AccessLevel } from "../services/access-levels.js";
import type { Project } from "../services/projects.js";
import { sendEndlessly } from "../testing/http-fixtures.test-support.js";
import { waitFor } from "@kasbridge/testing/wait";
import { ZERO_OID, pkt, useGitPlatform, type GitTestPlatform } from "./git-fixtures.test-support.js";

const DECLINED = "(pre-receive hook declined)";

describe("git: protected branches and push limits (real git over smart HTTP)", function () {
  this.timeout(60_000);
  const logs: string[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => void logs.push(line) });
  const fixture = useGitPlatform({ maxBodyBytes: 512 * 1024, logger });
  const client = fixture.client;
  let p: GitTestPlatform;
  beforeEach(() => (p = fixture.platform));

  /** A project whose main has one commit (pushed by a Maintainer), with a Developer and a Maintainer. */
  async function seeded(path: string) {
    const maintainer = await p.user(`${path}-maintainer`);
    const developer = await p.user(`${path}-developer`);
    const project = await p.project(path);
    await p.addMember(project, maintainer.id, AccessLevel.MAINTAINER);
    await p.addMember(project, developer.id, AccessLevel.DEVELOPER);
    const m = await client();
    await m.ok(["clone", "-q", p.url(project, maintainer.token), "w"]);
    const base = await m.commit("w", { ".gitlab/agents/prod/config.yaml": "ci_access: {}\n" });
    await m.ok(["push", "-q", "origin", "main"], "w");
    const d = await client();
    await d.ok(["clone", "-q", p.url(project, developer.token), "w"]);
    return { project, maintainer, developer, m, d, base };
  }

  /** Objects and refs of the project's repository, to show a refused push left nothing behind. */
  async function repositoryState(project: Project) {
    const dir = join(p.repositoriesDir, `${project.id}.git`);
    const g = await client();
    const refs = await g.ok(["--git-dir", dir, "for-each-ref", "--format=%(refname) %(objectname)"]);
    const objects = await g.ok(["--git-dir", dir, "count-objects", "-v"]);
    const quarantines = (await readdir(join(dir, "objects"))).filter((n) => n.startsWith("tmp_objdir"));
    return { refs, objects, quarantines };
  }

  it("protects the default branch from Developers as GitLab does; they still push other branches", async () => {
    const { project, d, base } = await seeded("cfg");
    const before = await repositoryState(project);
    const eventsBefore = p.events.length;

    // A Developer rewriting the agent configuration on main: refused with GitLab's message.
    await d.commit("w", { ".gitlab/agents/prod/config.yaml": "ci_access:\n  groups:\n    - id: attacker\n" });
    const push = await d.run(["push", "origin", "main"], "w");
    expect(push.code).to.not.equal(0);
    expect(push.stderr).to.include("remote: GitLab: You are not allowed to push code to protected branches on this project.");
    expect(push.stderr).to.include(DECLINED);
    // Nothing written: same refs, same objects, no quarantine left, no push event.
    expect(await repositoryState(project)).to.deep.equal(before);
    expect(p.events.length).to.equal(eventsBefore);
    expect(await p.services.repositories.resolveRef(project.id, "main")).to.equal(base);

    // A feature branch is fine, and so is deleting it.
    await d.ok(["push", "-q", "origin", "HEAD:refs/heads/feature"], "w");
    await d.ok(["push", "-q", "origin", ":feature"], "w");
    // Pushing main and a branch together: the whole push is refused, the branch not created either.
    const both = await d.run(["push", "origin", "HEAD:refs/heads/main", "HEAD:refs/heads/other"], "w");
    expect(both.code).to.not.equal(0);
    expect(both.stderr).to.include("! [remote rejected] HEAD -> other (pre-receive hook declined)");
    expect(await p.services.repositories.resolveRef(project.id, "other")).to.equal(undefined);
    // Deleting main: GitLab's message for the default branch.
    const del = await d.run(["push", "origin", ":main"], "w");
    expect(del.stderr).to.include("GitLab: The default branch of a project cannot be deleted.");
  });

  it("lets Maintainers push to the default branch but not force-push or delete it", async () => {
    const { project, m, base } = await seeded("force");
    const next = await m.commit("w", { "a.txt": "a\n" });
    await m.ok(["push", "-q", "origin", "main"], "w");
    expect(await p.services.repositories.resolveRef(project.id, "main")).to.equal(next);

    // Rewrite history: a commit on top of `base` that does not contain `next`.
    await m.ok(["reset", "-q", "--hard", base], "w");
    await m.commit("w", { "b.txt": "b\n" });
    const before = await repositoryState(project);
    const forced = await m.run(["push", "--force", "origin", "main"], "w");
    expect(forced.code).to.not.equal(0);
    expect(forced.stderr).to.include("GitLab: You are not allowed to force push code to a protected branch on this project.");
    expect(await repositoryState(project)).to.deep.equal(before);

    const del = await m.run(["push", "origin", ":main"], "w");
    expect(del.stderr).to.include("GitLab: The default branch of a project cannot be deleted.");
    expect(await p.services.repositories.resolveRef(project.id, "main")).to.equal(next);
  });

  it("lets only Maintainers create the default branch of an empty repository", async () => {
    const developer = await p.user("dev");
    const maintainer = await p.user("maint");
    const project = await p.project("empty");
    await p.addMember(project, developer.id, AccessLevel.DEVELOPER);
    await p.addMember(project, maintainer.id, AccessLevel.MAINTAINER);
    const d = await client();
    await d.ok(["clone", "-q", p.url(project, developer.token), "w"]);
    await d.commit("w", { "x.txt": "x\n" });
    for (const ref of ["main", "HEAD:refs/heads/topic"]) {
      const push = await d.run(["push", "origin", ref], "w");
      expect(push.code, ref).to.not.equal(0);
      expect(push.stderr).to.include("GitLab: A default branch (e.g. main) does not yet exist for group/empty");
      expect(push.stderr).to.include("GitLab: Ask a project Owner or Maintainer to create a default branch.");
    }
    expect(await p.services.repositories.hasBranches(project.id)).to.equal(false);
    await d.ok(["remote", "set-url", "origin", p.url(project, maintainer.token)], "w");
    await d.ok(["push", "-q", "origin", "main"], "w");
    expect(await p.services.repositories.hasBranches(project.id)).to.equal(true);
  });

  it("applies rules made over REST: wildcards, Developers + force push, No one, unprotect", async () => {
    const { project, maintainer, d, m } = await seeded("rules");
    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${p.baseUrl}/api/v4/projects/${project.id}/protected_branches${path}`, {
        method,
        headers: { "private-token": maintainer.token, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, json: res.status === 204 ? undefined : ((await res.json()) as Record<string, unknown>) };
    };
    expect((await api("POST", "", { name: "release/*", push_access_level: 30, merge_access_level: 30, allow_force_push: true })).status).to.equal(201);
    expect((await api("POST", "", { name: "stable", push_access_level: 40, merge_access_level: 40 })).status).to.equal(201);
    expect((await api("POST", "", { name: "stable-dev-merge", push_access_level: 40, merge_access_level: 30 })).status).to.equal(201);
    expect((await api("POST", "", { name: "frozen", push_access_level: 0, merge_access_level: 0 })).status).to.equal(201);

    // Developers may push and force-push release branches.
    const first = await d.commit("w", { "r.txt": "1\n" });
    await d.ok(["push", "-q", "origin", "HEAD:refs/heads/release/1.0"], "w");
    await d.ok(["reset", "-q", "--hard", "HEAD~1"], "w");
    const rewritten = await d.commit("w", { "r.txt": "2\n" });
    await d.ok(["push", "-q", "--force", "origin", "HEAD:refs/heads/release/1.0"], "w");
    expect(await p.services.repositories.resolveRef(project.id, "release/1.0")).to.equal(rewritten).and.not.equal(first);

    // Creating a branch only Maintainers may push: GitLab's two messages, by merge level.
    const stable = await d.run(["push", "origin", "HEAD:refs/heads/stable"], "w");
    expect(stable.stderr).to.include("GitLab: You are not allowed to create protected branches on this project.");
    const webOnly = await d.run(["push", "origin", "HEAD:refs/heads/stable-dev-merge"], "w");
    expect(webOnly.stderr).to.include("GitLab: You can only create protected branches using the web interface and API.");
    // No one may push `frozen`, not even a Maintainer.
    const frozen = await m.run(["push", "origin", "HEAD:refs/heads/frozen"], "w");
    expect(frozen.stderr).to.include("GitLab: You are not allowed to create protected branches on this project.");
    // An admin may do what a Maintainer may.
    const admin = await client();
    await admin.ok(["clone", "-q", p.url(project, p.adminToken), "w"]);
    await admin.commit("w", { "s.txt": "s\n" });
    await admin.ok(["push", "-q", "origin", "HEAD:refs/heads/stable"], "w");

    // Unprotecting main gives Developers their pushes back.
    expect((await api("DELETE", "/main")).status).to.equal(204);
    await d.ok(["fetch", "-q", "origin", "main"], "w");
    await d.ok(["reset", "-q", "--hard", "origin/main"], "w");
    const mine = await d.commit("w", { "dev.txt": "d\n" });
    await d.ok(["push", "-q", "origin", "HEAD:refs/heads/main"], "w");
    expect(await p.services.repositories.resolveRef(project.id, "main")).to.equal(mine);
  });

  it("refuses a push over the size limit with 413 and leaves the repository unchanged", async () => {
    const { project, m } = await seeded("big");
    const before = await repositoryState(project);
    const eventsBefore = p.events.length;
    // 2 MiB of random data: more than http.postBuffer, so git streams it chunked, without a length.
    await m.commit("w", { "big.bin": randomBytes(2 * 1024 * 1024) });
    const push = await m.run(["push", "origin", "main"], "w");
    expect(push.code).to.not.equal(0);
    expect(push.stderr).to.include("HTTP 413");
    expect(await repositoryState(project)).to.deep.equal(before);
    expect(p.events.length).to.equal(eventsBefore);

    // A declared length over the limit is refused before anything is read, with the limit named.
    const declared = await rawPost(`${p.baseUrl}/${project.pathWithNamespace}.git/git-receive-pack`, p, {
      "content-length": String(1024 * 1024),
    });
    expect(declared.status).to.equal(413);
    expect(declared.body).to.equal(
      "Request Entity Too Large: the push is larger than 524288 bytes, the limit set by GitHttpRouterOptions.maxBodyBytes\n",
    );
    expect(await repositoryState(project)).to.deep.equal(before);

    // Clients that go on sending are disconnected: after a bad command list, and after a valid
    // one followed by a pack that never ends (git gives up on it long before the limit).
    const url = `${p.baseUrl}/${project.pathWithNamespace}.git/git-receive-pack`;
    const headers = { authorization: `Bearer ${p.adminToken}`, "content-type": "application/x-git-receive-pack-request" };
    expect(await sendEndlessly(url, headers)).to.be.below(32 * 1024 * 1024);
    const commands = Buffer.from(pkt(`${ZERO_OID} ${"1".repeat(40)} refs/heads/endless\0report-status\n`) + "0000PACK");
    expect(await sendEndlessly(url, headers, commands)).to.be.below(32 * 1024 * 1024);
    expect(await repositoryState(project)).to.deep.equal(before);

    // A small push still goes through.
    await m.ok(["reset", "-q", "--hard", "HEAD~1"], "w");
    await m.commit("w", { "small.txt": "s\n" });
    await m.ok(["push", "-q", "origin", "main"], "w");
  });

  it("ends a push whose client leaves in the middle of its command list", async () => {
    const { project } = await seeded("gone");
    logs.length = 0;
    const req = request(`${p.baseUrl}/${project.pathWithNamespace}.git/git-receive-pack`, {
      method: "POST",
      headers: { authorization: `Bearer ${p.adminToken}`, "content-type": "application/x-git-receive-pack-request" },
    });
    req.on("error", () => {});
    // No flush packet: the command list is not complete when the client leaves.
    req.write(pkt(`${ZERO_OID} ${"1".repeat(40)} refs/heads/x\0report-status\n`), () => req.destroy());
    // The request handler ends (it waited for the rest of the list forever before).
    await waitFor(() => logs.some((l) => l.includes("push request refused before git ran")), undefined, "the handler to end");
  });

  it("refuses malformed push requests and unknown encodings before git runs", async () => {
    const { project } = await seeded("bad");
    const before = await repositoryState(project);
    const url = `${p.baseUrl}/${project.pathWithNamespace}.git/git-receive-pack`;
    const garbage = await rawPost(url, p, {}, Buffer.from("zzzz not a pkt-line"));
    expect(garbage.status).to.equal(400);
    expect(garbage.body).to.include("malformed pkt-line length");
    const cert = await rawPost(url, p, {}, Buffer.from(pkt("push-cert\0report-status\n") + "0000"));
    expect(cert.status).to.equal(400);
    expect(cert.body).to.include("signed pushes are not supported");
    const brotli = await rawPost(url, p, { "content-encoding": "br" }, Buffer.from("0000"));
    expect(brotli.status).to.equal(415);
    const badGzip = await rawPost(url, p, { "content-encoding": "gzip" }, Buffer.from("not gzip at all"));
    expect(badGzip.status).to.equal(400);
    expect(badGzip.body).to.include("not valid gzip");
    const truncated = await rawPost(url, p, {}, Buffer.from(pkt(`${ZERO_OID} ${"1".repeat(40)} refs/heads/x\0report-status\n`)));
    expect(truncated.status).to.equal(400);
    expect(truncated.body).to.include("ended before its command list did");
    expect(await repositoryState(project)).to.deep.equal(before);
  });
});

/** A POST as the admin with `body`, or with only the given headers (and the body never sent). */
function rawPost(
  url: string,
  p: GitTestPlatform,
  headers: Record<string, string>,
  body?: Buffer,
): Promise<{ status: number; body: string; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${p.adminToken}`,
        "content-type": "application/x-git-receive-pack-request",
        ...(body ? { "content-length": String(body.length) } : {}),
        ...headers,
      },
    });
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text += d));
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, body: text, connection: res.headers.connection });
        req.destroy();
      });
      res.on("error", reject);
    });
    req.on("error", (err) => (req.destroyed ? undefined : reject(err)));
    if (body) req.end(body);
    else req.flushHeaders(); // a declared length, and no body: the answer must not wait for it
  });
}
