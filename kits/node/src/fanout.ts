/**
 * Replica fan-out over Redis pub/sub (node-redis): the instance that got the
 * ping publishes it on the service's channel; every other live instance
 * re-reads the secret and replies with its version; the endpoint answers
 * `"coverage": "service"` only when every live instance confirmed (503
 * otherwise). Liveness is a sorted set refreshed every `heartbeatMs`, scored
 * with the Redis server's clock. Same protocol as the Python kit's RedisFanout,
 * so Python and Node instances of one service can share a channel.
 *
 * Nothing is set up per ping (the fan-out is on the path from the vault commit
 * to the last replica using the new version): `start()` subscribes once to the
 * service's channel and to this instance's reply channel; a broadcast publishes
 * at once and looks up the live instances while the siblings re-read.
 */
import { randomUUID } from "node:crypto";
import { createClient } from "redis";
import type { Fanout, FanoutResult } from "./refresh";
import type { CachedSecretClient, SecretValue } from "./secrets";

type Redis = ReturnType<typeof createClient>;

export interface RedisFanoutOptions {
  service: string;
  instanceId?: string;
  onRefreshed?: (secret: SecretValue) => Promise<void> | void;
  heartbeatMs?: number;
  liveMs?: number;
  timeoutMs?: number;
}

export class RedisFanout implements Fanout {
  readonly instanceId: string;
  private readonly channel: string;
  private readonly members: string;
  private readonly replies: string;
  private readonly waiting = new Map<string, { version: string; confirmed: Set<string>; wake: () => void }>();
  private subscriber: Redis | undefined;
  private timer: NodeJS.Timeout | undefined;
  timeoutMs: number;
  /** Runs after a refresh caused by a sibling's broadcast (rebuild a pool, reload a JWT ring, ...). */
  onRefreshed: ((secret: SecretValue) => Promise<void> | void) | undefined;

  /** `redis` is a connected client of the service; it is duplicated for the pub/sub connection. */
  constructor(
    private readonly redis: Redis,
    private readonly secrets: CachedSecretClient,
    private readonly options: RedisFanoutOptions,
  ) {
    this.instanceId = options.instanceId ?? randomUUID();
    this.channel = `kv-rotation:${options.service}:refresh`;
    this.members = `kv-rotation:${options.service}:instances`;
    this.replies = `${this.channel}:reply:${this.instanceId}`;
    this.timeoutMs = options.timeoutMs ?? 3000;
    this.onRefreshed = options.onRefreshed;
  }

  /** Subscribe, then announce this instance (it never counts as live before it can answer). */
  async start(): Promise<void> {
    this.subscriber = this.redis.duplicate();
    this.subscriber.on("error", () => undefined);
    await this.subscriber.connect();
    await this.subscriber.subscribe(this.channel, (message) => void this.onMessage(message));
    await this.subscriber.subscribe(this.replies, (message) => this.onReply(message));
    await this.beat();
    this.timer = setInterval(() => void this.beat().catch(() => undefined), this.options.heartbeatMs ?? 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.subscriber?.quit().catch(() => undefined);
    this.subscriber = undefined;
    await this.redis.zRem(this.members, this.instanceId).catch(() => undefined);
  }

  async broadcast(secretName: string, version: string, rotationId: string): Promise<FanoutResult> {
    if (!this.subscriber?.isReady) throw new Error("RedisFanout.start() was not called (or its subscription is down)");
    const id = randomUUID();
    const confirmed = new Set([this.instanceId]);
    let wake: () => void = () => undefined;
    this.waiting.set(id, { version, confirmed, wake: () => wake() });
    try {
      const message = JSON.stringify({ secretName, version, rotationId, origin: this.instanceId, reply: this.replies, id });
      // Published first: the siblings re-read while the live instances are looked up.
      const [, live] = await Promise.all([this.redis.publish(this.channel, message), this.liveInstances()]);
      live.add(this.instanceId);
      const deadline = Date.now() + this.timeoutMs;
      while ([...live].some((member) => !confirmed.has(member)) && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      return { live: live.size, confirmed: [...live].filter((member) => confirmed.has(member)).length };
    } finally {
      this.waiting.delete(id);
    }
  }

  private async now(): Promise<number> {
    const [seconds, micros] = (await this.redis.sendCommand(["TIME"])) as unknown as [string, string];
    return Number(seconds) + Number(micros) / 1e6;
  }

  private async beat(): Promise<void> {
    await this.redis.zAdd(this.members, { score: await this.now(), value: this.instanceId });
  }

  private async liveInstances(): Promise<Set<string>> {
    const now = await this.now();
    const liveSeconds = (this.options.liveMs ?? 5000) / 1000;
    await this.redis.zRemRangeByScore(this.members, "-inf", now - 10 * liveSeconds);
    return new Set(await this.redis.zRangeByScore(this.members, now - liveSeconds, "+inf"));
  }

  private onReply(raw: string): void {
    let answer: { instance?: string; version?: string; id?: string };
    try {
      answer = JSON.parse(raw);
    } catch {
      return;
    }
    const waiting = this.waiting.get(String(answer.id));
    if (!waiting || answer.version !== waiting.version || !answer.instance) return;
    waiting.confirmed.add(answer.instance);
    waiting.wake();
  }

  private async onMessage(raw: string): Promise<void> {
    let notice: { secretName: string; version: string; origin: string; reply: string; id?: string; rotationId?: string };
    try {
      notice = JSON.parse(raw);
    } catch {
      return;
    }
    if (notice.origin === this.instanceId || !String(notice.reply).startsWith(this.channel + ":reply:")) return;
    let current = notice.version;
    if (this.secrets.cachedVersion(notice.secretName) !== notice.version) {
      try {
        const secret = await this.secrets.refresh(notice.secretName);
        await this.onRefreshed?.(secret);
        current = secret.version;
      } catch {
        return; // no reply: the acknowledging instance answers 503 and the ping is retried
      }
    }
    await this.redis.publish(notice.reply, JSON.stringify({ instance: this.instanceId, version: current, id: notice.id }));
  }
}
