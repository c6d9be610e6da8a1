import { describe, it } from "mocha";
import { expect } from "chai";
import { rejectionOf } from "@kasbridge/testing/wait";
import { AsyncQueue } from "./async-queue.js";

const tick = () => new Promise((resolve) => setImmediate(resolve));

const rejection = (p: Promise<unknown>) => rejectionOf(p, Error);

describe("AsyncQueue", () => {
  it("delivers items in order, to a waiting consumer and from the buffer", async () => {
    const q = new AsyncQueue<number>(4);
    const first = q.next();
    await q.push(1);
    await q.push(2);
    await q.push(3);
    expect(await first).to.deep.equal({ done: false, value: 1 });
    expect(await q.next()).to.deep.equal({ done: false, value: 2 });
    expect(await q.next()).to.deep.equal({ done: false, value: 3 });
    q.close();
    expect(await q.next()).to.deep.equal({ done: true, value: undefined });
    expect(await q.next()).to.deep.equal({ done: true, value: undefined });
  });

  it("holds producers back at capacity and lets them go as the consumer takes items", async () => {
    const q = new AsyncQueue<number>(2);
    const pushed: number[] = [];
    const producer = (async () => {
      for (let i = 0; i < 6; i++) {
        await q.push(i);
        pushed.push(i);
      }
      q.close();
    })();
    await tick();
    expect(pushed).to.deep.equal([0, 1]);
    expect(q.size).to.equal(2);
    const got: number[] = [];
    for await (const item of q) {
      got.push(item);
      expect(q.size).to.be.at.most(2);
    }
    await producer;
    expect(got).to.deep.equal([0, 1, 2, 3, 4, 5]);
  });

  it("drains queued items before reporting the end after close()", async () => {
    const q = new AsyncQueue<string>(4);
    await q.push("a");
    await q.push("b");
    q.close();
    const got: string[] = [];
    for await (const item of q) got.push(item);
    expect(got).to.deep.equal(["a", "b"]);
  });

  it("fails the consumer (waiting or not) and every producer when closed with an error", async () => {
    const q = new AsyncQueue<number>(1);
    const waiting = q.next();
    q.close(new Error("boom"));
    expect((await rejection(waiting)).message).to.equal("boom");

    const q2 = new AsyncQueue<number>(1);
    await q2.push(1);
    const blocked = q2.push(2);
    q2.close(new Error("cut"));
    expect((await rejection(blocked)).message).to.equal("cut");
    expect((await rejection(q2.next())).message).to.equal("cut");
    expect((await rejection(q2.push(3))).message).to.equal("cut");
  });

  it("rejects a push after a clean close, without throwing synchronously", async () => {
    const q = new AsyncQueue<number>(1);
    q.close();
    const result = q.push(1);
    expect(result).to.be.instanceOf(Promise);
    expect((await rejection(result)).message).to.equal("queue closed");
  });

  it("closes through the iterator's return() and throw()", async () => {
    const q = new AsyncQueue<number>(2);
    const it = q[Symbol.asyncIterator]();
    await it.return?.();
    expect(q.isClosed).to.equal(true);
    const q2 = new AsyncQueue<number>(2);
    const waiting = q2.next();
    await q2[Symbol.asyncIterator]().throw?.(new Error("consumer failed"));
    expect((await rejection(waiting)).message).to.equal("consumer failed");
  });
});
