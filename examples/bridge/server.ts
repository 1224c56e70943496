/**
 * One bridge replica as a process (used by `make e2e-consumers`). Configuration
 * from the environment: KV_URL, KV_EMULATOR=1 (a static token for the local
 * emulator; otherwise DefaultAzureCredential), REDIS_HOST/REDIS_PORT/REDIS_USER,
 * CACHE_TTL_MS, and FANOUT_SERVICE to enable the replica fan-out (over the Redis URL in the
 * Key Vault secret `fanout-redis-url`).
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { SecretClient } from "@azure/keyvault-secrets";
import { DefaultAzureCredential, type TokenCredential } from "@azure/identity";
import { createClient } from "redis";
import { CachedSecretClient, RedisFanout } from "../../kits/node/src";
import { createBridge } from "./app";

async function main(): Promise<void> {
  const env = process.env;
  const emulator: TokenCredential = {
    getToken: async () => ({ token: "local-emulator-token", expiresOnTimestamp: Date.now() + 3_600_000 }),
  };
  const sdk = new SecretClient(env.KV_URL!, env.KV_EMULATOR === "1" ? emulator : new DefaultAzureCredential(), {
    disableChallengeResourceVerification: env.KV_EMULATOR === "1",
  });
  const secrets = new CachedSecretClient(sdk, { ttlMs: Number(env.CACHE_TTL_MS ?? 3_600_000) });
  let fanout: RedisFanout | undefined;
  if (env.FANOUT_SERVICE) {
    // The fan-out channel's own Redis credential, kept in Key Vault like the others.
    const pubsub = createClient({ url: await secrets.getSecret("fanout-redis-url") });
    pubsub.on("error", () => undefined);
    await pubsub.connect();
    fanout = new RedisFanout(pubsub, secrets, { service: env.FANOUT_SERVICE, timeoutMs: 4000 });
  }
  const { app, ring, redis, endpoint } = createBridge(secrets, {
    redis: { host: env.REDIS_HOST!, port: Number(env.REDIS_PORT), username: env.REDIS_USER ?? "default" },
    fanout,
  });
  if (fanout) {
    // A refresh received from a sibling also reloads what depends on the secret.
    fanout.onRefreshed = async (s) => {
      if (s.name === "jwt-signing-key") await ring.reload();
      if (s.name === "redis-password") await redis.refresh();
    };
    await fanout.start();
  }
  await endpoint.warm(); // reads the ping key now, not when the first ping arrives
  const server = createServer(app);
  server.listen(Number(env.PORT ?? 0), "127.0.0.1", () => {
    console.log(`listening ${(server.address() as AddressInfo).port}`);
  });
  const stop = async () => {
    await fanout?.stop();
    await redis.close();
    server.close(() => process.exit(0));
  };
  process.on("SIGTERM", () => void stop());
}

void main().catch((err) => {
  console.error(`bridge failed to start: ${(err as Error).name}`);
  process.exit(1);
});
