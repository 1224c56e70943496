import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import pg from "pg";
import { createClient } from "redis";
import { CachedSecretClient, SelfHealingRedis, connectPostgres, type SecretClientLike } from "../src";
import { cachedClient, env, put, sdkClient, unique } from "./env";

const pgUri = (user: string, password: string, db = "postgres") =>
  `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${env("PG_HOST")}:${env("PG_PORT")}/${db}`;

async function admin<T>(work: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: pgUri(env("PG_ADMIN_USER"), env("PG_ADMIN_PASSWORD")) });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

const password = () => randomBytes(18).toString("base64url");

/** A Redis ACL user whose password is the Key Vault secret `name`, with an admin connection to change it. */
async function redisUser() {
  const adminClient = createClient({
    socket: { host: env("REDIS_HOST"), port: Number(env("REDIS_PORT")) },
    username: env("REDIS_ADMIN_USER"),
    password: env("REDIS_ADMIN_PASSWORD"),
  });
  await adminClient.connect();
  const user = `kitnode-${randomBytes(4).toString("hex")}`;
  const pw = password();
  await adminClient.sendCommand(["ACL", "SETUSER", user, "on", `>${pw}`, "~*", "+@all"]);
  const name = unique("redis-password");
  await put(name, pw);
  const healingWith = (secrets: CachedSecretClient) =>
    new SelfHealingRedis(secrets, name, {
      username: user,
      socket: { host: env("REDIS_HOST"), port: Number(env("REDIS_PORT")) },
    });
  const cleanup = async () => {
    await adminClient.sendCommand(["ACL", "DELUSER", user]);
    await adminClient.quit();
  };
  return { adminClient, user, name, password: pw, healingWith, cleanup };
}

/** The class node-redis built for a client (each client is a proxy over an instance of it). */
const clientClass = (client: unknown) => Object.getPrototypeOf(Object.getPrototypeOf(client)).constructor;

test("node-postgres connection heals once after the cached password was retired", async () => {
  const role = `kitnode_${randomBytes(4).toString("hex")}`;
  const [oldPw, newPw] = [password(), password()];
  await admin((c) => c.query(`CREATE ROLE ${role} LOGIN PASSWORD '${oldPw}'`));
  const name = unique("database-connection-string");
  // libpq key=value form, as the rotator writes it.
  await put(name, `host=${env("PG_HOST")} port=${env("PG_PORT")} user=${role} password=${oldPw} dbname=postgres`);
  const secrets = cachedClient();
  await (await connectPostgres(secrets, name)).end();
  await put(name, `host=${env("PG_HOST")} port=${env("PG_PORT")} user=${role} password=${newPw} dbname=postgres`);
  await admin((c) => c.query(`ALTER ROLE ${role} PASSWORD '${newPw}'`)); // retired; the ping was missed
  const reads = secrets.reads;
  const clients = await Promise.all(Array.from({ length: 5 }, () => connectPostgres(secrets, name)));
  for (const client of clients) {
    assert.equal((await client.query("SELECT current_user AS u")).rows[0].u, role);
    await client.end();
  }
  assert.equal(secrets.reads, reads + 1, "a burst of failures costs one Key Vault read");
  // Not a credential problem: no re-read.
  await put(name, pgUri(role, newPw, "no_such_db"));
  secrets.invalidate(name);
  const before = secrets.reads;
  await assert.rejects(connectPostgres(secrets, name), /no_such_db/);
  assert.equal(secrets.reads, before + 1);
});

test("node-redis client heals once after the cached password was retired", async () => {
  const { adminClient, user, name, healingWith, cleanup } = await redisUser();
  const newPw = password();
  const secrets = cachedClient();
  const healing = healingWith(secrets);
  try {
    let first: unknown;
    assert.equal(await healing.run(async (r) => { first = r; return r.ping(); }), "PONG");
    await put(name, newPw);
    await adminClient.sendCommand(["ACL", "SETUSER", user, "resetpass", `>${newPw}`]);
    await adminClient.sendCommand(["CLIENT", "KILL", "USER", user]); // new connections must authenticate
    let second: unknown;
    assert.equal(await healing.run(async (r) => { second = r; return r.set("kit-node-key", "1"); }), "OK");
    assert.equal(healing.heals, 1);
    // node-redis builds a client class per distinct options (compared as JSON): the password is not in
    // them, so the rebuilt client reuses the class instead of spending milliseconds of CPU on a new one.
    assert.equal(clientClass(second), clientClass(first));
    // The same for a secret holding a redis:// URL (what the rotator writes for a named user).
    const url = (pw: string) =>
      `redis://${user}:${encodeURIComponent(pw)}@${env("REDIS_HOST")}:${env("REDIS_PORT")}/0`;
    const classes: unknown[] = [];
    for (const pw of [newPw, password()]) {
      await adminClient.sendCommand(["ACL", "SETUSER", user, "resetpass", `>${pw}`]);
      await put(name, url(pw));
      secrets.invalidate(name);
      await healing.refresh();
      assert.equal(await healing.run(async (r) => { classes.push(clientClass(r)); return r.ping(); }), "PONG");
    }
    assert.equal(classes[1], classes[0]);
  } finally {
    await healing.close();
    await cleanup();
  }
});

test("node-redis client follows the cache to a new version without a ping or a failure", async () => {
  // An instance that missed a ping: once its cache re-reads, its next command runs on a client built from
  // the new value (not on connections authenticated with the retired one).
  const { adminClient, user, name, password: oldPw, healingWith, cleanup } = await redisUser();
  const newPw = password();
  const secrets = cachedClient();
  const healing = healingWith(secrets);
  try {
    let first: unknown;
    assert.equal(await healing.run(async (r) => { first = r; return r.ping(); }), "PONG");
    await put(name, newPw);
    await adminClient.sendCommand(["ACL", "SETUSER", user, `>${newPw}`]); // both valid: the overlap
    secrets.invalidate(name); // what the cache's TTL does
    const reads = secrets.reads;
    assert.equal(await healing.run(async (r) => r), first, "a command never waits for Key Vault");
    await waitUntil(() => secrets.reads === reads + 1 && secrets.cachedVersion(name) !== undefined);
    const seen = await Promise.all(Array.from({ length: 5 }, () => healing.run(async (r) => r)));
    assert.notEqual(seen[0], first);
    assert.ok(seen.every((c) => c === seen[0]), "concurrent commands share one rebuilt client");
    await adminClient.sendCommand(["ACL", "SETUSER", user, `<${oldPw}`]); // the old one retired
    await adminClient.sendCommand(["CLIENT", "KILL", "USER", user]);
    assert.equal(await healing.run((r) => r.set("kit-node-key", "2")), "OK");
    assert.equal(healing.heals, 0, "already on the new value: nothing to heal");
  } finally {
    await healing.close();
    await cleanup();
  }
});

test("node-redis client keeps working when Key Vault cannot be read", async () => {
  // Following the cache never makes Key Vault a dependency of every command: an expired entry that cannot
  // be re-read leaves the working client in use.
  const { name, healingWith, cleanup } = await redisUser();
  const sdk = sdkClient();
  let down = false;
  const flaky: SecretClientLike = {
    getSecret: (n, o) => (down ? Promise.reject(Object.assign(new Error("down"), { statusCode: 503 })) : sdk.getSecret(n, o)),
    listPropertiesOfSecretVersions: (n, o) => sdk.listPropertiesOfSecretVersions(n, o),
  };
  const secrets = new CachedSecretClient(flaky);
  const healing = healingWith(secrets);
  try {
    assert.equal(await healing.run((r) => r.ping()), "PONG");
    down = true;
    secrets.invalidate(name);
    const reads = secrets.reads;
    assert.equal(await healing.run((r) => r.set("kit-node-key", "1")), "OK");
    await waitUntil(() => secrets.reads === reads + 1); // the background re-read started (it is refused)
    assert.equal(await healing.run((r) => r.set("kit-node-key", "2")), "OK");
    assert.equal(healing.heals, 0);
  } finally {
    await healing.close();
    await cleanup();
  }
});

async function waitUntil(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, "condition not reached");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
