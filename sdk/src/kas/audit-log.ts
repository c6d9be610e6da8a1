import client, { type Registry } from "prom-client";
import type { Logger } from "pino";
import type { KasAuditEvent } from "../platform-client/audit-events.js";
import type { PlatformClient } from "../platform-client/platform-client.js";

export interface KasAuditLogOptions {
  platform: PlatformClient;
  logger: Logger;
  metrics: Registry;
  /** How often buffered events go to the platform, in ms. Default 1 000. */
  flushIntervalMs?: number;
  /** Events held while the platform cannot take them; the oldest go first beyond it (counted). Default 10 000. */
  maxBufferedEvents?: number;
}

/**
 * KAS's side of the audit trail: events are buffered and sent to the platform in batches
 * (`PlatformClient.recordAuditEvents`) every `flushIntervalMs`, kept while it cannot take them,
 * and flushed at shutdown. Without `recordAuditEvents` on the platform client, events are dropped
 * (the proxy still logs its audit line).
 */
export class KasAuditLog {
  private buffer: KasAuditEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> = Promise.resolve();
  private readonly dropped: client.Counter;
  private readonly maxBuffered: number;
  private readonly flushIntervalMs: number;
  private closed = false;

  constructor(private readonly options: KasAuditLogOptions) {
    this.maxBuffered = options.maxBufferedEvents ?? 10_000;
    this.flushIntervalMs = options.flushIntervalMs ?? 1_000;
    this.dropped =
      (options.metrics.getSingleMetric("kas_audit_events_dropped_total") as client.Counter | undefined) ??
      new client.Counter({
        name: "kas_audit_events_dropped_total",
        help: "Audit events KAS dropped because the platform could not take them for too long (buffer full).",
        registers: [options.metrics],
      });
  }

  /** Whether events go anywhere. */
  get enabled(): boolean {
    return this.options.platform.recordAuditEvents !== undefined;
  }

  record(event: KasAuditEvent): void {
    if (!this.enabled || this.closed) return;
    this.buffer.push(event);
    if (this.buffer.length > this.maxBuffered) {
      this.buffer.shift();
      this.dropped.inc();
    }
    this.schedule(this.flushIntervalMs);
  }

  private schedule(delayMs: number): void {
    if (this.closed) return;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush(AbortSignal.timeout(30_000));
    }, delayMs);
  }

  /** Sends what is buffered now (one send at a time); a failure keeps the events for the next flush. */
  flush(signal: AbortSignal): Promise<void> {
    this.sending = this.sending.then(async () => {
      const batch = this.buffer;
      if (batch.length === 0 || !this.options.platform.recordAuditEvents) return;
      this.buffer = [];
      try {
        await this.options.platform.recordAuditEvents(batch, signal);
      } catch (err) {
        this.options.logger.warn({ err: (err as Error).message, events: batch.length }, "cannot send audit events; they stay for the next send");
        this.buffer = batch.concat(this.buffer).slice(-this.maxBuffered);
        this.schedule(Math.max(this.flushIntervalMs, 5_000));
      }
    });
    return this.sending;
  }

  /** Sends what is left (within `timeoutMs`) and stops. */
  async close(timeoutMs = 5_000): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush(AbortSignal.timeout(timeoutMs));
  }
}
