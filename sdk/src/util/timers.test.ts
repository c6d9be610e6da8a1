import { describe, it } from "mocha";
import { expect } from "chai";
import { deadlineTimer, maxTimerDelayMs, safeTimeoutMs } from "./timers.js";

describe("timers beyond setTimeout's range", function () {
  it("deadlineTimer arms no timer for a deadline above 2^31-1 ms, and a normal one below", async () => {
    let fired = false;
    expect(deadlineTimer(maxTimerDelayMs + 1, () => (fired = true))).to.equal(undefined);
    expect(deadlineTimer(Number.POSITIVE_INFINITY, () => (fired = true))).to.equal(undefined);
    const timer = deadlineTimer(maxTimerDelayMs, () => (fired = true));
    expect(timer).to.not.equal(undefined);
    clearTimeout(timer);
    await new Promise<void>((resolve) => deadlineTimer(0, resolve));
    expect(fired).to.equal(false);
  });

  it("safeTimeoutMs clamps to [0, 2^31-1]", () => {
    expect(safeTimeoutMs(-5)).to.equal(0);
    expect(safeTimeoutMs(1000)).to.equal(1000);
    expect(safeTimeoutMs(30 * 24 * 3_600_000)).to.equal(maxTimerDelayMs);
  });
});
