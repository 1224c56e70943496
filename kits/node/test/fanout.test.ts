import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { createClient } from "redis";
import { Webhook } from "standardwebhooks";
import { RedisFanout, RefreshEndpoint } from "../src";
import { cachedClient, env, put, unique } from "./env";

const redisClient = () =>
  createClient({
    socket: { host: env("REDIS_HOST"), port: Number(env("REDIS_PORT")) },
    username: env("REDIS_ADMIN_USER"),
    password: env("REDIS_ADMIN_PASSWORD"),
  });

function ping(key: string, name: string, version: string, id: string): [Record<string, string>, Buffer] {
  const body = JSON.stringify({ secretName: name, version, rotationId: id });
  const now = new Date();
  return [
    {
      "webhook-id": id,
      "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
      "webhook-signature": new Webhook(key).sign(id, now, body),
    },
    Buffer.from(body),
  ];
}

test("one ping refreshes every live instance before a service-wide acknowledgement; a silent one makes it wait", async () => {
  const key = "whsec_" + randomBytes(32).toString("base64");
  const name = unique("database-connection-string");
  await put(name, "v1-value");
  const service = unique("svc");
  const started: { fanout: RedisFanout; redis: ReturnType<typeof createClient> }[] = [];
  const replicas = [];
  try {
    for (let i = 0; i < 3; i++) {
      const redis = redisClient();
      await redis.connect();
      const secrets = cachedClient();
      const fanout = new RedisFanout(redis, secrets, { service, timeoutMs: 5000 });
      await fanout.start();
      started.push({ fanout, redis });
      await secrets.get(name); // every replica cached v1
      replicas.push({ secrets, fanout, endpoint: new RefreshEndpoint(secrets, { allowedSecrets: [name], webhookKey: key, fanout }) });
    }
    const v2 = await put(name, "v2-value");
    const t0 = performance.now();
    const answer = await replicas[0].endpoint.handle(...ping(key, name, v2, "rot-fan-1"));
    const elapsed = performance.now() - t0;
    assert.deepEqual([answer.status, answer.body], [200, { version: v2, coverage: "service", instances: 3 }]);
    assert.deepEqual(replicas.map((r) => r.secrets.cachedVersion(name)), [v2, v2, v2]);
    console.log(`# fan-out (node): 3 replicas converged in ${elapsed.toFixed(0)} ms`);

    // A replica whose heartbeat says live but which no longer listens: 503, never a wrong service-wide ack.
    await (started[2].fanout as unknown as { subscriber: { quit(): Promise<void> } }).subscriber.quit();
    const v3 = await put(name, "v3-value");
    replicas[0].fanout.timeoutMs = 500;
    const waiting = await replicas[0].endpoint.handle(...ping(key, name, v3, "rot-fan-2"));
    assert.equal(waiting.status, 503);
    assert.deepEqual(waiting.body, { error: "not every instance confirmed", live: 3, confirmed: 2 });
  } finally {
    for (const { fanout, redis } of started) {
      await fanout.stop();
      await redis.quit().catch(() => undefined);
    }
  }
});

test("a sibling busy refreshing one secret still refreshes and confirms another", async () => {
  // Notices are handled concurrently: secrets rotating together do not queue behind one another's re-reads.
  const key = "whsec_" + randomBytes(32).toString("base64");
  const name = unique("database-connection-string");
  const other = unique("session-encryption-key");
  await put(name, "v1-value");
  await put(other, "other-v1");
  const service = unique("svc");
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  const started: { fanout: RedisFanout; redis: ReturnType<typeof createClient> }[] = [];
  try {
    const replicas = [];
    for (const hang of [false, true]) {
      const redis = redisClient();
      await redis.connect();
      const secrets = cachedClient();
      const fanout = new RedisFanout(redis, secrets, {
        service,
        timeoutMs: 5000,
        onRefreshed: hang ? async (s) => (s.name === other ? released : undefined) : undefined,
      });
      await fanout.start();
      started.push({ fanout, redis });
      replicas.push({ secrets, fanout, endpoint: new RefreshEndpoint(secrets, { allowedSecrets: [name], webhookKey: key, fanout }) });
    }
    const [first, busy] = replicas;
    const o2 = await put(other, "other-v2");
    const hanging = first.fanout.broadcast(other, o2, "rot-other");
    while (busy.secrets.cachedVersion(other) !== o2) await new Promise((r) => setTimeout(r, 10));
    const v2 = await put(name, "v2-value");
    const answer = await first.endpoint.handle(...ping(key, name, v2, "rot-fan-3"));
    assert.deepEqual([answer.status, answer.body], [200, { version: v2, coverage: "service", instances: 2 }]);
    assert.equal(busy.secrets.cachedVersion(name), v2);
    release();
    const result = await hanging;
    assert.equal(result.confirmed, result.live);
  } finally {
    release();
    for (const { fanout, redis } of started) {
      await fanout.stop();
      await redis.quit().catch(() => undefined);
    }
  }
});
