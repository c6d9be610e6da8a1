/**
 * Reads the command list at the start of a receive-pack request (git's pack protocol v0/v1:
 * `[shallow <oid>]* <old> <new> <ref>\0<capabilities> … flush`, then push options and the pack)
 * without consuming it: what was read is put back into the stream, so git gets the body whole.
 */
import type { Readable } from "node:stream";
import type { PushCommand } from "./branch-protection.js";
import { OID_RE, isValidRefName } from "./git-names.js";

/** A request body that is not a receive-pack request git would accept. */
export class PushRequestError extends Error {
  override readonly name = "PushRequestError";
}

/** Largest pkt-line payload (LARGE_PACKET_DATA_MAX). */
const MAX_PKT_LINE = 65520;

/**
 * The commands of the receive-pack request in `body`, read up to the flush packet that ends them
 * and then pushed back with `unshift`. Throws PushRequestError for a malformed or truncated list,
 * or one longer than `maxBytes`; the stream is then left partly read.
 */
export async function peekPushCommands(body: Readable, maxBytes: number): Promise<PushCommand[]> {
  const chunks: Buffer[] = [];
  let length = 0;
  for (;;) {
    const buffered = Buffer.concat(chunks, length);
    const commands = parseCommandList(buffered);
    if (commands) {
      body.unshift(buffered);
      return commands;
    }
    if (length > maxBytes) throw new PushRequestError(`the push's command list is longer than ${maxBytes} bytes`);
    const chunk = await nextChunk(body);
    if (chunk === null) throw new PushRequestError("the push request ended before its command list did");
    chunks.push(chunk);
    length += chunk.length;
  }
}

/** The command list when `data` holds all of it (through the flush packet); undefined when more is needed. */
export function parseCommandList(data: Buffer): PushCommand[] | undefined {
  const commands: PushCommand[] = [];
  let offset = 0;
  for (;;) {
    if (data.length < offset + 4) return undefined;
    const header = data.toString("latin1", offset, offset + 4);
    if (!/^[0-9a-f]{4}$/.test(header)) throw new PushRequestError("malformed pkt-line length in the push request");
    const size = parseInt(header, 16);
    if (size === 0) return commands;
    if (size < 4 || size - 4 > MAX_PKT_LINE) throw new PushRequestError("malformed pkt-line length in the push request");
    if (data.length < offset + size) return undefined;
    let line = data.toString("utf8", offset + 4, offset + size);
    offset += size;
    if (line.endsWith("\n")) line = line.slice(0, -1);
    if (commands.length === 0) {
      if (/^shallow [0-9a-f]+$/.test(line)) continue; // a shallow client's boundary commits
      if (line.startsWith("push-cert")) throw new PushRequestError("signed pushes are not supported");
    }
    const nul = line.indexOf("\0");
    if (nul >= 0 && commands.length > 0) throw new PushRequestError("malformed command in the push request");
    const [before, after, ref, ...rest] = (nul >= 0 ? line.slice(0, nul) : line).split(" ");
    if (!before || !after || !ref || rest.length > 0 || !OID_RE.test(before) || !OID_RE.test(after)) {
      throw new PushRequestError("malformed command in the push request");
    }
    if (!isValidRefName(ref)) throw new PushRequestError(`${JSON.stringify(ref.slice(0, 200))} is not a valid ref name`);
    commands.push({ before, after, ref });
  }
}

/** The next chunk of a paused stream, or null at its end. */
async function nextChunk(stream: Readable): Promise<Buffer | null> {
  for (;;) {
    const chunk = stream.read() as Buffer | null;
    if (chunk !== null) return chunk;
    if (stream.readableEnded) return null;
    if (stream.destroyed) throw new PushRequestError("the push request was aborted");
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        stream.off("readable", done).off("end", done).off("close", done).off("error", fail);
        resolve();
      };
      const fail = (err: Error) => {
        stream.off("readable", done).off("end", done).off("close", done).off("error", fail);
        reject(err);
      };
      stream.on("readable", done).on("end", done).on("close", done).on("error", fail);
    });
  }
}
