import { gzipSync } from "node:zlib";
import { describe, it } from "mocha";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { FrameReader, encodeFrame, frameHeader } from "./grpc-frames.js";

function messages(count: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => Buffer.alloc((i * 37) % 300, i + 1));
}

function feed(reader: FrameReader, stream: Buffer, cut: (offset: number) => number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let offset = 0; offset < stream.byteLength; ) {
    const end = Math.min(stream.byteLength, offset + Math.max(1, cut(offset)));
    out.push(...reader.push(stream.subarray(offset, end)));
    offset = end;
  }
  return out;
}

describe("FrameReader", () => {
  const sent = [...messages(40), Buffer.alloc(0), Buffer.alloc(70_000, 9)];
  const stream = Buffer.concat(sent.map((m) => encodeFrame(m)));

  for (const [label, cut] of [
    ["one chunk", () => stream.byteLength],
    ["1-byte chunks", () => 1],
    ["3-byte chunks (headers split)", () => 3],
    ["16 KiB chunks (HTTP/2 DATA frames)", () => 16_384],
    ["irregular chunks", (offset: number) => ((offset * 7919) % 97) + 1],
  ] as const) {
    it(`reassembles every message from ${label}`, () => {
      const reader = new FrameReader(1 << 20);
      const got = feed(reader, stream, cut);
      expect(got.length).to.equal(sent.length);
      got.forEach((m, i) => expect(Buffer.from(m).equals(sent[i])).to.equal(true, `message ${i}`));
      expect(reader.hasPartialFrame).to.equal(false);
    });
  }

  it("reports a partial frame and keeps it until the rest arrives", () => {
    const reader = new FrameReader(1024);
    const frame = encodeFrame(Buffer.from("hello"));
    expect(reader.push(frame.subarray(0, 7))).to.deep.equal([]);
    expect(reader.hasPartialFrame).to.equal(true);
    const [message] = reader.push(frame.subarray(7));
    expect(Buffer.from(message).toString()).to.equal("hello");
    expect(reader.hasPartialFrame).to.equal(false);
  });

  it("refuses a declared length above the limit before buffering it", () => {
    const reader = new FrameReader(10);
    let error: unknown;
    try {
      reader.push(frameHeader(11));
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(ConnectError);
    expect((error as ConnectError).code).to.equal(Code.ResourceExhausted);
  });

  it("inflates gzip frames and refuses them without a grpc-encoding", () => {
    const body = Buffer.alloc(5000, 7);
    const zipped = gzipSync(body);
    const frame = Buffer.concat([frameHeader(zipped.byteLength, true), zipped]);
    const [message] = new FrameReader(1 << 20, "gzip").push(frame);
    expect(Buffer.from(message).equals(body)).to.equal(true);
    let error: unknown;
    try {
      new FrameReader(1 << 20).push(frame);
    } catch (e) {
      error = e;
    }
    expect((error as ConnectError).code).to.equal(Code.Internal);
  });
});
