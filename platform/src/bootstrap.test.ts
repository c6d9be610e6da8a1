import { afterEach, beforeEach, it } from "mocha";
import { expect } from "chai";
import { link, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootstrapAdmin } from "./bootstrap.js";
import { createPlatformServices } from "./services/platform-services.js";
import { describeEachStore } from "./testing/fixtures.test-support.js";

describeEachStore("platform/bootstrapAdmin", (getStore) => {
  let dataDir: string;
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "kasbridge-bootstrap-"));
  });
  afterEach(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it("creates root with a generated token written 0600 once, and is idempotent", async () => {
    const first = await bootstrapAdmin(getStore(), { dataDir });
    expect(first.created).to.equal(true);
    expect(first.token).to.match(/^glpat-/);
    expect(first.tokenFile).to.equal(join(dataDir, "admin-token"));
    expect((await readFile(first.tokenFile!, "utf8")).trim()).to.equal(first.token);
    expect((await stat(first.tokenFile!)).mode & 0o777).to.equal(0o600);

    const services = createPlatformServices({ store: getStore() });
    const auth = await services.personalAccessTokens.authenticate(first.token!);
    expect(auth?.user).to.include({ username: "root", admin: true });
    expect(auth?.token.scopes).to.include("api");
    expect((await services.namespaces.personalNamespaceOf(auth!.user.id))?.fullPath).to.equal("root");

    const second = await bootstrapAdmin(getStore(), { dataDir });
    expect(second).to.deep.equal({ created: false });
    expect(await services.users.count()).to.equal(1);
  });

  it("never writes the token into a file others can read, whatever the umask or a leftover file", async () => {
    // A leftover token file readable by everyone, and a second name for it (as someone who
    // could read it before would keep an open descriptor).
    const tokenFile = join(dataDir, "admin-token");
    await writeFile(tokenFile, "old\n", { mode: 0o644 });
    await link(tokenFile, join(dataDir, "watcher"));
    const umask = process.umask(0);
    let result;
    try {
      result = await bootstrapAdmin(getStore(), { dataDir });
    } finally {
      process.umask(umask);
    }
    expect((await stat(tokenFile)).mode & 0o777).to.equal(0o600);
    expect((await readFile(tokenFile, "utf8")).trim()).to.equal(result.token);
    // The world-readable file was replaced, never written through: it still holds the old text.
    expect(await readFile(join(dataDir, "watcher"), "utf8")).to.equal("old\n");
    expect((await readdir(dataDir)).sort()).to.deep.equal(["admin-token", "watcher"]);
  });

  it("uses a supplied token, registers a new one on a later start, and rejects short ones", async () => {
    const supplied = "glpat-operator-chosen-0001";
    const first = await bootstrapAdmin(getStore(), { dataDir, adminToken: supplied });
    expect(first).to.deep.equal({ created: true, token: supplied });
    const services = createPlatformServices({ store: getStore() });
    expect((await services.personalAccessTokens.authenticate(supplied))?.user.username).to.equal("root");

    expect(await bootstrapAdmin(getStore(), { dataDir, adminToken: supplied })).to.deep.equal({ created: false });
    const rotated = "glpat-operator-chosen-0002";
    expect(await bootstrapAdmin(getStore(), { dataDir, adminToken: rotated })).to.deep.equal({ created: false });
    expect((await services.personalAccessTokens.authenticate(rotated))?.user.username).to.equal("root");
    expect((await services.personalAccessTokens.list(1)).length).to.equal(2);

    const err = await bootstrapAdmin(getStore(), { dataDir, adminToken: "short" }).catch((e: unknown) => e as Error);
    expect((err as Error).message).to.contain("at least 20");
  });
});
