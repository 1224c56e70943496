import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { test } from "node:test";
import jwt from "jsonwebtoken";
import { CachedSecretClient, JwtKeyRing, SecretNotFound, TokenInvalid, type SecretClientLike } from "../src";
import { cachedClient, put, sdkClient, unique } from "./env";

test("getSecret is a drop-in that caches, with the version, and useCache=false reads through", async () => {
  const name = unique("db");
  const v1 = await put(name, "conninfo-v1");
  const client = cachedClient();
  assert.equal(await client.getSecret(name), "conninfo-v1");
  const secret = await client.get(name);
  assert.equal(secret.version, v1);
  assert.ok(!JSON.stringify(secret).includes("conninfo-v1"), "the value is not enumerable");
  await put(name, "conninfo-v2");
  assert.equal(await client.getSecret(name), "conninfo-v1");
  assert.equal(await client.getSecret(name, false), "conninfo-v2");
  assert.equal(client.reads, 2);
});

test("TTL expiry re-reads; encryption-master-key is never cached", async () => {
  let now = 0;
  const client = cachedClient({ ttlMs: 60_000, now: () => now });
  const name = unique("redis");
  await put(name, "p1");
  assert.equal(await client.getSecret(name), "p1");
  await put(name, "p2");
  now += 59_000;
  assert.equal(await client.getSecret(name), "p1");
  now += 2_000;
  assert.equal(await client.getSecret(name), "p2");

  await put("encryption-master-key", "mk");
  const reads = client.reads;
  await client.getSecret("encryption-master-key");
  await client.getSecret("Encryption-Master-Key");
  assert.equal(client.reads, reads + 2);
});

test("concurrent cold reads share one Key Vault read; invalidation is per secret", async () => {
  const a = unique("a");
  const b = unique("b");
  await put(a, "a1");
  await put(b, "b1");
  const client = cachedClient();
  const values = await Promise.all(Array.from({ length: 25 }, () => client.getSecret(a)));
  assert.deepEqual(new Set(values), new Set(["a1"]));
  assert.equal(client.reads, 1);
  await client.get(b);
  await put(a, "a2");
  await put(b, "b2");
  client.invalidate(a);
  assert.equal(await client.getSecret(a), "a2");
  assert.equal(await client.getSecret(b), "b1");
  client.clearCache();
  assert.equal(await client.getSecret(b), "b2");
});

test("previous is the newest older version still enabled; missing secrets raise SecretNotFound", async () => {
  const name = unique("k");
  await put(name, "ancient");
  const v1 = await put(name, "v1");
  await put(name, "v2");
  const client = cachedClient();
  assert.equal((await client.previous(name))?.version, v1);
  assert.deepEqual((await client.enabledVersions(name)).map((v) => v.value), ["v2", "v1", "ancient"]);
  await sdkClient().updateSecretProperties(name, v1, { enabled: false });
  assert.deepEqual((await client.enabledVersions(name)).map((v) => v.value), ["v2", "ancient"]);
  await assert.rejects(client.get(unique("missing")), SecretNotFound);
});

test("a version is read once: the listing after a rotation reads no value already held", async () => {
  // A version's value never changes: the previous key, read when it was current, is not read again when
  // the ring reloads after a rotation (one listing, no value read), and what is retired is dropped.
  const sdk = sdkClient();
  let versionReads = 0;
  const counting: SecretClientLike = {
    getSecret: (name, options) => {
      if (options?.version) versionReads += 1;
      return sdk.getSecret(name, options);
    },
    listPropertiesOfSecretVersions: (name, options) => sdk.listPropertiesOfSecretVersions(name, options),
  };
  const client = new CachedSecretClient(counting);
  const name = unique("k");
  const v1 = await put(name, "v1");
  await client.get(name);
  await put(name, "v2");
  await client.refresh(name);
  assert.deepEqual((await client.enabledVersions(name)).map((v) => v.value), ["v2", "v1"]);
  assert.equal(versionReads, 0);
  await sdk.updateSecretProperties(name, v1, { enabled: false }); // retired
  assert.deepEqual((await client.enabledVersions(name)).map((v) => v.value), ["v2"]);
  await sdk.updateSecretProperties(name, v1, { enabled: true }); // a retired value is not kept
  assert.deepEqual((await client.enabledVersions(name)).map((v) => v.value), ["v2", "v1"]);
  assert.equal(versionReads, 1);
});

const claims = () => ({ sub: "user-1" });

test("raw JWT ring verifies tokens of the previous key until it is disabled", async () => {
  const name = unique("jwt");
  const v1 = await put(name, randomBytes(64).toString("base64url"));
  const client = cachedClient();
  const ring = new JwtKeyRing(client, name, { reloadIntervalMs: 0 });
  const before = await ring.sign(claims(), { expiresIn: 600 });
  await put(name, randomBytes(64).toString("base64url"));
  client.invalidate(name);
  await ring.reload();
  const after = await ring.sign(claims(), { expiresIn: 600 });
  assert.equal((await ring.verify(before)).sub, "user-1");
  assert.equal((await ring.verify(after)).sub, "user-1");
  await sdkClient().updateSecretProperties(name, v1, { enabled: false });
  client.invalidate(name);
  await ring.reload();
  await assert.rejects(ring.verify(before), TokenInvalid);
  await assert.rejects(ring.verify(jwt.sign(claims(), "x".repeat(64), { algorithm: "HS256" })), TokenInvalid);
});

test("a retired previous key stops verifying within recheckMs, without a reload", async () => {
  // A token signed with the previous key is accepted only while a check no older than recheckMs found that
  // key enabled: retirement shows within that time, not the ring's TTL.
  const name = unique("jwt");
  const v1 = await put(name, randomBytes(64).toString("base64url"));
  const sdk = sdkClient();
  let down = false;
  let listings = 0;
  const watched: SecretClientLike = {
    getSecret: (n, o) => sdk.getSecret(n, o),
    listPropertiesOfSecretVersions: (n, o) => {
      listings += 1;
      if (!down) return sdk.listPropertiesOfSecretVersions(n, o);
      const failing = { next: () => Promise.reject(Object.assign(new Error("down"), { statusCode: 503 })) };
      return { [Symbol.asyncIterator]: () => failing } as never;
    },
  };
  const client = new CachedSecretClient(watched);
  const checking = new JwtKeyRing(client, name, { recheckMs: 0 }); // confirms on every such token
  const lenient = new JwtKeyRing(client, name, { recheckMs: 3_600_000 });
  const before = await checking.sign(claims(), { expiresIn: 600 });
  await put(name, randomBytes(64).toString("base64url")); // rotation: v1 stays enabled for the overlap
  client.invalidate(name);
  await checking.reload();
  await lenient.reload();
  assert.equal((await checking.verify(before)).sub, "user-1"); // still enabled: accepted
  const seen = listings;
  assert.equal((await checking.verify(await checking.sign(claims(), { expiresIn: 600 }))).sub, "user-1");
  assert.equal(listings, seen, "current-key tokens cost nothing");
  await sdk.updateSecretProperties(name, v1, { enabled: false }); // retirement
  await assert.rejects(checking.verify(before), TokenInvalid);
  assert.equal((await lenient.verify(before)).sub, "user-1"); // its last check is recent enough
  // Key Vault cannot tell: the keys held keep verifying (no outage of the service).
  await sdk.updateSecretProperties(name, v1, { enabled: true });
  await checking.reload();
  down = true;
  assert.equal((await checking.verify(before)).sub, "user-1");
});

test("a stale replica reloads once to verify a token signed with a newer key", async () => {
  const name = unique("jwt");
  await put(name, randomBytes(64).toString("base64url"));
  const stale = new JwtKeyRing(cachedClient(), name, { reloadIntervalMs: 0 });
  await stale.sign(claims());
  await put(name, randomBytes(64).toString("base64url"));
  const fresh = new JwtKeyRing(cachedClient(), name);
  assert.equal((await stale.verify(await fresh.sign(claims()))).sub, "user-1");
});

function privateJwk(kid: string, kind: "rsa" | "ec"): Record<string, unknown> {
  const { privateKey } =
    kind === "rsa"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { ...privateKey.export({ format: "jwk" }), kid, alg: kind === "rsa" ? "RS256" : "ES256", use: "sig" };
}

test("a JWKS ring refuses an EdDSA key when it loads, naming the key, instead of refusing every token", async () => {
  const name = unique("jwks-eddsa");
  const { privateKey } = generateKeyPairSync("ed25519");
  await put(name, JSON.stringify({ keys: [{ ...privateKey.export({ format: "jwk" }), kid: "ed1", alg: "EdDSA" }] }));
  const ring = new JwtKeyRing(cachedClient(), name, { format: "jwks" });
  await assert.rejects(ring.reload(), (err: Error) => {
    assert.equal(err.name, "KitError");
    assert.match(err.message, /key ed1 of .* is EdDSA, which this kit does not support/);
    assert.ok(!err.message.includes(String(privateKey.export({ format: "jwk" }).d)), "no key material in the error");
    return true;
  });
});

test("JWKS ring picks keys by kid and exports only public members", async () => {
  const name = unique("jwks");
  const first = privateJwk("k1", "rsa");
  await put(name, JSON.stringify({ keys: [first] }));
  const client = cachedClient();
  const ring = new JwtKeyRing(client, name, { format: "jwks" });
  const oldToken = await ring.sign(claims());
  const second = privateJwk("k2", "ec");
  await put(name, JSON.stringify({ keys: [second, first] }));
  client.invalidate(name);
  await ring.reload();
  const newToken = await ring.sign(claims());
  assert.equal(jwt.decode(newToken, { complete: true })?.header.kid, "k2");
  assert.equal((await ring.verify(oldToken)).sub, "user-1");
  assert.equal((await ring.verify(newToken)).sub, "user-1");
  const published = await ring.publicJwks();
  assert.deepEqual(published.keys.map((k) => (k as { kid?: string }).kid), ["k2", "k1"]);
  for (const key of published.keys) {
    for (const member of ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]) {
      assert.ok(!(member in key), `public JWKS must not contain ${member}`);
    }
  }
});
