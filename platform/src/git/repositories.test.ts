import { readFile, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "chai";
import { afterEach, beforeEach, describe, it } from "mocha";
import { ServiceError } from "../services/errors.js";
import { rejectionOf } from "@kasbridge/testing/wait";
import { createPlatformServices } from "../services/platform-services.js";
import { useTestStore } from "../testing/fixtures.test-support.js";
import { GitClient, startGitPlatform, type GitTestPlatform } from "./git-fixtures.test-support.js";
import { POST_RECEIVE_HOOK } from "./repositories.js";

describe("repository service", () => {
  const db = useTestStore("sqlite");
  let p: GitTestPlatform;
  let git: GitClient;

  beforeEach(async () => {
    p = await startGitPlatform(db.store);
    git = await GitClient.create();
  });
  afterEach(async () => {
    await p.close();
    await git.dispose();
  });

  /** Pushes files to the project's repository through the file system (no hook report, no events). */
  async function seed(projectId: number, files: Record<string, string>, branch = "main"): Promise<string> {
    const dir = await p.services.repositories.ensureRepository(projectId);
    await git.ok(["init", "-q", "-b", branch, "w"]);
    const head = await git.commit("w", files);
    await git.ok(["push", "-q", dir, `HEAD:refs/heads/${branch}`], "w");
    return head;
  }

  it("creates the repository with the project: bare, HEAD on the default branch, push hook installed", async () => {
    const project = await p.project("created", { defaultBranch: "develop" });
    const dir = join(p.repositoriesDir, `${project.id}.git`);
    expect(await readFile(join(dir, "HEAD"), "utf8")).to.equal("ref: refs/heads/develop\n");
    expect(await readFile(join(dir, "hooks", "post-receive"), "utf8")).to.equal(POST_RECEIVE_HOOK);
    expect((await stat(join(dir, "hooks", "post-receive"))).mode & 0o111).to.equal(0o111);
    expect(await p.services.repositories.ensureRepository(project.id)).to.equal(dir);
    expect(await p.services.repositories.resolveRef(project.id, "develop")).to.equal(undefined);
    await expectServiceError(p.services.repositories.ensureRepository(999), "not_found");
  });

  it("repairs a modified hook on first access after a restart", async () => {
    const project = await p.project("hooked");
    const dir = await p.services.repositories.ensureRepository(project.id);
    await writeFile(join(dir, "hooks", "post-receive"), "#!/bin/sh\nexit 0\n");
    const restarted = createPlatformServices({ store: db.store, repositoriesDir: p.repositoriesDir });
    expect(await restarted.repositories.ensureRepository(project.id)).to.equal(dir);
    expect(await readFile(join(dir, "hooks", "post-receive"), "utf8")).to.equal(POST_RECEIVE_HOOK);
  });

  it("creates a missing repository once when several instances race for it", async () => {
    const group = await p.services.namespaces.createGroup({ name: "g", path: "g" }, null);
    const withoutRepos = createPlatformServices({ store: db.store });
    const project = await withoutRepos.projects.create({ path: "raced", namespaceId: group.id }, null);
    const instances = [p.services, ...Array.from({ length: 3 }, () => createPlatformServices({ store: db.store, repositoriesDir: p.repositoriesDir }))];
    const dirs = await Promise.all(instances.flatMap((s) => [s.repositories.ensureRepository(project.id), s.repositories.ensureRepository(project.id)]));
    expect(new Set(dirs)).to.deep.equal(new Set([join(p.repositoriesDir, `${project.id}.git`)]));
    expect((await readdir(p.repositoriesDir)).filter((n) => n.startsWith(".tmp-"))).to.deep.equal([]);
    expect(await readFile(join(dirs[0]!, "HEAD"), "utf8")).to.equal("ref: refs/heads/main\n");
  });

  it("reads files, resolves refs and lists by prefix", async () => {
    const project = await p.project("files");
    const head = await seed(project.id, {
      "README.md": "readme\n",
      ".gitlab/agents/a/config.yaml": "a: 1\n",
      ".gitlab/agents/a1/config.yaml": "a1: 1\n",
      ".gitlab/agents/b/config.yaml": "b: 1\n",
      "weird name: with colon.txt": "colon\n",
    });
    const repos = p.services.repositories;
    expect(await repos.resolveRef(project.id, "main")).to.equal(head);
    expect(await repos.resolveRef(project.id, "refs/heads/main")).to.equal(head);
    expect(await repos.resolveRef(project.id, head.slice(0, 10))).to.equal(head);
    expect(await repos.resolveRef(project.id, "nope")).to.equal(undefined);

    expect((await repos.readFile(project.id, "main", "weird name: with colon.txt"))?.toString()).to.equal("colon\n");
    expect(await repos.readFile(project.id, "main", ".gitlab")).to.equal(undefined); // a directory
    expect(await repos.readFile(project.id, "main", "README.md/x")).to.equal(undefined);
    expect(await repos.readFile(project.id, "nope", "README.md")).to.equal(undefined);
    await expectServiceError(repos.readFile(project.id, "main", "README.md", { maxBytes: 3 }), "invalid");

    const paths = async (prefix?: string) => (await repos.listFiles(project.id, head, prefix))?.map((e) => e.path);
    expect(await paths(".gitlab/agents/a")).to.deep.equal([".gitlab/agents/a/config.yaml", ".gitlab/agents/a1/config.yaml"]);
    expect(await paths(".gitlab/agents/a/")).to.deep.equal([".gitlab/agents/a/config.yaml"]);
    expect(await paths(".git")).to.have.length(3);
    expect(await paths()).to.have.length(5);
    expect(await repos.listFiles(project.id, "nope")).to.equal(undefined);
    const [entry] = (await repos.listFiles(project.id, "main", "README"))!;
    expect(entry).to.deep.include({ path: "README.md", mode: "100644" });
    expect(entry!.blobId).to.match(/^[0-9a-f]{40}$/);
  });

  it("refuses revision expressions, option-like refs and escaping paths", async () => {
    const project = await p.project("strict");
    await seed(project.id, { "a.txt": "a\n" });
    const repos = p.services.repositories;
    for (const ref of ["-h", "--output=/tmp/x", "main~1", "main^", "a..b", "HEAD@{1}", ":/a", "main:a.txt", "", "x y"]) {
      await expectServiceError(repos.resolveRef(project.id, ref), "invalid", ref);
      await expectServiceError(repos.readFile(project.id, ref, "a.txt"), "invalid", ref);
    }
    for (const path of ["../a.txt", "/a.txt", "a//b", "./a.txt", "a/", "", "a\0b"]) {
      await expectServiceError(repos.readFile(project.id, "main", path), "invalid", path);
    }
    await expectServiceError(repos.listFiles(project.id, "main", "/abs"), "invalid");
    await expectServiceError(repos.listFiles(project.id, "main", "../x/"), "invalid");
  });
});

async function expectServiceError(promise: Promise<unknown>, kind: string, what = ""): Promise<void> {
  expect((await rejectionOf(promise, ServiceError)).kind, what).to.equal(kind);
}
