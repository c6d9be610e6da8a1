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

export function encodeFrame(data: Uint8Array): Buffer {
  return Buffer.concat([frameHeader(data.byteLength), data]);
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
    private readonly maxMessageBytes: number,
    private readonly encoding: string = "identity",
  ) {
    if (encoding !== "identity" && encoding !== "gzip") {
      throw new ConnectError(`unsupported grpc-encoding "${encoding}"`, Code.Unimplemented);
    }
  }

  /** Feeds bytes; returns the complete messages they finish. */
  push(chunk: Buffer): Uint8Array[] {
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
    const messages: Uint8Array[] = [];
    while (this.buffered >= frameHeaderBytes) {
      const head = this.peek(frameHeaderBytes);
      const flags = head[0];
      const length = head.readUInt32BE(1);
      if (length > this.maxMessageBytes) {
        throw new ConnectError(
          `message of ${length} bytes exceeds the limit of ${this.maxMessageBytes} bytes`,
          Code.ResourceExhausted,
        );
      }
      if (this.buffered < frameHeaderBytes + length) break;
      const frame = this.take(frameHeaderBytes + length).subarray(frameHeaderBytes);
      messages.push(this.decode(flags, frame));
    }
    return messages;
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

  private peek(n: number): Buffer {
    if (this.chunks[0].byteLength >= n) return this.chunks[0];
    this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0];
  }

  private take(n: number): Buffer {
    const first = this.peek(n);
    const out = first.subarray(0, n);
    const rest = first.subarray(n);
    if (rest.byteLength > 0) this.chunks[0] = rest;
    else this.chunks.shift();
    this.buffered -= n;
    return out;
  }
}
