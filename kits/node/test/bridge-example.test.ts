import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import pg from "pg";
import { createClient } from "redis";
import { Webhook } from "standardwebhooks";
import { createBridge } from "../../../examples/bridge/app";
import { JwtKeyRing } from "../src";
import { cachedClient, env, put } from "./env";

test("the bridge example serves JWT requests on PostgreSQL and Redis through a missed and a pinged rotation", async () => {
  const role = `bridge_${randomBytes(4).toString("hex")}`;
  const user = `bridge-${randomBytes(4).toString("hex")}`;
  const [pgOld, pgNew, redisPw] = [randomBytes(18).toString("base64url"), randomBytes(18).toString("base64url"), randomBytes(18).toString("base64url")];
  const admin = new pg.Client({ host: env("PG_HOST"), port: Number(env("PG_PORT")), user: env("PG_ADMIN_USER"), password: env("PG_ADMIN_PASSWORD"), database: "postgres" });
  await admin.connect();
  await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${pgOld}'`);
  const redisAdmin = createClient({ socket: { host: env("REDIS_HOST"), port: Number(env("REDIS_PORT")) }, username: env("REDIS_ADMIN_USER"), password: env("REDIS_ADMIN_PASSWORD") });
  await redisAdmin.connect();
  await redisAdmin.sendCommand(["ACL", "SETUSER", user, "on", `>${redisPw}`, "~*", "+@all"]);
  const conninfo = (pw: string) => `host=${env("PG_HOST")} port=${env("PG_PORT")} user=${role} password=${pw} dbname=postgres`;
  await put("database-connection-string", conninfo(pgOld));
  await put("redis-password", redisPw);
  await put("jwt-signing-key", randomBytes(64).toString("base64url"));
  const hmacKey = "whsec_" + randomBytes(32).toString("base64");
  await put("bridge-refresh-hmac-key", hmacKey);
  await put("session-encryption-key", randomBytes(32).toString("base64"));

  const { app, redis } = createBridge(cachedClient(), { redis: { host: env("REDIS_HOST"), port: Number(env("REDIS_PORT")), username: user } });
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const signerClient = cachedClient();
  const signer = new JwtKeyRing(signerClient, "jwt-signing-key");
  const session = async (token: string) => (await fetch(`${base}/api/session`, { headers: { authorization: `Bearer ${token}` } })).status;
  try {
    const before = await signer.sign({ sub: "user-1" }, { expiresIn: 600 });
    assert.equal(await session(before), 200);
    assert.equal(await session("nonsense"), 401);

    await put("database-connection-string", conninfo(pgNew)); // rotated, ping missed, old password retired
    await admin.query(`ALTER ROLE ${role} PASSWORD '${pgNew}'`);
    assert.equal(await session(before), 200);

    const version = await put("jwt-signing-key", randomBytes(64).toString("base64url"));
    const body = JSON.stringify({ secretName: "jwt-signing-key", version, rotationId: "rot-bridge" });
    const now = new Date();
    const response = await fetch(`${base}/internal/secrets/refresh`, {
      method: "POST",
      body,
      headers: { "content-type": "application/json", "webhook-id": "rot-bridge", "webhook-timestamp": String(Math.floor(now.getTime() / 1000)), "webhook-signature": new Webhook(hmacKey).sign("rot-bridge", now, body) },
    });
    assert.deepEqual([response.status, await response.json()], [200, { version, coverage: "instance" }]);
    signerClient.invalidate("jwt-signing-key");
    await signer.reload();
    assert.equal(await session(await signer.sign({ sub: "user-1" }, { expiresIn: 600 })), 200);
    assert.equal(await session(before), 200, "tokens issued before the rotation keep working");
  } finally {
    server.close();
    await redis.close();
    await redisAdmin.sendCommand(["ACL", "DELUSER", user]);
    await redisAdmin.quit();
    await admin.end();
  }
});
