import { expect } from "chai";
import { deferred } from "@kasbridge/testing/wait";
import { eachLimit } from "./each-limit.js";

describe("eachLimit", () => {
  it("runs every item, never more than the limit at once", async () => {
    let running = 0;
    let most = 0;
    const done: number[] = [];
    await eachLimit([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setImmediate(r));
      done.push(n);
      running--;
    });
    expect(done.sort()).to.deep.equal([1, 2, 3, 4, 5, 6, 7]);
    expect(most).to.equal(3);
  });

  it("starts nothing after a failure and rejects with it once the running items settled", async () => {
    const started: number[] = [];
    const slow = deferred();
    let slowSettled = false;
    const run = eachLimit([1, 2, 3, 4], 2, async (n) => {
      started.push(n);
      if (n === 1) {
        await slow.promise;
        slowSettled = true;
      }
      if (n === 2) throw new Error("boom");
    });
    await new Promise((r) => setImmediate(r));
    slow.resolve();
    const error = await run.then(() => undefined, (e: Error) => e);
    expect(error?.message).to.equal("boom");
    expect(slowSettled).to.equal(true);
    expect(started).to.deep.equal([1, 2]);
  });
});
