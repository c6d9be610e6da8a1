import { randomBytes } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";

/**
 * Writes a secret to `path` so that no other user can ever read it: the content goes into a new
 * file created exclusively (O_CREAT|O_EXCL) with mode 0600 — the umask can only narrow that —
 * which then replaces `path` by rename. Whatever was at `path` before (a leftover file with a
 * looser mode, a symlink) is replaced, never written through, and readers see the old file or
 * the complete new one.
 */
export async function writePrivateFile(path: string, content: string | Uint8Array): Promise<void> {
  const tmp = `${path}.${randomBytes(8).toString("hex")}.tmp`;
  const handle = await open(tmp, "wx", 0o600);
  try {
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
