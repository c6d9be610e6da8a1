import type { Readable } from "node:stream";
import { RepositoryFileTooLargeError } from "@kasbridge/sdk/platform-client";

/** Reads a file's stream to its end, refusing more than `maxBytes` (the stream is destroyed then). */
export async function readCapped(stream: Readable, path: string, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) {
      stream.destroy();
      throw new RepositoryFileTooLargeError(path, maxBytes);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}
