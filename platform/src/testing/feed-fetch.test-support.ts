/**
 * A fetch for createHttpPlatformClient that lets a test drive the client's feed poller (a
 * *.test-support.ts file: no tests, not in the package). Requests to the feed path can be held
 * until the test lets each one go (so the test decides what the platform holds when it answers),
 * or fail at once as when the platform is down; every other request passes.
 */
import { HUNG_MS, within } from "@kasbridge/testing/wait";

/** A feed request waiting for the test. */
export interface HeldFeedRequest {
  readonly url: URL;
  /** The request's signal: aborted when the poller stops. */
  readonly signal: AbortSignal | undefined;
  /** Sends the request to the platform now. */
  pass(): void;
}

export class FeedFetch {
  /** Every feed request, in order. */
  readonly requests: URL[] = [];
  /** Feed requests that failed because of `outage`. */
  failures = 0;
  /** Feed requests the platform answered. */
  answers = 0;
  /** Hold each feed request until `pass()`. */
  hold = false;
  /** Fail feed requests at once, as fetch does when the platform refuses connections. */
  outage = false;
  private readonly held: HeldFeedRequest[] = [];
  private wake: (() => void) | undefined;

  constructor(private readonly path: string) {}

  readonly fetch: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (!url.pathname.endsWith(this.path)) return fetch(input, init);
    this.requests.push(url);
    if (this.hold) {
      await new Promise<void>((pass) => {
        this.held.push({ url, signal: init?.signal ?? undefined, pass });
        this.wake?.();
      });
    }
    if (this.outage) {
      this.failures++;
      throw new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }) });
    }
    const res = await fetch(input, init);
    this.answers++;
    return res;
  };

  /** The next held request (waits until one comes). */
  next(): Promise<HeldFeedRequest> {
    return within(
      HUNG_MS,
      (async () => {
        while (this.held.length === 0) await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        return this.held.shift()!;
      })(),
      `the next request to ${this.path}`,
    );
  }
}
