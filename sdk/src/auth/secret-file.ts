import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

/** Minimum decoded length of a shared JWT secret (GitLab writes 32 random bytes). */
export const MIN_SECRET_BYTES = 32;

export class SecretFileError extends Error {
  override readonly name = "SecretFileError";
}

/**
 * Decodes a base64 secret (surrounding whitespace ignored, as GitLab's `.gitlab_kas_secret` ends
 * with a newline) and checks it is at least 32 bytes. `source` names the origin in errors.
 */
export function decodeSecret(text: string, source = "secret"): Uint8Array {
  const trimmed = text.trim();
  // Buffer.from(…, "base64") silently skips bad characters, so validate the alphabet first.
  if (trimmed === "" || !/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || trimmed.length % 4 !== 0) {
    throw new SecretFileError(`${source}: not valid base64`);
  }
  const bytes = Buffer.from(trimmed, "base64");
  if (bytes.length < MIN_SECRET_BYTES) {
    throw new SecretFileError(`${source}: decodes to ${bytes.length} bytes, need at least ${MIN_SECRET_BYTES}`);
  }
  return new Uint8Array(bytes);
}

/** Reads a base64 secret file (GitLab's `.gitlab_kas_secret` format). */
export async function loadSecretFile(path: string): Promise<Uint8Array> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new SecretFileError(`cannot read secret file ${path}: ${(err as Error).message}`, { cause: err });
  }
  return decodeSecret(text, `secret file ${path}`);
}

/**
 * Loads the secret file, first creating it (32 random bytes, base64, mode 0600) when it does not
 * exist, so a default start needs no setup. Returns the secret and whether the file was created.
 */
export async function ensureSecretFile(path: string): Promise<{ secret: Uint8Array; created: boolean }> {
  await mkdir(dirname(path), { recursive: true });
  // Written whole under a temporary name, then linked into place: link() fails when the file
  // exists, so replicas starting together on one data directory never overwrite each other, and
  // none reads a file another is still writing.
  const temporary = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await writeFile(temporary, randomBytes(MIN_SECRET_BYTES).toString("base64") + "\n", { mode: 0o600, flag: "wx" });
    await link(temporary, path);
    return { secret: await loadSecretFile(path), created: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
      throw new SecretFileError(`cannot create secret file ${path}: ${(err as Error).message}`, { cause: err });
    }
  } finally {
    await unlink(temporary).catch(() => {});
  }
  return { secret: await loadSecretFile(path), created: false };
}
