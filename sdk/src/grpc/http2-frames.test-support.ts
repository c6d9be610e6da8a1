// What an HTTP/2 peer receives, frame by frame: a TCP tap between a client and a server under test
// that parses the frames each way and the gRPC messages in each stream's DATA.
import http2 from "node:http2";
import { FrameReader } from "./grpc-frames.js";
import type { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { tcpProxy } from "@kasbridge/testing/tcp-proxy";

/** HTTP/2 frame types (RFC 9113 section 6). */
export const frameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;
/** Frame flags. */
export const frameFlag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8 } as const;
/** The client connection preface. */
export const CLIENT_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const { DATA, HEADERS, RST_STREAM } = frameType;
const END_STREAM = 0x1;
const PADDED = 0x8;

/** One HTTP/2 frame: 9-byte header, then `payload`. */
export function encodeHttp2Frame(type: number, flags: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.byteLength, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(id, 5);
  return Buffer.concat([header, payload]);
}

/** An HPACK integer with an `n`-bit prefix (RFC 7541 section 5.1); `first` holds the bits above the prefix. */
function hpackInteger(value: number, n: number, first = 0): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([first | value]);
  const bytes = [first | max];
  for (value -= max; value >= 128; value = Math.floor(value / 128)) bytes.push((value % 128) | 128);
  bytes.push(value);
  return Buffer.from(bytes);
}

/**
 * An HPACK header block of literal fields without indexing and without Huffman coding, names and
 * values as given (bytes, in order, duplicates kept): what a hostile client may send, which
 * node:http2's client refuses to.
 */
export function encodeHeaderBlock(headers: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, "latin1");
    const v = Buffer.from(value, "latin1");
    parts.push(Buffer.from([0x00]), hpackInteger(n.byteLength, 7), n, hpackInteger(v.byteLength, 7), v);
  }
  return Buffer.concat(parts);
}

/** What had arrived on a stream when it ended for the receiving peer. */
export interface StreamEnd {
  /** Whole gRPC messages received before. */
  messages: number;
  /** Whether part of a length-prefixed message had arrived: a cut message. */
  partial: boolean;
}

/** One stream as the receiving peer saw it. */
export interface ReceivedStream {
  /** DATA payload bytes (without padding). */
  dataBytes: number;
  /** The whole gRPC messages, in order. */
  messages: Uint8Array[];
  /** Whether the bytes so far end inside a message. */
  readonly partial: boolean;
  /** END_STREAM (on DATA or trailers): the sender ended its side. */
  endStream?: StreamEnd;
  /** RST_STREAM, with its error code. */
  reset?: StreamEnd & { code: number };
}

function ending(stream: ReceivedStream): StreamEnd {
  return { messages: stream.messages.length, partial: stream.partial };
}

/** Parses one direction of an HTTP/2 connection: frames, and gRPC messages per stream. */
export class Http2FrameLog {
  readonly streams = new Map<number, ReceivedStream>();
  /** Every frame's header, in order. */
  readonly frames: Array<{ type: number; flags: number; id: number }> = [];
  /** The first GOAWAY's error code and last stream id. */
  goaway?: { code: number; lastStreamId: number };
  /** Called for each frame once it is parsed. */
  onFrame?: (type: number, flags: number, id: number) => void;
  private buffer: Buffer = Buffer.alloc(0);
  private prefaceLeft: number;

  /** @param fromClient this direction starts with the client connection preface. */
  constructor(fromClient: boolean) {
    this.prefaceLeft = fromClient ? CLIENT_PREFACE.byteLength : 0;
  }

  /** The stream's record (created empty if nothing arrived on it yet). */
  stream(id: number): ReceivedStream {
    let stream = this.streams.get(id);
    if (!stream) {
      const reader = new FrameReader(0xffffffff);
      const created: ReceivedStream & { reader: FrameReader } = {
        dataBytes: 0,
        messages: [],
        reader,
        get partial() {
          return reader.hasPartialFrame;
        },
      };
      this.streams.set(id, created);
      stream = created;
    }
    return stream;
  }

  /** Streams reset while a message was partly received: ids. */
  cutStreams(): number[] {
    const cut: number[] = [];
    for (const [id, s] of this.streams) if (s.reset?.partial) cut.push(id);
    return cut;
  }

  push(chunk: Buffer): void {
    if (this.prefaceLeft > 0) {
      const skip = Math.min(this.prefaceLeft, chunk.byteLength);
      this.prefaceLeft -= skip;
      chunk = chunk.subarray(skip);
    }
    this.buffer = this.buffer.byteLength === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    while (this.buffer.byteLength >= 9) {
      const length = this.buffer.readUIntBE(0, 3);
      if (this.buffer.byteLength < 9 + length) break;
      const type = this.buffer[3];
      const flags = this.buffer[4];
      const id = this.buffer.readUInt32BE(5) & 0x7fffffff;
      const payload = this.buffer.subarray(9, 9 + length);
      this.buffer = this.buffer.subarray(9 + length);
      this.frame(type, flags, id, payload);
    }
  }

  private frame(type: number, flags: number, id: number, payload: Buffer): void {
    this.frames.push({ type, flags, id });
    if (type === frameType.GOAWAY && id === 0 && payload.byteLength >= 8) {
      this.goaway ??= { lastStreamId: payload.readUInt32BE(0) & 0x7fffffff, code: payload.readUInt32BE(4) };
    }
    try {
      this.record(type, flags, id, payload);
    } finally {
      this.onFrame?.(type, flags, id);
    }
  }

  private record(type: number, flags: number, id: number, payload: Buffer): void {
    if (id === 0) return;
    if (type === DATA) {
      const stream = this.stream(id) as ReceivedStream & { reader: FrameReader };
      const data = flags & PADDED ? payload.subarray(1, payload.byteLength - payload[0]) : payload;
      stream.dataBytes += data.byteLength;
      stream.messages.push(...stream.reader.push(data));
      if (flags & END_STREAM) stream.endStream ??= ending(stream);
    } else if (type === HEADERS && flags & END_STREAM) {
      const stream = this.stream(id);
      stream.endStream ??= ending(stream);
    } else if (type === RST_STREAM) {
      const stream = this.stream(id);
      stream.reset ??= { code: payload.readUInt32BE(0), ...ending(stream) };
    }
  }
}

/** A TCP proxy to 127.0.0.1:targetPort that logs the HTTP/2 frames of its one connection each way. */
export interface Http2Tap {
  readonly port: number;
  /** What the server sent (what the client receives). */
  readonly toClient: Http2FrameLog;
  /** What the client sent (what the server receives). */
  readonly toServer: Http2FrameLog;
  close(): Promise<void>;
}

/** Taps one HTTP/2 connection (the logs would mix the frames of a second one). */
export async function http2Tap(targetPort: number): Promise<Http2Tap> {
  const toClient = new Http2FrameLog(false);
  const toServer = new Http2FrameLog(true);
  const proxy = await tcpProxy(targetPort, { onData: (chunk, up) => (up ? toServer : toClient).push(chunk) });
  return { port: proxy.port, toClient, toServer, close: () => proxy.close() };
}

/**
 * An HTTP/2 server behind a tap that answers every stream with gRPC response headers and keeps it
 * in `streams`, reading nothing (its flow-control window holds the client back). Closed by `cleanup`.
 */
export async function tappedGrpcServer(
  cleanup: Cleanup,
  settings?: http2.Settings,
): Promise<{ streams: http2.ServerHttp2Stream[]; tap: Http2Tap }> {
  const server = http2.createServer({ settings });
  const streams: http2.ServerHttp2Stream[] = [];
  server.on("stream", (stream) => {
    stream.on("error", () => {});
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    streams.push(stream);
  });
  const port = await listen(server);
  cleanup.add(() => closeServer(server));
  const tap = await http2Tap(port);
  cleanup.add(() => tap.close());
  return { streams, tap };
}
