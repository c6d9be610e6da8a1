import { basename } from "node:path";
import type { Response } from "express";
import type { RepositoryFile } from "./repositories.js";
import { drained } from "@kasbridge/sdk/util";

/** Bytes inspected for a NUL to call a file binary (git's own heuristic). */
const SNIFF_BYTES = 8000;

/**
 * Streams a repository file as GitLab's `…/repository/files/:file_path/raw` does: text as
 * `text/plain; charset=utf-8`, anything with a NUL byte near the start as
 * `application/octet-stream`, `inline` disposition, `nosniff`, and the `X-Gitlab-*` file headers.
 * Stops git when the client goes away.
 */
export async function sendRepositoryFile(res: Response, file: RepositoryFile, ref: string): Promise<void> {
  const abort = new AbortController();
  const onClose = () => abort.abort();
  res.on("close", onClose);
  const stream = file.stream(abort.signal);
  try {
    let first = true;
    for await (const data of stream) {
      const chunk = data as Buffer;
      if (first) {
        first = false;
        sendHeaders(res, file, ref, chunk.subarray(0, SNIFF_BYTES).includes(0));
      }
      if (!res.write(chunk)) await drained(res);
      if (res.destroyed) return;
    }
    if (first) sendHeaders(res, file, ref, false); // empty file
    res.end();
  } catch (err) {
    if (abort.signal.aborted || res.destroyed) return;
    if (res.headersSent) {
      res.destroy(err as Error);
      return;
    }
    throw err;
  } finally {
    res.off("close", onClose);
    stream.destroy();
  }
}

function sendHeaders(res: Response, file: RepositoryFile, ref: string, binary: boolean): void {
  const name = basename(file.path);
  res.status(200);
  res.set({
    "Content-Type": binary ? "application/octet-stream" : "text/plain; charset=utf-8",
    "Content-Length": String(file.size),
    "Content-Disposition": `inline; filename="${name.replace(/[^\x20-\x7e]|["\\]/g, "_")}"; filename*=UTF-8''${encodeURIComponent(name)}`,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "X-Gitlab-File-Name": encodeURIComponent(name),
    "X-Gitlab-File-Path": encodeURIComponent(file.path),
    "X-Gitlab-Size": String(file.size),
    "X-Gitlab-Ref": encodeURIComponent(ref),
    "X-Gitlab-Blob-Id": file.blobId,
    "X-Gitlab-Commit-Id": file.commit,
    "X-Gitlab-Execute-Filemode": String(file.mode === "100755"),
  });
}
