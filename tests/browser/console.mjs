// The web console as an operator uses it, in a real headless Chromium: log in, create a
// customer, credit them, see their API v2 order on Orders, resolve an order of unknown outcome,
// and check the balances; then look at every page with a read-only token. Run by
// tests/console_browser.rs, which starts the gateway and passes everything in the environment:
//
//   CONSOLE_URL         the console's root, `http://HOST:PORT/admin/`
//   API_URL             the API v2 endpoint customers call
//   WRITE_TOKEN, WRITE_TOKEN_NAME, READ_TOKEN   admin tokens (write and read role)
//   FAULTS_URL, FAULTS_KEY   the simulated upstream's `/_sim/faults` and its key
//   SCREENSHOTS         where each page's full-page PNG goes (stable names, e.g. `orders.png`)
//   CHROMIUM            the browser binary (default /usr/bin/chromium)
//   BELOW_COST_SERVICE  a service the config sells below cost at a fallback (optional)
//
// Prints one progress line per step, and last `result: {...}` (the orders it made and ann's
// expected balance) for the Rust test to check against the store. Any failed check exits 1.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `environment variable ${name} is required`);
  return value;
};

const CONSOLE = new URL(env('CONSOLE_URL'));
const API_URL = env('API_URL');
const WRITE_TOKEN = env('WRITE_TOKEN');
const WRITE_TOKEN_NAME = env('WRITE_TOKEN_NAME');
const READ_TOKEN = env('READ_TOKEN');
const FAULTS_URL = env('FAULTS_URL');
const FAULTS_KEY = env('FAULTS_KEY');
const SHOTS = env('SCREENSHOTS');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const BELOW_COST_SERVICE = process.env.BELOW_COST_SERVICE;

// A name that would run script if the console ever printed it unescaped.
const XSS_NAME = '<script>alert(1)</script>';
const POST_FORMS = 'form[method="post" i]:not(#logout)';

// Money as the API writes it: five decimals. Kept in integer units (BigInt), never floats.
const SCALE = 100000n;

function units(text) {
  const m = /^(-?)(\d+)(?:\.(\d{1,5}))?$/.exec(String(text).trim());
  assert.ok(m, `not a decimal amount: ${JSON.stringify(text)}`);
  const value = BigInt(m[2]) * SCALE + BigInt((m[3] ?? '').padEnd(5, '0'));
  return m[1] ? -value : value;
}

function decimal(value) {
  const abs = value < 0n ? -value : value;
  const frac = (abs % SCALE).toString().padStart(5, '0');
  return `${value < 0n ? '-' : ''}${abs / SCALE}.${frac}`;
}

// ---- the browser and what it must never see -------------------------------------------------

const dialogs = [];
const pageErrors = [];
const foreign = [];

async function launch() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless=new',
      '--no-sandbox', // CI runs as root
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000); // CI runs other tests beside this one on two cores
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // The console names no external URL: every request stays on the admin listener.
  page.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(CONSOLE.origin) && !url.startsWith('data:')) foreign.push(url);
  });
  return { browser, page };
}

function assertClean() {
  assert.deepEqual(dialogs, [], 'a dialog opened: the page ran script it should have escaped');
  assert.deepEqual(pageErrors, [], 'script errors on the page');
  assert.deepEqual(foreign, [], 'the console fetched something off its own listener');
}

// ---- page helpers ---------------------------------------------------------------------------

async function open(page, path) {
  const response = await page.goto(new URL(path, CONSOLE).href);
  assert.equal(response.status(), 200, `GET ${path}`);
  return response;
}

/** Submits `form` with its submit button; returns the final response of the navigation. */
async function submit(page, form) {
  const locator = page.locator(form);
  assert.equal(await locator.count(), 1, `one ${form} on ${page.url()}`);
  const [response] = await Promise.all([
    page.waitForNavigation(),
    locator.locator('[type=submit]').first().click(),
  ]);
  return response;
}

/**
 * A successful write: POST, 303, then the page it belongs to showing `.flash`. A write that
 * shows a new key (`redirects: false`) answers the page itself, since the key is never kept.
 */
async function write(page, form, { redirects = true } = {}) {
  const response = await submit(page, form);
  const error = await page.locator('.error').allTextContents();
  assert.deepEqual(error, [], `${form} was refused`);
  assert.equal(response.status(), 200, `${form}: the page after the write`);
  assert.equal(Boolean(response.request().redirectedFrom()), redirects, `${form}: POST/redirect/GET`);
  const flash = await page.locator('.flash').allTextContents();
  assert.ok(flash.some((f) => f.trim().length > 0), `${form}: a .flash message`);
}

/** Sets a form field, whether the console made it an input or a select. */
async function fill(page, form, name, value) {
  const field = page.locator(`${form} [name="${name}"]`);
  const tag = await field.evaluate((el) => el.tagName);
  if (tag === 'SELECT') await field.selectOption(value);
  else await field.fill(value);
}

async function text(page, selector) {
  const locator = page.locator(selector);
  assert.equal(await locator.count(), 1, `one ${selector} on ${page.url()}`);
  return (await locator.textContent()).trim();
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, name), fullPage: true });
}

const row = (table, attr, value) => `table#${table} tr[data-${attr}=${JSON.stringify(String(value))}]`;

// ---- the API v2 and the simulator, as a customer and a test harness -------------------------

async function api(key, fields) {
  const response = await fetch(API_URL, {
    method: 'POST',
    body: new URLSearchParams({ key, ...fields }),
  });
  const body = await response.json();
  return body;
}

async function order(key, link) {
  const reply = await api(key, { action: 'add', service: '1', link, quantity: '1000' });
  assert.ok(Number.isInteger(reply.order), `an order id: ${JSON.stringify(reply)}`);
  return reply.order;
}

async function faults(body) {
  const url = `${FAULTS_URL}?key=${encodeURIComponent(FAULTS_KEY)}`;
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, `setting the simulator's faults: ${await response.text()}`);
}

// ---- the scenario ---------------------------------------------------------------------------

let stepName = 'start';
async function step(name, body) {
  stepName = name;
  const result = await body();
  assertClean();
  console.log(`ok - ${name}`);
  return result;
}

async function login(page, token) {
  await open(page, 'login');
  await page.locator('form#login input[name="token"][type="password"]').fill(token);
  const response = await submit(page, 'form#login');
  assert.equal(response.status(), 200, 'the page after logging in');
  assert.equal(new URL(page.url()).pathname, CONSOLE.pathname, 'logged in: on the Overview');
  for (const nav of ['overview', 'customers', 'orders', 'upstreams', 'catalog', 'audit']) {
    assert.equal(await page.locator(`nav a#nav-${nav}`).count(), 1, `a#nav-${nav}`);
  }
}

async function loginPage(page) {
  const response = await page.goto(CONSOLE.href);
  assert.equal(new URL(page.url()).pathname, `${CONSOLE.pathname}login`, 'no session: sent to log in');
  assert.equal(response.status(), 200);
  await shot(page, 'login.png');
  await page.locator('form#login input[name="token"]').fill('not-a-token');
  const refused = await submit(page, 'form#login');
  assert.equal(refused.status(), 401, 'a bad token');
  assert.ok((await text(page, '.error')).length > 0, 'a bad token: .error');
  assert.equal(await page.locator('form#login').count(), 1, 'a bad token: the form again');
}

async function overview(page) {
  await open(page, '');
  assert.equal(await page.locator('svg#chart').count(), 1, 'svg#chart');
  assert.equal(await page.locator('#upstream-health li[data-upstream="alpha"]').count(), 1);
  const money = {};
  for (const id of ['revenue-today', 'cost-today', 'margin-today', 'revenue-30d', 'cost-30d', 'margin-30d']) {
    money[id] = units(await text(page, `#money #${id}`));
  }
  assert.equal(money['margin-today'], money['revenue-today'] - money['cost-today'], 'margin = revenue - cost (today)');
  assert.equal(money['margin-30d'], money['revenue-30d'] - money['cost-30d'], 'margin = revenue - cost (30 days)');
  return money;
}

/** Creates a customer from the Customers page; returns the key shown once. */
async function createCustomer(page, name) {
  await open(page, 'customers');
  await fill(page, 'form#create-customer', 'name', name);
  await write(page, 'form#create-customer', { redirects: false });
  assert.equal(await text(page, '#customer-name'), name);
  const key = await text(page, 'code#new-key');
  assert.ok(key.length >= 16, 'a key is shown once');
  await customerPage(page, name);
  assert.equal(await page.locator('code#new-key').count(), 0, 'the key is shown only once');
  assert.ok(!(await page.content()).includes(key), 'the key is not on the page again');
  return key;
}

async function customerPage(page, name) {
  await open(page, 'customers');
  const link = page.locator(`${row('customers', 'customer', name)} a.customer-link`);
  await Promise.all([page.waitForNavigation(), link.click()]);
  assert.equal(await text(page, '#customer-name'), name);
}

async function credit(page, amount, note) {
  await fill(page, 'form#credit', 'amount', amount);
  await fill(page, 'form#credit', 'note', note);
  await write(page, 'form#credit');
  const newest = page.locator('table#ledger tr[data-entry]').first();
  assert.equal((await newest.locator('td.kind').textContent()).trim(), 'credit');
  assert.equal(units(await newest.locator('td.amount').textContent()), units(amount));
}

/** Filters Orders (`filters`: the form's names) and opens order `id` from the table. */
async function findOrder(page, filters, id) {
  await open(page, 'orders');
  for (const [name, value] of Object.entries(filters)) await fill(page, 'form#order-filters', name, value);
  await submit(page, 'form#order-filters');
  for (const [name, value] of Object.entries(filters)) {
    assert.equal(new URL(page.url()).searchParams.get(name), value, `the filter ${name}`);
  }
  const [first, button] = await Promise.all([
    page.locator('form#order-filters label').first().boundingBox(),
    page.locator('form#order-filters button').boundingBox(),
  ]);
  assert.ok(button.y < first.y + first.height, 'the Filter button stays on the filters\' line');
  const found = page.locator(row('orders', 'order', id));
  assert.equal(await found.count(), 1, `order ${id} listed for ${JSON.stringify(filters)}`);
  const rows = await page.locator('table#orders tr[data-order]').all();
  for (const r of rows) {
    if (filters.customer) assert.equal((await r.locator('td.customer').textContent()).trim(), filters.customer);
    if (filters.state) assert.equal((await r.locator('td.state').textContent()).trim(), filters.state);
  }
  await shot(page, 'orders.png');
  const charge = units(await found.locator('td.charge').textContent());
  await Promise.all([page.waitForNavigation(), found.locator('a.order-link').click()]);
  assert.equal(new URL(page.url()).pathname, `${CONSOLE.pathname}orders/${id}`);
  assert.ok((await text(page, '#order-id')).includes(String(id)), '#order-id');
  assert.equal(units(await text(page, '#charge')), charge, 'the charge on Orders and on the order');
  return charge;
}

async function writeSession(page) {
  const before = await step('the Overview', () => overview(page));
  await shot(page, 'overview.png');
  const annKey = await step('create ann; her key is shown once', () => createCustomer(page, 'ann'));
  await step('a customer named like a script is shown as text', async () => {
    await createCustomer(page, XSS_NAME);
    await open(page, 'customers');
    await page.locator(row('customers', 'customer', XSS_NAME)).waitFor();
  });
  await step('credit ann 25 with a note', async () => {
    await customerPage(page, 'ann');
    await credit(page, '25', 'bank transfer 1234');
    assert.equal(await text(page, '#balance'), '25.00000');
  });
  const placed = await step('ann orders through the API v2; the order is on Orders', async () => {
    const id = await order(annKey, 'https://instagram.com/ann.first');
    const charge = await findOrder(page, { customer: 'ann' }, id);
    assert.ok(['placed', 'final'].includes(await text(page, '#order-state')));
    assert.ok((await page.locator('body').textContent()).includes('https://instagram.com/ann.first'));
    const status = await api(annKey, { action: 'status', order: String(id) });
    assert.equal(units(status.charge), charge, 'the charge the API v2 answers');
    return { id, charge };
  });
  const unknown = await step('an upstream fault makes another order unknown', async () => {
    await faults({ hangup: 1, actions: ['add'] });
    const id = await order(annKey, 'https://instagram.com/ann.second');
    await faults({});
    await open(page, '');
    assert.equal(await page.locator(`#attention tr[data-order="${id}"]`).count(), 1, 'awaiting the operator');
    return id;
  });
  const refunded = await step('resolve it from the console as not placed', async () => {
    const charge = await findOrder(page, { state: 'unknown' }, unknown);
    assert.equal(await text(page, '#order-state'), 'unknown');
    assert.equal(await page.locator('form#resolve-placed input[name="upstream_order"]').count(), 1);
    await shot(page, 'order.png');
    await write(page, 'form#resolve-not-placed');
    assert.equal(await text(page, '#order-state'), 'final');
    assert.equal(await text(page, '#order-status'), 'Canceled');
    const refund = units(await text(page, '#refunded'));
    assert.equal(refund, charge, 'not placed: the whole charge refunded');
    assert.equal(await page.locator('form#resolve-not-placed').count(), 0);
    return { charge, refund };
  });
  const balance = units('25') - placed.charge - refunded.charge + refunded.refund;
  await step(`ann's balance is ${decimal(balance)}, on her page and on the API v2`, async () => {
    await customerPage(page, 'ann');
    assert.equal(await text(page, '#balance'), decimal(balance));
    const kinds = await page.locator('table#ledger tr[data-entry] td.kind').allTextContents();
    assert.deepEqual(kinds.map((k) => k.trim()), ['refund', 'charge', 'charge', 'credit']);
    assert.ok(!(await page.content()).includes(annKey), "ann's key is not on her page");
    await shot(page, 'customer.png');
    const reply = await api(annKey, { action: 'balance' });
    assert.equal(reply.balance, decimal(balance));
    await open(page, 'customers');
    assert.equal(units(await page.locator(`${row('customers', 'customer', 'ann')} td.balance`).textContent()), balance);
    await shot(page, 'customers.png');
  });
  await step('the Overview counts the orders and the money', async () => {
    const after = await overview(page);
    assert.ok(after['revenue-30d'] >= before['revenue-30d'] + placed.charge, 'revenue counts the order');
    assert.ok(Number((await text(page, '#orders-by-state tr[data-state="final"] td.count'))) >= 1);
    await shot(page, 'overview.png');
  });
  await step('a POST without the CSRF token is refused', async () => {
    const r = await page.request.post(new URL('customers', CONSOLE).href, {
      form: { name: 'mallory' },
      maxRedirects: 0,
    });
    assert.equal(r.status(), 403, 'no csrf: 403');
  });
  await step('log out', async () => {
    await submit(page, 'form#logout');
    assert.equal(new URL(page.url()).pathname, `${CONSOLE.pathname}login`);
    await page.goto(new URL('customers', CONSOLE).href);
    assert.equal(new URL(page.url()).pathname, `${CONSOLE.pathname}login`, 'the session ended');
  });
  return { annKey, placed: placed.id, resolved: unknown, balance };
}

async function readSession(page, made) {
  await step('a read token logs in and sees no write form', async () => {
    await login(page, READ_TOKEN);
    assert.ok((await text(page, '#whoami')).includes('read'), '#whoami names the role');
    for (const path of ['', 'customers', 'orders', `orders/${made.resolved}`]) {
      await open(page, path);
      assert.equal(await page.locator(POST_FORMS).count(), 0, `no write form on /${path}`);
    }
    await customerPage(page, 'ann');
    assert.equal(await page.locator(POST_FORMS).count(), 0, "no write form on ann's page");
  });
  await step('a write posted by the read session is refused', async () => {
    // With the session's own CSRF token, so that only the role can refuse it.
    const csrf = await page.locator('form#logout input[name="csrf"]').inputValue();
    const r = await page.request.post(new URL('customers/ann/credit', CONSOLE).href, {
      form: { csrf, amount: '1' },
      maxRedirects: 0,
    });
    assert.equal(r.status(), 403, 'a read session writes nothing');
    assert.match(await r.text(), /class="[^"]*\berror\b/, 'the 403 page says why in .error');
  });
  await step('Upstreams', async () => {
    await open(page, 'upstreams');
    const alpha = page.locator(row('upstreams', 'upstream', 'alpha'));
    for (const cell of ['health', 'breaker', 'balance', 'open-orders', 'last-error']) {
      assert.equal(await alpha.locator(`td.${cell}`).count(), 1, `td.${cell}`);
    }
    await shot(page, 'upstreams.png');
  });
  await step('Catalog', async () => {
    await open(page, 'catalog');
    const belowCost = (id) => `${row('catalog', 'service', id)}.below-cost, ${row('catalog', 'service', id)} .below-cost`;
    assert.equal(await page.locator(belowCost(1)).count(), 0, 'service 1 sells above cost');
    if (BELOW_COST_SERVICE) {
      assert.ok((await page.locator(belowCost(BELOW_COST_SERVICE)).count()) >= 1, 'flagged below cost');
      const line = await page.locator(row('catalog', 'service', BELOW_COST_SERVICE)).textContent();
      assert.ok(line.includes('below cost'), 'the words "below cost"');
      const colour = (id) => page.locator(`${row('catalog', 'service', id)} td`).first()
        .evaluate((cell) => getComputedStyle(cell).color);
      assert.equal(await colour(BELOW_COST_SERVICE), await colour(1), 'only the price below cost is coloured');
    }
    await shot(page, 'catalog.png');
  });
  await step('Audit shows the writes under the write token\'s name, no secret', async () => {
    await open(page, 'audit');
    const rows = [];
    for (const r of await page.locator('table#audit tr[data-audit]').all()) {
      const cell = async (c) => (await r.locator(`td.${c}`).textContent()).trim();
      rows.push([await cell('actor'), await cell('action'), await cell('target'), await cell('outcome')]);
    }
    const has = (action, target) =>
      assert.ok(
        rows.some((r) => r[0] === WRITE_TOKEN_NAME && r[1] === action && r[2] === target && r[3] === 'ok'),
        `audit row ${action} ${target} by ${WRITE_TOKEN_NAME}: ${JSON.stringify(rows)}`,
      );
    has('client.add', 'ann');
    has('client.add', XSS_NAME);
    has('client.credit', 'ann');
    has('order.resolve', `order ${made.resolved}`);
    const html = await page.content();
    for (const secret of [WRITE_TOKEN, READ_TOKEN, made.annKey]) assert.ok(!html.includes(secret), 'a secret on Audit');
    await shot(page, 'audit.png');
  });
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const { browser, page } = await launch();
  try {
    await step('the login page; a bad token is refused', () => loginPage(page));
    await step('log in with the write token', () => login(page, WRITE_TOKEN));
    const made = await writeSession(page);
    await readSession(page, made);
    const result = { placed: made.placed, resolved: made.resolved, balance: decimal(made.balance) };
    console.log(`result: ${JSON.stringify(result)}`);
  } catch (e) {
    const failure = join(tmpdir(), `console-failure-${process.pid}.png`);
    await page.screenshot({ path: failure, fullPage: true }).catch(() => {});
    console.error(`FAILED at step "${stepName}" on ${page.url()}\n${e.stack ?? e}`);
    console.error(`the page then: ${failure}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

await main();
