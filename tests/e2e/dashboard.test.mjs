// End-to-end test of the dashboard in a real headless Chromium, against a real
// contactd started on port 0 with a temporary data dir. Screenshots of the main screens
// go to $E2E_OUT (default target/e2e).
//
//   node tests/e2e/dashboard.test.mjs      (after `cargo build`; .ci/run does both)
//
// Environment: CONTACTD_BIN (default target/debug/contactd), CHROMIUM (default
// /usr/bin/chromium), E2E_OUT.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.CONTACTD_BIN || path.join(ROOT, "target/debug/contactd");
const OUT = process.env.E2E_OUT || path.join(ROOT, "target/e2e");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const KEY = "oc_live_E2eAdminKey0123456789abcdefghijkl";
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
  "--disable-dev-shm-usage",
];

function startServer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "contactd-e2e-"));
  // Webhooks go to a receiver on 127.0.0.1 here.
  const child = spawn(BIN, ["--listen", "127.0.0.1:0", "--data-dir", dir, "--webhooks-allow-private", "true"], {
    env: { ...process.env, CONTACTD_ADMIN_KEY: KEY, CONTACTD_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let buffered = "";
    const timer = setTimeout(() => reject(new Error("contactd printed no `listening on` line")), 30_000);
    child.stdout.on("data", (chunk) => {
      buffered += chunk;
      const match = buffered.match(/listening on (\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve({ child, dir, base: `http://${match[1]}` });
      }
    });
    child.on("exit", (code) => reject(new Error(`contactd exited with ${code}`)));
  });
}

/** Stops the server and waits (at most 20 s) for it to exit: its last checkpoint
 * writes to the data dir, which must not be removed under it. */
function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve();
    }, 20_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/** Seed contact i's tags, opt-in and blocked flags (the test checks what the page shows
 * against these). */
function seedTags(i) {
  return [...(i % 3 === 0 ? ["vip"] : []), ...(i % 5 === 0 ? ["beta"] : [])];
}
function seedOptin(i) {
  return i % 2 === 0 ? true : i % 3 === 0 ? false : null;
}
function seedBlocked(i) {
  return i % 10 === 7 ? true : i % 10 === 8 ? false : null;
}
const yesNo = (flag) => (flag === true ? "yes" : flag === false ? "no" : "—");

async function call(base, method, pathname, body) {
  const response = await fetch(base + pathname, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  assert.equal(response.status, 200, `${method} ${pathname}: ${JSON.stringify(json)}`);
  return json;
}

async function seed(base) {
  const agent = "/api/v1/chatbots/default";
  for (const [name, type] of [["plan", "text"], ["ltv", "number"], ["vip", "boolean"], ["since", "date"]]) {
    await call(base, "POST", `${agent}/custom-attributes`, { name, type });
  }
  const first = ["Grace", "Alan", "Barbara", "Edsger", "Frances", "Ken"];
  const last = ["Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Thompson"];
  const users = [];
  for (let i = 0; i < 30; i++) {
    users.push({
      external_id: `seed-${String(i).padStart(2, "0")}`,
      name: `${first[i % 6]} ${last[(i * 5) % 6]}`,
      email: `person${i}@example.com`,
      phonenumber: `+1 555 010 ${String(1000 + i)}`,
      custom_attributes: { plan: i % 3 ? "pro" : "free", ltv: i * 10, vip: i % 4 === 0, since: "2024-05-01" },
      tags: seedTags(i),
      optin: seedOptin(i),
      incoming_blocked: seedBlocked(i),
    });
  }
  await call(base, "POST", `${agent}/contacts`, { users });
}

const shots = [];
async function shot(page, name) {
  const file = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  shots.push(file);
}

/** The texts of data column `column` (0 = the first after the selection boxes). */
async function rowTexts(page, column) {
  return page.$$eval(
    `#contacts-body tr`,
    (rows, col) => rows.map((r) => r.querySelectorAll("td:not(.select)")[col]?.textContent ?? ""),
    column,
  );
}

/** The texts of the column headed `header`. */
async function columnTexts(page, header) {
  return page.$$eval(
    "#contacts-table",
    ([table], name) => {
      const index = [...table.tHead.rows[0].cells].findIndex((th) => th.textContent.trim() === name);
      if (index < 0) throw new Error(`no column ${name}`);
      return [...table.tBodies[0].rows].map((r) => r.cells[index].textContent);
    },
    header,
  );
}

async function rowCount(page, n) {
  await page.waitForFunction((n) => document.querySelectorAll("#contacts-body tr").length === n, n);
}

/** The external ids of the agent's contacts a list query selects, sorted. */
async function idsWhere(base, query) {
  const json = await call(base, "GET", `/api/v1/chatbots/default/contacts?per_page=100&${query}`);
  return json.data.map((c) => c.external_id).sort();
}

/** A webhook receiver on 127.0.0.1:0 answering `statuses` in turn (then 200); `next()`
 * resolves with the next request's body. */
function startReceiver(statuses) {
  const waiting = [];
  const received = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      res.statusCode = statuses.length ? statuses.shift() : 200;
      res.end("receiver says hi");
      if (waiting.length) waiting.shift()(body);
      else received.push(body);
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}/hook`,
        next: () => (received.length ? Promise.resolve(received.shift()) : new Promise((r) => waiting.push(r))),
        close: () => server.close(),
      }),
    ),
  );
}

async function run() {
  fs.mkdirSync(OUT, { recursive: true });
  const server = await startServer();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
  const problems = [];
  let page = null;
  try {
    await seed(server.base);
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
    page = await context.newPage();
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("console", (msg) => {
      if (msg.type() === "error" && !/Failed to load resource/.test(msg.text())) problems.push(`console: ${msg.text()}`);
    });

    // The page is served with a strict CSP and correct types.
    const response = await page.goto(server.base + "/");
    assert.match(response.headers()["content-security-policy"], /default-src 'none'/);
    assert.match(response.headers()["content-type"], /^text\/html/);

    // Sign in: a wrong key says so; the right one opens the contacts table.
    await page.fill("#signin-key", "oc_live_not_a_real_key_at_all_000000");
    await page.press("#signin-key", "Enter");
    await page.waitForSelector("#signin-error:has-text('not accepted')");
    await shot(page, "sign-in-error");
    await page.fill("#signin-key", KEY);
    await page.click("#signin-form button[type=submit]");
    await page.waitForSelector("#contacts-body tr");
    assert.equal((await rowTexts(page, 0)).length, 25, "25 rows per page by default");
    assert.match(await page.textContent("#total"), /30 contacts/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("contactd.key")), KEY);
    assert.ok(!page.url().includes(KEY), "the key is never in the URL");
    await shot(page, "contacts");

    // Paging with cursors.
    await page.click("#next");
    await page.waitForFunction(() => document.querySelectorAll("#contacts-body tr").length === 5);
    await page.click("#prev");
    await page.waitForFunction(() => document.querySelectorAll("#contacts-body tr").length === 25);
    await page.selectOption("#per-page", "10");
    await page.waitForFunction(() => document.querySelectorAll("#contacts-body tr").length === 10);

    // (1) Tags column with chips; (3) Opt-in and Blocked columns: yes / no / —.
    const first = Array.from({ length: 10 }, (_, i) => i);
    const chips = await page.$$eval("#contacts-body tr", (rows) =>
      rows.map((r) => [...r.querySelectorAll(".chip")].map((c) => c.textContent)),
    );
    assert.deepEqual(chips, first.map(seedTags), "tags shown as chips");
    assert.deepEqual(await columnTexts(page, "Tags"), first.map((i) => seedTags(i).join("")));
    assert.deepEqual(await columnTexts(page, "Opt-in"), first.map((i) => yesNo(seedOptin(i))));
    assert.deepEqual(await columnTexts(page, "Blocked"), first.map((i) => yesNo(seedBlocked(i))));
    assert.equal(await page.$("th:has-text('Tags') button"), null, "tags are not a sort button");

    // (1) Tag filter chips from GET /tags: contacts carrying every chosen tag.
    const offered = await page.$$eval("#tag-filter option", (options) => options.map((o) => o.textContent));
    assert.equal(offered[0], "Add a tag…");
    assert.deepEqual(offered.slice(1).sort(), ["beta (6)", "vip (10)"], "tags offered with their counts");
    let [request] = await Promise.all([
      page.waitForRequest((r) => r.url().includes("/contacts?") && r.url().includes("filter%5Btags%5D=vip&")),
      page.selectOption("#tag-filter", "vip"),
    ]);
    await page.waitForSelector("#tag-chips button:has-text('vip')");
    await page.waitForSelector("#total:has-text('10 contacts')");
    assert.deepEqual(await page.$$eval("#tag-filter option", (o) => o.map((x) => x.value)), ["", "beta"], "an active tag is not offered again");
    [request] = await Promise.all([
      page.waitForRequest((r) => r.url().includes("filter%5Btags%5D=vip%2Cbeta")),
      page.selectOption("#tag-filter", "beta"),
    ]);
    await page.waitForSelector("#total:has-text('2 contacts')");
    assert.deepEqual(await rowTexts(page, 0), ["seed-00", "seed-15"]);
    assert.deepEqual(await idsWhere(server.base, "filter[tags]=vip,beta"), ["seed-00", "seed-15"]);
    await shot(page, "tag-filter");
    await page.click("button[aria-label='Remove tag filter vip']");
    await page.waitForSelector("#total:has-text('6 contacts')");
    assert.deepEqual(await page.$$eval("#tag-chips button", (b) => b.map((x) => x.textContent)), ["beta"]);
    await page.click("button[aria-label='Remove tag filter beta']");
    await page.waitForSelector("#total:has-text('30 contacts')");
    assert.equal(await page.$("#tag-chips button"), null);

    // (2) Lists: create one (a refused name is reported on its field), add the selected
    // contacts, add every contact the search and filters match, filter by list.
    await page.click("#list-new");
    await page.fill("#list-name", "all");
    await page.click("#list-create");
    await page.waitForSelector('#list-form .field-error[data-for="name"]:has-text("implicit list")');
    await page.fill("#list-name", "Spring promo");
    await page.click("#list-create");
    await page.waitForSelector("#status:has-text('List Spring promo created')");
    assert.equal(await page.inputValue("#list-target"), "Spring promo", "the new list is the one to add to");
    await page.click("#list-new");
    await page.fill("#list-name", "spring PROMO");
    await page.press("#list-name", "Enter");
    await page.waitForSelector('#list-form .field-error[data-for="name"]:has-text("already exists")');
    await page.click("#list-cancel");
    await page.check("input[aria-label='Select seed-01']");
    await page.check("input[aria-label='Select seed-02']");
    await page.waitForSelector("#selection-count:has-text('2 contacts selected')");
    assert.equal(await page.isVisible("#contact-dialog[open]"), false, "ticking a box does not open the contact");
    await page.click("#add-selected");
    await page.waitForSelector("#status:has-text('2 contacts added to Spring promo')");
    assert.deepEqual(await idsWhere(server.base, "filter[lists]=Spring%20promo"), ["seed-01", "seed-02"]);
    await page.click("#selection-clear");
    await page.waitForSelector("#selection-count:has-text('No contacts selected')");
    assert.equal(await page.isChecked("input[aria-label='Select seed-01']"), false);
    // Every contact matching the search and the tag filter: of person1 and person10-19,
    // 12, 15 and 18 are vip.
    await page.selectOption("#tag-filter", "vip");
    await page.fill("#search", "person1");
    await page.waitForSelector("#total:has-text('3 contacts')");
    let asked = null;
    page.once("dialog", (dialog) => {
      asked = dialog.message();
      dialog.accept();
    });
    await page.click("#add-matching");
    await page.waitForSelector("#status:has-text('3 contacts added to Spring promo')");
    assert.match(asked, /Add all 3 matching contacts to the list Spring promo/);
    assert.deepEqual(await idsWhere(server.base, "filter[lists]=Spring%20promo"), ["seed-01", "seed-02", "seed-12", "seed-15", "seed-18"]);
    await page.click("button[aria-label='Remove tag filter vip']");
    await page.fill("#search", "");
    await page.waitForSelector("#total:has-text('30 contacts')");
    [request] = await Promise.all([
      page.waitForRequest((r) => r.url().includes("filter%5Blists%5D=Spring+promo")),
      page.selectOption("#list-filter", "Spring promo"),
    ]);
    await page.waitForSelector("#total:has-text('5 contacts')");
    assert.deepEqual((await rowTexts(page, 0)).sort(), ["seed-01", "seed-02", "seed-12", "seed-15", "seed-18"]);
    await page.waitForFunction(() => document.querySelector("#list-filter option:checked").textContent === "Spring promo (5)");
    await page.check("#select-page");
    await page.waitForSelector("#selection-count:has-text('5 contacts selected')");
    await shot(page, "lists");
    await page.click("#selection-clear");
    await page.selectOption("#list-filter", "");
    await page.waitForSelector("#total:has-text('30 contacts')");
    // Nothing to add to, and a list gone meanwhile: both said in the status line.
    await page.selectOption("#list-target", "");
    await page.click("#add-matching");
    await page.waitForSelector("#status.error:has-text('Choose a list')");
    await call(server.base, "POST", "/api/v1/chatbots/default/lists", { name: "Short-lived" });
    await page.click("#tab-contacts"); // reloads tags and lists
    await page.waitForSelector("#list-target option[value='Short-lived']", { state: "attached" });
    await page.selectOption("#list-target", "Short-lived");
    await call(server.base, "DELETE", "/api/v1/chatbots/default/lists/Short-lived");
    await page.check("input[aria-label='Select seed-03']");
    await page.click("#add-selected");
    await page.waitForSelector("#status.error:has-text('The list Short-lived no longer exists')");
    await page.waitForSelector("#list-target option[value='Short-lived']", { state: "detached" });
    await page.click("#selection-clear");

    // (4) A search that is a phone number finds it in any formatting (filter[phonenumber]).
    for (const typed of ["1 (555) 010-1003", "15550101003", "+1.555.010.1003"]) {
      [request] = await Promise.all([
        page.waitForRequest((r) => r.url().includes("/contacts?") && r.url().includes("filter%5Bphonenumber%5D")),
        page.fill("#search", typed),
      ]);
      const params = new URL(request.url()).searchParams;
      assert.equal(params.get("filter[phonenumber]"), typed);
      assert.equal(params.get("q"), null, "a phone number is not sent as q");
      await rowCount(page, 1);
      assert.deepEqual(await rowTexts(page, 0), ["seed-03"], `search ${typed}`);
    }
    await page.fill("#search", "+1 555 010 9999");
    await page.waitForSelector("#contacts-empty:has-text('No contact has the phone number')");
    await page.fill("#search", "0000000");
    await page.waitForSelector("#status.error:has-text('phone number')");
    await page.fill("#search", "");
    await rowCount(page, 10);
    assert.equal(await page.textContent("#status"), "", "the error clears once a list loads");

    // Create a contact with typed attribute inputs.
    await page.click("#add");
    await page.fill("#f-external_id", "e2e-ada");
    await page.fill("#f-name", "Ada Lovelace");
    await page.fill("#f-email", "ada@e2e.test");
    await page.fill("#attr-ltv", "540");
    await page.check("#attr-vip");
    await page.fill("#attr-since", "2024-06-01");
    // (5) Tags and lists as comma-separated names, opt-in and blocked as yes / no / —.
    await page.fill("#f-tags", "vip, early adopter, ,VIP");
    await page.fill("#f-lists", "Spring promo");
    await page.selectOption("#f-optin", "true");
    assert.equal(await page.inputValue("#f-incoming_blocked"), "", "not set by default");
    await page.click("#stripe-add");
    await page.fill(".stripe-row input[data-key=label]", "main");
    await page.fill(".stripe-row input[data-key=stripe_id]", "cus_123");
    await page.click("#contact-save");
    await page.waitForSelector("#status:has-text('Contact added')");
    const added = await call(server.base, "GET", "/api/v1/chatbots/default/contacts/e2e-ada");
    assert.deepEqual(added.data.tags, ["vip", "early adopter"]);
    assert.deepEqual(added.data.lists, ["Spring promo"]);
    assert.equal(added.data.optin, true);
    assert.equal(added.data.incoming_blocked, null);
    assert.equal(added.data.source, "manual", "contacts added in the dashboard are manual");

    // Adding never overwrites an existing contact: the external id is reported in use.
    await page.click("#add");
    await page.fill("#f-external_id", "e2e-ada");
    await page.fill("#f-name", "Someone Else");
    await page.click("#contact-save");
    await page.waitForSelector('.field-error[data-for="external_id"]:has-text("already used")');
    await page.click("#contact-cancel");

    // Search (debounced, with q).
    await page.fill("#search", "lovel");
    await page.waitForFunction(() => document.querySelectorAll("#contacts-body tr").length === 1);
    assert.deepEqual(await rowTexts(page, 1), ["Ada Lovelace"]);
    await page.fill("#search", "zzzz-nobody");
    await page.waitForSelector("#contacts-empty:has-text('No contact matches')");
    await page.fill("#search", "");
    await page.waitForFunction(() => document.querySelectorAll("#contacts-body tr").length === 10);

    // Sort by clicking a column header, both ways.
    await page.click("th:has-text('Name') button");
    await page.waitForSelector("th[aria-sort=ascending]:has-text('Name')");
    const ascending = await rowTexts(page, 1);
    assert.equal(ascending[0], "Ada Lovelace");
    await page.click("th:has-text('Name') button");
    await page.waitForSelector("th[aria-sort=descending]:has-text('Name')");
    const descending = await rowTexts(page, 1);
    assert.ok(descending[0] > descending[descending.length - 1], `descending: ${descending}`);
    await shot(page, "sorted");

    // A sorted search's later pages keep the count its first page gave.
    await page.fill("#search", "seed");
    await page.waitForSelector("#total:has-text('30 contacts · page 1')");
    await page.click("#next");
    await page.waitForSelector("#total:has-text('30 contacts · page 2')");

    // Edit with a validation error shown next to its field, then fix it.
    await page.fill("#search", "ada lovelace");
    await page.waitForFunction(() => document.querySelectorAll("#contacts-body tr").length === 1);
    await page.focus("#contacts-body tr button.row-open");
    await page.keyboard.press("Enter"); // keyboard-usable
    await page.waitForSelector("#contact-dialog[open]");
    assert.equal(await page.inputValue("#attr-ltv"), "540");
    assert.equal(await page.isChecked("#attr-vip"), true);
    assert.equal(await page.inputValue("#f-tags"), "vip, early adopter");
    assert.equal(await page.inputValue("#f-lists"), "Spring promo");
    assert.equal(await page.inputValue("#f-optin"), "true");
    assert.match(await page.textContent("#contact-source"), /by hand/);
    // A tag name the server refuses is reported on the Tags field.
    await page.fill("#f-tags", "vip, half;half");
    await page.click("#contact-save");
    await page.waitForSelector('.field-error[data-for="tags"]:has-text("must not contain")');
    assert.equal(await page.getAttribute("#f-tags", "aria-invalid"), "true");
    await page.fill("#f-tags", "vip, newsletter");
    await page.fill("#f-lists", "");
    await page.selectOption("#f-optin", "");
    await page.selectOption("#f-incoming_blocked", "true");
    await page.fill("#f-email", "not-an-email");
    await page.click("#contact-save");
    await page.waitForSelector('.field-error[data-for="email"]:not(:empty)');
    assert.equal(await page.getAttribute("#f-email", "aria-invalid"), "true");
    await shot(page, "edit-validation-error");
    await page.fill("#f-email", "ada@lovelace.test");
    await page.fill("#attr-ltv", "600");
    await page.click("#contact-save");
    await page.waitForSelector("#status:has-text('Contact saved')");
    const saved = await call(server.base, "GET", "/api/v1/chatbots/default/contacts/e2e-ada");
    assert.equal(saved.data.email, "ada@lovelace.test");
    assert.equal(saved.data.custom_attributes.ltv, 600);
    assert.equal(saved.data.stripe_accounts[0].stripe_id, "cus_123");
    assert.deepEqual(saved.data.tags, ["vip", "newsletter"]);
    assert.deepEqual(saved.data.lists, []);
    assert.equal(saved.data.optin, null);
    assert.equal(saved.data.incoming_blocked, true);
    await page.waitForSelector("#contacts-body .chip:has-text('newsletter')");
    assert.deepEqual(await rowTexts(page, 0), ["e2e-ada"]);
    assert.deepEqual(await columnTexts(page, "Tags"), ["vipnewsletter"]);
    assert.deepEqual(await columnTexts(page, "Opt-in"), ["—"]);
    assert.deepEqual(await columnTexts(page, "Blocked"), ["yes"]);

    // A contact changed by someone else after the form opened is not overwritten: the
    // save sends If-Match with the ETag it opened with, and the 412 is explained.
    await page.click("#contacts-body tr button.row-open");
    await page.waitForSelector("#contact-dialog[open]");
    await call(server.base, "PATCH", "/api/v1/chatbots/default/contacts/e2e-ada", { name: "Ada, changed meanwhile" });
    await page.fill("#f-name", "Ada from the form");
    await page.click("#contact-save");
    await page.waitForSelector('.field-error[data-for="_form"]:has-text("Someone changed this contact")');
    const kept = await call(server.base, "GET", "/api/v1/chatbots/default/contacts/e2e-ada");
    assert.equal(kept.data.name, "Ada, changed meanwhile", "the other change stands");
    await page.click("#contact-cancel");
    await page.click("#contacts-body tr button.row-open");
    await page.waitForSelector("#contact-dialog[open]");
    assert.equal(await page.inputValue("#f-name"), "Ada, changed meanwhile", "opened again: as it is now");
    await page.fill("#f-name", "Ada Lovelace");
    await page.click("#contact-save");
    await page.waitForSelector("#status:has-text('Contact saved')");

    // Import a file with one bad row: preview, mapping, report, failed rows as CSV.
    await page.fill("#search", "");
    await page.click("#import-open");
    await page.setInputFiles("#import-file", {
      name: "people.csv",
      mimeType: "text/csv",
      buffer: Buffer.from("external_id,name,email,tier,tags\nimp-1,Imported One,one@imp.test,gold,vip;imported\nimp-2,\"Two, Imported\",two@imp.test,silver,\nimp-3,Bad Row,not-an-email,bronze,\n"),
    });
    await page.waitForSelector("#import-mapping li.new:has-text('new attribute tier')");
    await page.waitForSelector("#import-mapping li:not(.new):has-text('tags → tags')");
    assert.equal((await page.$$("#import-rows tbody tr")).length, 3);
    await page.click("#import-run");
    await page.waitForSelector("#import-report:has-text('3 rows: 2 created, 0 updated, 0 skipped, 1 failed')");
    await page.waitForSelector("#import-report li:has-text('Row 4')");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#import-errors")]);
    const failed = fs.readFileSync(await download.path(), "utf8");
    assert.match(failed, /^row,external_id,field,message\r\n4,imp-3,email,/);
    await shot(page, "import-report");
    const imported = await call(server.base, "GET", "/api/v1/chatbots/default/contacts/imp-1");
    assert.deepEqual([imported.data.tags, imported.data.source], [["vip", "imported"], "csv"]);
    await page.click("#import-close");

    // Export the current view as CSV.
    await page.fill("#search", "imported");
    await page.waitForFunction(() => document.querySelectorAll("#contacts-body tr").length === 2);
    const [exported] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
    const csv = fs.readFileSync(await exported.path(), "utf8");
    assert.equal(csv.trim().split(/\r?\n/).length, 3, `header and two rows: ${csv}`);

    // Attributes: define one, archive one; archived attributes leave the column chooser.
    await page.click("#tab-attributes");
    await page.waitForSelector("#attributes-body tr:has-text('plan')");
    await page.fill("#attr-name", "has space");
    await page.click("#attribute-form button[type=submit]");
    await page.waitForSelector('#attribute-form .field-error[data-for="name"]:not(:empty)');
    await page.fill("#attr-name", "score");
    await page.selectOption("#attr-type", "number");
    await page.fill("#attr-label", "Score");
    await page.click("#attribute-form button[type=submit]");
    await page.waitForSelector("#attributes-body tr:has-text('score')");
    await page.click("button[aria-label='Archive plan']");
    await page.waitForSelector("#attributes-body tr:has-text('plan'):has-text('archived')");
    await shot(page, "attributes");
    await page.click("#tab-contacts");
    await page.click("#columns summary");
    assert.equal(await page.$("#col-custom_attributes\\.plan"), null, "archived attributes are not offered");
    assert.notEqual(await page.$("#col-custom_attributes\\.score"), null);
    await page.check("#col-created_at");
    await page.click("#columns summary");
    await page.reload();
    await page.waitForSelector("#contacts-body tr");
    assert.notEqual(await page.$("th:has-text('Created')"), null, "column choice remembered per agent");
    // A choice saved before the Tags, Opt-in and Blocked columns existed shows them.
    const savedChoice = await page.evaluate(() => {
      const saved = [localStorage.getItem("contactd.columns.default"), localStorage.getItem("contactd.columns.default.offered")];
      localStorage.setItem("contactd.columns.default", JSON.stringify(["external_id", "name", "email"]));
      localStorage.removeItem("contactd.columns.default.offered");
      return saved;
    });
    await page.reload();
    await page.waitForSelector("#contacts-body tr");
    assert.deepEqual(
      await page.$$eval("#contacts-head th:not(.select)", (ths) => ths.map((th) => th.textContent)),
      ["External ID", "Name", "Email", "Tags", "Opt-in", "Blocked"],
    );
    await page.evaluate(([columns, offered]) => {
      localStorage.setItem("contactd.columns.default", columns);
      localStorage.setItem("contactd.columns.default.offered", offered);
    }, savedChoice);
    await page.reload();
    await page.waitForSelector("#contacts-body tr");

    // Webhooks: a refused URL is reported on its field; an endpoint is added with its
    // secret shown once; a failed delivery is listed with its attempt and sent again.
    const receiver = await startReceiver([500]);
    await page.click("#tab-webhooks");
    await page.waitForSelector("#view-webhooks:not([hidden])");
    await page.waitForSelector("#webhooks-empty:not([hidden])");
    await page.fill("#wh-url", "ftp://example.com/hook");
    await page.click("#webhook-form button[type=submit]");
    await page.waitForSelector('#webhook-form .field-error[data-for="url"]:not(:empty)');
    await page.fill("#wh-url", receiver.url);
    await page.click("#webhook-form button[type=submit]");
    await page.waitForSelector("#webhook-secret:not([hidden])");
    assert.match(await page.textContent("#webhook-secret-value"), /^whsec_[0-9a-f]{64}$/);
    await page.waitForSelector(`#webhooks-body tr:has-text('${receiver.url}')`);
    assert.match(await page.textContent("#webhooks-body tr"), /contact\.created, contact\.updated, contact\.deleted/);
    await call(server.base, "POST", "/api/v1/chatbots/default/contacts", { users: [{ external_id: "hooked", name: "Hook" }] });
    // The first attempt is answered 500; the retry comes once that attempt is recorded.
    const sent = JSON.parse(await receiver.next());
    assert.equal(sent.events[0].data.contact.external_id, "hooked");
    await receiver.next();
    await page.click(`button[aria-label='Deliveries of ${receiver.url}']`);
    await page.waitForSelector("#deliveries-body tr:has-text('answered')");
    await shot(page, "webhooks");
    await page.click("button[aria-label='Retry delivery 1']");
    await receiver.next();
    await page.waitForSelector("#status:has-text('Delivery 1 sent again')");
    assert.match(await page.textContent("#deliveries-body tr"), /succeeded/);
    receiver.close();
    await page.click("#tab-contacts");
    await page.waitForSelector("#contacts-body tr");

    // Delete with confirmation.
    await page.fill("#search", "ada lovelace");
    await page.waitForFunction(() => document.querySelectorAll("#contacts-body tr").length === 1);
    await page.click("#contacts-body tr button.row-open");
    page.once("dialog", (dialog) => dialog.accept());
    await page.click("#contact-delete");
    await page.waitForSelector("#status:has-text('Contact deleted')");
    await page.waitForSelector("#contacts-empty:has-text('No contact matches')");

    // Small screens and dark mode.
    await page.fill("#search", "");
    await page.setViewportSize({ width: 375, height: 800 });
    await page.waitForSelector("#contacts-body tr");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at 375px`);
    await shot(page, "contacts-375px");
    await page.setViewportSize({ width: 1280, height: 860 });
    await page.emulateMedia({ colorScheme: "dark" });
    await shot(page, "contacts-dark");

    // The API's OpenAPI document is one click away.
    assert.equal(await page.getAttribute("#api-doc", "href"), "/api/v1/openapi.json");
    assert.equal(await page.isVisible("#read-only-badge"), false);

    // Sign out forgets the key.
    await page.click("#sign-out");
    await page.waitForSelector("#view-signin:not([hidden])");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("contactd.key")), null);

    // A read-only key gets a view without any control that writes.
    const reader = await call(server.base, "POST", "/api/v1/keys", { name: "auditor", access: "read" });
    await page.setViewportSize({ width: 1280, height: 860 });
    await page.fill("#signin-key", reader.data.key);
    await page.click("#signin-form button[type=submit]");
    await page.waitForSelector("#contacts-body tr");
    await page.waitForSelector("#read-only-badge:not([hidden])");
    for (const control of ["#add", "#import-open", "#bulk"]) {
      assert.equal(await page.isVisible(control), false, `${control} is hidden from a read key`);
    }
    assert.equal(await page.isVisible("#export"), true, "exporting is a read");
    await page.click("#contacts-body tr button.row-open");
    await page.waitForSelector("#contact-dialog[open]");
    assert.match(await page.textContent("#contact-title"), /^View /);
    assert.equal(await page.isVisible("#contact-save"), false);
    assert.equal(await page.isVisible("#contact-delete"), false);
    assert.equal(await page.isDisabled("#f-name"), true);
    await shot(page, "read-only-contact");
    await page.click("#contact-cancel");
    await page.click("#tab-attributes");
    await page.waitForSelector("#view-attributes:not([hidden])");
    assert.equal(await page.isVisible("#attribute-form"), false);
    await page.click("#tab-webhooks");
    await page.waitForSelector("#webhooks-body tr");
    assert.equal(await page.isVisible("#webhook-form"), false, "a read key adds no endpoint");
    assert.equal(await page.isVisible("#webhooks-body button.danger"), false);
    await page.click("#sign-out");
    await page.waitForSelector("#view-signin:not([hidden])");
    assert.equal(await page.isVisible("#read-only-badge"), false, "the next key starts with every control");

    assert.deepEqual(problems, [], "no script errors or CSP violations");
  } catch (err) {
    if (page) await shot(page, "failure").catch(() => {});
    if (problems.length) console.error(problems.join("\n"));
    throw err;
  } finally {
    await browser.close();
    await stop(server.child);
    fs.rmSync(server.dir, { recursive: true, force: true });
  }
  console.log(`dashboard e2e: ok; screenshots: ${shots.map((s) => path.relative(ROOT, s)).join(", ")}`);
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
