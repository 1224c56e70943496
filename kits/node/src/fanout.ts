/**
 * Replica fan-out over Redis pub/sub (node-redis): the instance that got the
 * ping publishes it on the service's channel; every other live instance
 * re-reads the secret and replies with its version; the endpoint answers
 * `"coverage": "service"` only when every live instance confirmed (503
 * otherwise). Liveness is a sorted set refreshed every `heartbeatMs`, scored
 * with the Redis server's clock. Same protocol as the Python kit's RedisFanout,
 * so Python and Node instances of one service can share a channel.
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
  private subscriber: Redis | undefined;
  private timer: NodeJS.Timeout | undefined;
  timeoutMs: number;
  /** Runs after a refresh caused by a sibling's broadcast (rebuild a pool, reload a JWT ring, ...). */
  onRefreshed: ((secret: SecretValue) => Promise<void> | void) | undefined;

  /** `redis` is a connected client of the service; it is duplicated for the pub/sub connections. */
  constructor(
    private readonly redis: Redis,
    private readonly secrets: CachedSecretClient,
    private readonly options: RedisFanoutOptions,
  ) {
    this.instanceId = options.instanceId ?? randomUUID();
    this.channel = `kv-rotation:${options.service}:refresh`;
    this.members = `kv-rotation:${options.service}:instances`;
    this.timeoutMs = options.timeoutMs ?? 3000;
    this.onRefreshed = options.onRefreshed;
  }

  /** Subscribe, then announce this instance (it never counts as live before it can answer). */
  async start(): Promise<void> {
    this.subscriber = this.redis.duplicate();
    this.subscriber.on("error", () => undefined);
    await this.subscriber.connect();
    await this.subscriber.subscribe(this.channel, (message) => void this.onMessage(message));
    await this.beat();
    this.timer = setInterval(() => void this.beat().catch(() => undefined), this.options.heartbeatMs ?? 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.subscriber?.quit().catch(() => undefined);
    await this.redis.zRem(this.members, this.instanceId).catch(() => undefined);
  }

  async broadcast(secretName: string, version: string, rotationId: string): Promise<FanoutResult> {
    const replyChannel = `${this.channel}:reply:${randomUUID()}`;
    const confirmed = new Set([this.instanceId]);
    const replies = this.redis.duplicate();
    replies.on("error", () => undefined);
    await replies.connect();
    try {
      let wake: () => void = () => undefined;
      await replies.subscribe(replyChannel, (message) => {
        try {
          const answer = JSON.parse(message) as { instance?: string; version?: string };
          if (answer.version === version && answer.instance) confirmed.add(answer.instance);
        } catch {
          // not ours
        }
        wake();
      });
      const live = await this.liveInstances();
      live.add(this.instanceId);
      await this.redis.publish(
        this.channel,
        JSON.stringify({ secretName, version, rotationId, origin: this.instanceId, reply: replyChannel }),
      );
      const deadline = Date.now() + this.timeoutMs;
      while ([...live].some((id) => !confirmed.has(id)) && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, Math.max(0, deadline - Date.now()));
        });
      }
      return { live: live.size, confirmed: [...live].filter((id) => confirmed.has(id)).length };
    } finally {
      await replies.quit().catch(() => undefined);
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

  private async onMessage(raw: string): Promise<void> {
    let notice: { secretName: string; version: string; origin: string; reply: string };
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
    await this.redis.publish(notice.reply, JSON.stringify({ instance: this.instanceId, version: current }));
  }
}
