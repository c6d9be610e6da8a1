import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SecretFileError, decodeSecret, ensureSecretFile, loadSecretFile } from "./secret-file.js";

describe("auth/secret-file", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kasbridge-secret-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("loads a base64 file with a trailing newline", async () => {
    const bytes = randomBytes(32);
    await writeFile(join(dir, "s"), bytes.toString("base64") + "\n");
    expect(Buffer.from(await loadSecretFile(join(dir, "s"))).equals(bytes)).to.equal(true);
  });

  it("refuses short, non-base64 and missing files with errors naming the file", async () => {
    await writeFile(join(dir, "short"), randomBytes(16).toString("base64"));
    let err = await loadSecretFile(join(dir, "short")).catch((e: unknown) => e as Error);
    expect(err).to.be.instanceOf(SecretFileError);
    expect((err as Error).message).to.contain("short").and.contain("at least 32");
    expect(() => decodeSecret("!!!not base64!!!")).to.throw(SecretFileError, /base64/);
    err = await loadSecretFile(join(dir, "missing")).catch((e: unknown) => e as Error);
    expect((err as Error).message).to.contain("missing");
  });

  it("creates a 0600 secret once and reuses it", async () => {
    const path = join(dir, "sub", ".gitlab_kas_secret");
    const first = await ensureSecretFile(path);
    expect(first.created).to.equal(true);
    expect(first.secret.length).to.equal(32);
    expect((await stat(path)).mode & 0o777).to.equal(0o600);
    const second = await ensureSecretFile(path);
    expect(second.created).to.equal(false);
    expect(Buffer.from(second.secret).equals(Buffer.from(first.secret))).to.equal(true);
  });
});
