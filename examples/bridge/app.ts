/**
 * The bridge (Express, TypeScript) wired to the kit: the code docs/consumers.md
 * quotes. Compiled and tested with the kit (kits/node/test/bridge-example.test.ts)
 * against the Key Vault emulator, PostgreSQL and Redis.
 */
import express from "express";
import {
  CachedSecretClient,
  JwtKeyRing,
  RefreshEndpoint,
  SelfHealingRedis,
  connectPostgres,
  refreshRouter,
  type Fanout,
  type SecretValue,
} from "../../kits/node/src";

export interface BridgeOptions {
  redis: { host: string; port: number; username: string };
  /** Replica fan-out (RedisFanout); without it the refresh answers for this instance only. */
  fanout?: Fanout;
}

export function createBridge(secrets: CachedSecretClient, options: BridgeOptions) {
  // --8<-- [start:wiring]
  const ring = new JwtKeyRing(secrets, "jwt-signing-key");
  const redis = new SelfHealingRedis(secrets, "redis-password", {
    username: options.redis.username,
    socket: { host: options.redis.host, port: options.redis.port },
  });
  const endpoint = new RefreshEndpoint(secrets, {
    allowedSecrets: ["jwt-signing-key", "database-connection-string", "redis-password", "session-encryption-key"],
    webhookKeySecret: "bridge-refresh-hmac-key", // whsec_ key, read from Key Vault
    fanout: options.fanout, // optional: acknowledge for every replica (RedisFanout)
    onRefreshed: async (secret: SecretValue) => {
      if (secret.name === "jwt-signing-key") await ring.reload();
      if (secret.name === "redis-password") await redis.refresh();
    },
  });
  const app = express();
  app.use(refreshRouter(endpoint)); // POST /internal/secrets/refresh
  // --8<-- [end:wiring]

  // --8<-- [start:request]
  // JWT middleware that follows rotations (instead of the key read once at start-up).
  app.use("/api", async (req, res, next) => {
    try {
      res.locals.claims = await ring.verify((req.get("authorization") ?? "").replace(/^Bearer /, ""));
      next();
    } catch {
      res.status(401).end();
    }
  });
  app.get("/api/session", async (_req, res) => {
    const db = await connectPostgres(secrets, "database-connection-string"); // heals once on auth failure
    try {
      await db.query("SELECT 1");
    } finally {
      await db.end();
    }
    const hits = await redis.run((r) => r.incr("bridge:hits")); // heals once on auth failure
    await secrets.getSecret("session-encryption-key"); // cached; re-read on a ping
    res.json({ user: res.locals.claims.sub, hits });
  });
  // --8<-- [end:request]

  // What this replica uses now and when it read it (the e2e run measures convergence with it).
  app.get("/internal/secrets/version", (req, res) => {
    const held = secrets.cached(String(req.query.name ?? ""));
    res.json({ version: held?.version ?? null, readAt: held?.readAt?.toISOString() ?? null });
  });

  return { app, ring, redis, endpoint };
}
