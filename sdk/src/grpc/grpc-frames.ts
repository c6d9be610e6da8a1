import { gunzipSync } from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";

/** gRPC length-prefixed message framing: 1 flag byte, 4 bytes big-endian length, the message. */
export const frameHeaderBytes = 5;
const compressedFlag = 0b1;

export function frameHeader(length: number, compressed = false): Buffer {
  const header = Buffer.allocUnsafe(frameHeaderBytes);
  header[0] = compressed ? compressedFlag : 0;
  header.writeUInt32BE(length, 1);
  return header;
}

const noMessages = Object.freeze([]) as unknown as Uint8Array[];
const emptyBuffer = Buffer.alloc(0);

/** One length-prefixed message in one buffer. */
export function encodeFrame(data: Uint8Array, compressed = false): Buffer {
  return Buffer.concat([frameHeader(data.byteLength, compressed), data]);
}

/**
 * Splits a byte stream into gRPC messages. A declared length above `maxMessageBytes` fails with
 * RESOURCE_EXHAUSTED before anything of it is buffered; compressed frames are decompressed with the
 * stream's `grpc-encoding` (identity or gzip).
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(
    /** Largest message accepted; may be changed between chunks (e.g. lower before authentication). */
    public maxMessageBytes: number,
    private readonly encoding: string = "identity",
  ) {
    if (encoding !== "identity" && encoding !== "gzip") {
      throw new ConnectError(`unsupported grpc-encoding "${encoding}"`, Code.Unimplemented);
    }
  }

  /** Feeds bytes; returns the complete messages they finish. */
  push(chunk: Buffer): Uint8Array[] {
    if (chunk.byteLength > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.byteLength;
    }
    let messages: Uint8Array[] | undefined;
    while (this.buffered >= frameHeaderBytes) {
      const first = this.chunks[0];
      const head = first.byteLength >= frameHeaderBytes ? first : this.copyHead();
      const flags = head[0];
      const length = head.readUInt32BE(1);
      if (length > this.maxMessageBytes) {
        throw new ConnectError(
          `message of ${length} bytes exceeds the limit of ${this.maxMessageBytes} bytes`,
          Code.ResourceExhausted,
        );
      }
      if (this.buffered < frameHeaderBytes + length) break;
      this.consume(frameHeaderBytes, false);
      (messages ??= []).push(this.decode(flags, this.consume(length, true)));
    }
    return messages ?? noMessages;
  }

  /** Whether a partial frame is left over (a truncated stream when the body ends). */
  get hasPartialFrame(): boolean {
    return this.buffered > 0;
  }

  private decode(flags: number, frame: Buffer): Uint8Array {
    if ((flags & compressedFlag) === 0) return frame;
    if (this.encoding === "identity") {
      throw new ConnectError("compressed message without grpc-encoding", Code.Internal);
    }
    // Messages are bounded by maxMessageBytes, so synchronous inflation stays short.
    try {
      return gunzipSync(frame, { maxOutputLength: this.maxMessageBytes });
    } catch (error) {
      if (error instanceof RangeError) {
        throw new ConnectError(`decompressed message exceeds the limit of ${this.maxMessageBytes} bytes`, Code.ResourceExhausted);
      }
      throw new ConnectError(`invalid gzip message: ${(error as Error).message}`, Code.Internal);
    }
  }

  /** The frame header when it spans chunks (copied, the chunks stay as they are). */
  private copyHead(): Buffer {
    const head = Buffer.allocUnsafe(frameHeaderBytes);
    let offset = 0;
    for (const chunk of this.chunks) {
      offset += chunk.copy(head, offset, 0, Math.min(chunk.byteLength, frameHeaderBytes - offset));
      if (offset === frameHeaderBytes) break;
    }
    return head;
  }

  /**
   * Removes `n` buffered bytes and, with `keep`, returns them: a view when they lie in one chunk,
   * otherwise exactly `n` bytes copied (never the bytes of the frames behind them).
   */
  private consume(n: number, keep: boolean): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0) return emptyBuffer;
    if (first.byteLength >= n) {
      if (first.byteLength === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return keep ? first.subarray(0, n) : emptyBuffer;
    }
    const out = keep ? Buffer.allocUnsafe(n) : emptyBuffer;
    let offset = 0;
    while (offset < n) {
      const chunk = this.chunks[0];
      const take = Math.min(chunk.byteLength, n - offset);
      if (keep) chunk.copy(out, offset, 0, take);
      offset += take;
      if (take === chunk.byteLength) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
    }
    return out;
  }
}
