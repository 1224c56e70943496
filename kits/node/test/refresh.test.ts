import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { createServer, type RequestListener, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, test } from "node:test";
import express from "express";
import jwt from "jsonwebtoken";
import { Webhook } from "standardwebhooks";
import { CachedSecretClient, EntraBearerValidator, RefreshEndpoint, refreshRouter, type RefreshOptions } from "../src";
import { cachedClient, put, unique } from "./env";

const servers: Server[] = [];
after(() => servers.forEach((s) => s.close()));

function listen(app: RequestListener): Promise<string> {
  const server = createServer(app);
  servers.push(server);
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

async function service(client: CachedSecretClient, options: RefreshOptions): Promise<{ url: string; refreshed: string[] }> {
  const refreshed: string[] = [];
  const app = express();
  app.use(refreshRouter(new RefreshEndpoint(client, { ...options, onRefreshed: (s) => void refreshed.push(s.version) })));
  return { url: (await listen(app)) + "/internal/secrets/refresh", refreshed };
}

function newKey(): string {
  return "whsec_" + randomBytes(32).toString("base64");
}

function signed(key: string, body: string, id = "rot-x", when = new Date()): Record<string, string> {
  return {
    "content-type": "application/json",
    "webhook-id": id,
    "webhook-timestamp": String(Math.floor(when.getTime() / 1000)),
    "webhook-signature": new Webhook(key).sign(id, when, body),
  };
}

async function post(url: string, body: string, headers: Record<string, string>): Promise<[number, Record<string, unknown>]> {
  const response = await fetch(url, { method: "POST", body, headers });
  return [response.status, (await response.json()) as Record<string, unknown>];
}

test("express router re-reads before answering the version, and answers a repeat without re-reading", async () => {
  const keyName = unique("hmac");
  const name = unique("db");
  const key = newKey();
  await put(keyName, key);
  await put(name, "v1-value");
  const client = cachedClient();
  await client.get(name); // cached v1
  const { url, refreshed } = await service(client, { allowedSecrets: [name], webhookKeySecret: keyName });
  const v2 = await put(name, "v2-value");
  const body = JSON.stringify({ secretName: name, version: v2, rotationId: "rot-1" });
  assert.deepEqual(await post(url, body, signed(key, body, "rot-1")), [200, { version: v2, coverage: "instance" }]);
  assert.equal(client.cachedVersion(name), v2);
  const reads = client.reads;
  const [status, again] = await post(url, body, signed(key, body, "rot-1"));
  assert.equal(status, 200);
  assert.equal(again.version, v2);
  assert.deepEqual(refreshed, [v2]);
  assert.equal(client.reads, reads);
});

test("status codes follow the contract", async () => {
  const keyName = unique("hmac");
  const name = unique("db");
  const key = newKey();
  await put(keyName, key);
  const v1 = await put(name, "v1-value");
  const client = cachedClient();
  const { url } = await service(client, { allowedSecrets: [name], webhookKeySecret: keyName, keyRereadIntervalMs: 0 });
  const body = (fields: Record<string, unknown> = {}) =>
    JSON.stringify({ secretName: name, version: v1, rotationId: "rot-x", ...fields });
  assert.equal((await post(url, body(), signed(key, body())))[0], 200);
  assert.equal((await post(url, body(), {}))[0], 401);
  assert.equal((await post(url, body(), signed(newKey(), body())))[0], 401);
  assert.equal((await post(url, body(), signed(key, body(), "rot-x", new Date(Date.now() - 3_600_000))))[0], 401);
  assert.equal((await post(url, body({ version: "other" }), signed(key, body())))[0], 401);
  assert.equal((await post(url, "not json", signed(key, "not json")))[0], 400);
  const other = body({ secretName: "openai-api-key" });
  assert.equal((await post(url, other, signed(key, other)))[0], 404);
  const big = "x".repeat(17 * 1024);
  assert.equal((await post(url, big, signed(key, big)))[0], 413);
  await put(keyName, newKey()); // the ping key rotated: the endpoint re-reads it once
  const fresh = (await client.get(keyName, false)).value;
  client.invalidate(keyName);
  await client.get(keyName); // warm the cache with the new key, then rotate again behind its back
  const rotated = newKey();
  await put(keyName, rotated);
  assert.equal((await post(url, body({ rotationId: "rot-z" }), signed(rotated, body({ rotationId: "rot-z" }), "rot-z")))[0], 200);
  assert.ok(fresh.startsWith("whsec_"));
});

test("a ping key held past its TTL starts the re-read; the answer waits until a fresh read confirms the key", async () => {
  // Pings are rare, so the key held is usually past its TTL: reading it first would put a second Key Vault read
  // before the re-read. A ping signed with a key rotated away since is refused, although the secret was re-read.
  const keyName = unique("hmac");
  const name = unique("db");
  const key = newKey();
  await put(keyName, key);
  const v1 = await put(name, "v1-value");
  let now = 0;
  const client = cachedClient({ ttlMs: 60_000, now: () => now });
  const endpoint = new RefreshEndpoint(client, { allowedSecrets: [name], webhookKeySecret: keyName });
  const ping = (version: string, id: string, signer = key): [Record<string, string>, Buffer] => {
    const body = JSON.stringify({ secretName: name, version, rotationId: id });
    return [signed(signer, body, id), Buffer.from(body)];
  };
  assert.equal((await endpoint.handle(...ping(v1, "rot-1"))).status, 200); // the key is held now

  now = 3_600_000; // past its TTL
  const v2 = await put(name, "v2-value");
  const reads = client.reads;
  const answer = await endpoint.handle(...ping(v2, "rot-2"));
  assert.deepEqual([answer.status, answer.body], [200, { version: v2, coverage: "instance" }]);
  assert.equal(client.reads, reads + 2); // the secret and, to confirm it, the key

  now = 7_200_000;
  await put(keyName, newKey()); // rotated away (say it leaked)
  const v3 = await put(name, "v3-value");
  assert.equal((await endpoint.handle(...ping(v3, "rot-3"))).status, 401);
  assert.equal(client.cachedVersion(name), v3); // the harmless part ran: a re-read
  assert.equal((await endpoint.handle(...ping(v3, "rot-3"))).status, 401); // and the old key is known bad
});

test("a re-read that still returns the replaced version is a 503 to retry, any other version a mismatch", async () => {
  // Pings leave as the version is committed: a read still returning previousVersion (a lagging Key Vault
  // replica) means "not yet"; another version is the truth to report, never an acknowledgement.
  const name = unique("db");
  const key = newKey();
  const v1 = await put(name, "v1-value");
  const endpoint = new RefreshEndpoint(cachedClient(), { allowedSecrets: [name], webhookKey: key });
  const announced = randomBytes(16).toString("hex"); // committed, not yet served to this reader
  const ping = (id: string, previousVersion: string): [Record<string, string>, Buffer] => {
    const body = JSON.stringify({ secretName: name, version: announced, rotationId: id, previousVersion });
    return [signed(key, body, id), Buffer.from(body)];
  };
  const lagging = await endpoint.handle(...ping("rot-1", v1));
  assert.deepEqual([lagging.status, lagging.headers], [503, { "Retry-After": "1" }]);
  const superseded = await endpoint.handle(...ping("rot-2", randomBytes(16).toString("hex")));
  assert.deepEqual([superseded.status, superseded.body], [200, { version: v1, coverage: "instance" }]);
});

test("Entra bearer tokens are validated against a local issuer's published keys", async () => {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const kid = "local-key";
  let base = "";
  base = await listen((req, res) => {
    res.setHeader("content-type", "application/json");
    if (req.url?.endsWith("/.well-known/openid-configuration")) {
      res.end(JSON.stringify({ issuer: `${base}/tenant/v2.0`, jwks_uri: `${base}/keys` }));
    } else if (req.url === "/keys") {
      res.end(JSON.stringify({ keys: [{ ...publicKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" }] }));
    } else {
      res.statusCode = 404;
      res.end("{}");
    }
  });
  const issuer = `${base}/tenant/v2.0`;
  const name = unique("db");
  const v1 = await put(name, "v1-value");
  const bearer = new EntraBearerValidator({ issuers: [issuer], audiences: ["api://bridge"], allowedCallers: ["rotation-app"] });
  const { url } = await service(cachedClient(), { allowedSecrets: [name], bearer });
  const body = JSON.stringify({ secretName: name, version: v1, rotationId: "rot-b" });
  const token = (claims: Record<string, unknown>, key = privateKey) =>
    jwt.sign({ iss: issuer, aud: "api://bridge", azp: "rotation-app", ...claims }, key, { algorithm: "RS256", keyid: kid, expiresIn: 600 });
  const call = (t: string) => post(url, body, { authorization: `Bearer ${t}`, "content-type": "application/json" });
  assert.equal((await call(token({})))[0], 200);
  assert.equal((await call(token({ azp: "someone-else" })))[0], 403);
  assert.equal((await call(token({ aud: "api://backend" })))[0], 401);
  assert.equal((await call(token({}, generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey)))[0], 401);
});

test("a real ping of the Python notifier verifies with the npm standardwebhooks package and the endpoint", async () => {
  const { readFileSync } = await import("node:fs");
  const { env: getEnv } = await import("./env");
  const ping = JSON.parse(readFileSync(getEnv("PYTHON_NOTIFIER_PING"), "utf8")) as {
    key: string;
    headers: Record<string, string>;
    body: string;
  };
  const parsed = new Webhook(ping.key).verify(ping.body, ping.headers) as { rotationId: string };
  assert.equal(parsed.rotationId, "rot-from-python");
  assert.equal(ping.headers["webhook-id"], "rot-from-python");
  assert.match(ping.headers["webhook-signature"], /^v1,[A-Za-z0-9+/]+=*$/);
  // The endpoint accepts it (its signature check passes; the secret is not on this allow-list: 404, not 401).
  const endpoint = new RefreshEndpoint(cachedClient(), { allowedSecrets: ["other"], webhookKey: ping.key });
  assert.equal((await endpoint.handle(ping.headers, Buffer.from(ping.body))).status, 404);
  const tampered = Buffer.from(ping.body.replace("rot-from-python", "rot-forged"));
  assert.equal((await endpoint.handle(ping.headers, tampered)).status, 401);
});
