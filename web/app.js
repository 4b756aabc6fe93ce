// The contactd dashboard: a client of the public API only. Data is always rendered
// with textContent (never innerHTML), the key lives in sessionStorage, never in a URL.

const $ = (id) => document.getElementById(id);
const KEY = "contactd.key";
const AGENT = "contactd.agent";
const CORE_COLUMNS = [
  ["external_id", "External ID"],
  ["name", "Name"],
  ["email", "Email"],
  ["phonenumber", "Phone"],
  ["tags", "Tags"],
  ["lists", "Lists"],
  ["optin", "Opt-in"],
  ["incoming_blocked", "Blocked"],
  ["source", "Source"],
  ["created_at", "Created"],
  ["updated_at", "Updated"],
];
const DEFAULT_CORE = ["external_id", "name", "email", "phonenumber", "tags", "optin", "incoming_blocked", "updated_at"];
// Columns the server cannot sort by: their headers are not sort buttons.
const UNSORTABLE = ["tags", "lists", "optin", "incoming_blocked", "source"];
// Columns added after column choices were first saved: a saved choice that never
// offered them shows the default ones among them.
const LATER_COLUMNS = ["tags", "lists", "optin", "incoming_blocked", "source"];
// Most external ids one request may add to a list.
const LIST_BATCH = 1000;

const state = {
  key: sessionStorage.getItem(KEY),
  agents: [],
  agent: null,
  attributes: [],
  q: "",
  filterTags: [], // names: contacts carrying all of them
  filterList: null, // a list name, or null for every contact
  tags: [], // the agent's tags: {name, count}
  lists: [], // the agent's lists: {name, count}
  selected: new Set(), // external ids of the selected contacts (kept across pages)
  sort: "created_at",
  desc: false,
  perPage: 25,
  cursors: [null], // cursors[i] starts page i
  page: 0,
  next: null,
  total: null, // the last total the server counted for this query
  seq: 0,
  editing: null, // the contact being edited, or null when adding
  editingEtag: null, // its ETag when it was opened: saves send it as If-Match
  readOnly: false, // the key can read only: no control that writes is shown
  admin: false, // an admin key: it may make endpoints that take every agent's events
  webhooks: [], // the endpoints shown: this agent's and every agent's
  deliveriesOf: null, // the endpoint whose deliveries are shown
};

// ---------------------------------------------------------------- helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v != null) node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function status(text, isError = false) {
  const node = $("status");
  node.textContent = text || "";
  node.classList.toggle("error", isError);
}

const VIEWS = [
  ["view-contacts", "tab-contacts"],
  ["view-attributes", "tab-attributes"],
  ["view-webhooks", "tab-webhooks"],
];

function show(view) {
  $("view-signin").hidden = view !== "view-signin";
  for (const [id, tab] of VIEWS) {
    $(id).hidden = id !== view;
    if (id === view) $(tab).setAttribute("aria-current", "page");
    else $(tab).removeAttribute("aria-current");
  }
  $("nav").hidden = view === "view-signin";
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Authorization: `Bearer ${state.key}`, "X-Contactd-Client": "dashboard", ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" || body instanceof Blob ? body : JSON.stringify(body);
    if (!init.headers["Content-Type"]) init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  return { status: response.status, body: json, etag: response.headers.get("ETag") };
}

function agentPath(suffix = "") {
  return `/api/v1/chatbots/${encodeURIComponent(state.agent)}${suffix}`;
}

function message(reply) {
  return (reply.body && reply.body.message) || `The server answered ${reply.status}.`;
}

/** The message with the issues it names, for the status line. */
function problem(reply) {
  const issues = (reply.body && reply.body.issues) || [];
  if (!issues.length) return message(reply);
  return `${message(reply)}: ${issues.map((i) => `${i.field} ${i.message}`).join("; ")}`;
}

/** Names typed as "a, b ,c": trimmed, empty ones left out, each once (case-insensitively). */
function splitNames(text) {
  const seen = new Set();
  return text
    .split(",")
    .map((n) => n.trim())
    .filter((n) => n && !seen.has(n.toLowerCase()) && seen.add(n.toLowerCase()));
}

/** Whether search text is a phone number: digits, spaces and + - ( ) . with 7+ digits. */
function isPhone(text) {
  return /^[\d\s+\-().]+$/.test(text) && text.replace(/\D/g, "").length >= 7;
}

function formatValue(column, contact) {
  if (column === "created_at" || column === "updated_at") {
    return new Date(contact[column] * 1000).toLocaleString();
  }
  if (column === "optin" || column === "incoming_blocked") {
    const flag = contact[column];
    return flag === true ? "yes" : flag === false ? "no" : "—";
  }
  if (Array.isArray(contact[column])) return contact[column].join(", ");
  const value = column.startsWith("custom_attributes.")
    ? contact.custom_attributes[column.slice(18)]
    : contact[column];
  if (value === undefined || value === null) return "";
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

// ---------------------------------------------------------------- sign in

async function signIn(key) {
  state.key = key;
  const reply = await api("GET", "/api/v1/chatbots");
  if (reply.status !== 200) {
    state.key = null;
    return reply.status === 401 ? "That key was not accepted. Check it and try again." : message(reply);
  }
  sessionStorage.setItem(KEY, key);
  const me = await api("GET", "/api/v1/me");
  setReadOnly(me.status === 200 && me.body.data.access === "read");
  state.admin = me.status === 200 && me.body.data.scope === "admin";
  state.agents = reply.body.data;
  if (state.agents.length === 0) return "This key can see no agent.";
  const saved = sessionStorage.getItem(AGENT);
  state.agent = state.agents.some((a) => a.id === saved) ? saved : state.agents[0].id;
  const picker = $("agent-picker");
  picker.replaceChildren(...state.agents.map((a) => el("option", { value: a.id, text: a.name === a.id ? a.id : `${a.name} (${a.id})` })));
  picker.value = state.agent;
  picker.disabled = state.agents.length === 1;
  await openAgent();
  return null;
}

/** Shows the read-only view (no control that writes) for a read key. */
function setReadOnly(readOnly) {
  state.readOnly = readOnly;
  document.body.classList.toggle("read-only", readOnly);
  $("read-only-badge").hidden = !readOnly;
}

function signOut() {
  setReadOnly(false);
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(AGENT);
  state.key = null;
  status("");
  $("signin-key").value = "";
  show("view-signin");
  $("signin-key").focus();
}

async function openAgent() {
  sessionStorage.setItem(AGENT, state.agent);
  state.q = "";
  $("search").value = "";
  state.filterTags = [];
  state.filterList = null;
  state.selected.clear();
  state.sort = "created_at";
  state.desc = false;
  resetPages();
  await loadAttributes();
  await loadLabels();
  show("view-contacts");
  await loadContacts();
}

// ---------------------------------------------------------------- columns

function columnsKey() {
  return `contactd.columns.${state.agent}`;
}

function availableColumns() {
  const attrs = state.attributes
    .filter((a) => !a.archived)
    .map((a) => [`custom_attributes.${a.name}`, a.label || a.name]);
  return [...CORE_COLUMNS, ...attrs];
}

function storedList(key) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

function visibleColumns() {
  const available = availableColumns().map(([id]) => id);
  let chosen = storedList(columnsKey());
  if (!chosen) {
    chosen = [...DEFAULT_CORE, ...available.filter((c) => c.startsWith("custom_attributes.")).slice(0, 4)];
  } else {
    // Default columns the chooser did not offer when the choice was saved are shown.
    const offered = storedList(`${columnsKey()}.offered`) || available.filter((c) => !LATER_COLUMNS.includes(c));
    chosen = [...chosen, ...DEFAULT_CORE.filter((c) => !offered.includes(c))];
  }
  return available.filter((c) => chosen.includes(c));
}

function renderColumnChooser() {
  const visible = visibleColumns();
  const list = $("column-list");
  list.replaceChildren(
    el("legend", { class: "visually-hidden", text: "Visible columns" }),
    ...availableColumns().map(([id, label]) => {
      const box = el("input", { type: "checkbox", value: id, id: `col-${id}` });
      box.checked = visible.includes(id);
      box.addEventListener("change", () => {
        const chosen = [...list.querySelectorAll("input:checked")].map((i) => i.value);
        localStorage.setItem(columnsKey(), JSON.stringify(chosen));
        localStorage.setItem(`${columnsKey()}.offered`, JSON.stringify(availableColumns().map(([c]) => c)));
        renderTable(state.lastContacts || []);
      });
      return el("label", { for: `col-${id}` }, box, label);
    }),
  );
}

// ---------------------------------------------------------------- contacts table

function resetPages() {
  state.cursors = [null];
  state.page = 0;
  state.next = null;
  state.total = null;
}

/** The current search and filters in the form of a list change's `query`: a search
 * that looks like a phone number finds the number in any formatting. */
function currentQuery() {
  const query = {};
  const filter = {};
  if (isPhone(state.q)) filter.phonenumber = state.q;
  else if (state.q) query.q = state.q;
  if (state.filterTags.length) filter.tags = state.filterTags.join(",");
  if (state.filterList) filter.lists = state.filterList;
  if (Object.keys(filter).length) query.filter = filter;
  return query;
}

function listQuery(extra = {}) {
  const params = new URLSearchParams();
  const query = currentQuery();
  if (query.q) params.set("q", query.q);
  for (const [field, value] of Object.entries(query.filter || {})) params.set(`filter[${field}]`, value);
  params.set("sort", (state.desc ? "-" : "") + state.sort);
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return params;
}

async function loadContacts() {
  const seq = ++state.seq;
  const params = listQuery({ per_page: String(state.perPage) });
  const cursor = state.cursors[state.page];
  if (cursor) params.set("cursor", cursor);
  $("contacts-table").classList.add("loading");
  $("contacts-table").setAttribute("aria-busy", "true");
  $("total").textContent = "Loading…";
  // No paging while a page is on its way (its cursor is not known yet).
  $("prev").disabled = true;
  $("next").disabled = true;
  let reply;
  try {
    reply = await api("GET", `${agentPath("/contacts")}?${params}`);
  } catch (err) {
    if (seq === state.seq) status(`Cannot reach the server: ${err.message}`, true);
    return;
  } finally {
    if (seq === state.seq) {
      $("contacts-table").classList.remove("loading");
      $("contacts-table").removeAttribute("aria-busy");
    }
  }
  if (seq !== state.seq) return; // a newer request is on its way
  if (reply.status === 401) return signOut();
  if (reply.status !== 200) {
    status(problem(reply), true);
    $("total").textContent = "";
    $("prev").disabled = state.page === 0;
    return;
  }
  if ($("status").classList.contains("error")) status("");
  state.next = reply.body.next_cursor;
  state.lastContacts = reply.body.data;
  renderTable(reply.body.data);
  // A cursor page may come without a count (found without counting the matches):
  // the count of an earlier page of the same query stands in.
  if (reply.body.total !== null || state.page === 0) state.total = reply.body.total;
  const total = state.total;
  const counted = total === null ? "many contacts (too many to count quickly)" : `${total} contact${total === 1 ? "" : "s"}`;
  $("total").textContent = `${counted} · page ${state.page + 1}`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = !state.next;
}

function renderTable(contacts) {
  const columns = visibleColumns();
  const labels = Object.fromEntries(availableColumns());
  const pageBox = el("input", { type: "checkbox", id: "select-page", "aria-label": "Select every contact on this page" });
  pageBox.addEventListener("change", () => {
    for (const contact of contacts) {
      if (pageBox.checked) state.selected.add(contact.external_id);
      else state.selected.delete(contact.external_id);
    }
    for (const box of $("contacts-body").querySelectorAll("td.select input")) box.checked = pageBox.checked;
    renderSelection();
  });
  $("contacts-head").replaceChildren(
    el("th", { scope: "col", class: "select" }, pageBox),
    ...columns.map((column) => {
      if (UNSORTABLE.includes(column)) return el("th", { scope: "col", text: labels[column] });
      const sorted = state.sort === column;
      const th = el("th", { scope: "col" });
      if (sorted) th.setAttribute("aria-sort", state.desc ? "descending" : "ascending");
      th.append(el("button", { type: "button", text: labels[column], onclick: () => sortBy(column) }));
      return th;
    }),
  );
  $("contacts-body").replaceChildren(
    ...contacts.map((contact) => {
      const row = el("tr", { onclick: () => openStored(contact) });
      const box = el("input", { type: "checkbox", "aria-label": `Select ${contact.external_id}`, value: contact.external_id });
      box.checked = state.selected.has(contact.external_id);
      box.addEventListener("change", () => {
        if (box.checked) state.selected.add(contact.external_id);
        else state.selected.delete(contact.external_id);
        renderSelection();
      });
      // Clicks in the selection cell select; they do not open the contact.
      row.append(el("td", { class: "select", onclick: (e) => e.stopPropagation() }, box));
      columns.forEach((column, i) => {
        const text = formatValue(column, contact);
        if ((column === "tags" || column === "lists") && i > 0) {
          row.append(el("td", { title: text }, ...contact[column].map((name) => el("span", { class: "chip", text: name }))));
        } else if (i === 0) {
          const open = el("button", { type: "button", class: "row-open", text: text || contact.id });
          open.addEventListener("click", (e) => {
            e.stopPropagation();
            openStored(contact);
          });
          row.append(el("td", {}, open));
        } else {
          row.append(el("td", { text, title: text }));
        }
      });
      return row;
    }),
  );
  state.pageContacts = contacts;
  renderSelection();
  const empty = $("contacts-empty");
  empty.hidden = contacts.length > 0;
  const filtered = state.filterTags.length > 0 || state.filterList !== null;
  const within = filtered ? " with these filters" : "";
  if (isPhone(state.q)) empty.textContent = `No contact has the phone number “${state.q}”${within}.`;
  else if (state.q) empty.textContent = `No contact matches “${state.q}”${within}.`;
  else if (filtered) empty.textContent = "No contact matches these filters.";
  else empty.textContent = "No contacts yet. Add one, or import a file.";
}

/** The selection count, its buttons and the page's select-all box. */
function renderSelection() {
  const n = state.selected.size;
  $("selection-count").textContent = n ? `${n} contact${n === 1 ? "" : "s"} selected` : "No contacts selected";
  $("selection-clear").hidden = n === 0;
  $("add-selected").disabled = n === 0;
  $("add-selected").textContent = n ? `Add selected (${n})` : "Add selected";
  const pageBox = $("select-page");
  if (!pageBox) return;
  const onPage = (state.pageContacts || []).filter((c) => state.selected.has(c.external_id)).length;
  const all = (state.pageContacts || []).length;
  pageBox.checked = all > 0 && onPage === all;
  pageBox.indeterminate = onPage > 0 && onPage < all;
}

function sortBy(column) {
  if (state.sort === column) state.desc = !state.desc;
  else {
    state.sort = column;
    state.desc = false;
  }
  resetPages();
  loadContacts();
}

// ---------------------------------------------------------------- contact form

function clearErrors(form) {
  for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
}

function showIssues(form, issues, fallback) {
  let shown = false;
  for (const issue of issues || []) {
    // users[0].email, data.custom_attributes.ltv, stripe_accounts[1].stripe_email
    let field = issue.field.replace(/^(users|contacts)\[\d+\]\./, "").replace(/^data\./, "");
    if (field.startsWith("stripe_accounts")) field = "stripe_accounts";
    field = field.replace(/^(tags|lists)\[\d+\]$/, "$1");
    const target = form.querySelector(`.field-error[data-for="${CSS.escape(field)}"]`);
    if (target) {
      target.textContent = target.textContent ? `${target.textContent} ${issue.message}` : issue.message;
      const input = target.parentElement.querySelector("input, select");
      if (input) input.setAttribute("aria-invalid", "true");
      shown = true;
    } else {
      const general = form.querySelector('.field-error[data-for="_form"]');
      if (general) general.textContent = `${issue.field}: ${issue.message}`;
      shown = true;
    }
  }
  if (!shown) {
    const general = form.querySelector('.field-error[data-for="_form"]');
    if (general) general.textContent = fallback;
  }
  const first = form.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

function stripeRow(account = {}) {
  const row = el("div", { class: "stripe-row" });
  const n = document.querySelectorAll(".stripe-row").length + Math.random().toString(36).slice(2, 6);
  for (const [key, label] of [["label", "Label"], ["stripe_id", "Stripe ID"], ["stripe_email", "Stripe email"]]) {
    const id = `stripe-${key}-${n}`;
    const input = el("input", { id, "data-key": key, autocomplete: "off" });
    input.value = account[key] || "";
    row.append(el("div", {}, el("label", { for: id, text: label }), input));
  }
  row.append(el("button", { type: "button", class: "writes", text: "Remove", "aria-label": "Remove this Stripe account", onclick: () => row.remove() }));
  return row;
}

function attributeInput(def, value) {
  const id = `attr-${def.name}`;
  const wrap = el("div");
  const label = el("label", { for: id, text: `${def.label || def.name} (${def.type})` });
  let input;
  if (def.type === "boolean") {
    input = el("input", { id, type: "checkbox" });
    input.checked = value === true;
  } else if (def.type === "number") {
    input = el("input", { id, type: "number", step: "any" });
    input.value = value ?? "";
  } else if (def.type === "date") {
    input = el("input", { id, type: "date" });
    input.value = typeof value === "string" ? value.slice(0, 10) : "";
  } else {
    input = el("input", { id, type: "text" });
    input.value = value ?? "";
  }
  input.dataset.attr = def.name;
  input.dataset.type = def.type;
  input.dataset.original = JSON.stringify(value ?? null);
  input.addEventListener("change", () => (input.dataset.touched = "1"));
  if (def.type === "boolean") {
    wrap.append(el("label", { for: id }, input, ` ${def.label || def.name}`));
  } else {
    wrap.append(label, input);
  }
  wrap.append(el("p", { class: "field-error", "data-for": `custom_attributes.${def.name}` }));
  return wrap;
}

/** Opens a listed contact as it is now, with its ETag: saving it then changes nothing
 * that someone else changed meanwhile (If-Match). */
async function openStored(listed) {
  const reply = await api("GET", agentPath(`/contacts/${encodeURIComponent(listed.id)}`));
  if (reply.status !== 200) {
    status(message(reply), true);
    if (reply.status === 404) await loadContacts();
    return;
  }
  openContact(reply.body.data, reply.etag);
}

function openContact(contact, etag = null) {
  state.editing = contact;
  state.editingEtag = etag;
  const form = $("contact-form");
  clearErrors(form);
  const verb = state.readOnly ? "View" : "Edit";
  $("contact-title").textContent = contact ? `${verb} ${contact.name || contact.external_id}` : "Add a contact";
  for (const field of ["external_id", "name", "email", "phonenumber"]) {
    $(`f-${field}`).value = contact ? contact[field] || "" : "";
  }
  $("f-tags").value = contact ? contact.tags.join(", ") : "";
  $("f-lists").value = contact ? contact.lists.join(", ") : "";
  for (const flag of ["optin", "incoming_blocked"]) {
    const value = contact ? contact[flag] : null;
    $(`f-${flag}`).value = value === true || value === false ? String(value) : "";
  }
  const source = { api: "through the API", csv: "by an import", manual: "by hand in the dashboard" }[contact && contact.source];
  $("contact-source").hidden = !source;
  $("contact-source").textContent = source ? `Added ${source}.` : "";
  $("stripe-list").replaceChildren(...(contact ? contact.stripe_accounts : []).map(stripeRow));
  const defs = state.attributes.filter((a) => !a.archived);
  $("attr-inputs").replaceChildren(
    ...(defs.length ? defs.map((d) => attributeInput(d, contact ? contact.custom_attributes[d.name] : undefined)) : [el("p", { text: "No custom attributes defined." })]),
  );
  $("contact-delete").hidden = !contact;
  for (const input of form.querySelectorAll("input, select")) input.disabled = state.readOnly;
  $("contact-cancel").textContent = state.readOnly ? "Close" : "Cancel";
  $("contact-dialog").showModal();
  $("f-external_id").focus();
}

function contactBody() {
  const body = {};
  const editing = state.editing;
  for (const field of ["external_id", "name", "email", "phonenumber"]) {
    const value = $(`f-${field}`).value.trim();
    if (value) body[field] = value;
    else if (editing && editing[field] && field !== "external_id") body[field] = null;
  }
  // Tags and lists replace the contact's set; sent when added with some, or changed.
  for (const field of ["tags", "lists"]) {
    const names = splitNames($(`f-${field}`).value);
    const before = editing ? editing[field] : [];
    if (names.join("\n") !== before.join("\n")) body[field] = names;
  }
  for (const flag of ["optin", "incoming_blocked"]) {
    const text = $(`f-${flag}`).value;
    const value = text === "" ? null : text === "true";
    if (value !== (editing ? editing[flag] : null)) body[flag] = value;
  }
  body.stripe_accounts = [...document.querySelectorAll(".stripe-row")]
    .map((row) => {
      const account = {};
      for (const input of row.querySelectorAll("input")) {
        if (input.value.trim()) account[input.dataset.key] = input.value.trim();
      }
      return account;
    })
    .filter((account) => Object.keys(account).length > 0);
  const attrs = {};
  for (const input of $("attr-inputs").querySelectorAll("input")) {
    const name = input.dataset.attr;
    const original = JSON.parse(input.dataset.original);
    if (!input.dataset.touched) {
      if (original !== null) attrs[name] = original;
      continue;
    }
    if (input.type === "checkbox") attrs[name] = input.checked;
    else if (input.value === "") attrs[name] = null;
    else if (input.dataset.type === "number") attrs[name] = Number(input.value);
    else attrs[name] = input.value;
  }
  body.custom_attributes = attrs;
  return body;
}

async function saveContact(event) {
  event.preventDefault();
  const form = $("contact-form");
  clearErrors(form);
  const body = contactBody();
  const editing = state.editing;
  const ifMatch = state.editingEtag ? { "If-Match": state.editingEtag } : {};
  const reply = editing
    ? await api("PATCH", agentPath(`/contacts/${encodeURIComponent(editing.id)}`), { data: body }, ifMatch)
    : // Adding never overwrites: an external id in use is reported on its field.
      await api("POST", agentPath("/contacts?on_duplicate=error"), { users: [body] });
  if (reply.status === 412) {
    showIssues(form, [], "Someone changed this contact after you opened it. Cancel and open it again to see the change; nothing was saved.");
    return;
  }
  if (reply.status !== 200) {
    showIssues(form, reply.body && reply.body.issues, message(reply));
    return;
  }
  $("contact-dialog").close();
  status(editing ? "Contact saved." : "Contact added.");
  await loadAttributes();
  await loadLabels();
  await loadContacts();
}

async function deleteContact() {
  const contact = state.editing;
  if (!contact) return;
  if (!confirm(`Delete ${contact.name || contact.external_id}? This cannot be undone.`)) return;
  const ifMatch = state.editingEtag ? { "If-Match": state.editingEtag } : {};
  const reply = await api("DELETE", agentPath(`/contacts/${encodeURIComponent(contact.id)}`), undefined, ifMatch);
  if (reply.status === 412) {
    showIssues($("contact-form"), [], "Someone changed this contact after you opened it. Cancel and open it again before deleting it; nothing was deleted.");
    return;
  }
  if (reply.status !== 200) {
    showIssues($("contact-form"), [], message(reply));
    return;
  }
  $("contact-dialog").close();
  state.selected.delete(contact.external_id);
  status("Contact deleted.");
  await loadLabels();
  await loadContacts();
}

// ---------------------------------------------------------------- tags and lists

async function loadLabels() {
  let tags;
  let lists;
  try {
    [tags, lists] = await Promise.all([api("GET", agentPath("/tags")), api("GET", agentPath("/lists"))]);
  } catch (err) {
    status(`Cannot reach the server: ${err.message}`, true);
    return;
  }
  const failed = [tags, lists].find((reply) => reply.status !== 200);
  if (failed) status(problem(failed), true);
  state.tags = tags.status === 200 ? tags.body.data : [];
  state.lists = lists.status === 200 ? lists.body.data : [];
  renderLabelControls();
}

function labelOption(label) {
  return el("option", { value: label.name, text: `${label.name} (${label.count})` });
}

function renderLabelControls() {
  const active = new Set(state.filterTags.map((t) => t.toLowerCase()));
  $("tag-filter").replaceChildren(
    el("option", { value: "", text: state.tags.length ? "Add a tag…" : "No tags yet" }),
    ...state.tags.filter((t) => !active.has(t.name.toLowerCase())).map(labelOption),
  );
  $("tag-filter").value = "";
  $("tag-chips").replaceChildren(
    ...state.filterTags.map((name) =>
      el(
        "li",
        {},
        el("button", {
          type: "button",
          class: "chip removable",
          text: name,
          title: `Remove the filter on tag ${name}`,
          "aria-label": `Remove tag filter ${name}`,
          onclick: () => removeTagFilter(name),
        }),
      ),
    ),
  );
  const lists = [...state.lists];
  // A list filtered by keeps its option even if it has gone meanwhile.
  if (state.filterList && !lists.some((l) => l.name === state.filterList)) lists.push({ name: state.filterList, count: 0 });
  $("list-filter").replaceChildren(el("option", { value: "", text: "All contacts" }), ...lists.map(labelOption));
  $("list-filter").value = state.filterList || "";
  const target = $("list-target").value;
  $("list-target").replaceChildren(
    el("option", { value: "", text: state.lists.length ? "Choose a list…" : "No lists yet" }),
    ...state.lists.map(labelOption),
  );
  $("list-target").value = state.lists.some((l) => l.name === target) ? target : "";
}

function filtersChanged() {
  renderLabelControls();
  resetPages();
  loadContacts();
}

function addTagFilter(name) {
  if (!name || state.filterTags.some((t) => t.toLowerCase() === name.toLowerCase())) return;
  state.filterTags.push(name);
  filtersChanged();
}

function removeTagFilter(name) {
  state.filterTags = state.filterTags.filter((t) => t !== name);
  filtersChanged();
  $("tag-filter").focus();
}

function openListDialog() {
  const form = $("list-form");
  form.reset();
  clearErrors(form);
  $("list-dialog").showModal();
  $("list-name").focus();
}

async function createList(event) {
  event.preventDefault();
  const form = $("list-form");
  clearErrors(form);
  const name = $("list-name").value.trim();
  let reply;
  try {
    reply = await api("POST", agentPath("/lists"), { name });
  } catch (err) {
    showIssues(form, [], `Cannot reach the server: ${err.message}`);
    return;
  }
  if (reply.status !== 200) {
    const issues = reply.body && reply.body.issues;
    showIssues(form, issues && issues.length ? issues : [{ field: "name", message: message(reply) }], message(reply));
    return;
  }
  $("list-dialog").close();
  await loadLabels();
  $("list-target").value = reply.body.data.name;
  status(`List ${reply.body.data.name} created.`);
}

/** Adds the selected contacts (`selected`) or every contact the current search and
 * filters match to the list chosen in "Add to list". */
async function addToList(selected) {
  const list = $("list-target").value;
  if (!list) {
    status("Choose a list to add the contacts to.", true);
    $("list-target").focus();
    return;
  }
  const path = agentPath(`/lists/${encodeURIComponent(list)}/contacts`);
  const bodies = [];
  let asked;
  if (selected) {
    const ids = [...state.selected];
    if (!ids.length) return;
    for (let i = 0; i < ids.length; i += LIST_BATCH) bodies.push({ external_ids: ids.slice(i, i + LIST_BATCH) });
    asked = ids.length;
  } else {
    const query = currentQuery();
    const many = state.total === null ? "every" : `all ${state.total}`;
    const what = query.q || query.filter ? `${many} matching contact${state.total === 1 ? "" : "s"}` : `${many} contact${state.total === 1 ? "" : "s"}`;
    if (!confirm(`Add ${what} to the list ${list}?`)) return;
    bodies.push({ query });
  }
  const buttons = [$("add-selected"), $("add-matching")];
  for (const b of buttons) b.disabled = true;
  status(`Adding to ${list}…`);
  let added = 0;
  try {
    for (const body of bodies) {
      const reply = await api("POST", path, body);
      if (reply.status === 401) return signOut();
      if (reply.status === 404) {
        status(`The list ${list} no longer exists.`, true);
        await loadLabels();
        return;
      }
      if (reply.status !== 200) {
        status(added ? `${problem(reply)} (${added} added before that)` : problem(reply), true);
        return;
      }
      added += reply.body.data.added;
    }
  } catch (err) {
    status(`Cannot reach the server: ${err.message}`, true);
    return;
  } finally {
    buttons[1].disabled = false;
    renderSelection();
  }
  const already = asked !== undefined && asked > added ? ` (${asked - added} already in it or not found)` : "";
  status(`${added} contact${added === 1 ? "" : "s"} added to ${list}${already}.`);
  await loadLabels();
  await loadContacts();
}

// ---------------------------------------------------------------- attributes

async function loadAttributes() {
  const reply = await api("GET", agentPath("/custom-attributes"));
  state.attributes = reply.status === 200 ? reply.body.data : [];
  renderColumnChooser();
  renderAttributes();
}

function renderAttributes() {
  $("attributes-body").replaceChildren(
    ...state.attributes.map((a) =>
      el(
        "tr",
        {},
        el("td", { text: a.name }),
        el("td", { text: a.label || "" }),
        el("td", { text: a.type }),
        el("td", { text: a.description || "" }),
        el("td", { text: a.archived ? "archived" : "active" }),
        el(
          "td",
          {},
          el("button", {
            type: "button",
            class: "writes",
            text: a.archived ? "Restore" : "Archive",
            "aria-label": `${a.archived ? "Restore" : "Archive"} ${a.name}`,
            onclick: () => setArchived(a, !a.archived),
          }),
        ),
      ),
    ),
  );
}

async function setArchived(attribute, archived) {
  const reply = await api("PUT", agentPath(`/custom-attributes/${encodeURIComponent(attribute.name)}`), { archived });
  if (reply.status !== 200) return status(message(reply), true);
  status(`${attribute.name} ${archived ? "archived" : "restored"}.`);
  await loadAttributes();
}

async function defineAttribute(event) {
  event.preventDefault();
  const form = $("attribute-form");
  clearErrors(form);
  const body = { name: $("attr-name").value.trim(), type: $("attr-type").value };
  if ($("attr-label").value.trim()) body.label = $("attr-label").value.trim();
  if ($("attr-description").value.trim()) body.description = $("attr-description").value.trim();
  const reply = await api("POST", agentPath("/custom-attributes"), body);
  if (reply.status !== 200) {
    const issues = reply.body && reply.body.issues;
    showIssues(form, issues && issues.length ? issues : [{ field: "name", message: message(reply) }], message(reply));
    return;
  }
  form.reset();
  status(`Attribute ${body.name} defined.`);
  await loadAttributes();
}

// ---------------------------------------------------------------- webhooks

function when(seconds) {
  return seconds == null ? "—" : new Date(seconds * 1000).toLocaleString();
}

async function loadWebhooks() {
  const reply = await api("GET", "/api/v1/webhooks");
  if (reply.status !== 200) return status(message(reply), true);
  // This agent's endpoints and those taking every agent's events.
  state.webhooks = reply.body.data.filter((h) => h.chatbot_id === null || h.chatbot_id === state.agent);
  renderWebhooks();
}

function renderWebhooks() {
  $("webhooks-empty").hidden = state.webhooks.length > 0;
  $("webhooks-body").replaceChildren(
    ...state.webhooks.map((h) =>
      el(
        "tr",
        {},
        el("td", { text: h.url, title: h.url }),
        el("td", { text: h.events.join(", ") }),
        el("td", { text: h.chatbot_id === null ? "every agent" : h.chatbot_id }),
        el("td", { text: h.active ? "active" : `inactive${h.disabled_reason ? `: ${h.disabled_reason}` : ""}`, title: h.disabled_reason || "" }),
        el(
          "td",
          {},
          el("button", { type: "button", text: "Deliveries", "aria-label": `Deliveries of ${h.url}`, onclick: () => showDeliveries(h) }),
          " ",
          el("button", {
            type: "button",
            class: "danger writes",
            text: "Delete",
            "aria-label": `Delete ${h.url}`,
            onclick: () => deleteWebhook(h),
          }),
        ),
      ),
    ),
  );
}

async function addWebhook(event) {
  event.preventDefault();
  const form = $("webhook-form");
  clearErrors(form);
  $("webhook-secret").hidden = true;
  const events = [...form.querySelectorAll("[data-event]:checked")].map((box) => box.dataset.event);
  const body = { url: $("wh-url").value.trim(), events };
  if (!$("wh-all-agents").checked) body.chatbot_id = state.agent;
  else body.chatbot_id = null;
  const reply = await api("POST", "/api/v1/webhooks", body);
  if (reply.status !== 200) {
    showIssues(form, reply.body && reply.body.issues, message(reply));
    return;
  }
  form.reset();
  $("webhook-secret-value").textContent = reply.body.data.secret;
  $("webhook-secret").hidden = false;
  status(`Endpoint ${reply.body.data.url} added.`);
  await loadWebhooks();
}

async function deleteWebhook(hook) {
  if (!confirm(`Delete the endpoint ${hook.url}? Its queued events and deliveries go with it.`)) return;
  const reply = await api("DELETE", `/api/v1/webhooks/${encodeURIComponent(hook.id)}`);
  if (reply.status !== 200) return status(message(reply), true);
  status(`Endpoint ${hook.url} deleted.`);
  if (state.deliveriesOf === hook.id) $("deliveries").hidden = true;
  await loadWebhooks();
}

function attemptText(delivery) {
  const last = delivery.attempts[delivery.attempts.length - 1];
  if (!last) return "—";
  const answer = last.response_code == null ? "no answer" : `answered ${last.response_code}`;
  return `${when(last.at)}: ${answer}${last.error ? ` (${last.error})` : ""}`;
}

async function showDeliveries(hook) {
  state.deliveriesOf = hook.id;
  const reply = await api("GET", `/api/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries`);
  if (reply.status !== 200) return status(message(reply), true);
  $("deliveries-title").textContent = `Deliveries to ${hook.url}`;
  $("deliveries").hidden = false;
  const deliveries = reply.body.data;
  $("deliveries-empty").hidden = deliveries.length > 0;
  $("deliveries-body").replaceChildren(
    ...deliveries.map((d) =>
      el(
        "tr",
        {},
        el("td", { text: d.id }),
        el("td", { text: when(d.created_at) }),
        el("td", { text: String(d.event_ids.length), title: d.event_ids.join(", ") }),
        el("td", { text: d.status }),
        el("td", { text: attemptText(d), title: (d.attempts[d.attempts.length - 1] || {}).response_body || "" }),
        el("td", { text: when(d.next_attempt) }),
        el(
          "td",
          {},
          el("button", {
            type: "button",
            class: "writes",
            text: "Retry",
            "aria-label": `Retry delivery ${d.id}`,
            onclick: () => retryDelivery(hook, d),
          }),
        ),
      ),
    ),
  );
}

async function retryDelivery(hook, delivery) {
  status(`Sending delivery ${delivery.id} again…`);
  const path = `/api/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries/${encodeURIComponent(delivery.id)}/retry`;
  const reply = await api("POST", path);
  if (reply.status !== 200) return status(message(reply), true);
  status(`Delivery ${delivery.id} sent again: ${attemptText(reply.body.data)}.`);
  await showDeliveries(hook);
}

// ---------------------------------------------------------------- import and export

const importState = { file: null, format: null, report: null };

function formatOf(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith(".csv")) return ["csv", "text/csv"];
  if (name.endsWith(".ndjson") || name.endsWith(".jsonl")) return ["ndjson", "application/x-ndjson"];
  if (name.endsWith(".json")) return ["json", "application/json"];
  return [null, null];
}

/** Parses the start of a CSV (RFC 4180: quotes, doubled quotes, newlines in cells). */
function parseCsv(text, maxRows) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length && rows.length < maxRows; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(cell);
      cell = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
    } else cell += c;
  }
  if ((cell || row.length) && rows.length < maxRows) rows.push([...row, cell]);
  if (rows[0] && rows[0][0]) rows[0][0] = rows[0][0].replace(/^\uFEFF/, "");
  return rows;
}

const CORE_FIELDS = ["external_id", "name", "email", "phonenumber", "stripe_accounts", "tags", "lists", "optin", "incoming_blocked"];

function describeColumn(column) {
  const lower = column.toLowerCase();
  if (CORE_FIELDS.includes(lower)) return [`${column} → ${lower}`, false];
  if (["id", "created_at", "updated_at", "source"].includes(lower)) return [`${column} → ignored`, false];
  const bare = column.replace(/^custom_attributes\./, "");
  const [name, type] = bare.split(":");
  const def = state.attributes.find((a) => a.name === name);
  if (def) return [`${column} → attribute ${name} (${def.type})`, false];
  return [`${column} → new attribute ${name}${type ? ` (${type})` : ""}`, true];
}

async function chooseFile(file) {
  const [format, contentType] = formatOf(file);
  importState.file = file;
  importState.format = contentType;
  $("import-report").hidden = true;
  $("import-errors").hidden = true;
  $("import-preview").hidden = false;
  if (!format) {
    $("import-file-name").textContent = `${file.name}: not a .csv, .json or .ndjson file.`;
    $("import-run").disabled = true;
    return;
  }
  $("import-file-name").textContent = `${file.name} (${(file.size / 1e6).toFixed(1)} MB, ${format.toUpperCase()})`;
  const head = await file.slice(0, 256 * 1024).text();
  let header = [];
  let rows = [];
  if (format === "csv") {
    const parsed = parseCsv(head, 6);
    header = parsed[0] || [];
    rows = parsed.slice(1);
  } else {
    let objects = [];
    try {
      if (format === "ndjson") {
        objects = head.split(/\r?\n/).filter((l) => l.trim()).slice(0, 5).map((l) => JSON.parse(l));
      } else if (file.size <= 256 * 1024) {
        objects = JSON.parse(head).slice(0, 5);
      }
    } catch {
      objects = [];
    }
    const keys = new Set();
    for (const o of objects) {
      for (const k of Object.keys(o || {})) if (k !== "custom_attributes") keys.add(k);
      for (const k of Object.keys((o && o.custom_attributes) || {})) keys.add(`custom_attributes.${k}`);
    }
    header = [...keys];
    rows = objects.map((o) =>
      header.map((k) => {
        const v = k.startsWith("custom_attributes.") ? (o.custom_attributes || {})[k.slice(18)] : o[k];
        return v === undefined || v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
      }),
    );
  }
  $("import-mapping").replaceChildren(
    ...header.map((column) => {
      const [text, isNew] = describeColumn(column);
      return el("li", { class: isNew ? "new" : "", text });
    }),
  );
  const table = $("import-rows");
  table.tHead.replaceChildren(el("tr", {}, ...header.map((h) => el("th", { scope: "col", text: h }))));
  table.tBodies[0].replaceChildren(...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", { text: c, title: c })))));
  $("import-run").disabled = false;
}

function runImport() {
  const file = importState.file;
  if (!file) return;
  $("import-run").disabled = true;
  const progress = $("import-progress");
  progress.hidden = false;
  progress.value = 0;
  status("Uploading…");
  const xhr = new XMLHttpRequest();
  xhr.open("POST", agentPath("/contacts/import"));
  xhr.setRequestHeader("Authorization", `Bearer ${state.key}`);
  xhr.setRequestHeader("Content-Type", importState.format);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) progress.value = Math.round((e.loaded / e.total) * 90);
  };
  xhr.upload.onload = () => {
    progress.removeAttribute("value"); // indeterminate while the server writes
    status("Importing…");
  };
  xhr.onerror = () => {
    progress.hidden = true;
    status("The upload failed; check the connection and try again.", true);
    $("import-run").disabled = false;
  };
  xhr.onload = async () => {
    progress.hidden = true;
    let body = null;
    try {
      body = JSON.parse(xhr.responseText);
    } catch {
      body = null;
    }
    if (xhr.status !== 200) {
      const issue = body && body.issues && body.issues[0];
      status(issue ? `${body.message}: ${issue.message}` : (body && body.message) || `The server answered ${xhr.status}.`, true);
      $("import-run").disabled = false;
      return;
    }
    status("Import finished.");
    showReport(body.data);
    await loadAttributes();
    await loadLabels();
    resetPages();
    await loadContacts();
  };
  xhr.send(file);
}

function showReport(report) {
  importState.report = report;
  const box = $("import-report");
  box.hidden = false;
  box.replaceChildren(
    el("p", {
      text: `${report.rows} rows: ${report.created} created, ${report.updated} updated, ${report.skipped} skipped, ${report.failed} failed.`,
    }),
    ...(report.errors.length
      ? [
          el(
            "ul",
            {},
            ...report.errors.slice(0, 10).map((e) =>
              el("li", { text: `Row ${e.row}${e.external_id ? ` (${e.external_id})` : ""}: ${e.field ? `${e.field} ` : ""}${e.message}` }),
            ),
          ),
        ]
      : []),
  );
  $("import-errors").hidden = report.errors.length === 0;
}

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function download(name, blob) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function downloadErrors() {
  const report = importState.report;
  if (!report) return;
  const lines = [["row", "external_id", "field", "message"].join(",")];
  for (const e of report.errors) lines.push([e.row, e.external_id, e.field, e.message].map(csvCell).join(","));
  download("import-errors.csv", new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
}

async function exportView() {
  status("Exporting…");
  try {
    const response = await fetch(`${agentPath("/contacts/export")}?${listQuery({ format: "csv" })}`, {
      headers: { Authorization: `Bearer ${state.key}` },
    });
    if (!response.ok) {
      status(`Export failed (${response.status}).`, true);
      return;
    }
    download(`contacts-${state.agent}.csv`, await response.blob());
    status("Export downloaded.");
  } catch (err) {
    status(`Export failed: ${err.message}`, true);
  }
}

// ---------------------------------------------------------------- wiring

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function wire() {
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = $("signin-key").value.trim();
    $("signin-error").textContent = "";
    if (!key) {
      $("signin-error").textContent = "Enter an API key.";
      return;
    }
    const problem = await signIn(key);
    if (problem) {
      $("signin-error").textContent = problem;
      $("signin-key").setAttribute("aria-invalid", "true");
      $("signin-key").focus();
    } else {
      $("signin-key").removeAttribute("aria-invalid");
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("agent-picker").addEventListener("change", (e) => {
    state.agent = e.target.value;
    openAgent();
  });
  $("tab-contacts").addEventListener("click", () => {
    show("view-contacts");
    loadLabels();
    loadContacts();
  });
  $("tab-attributes").addEventListener("click", () => {
    show("view-attributes");
    loadAttributes();
  });
  $("tab-webhooks").addEventListener("click", () => {
    show("view-webhooks");
    $("webhook-secret").hidden = true;
    $("deliveries").hidden = true;
    // An agent key's endpoints are always its agent's.
    $("wh-every-agent").hidden = !state.admin;
    loadWebhooks();
  });
  $("webhook-form").addEventListener("submit", addWebhook);
  $("search").addEventListener(
    "input",
    debounce((e) => {
      state.q = e.target.value.trim();
      resetPages();
      loadContacts();
    }, 300),
  );
  $("tag-filter").addEventListener("change", (e) => addTagFilter(e.target.value));
  $("list-filter").addEventListener("change", (e) => {
    state.filterList = e.target.value || null;
    filtersChanged();
  });
  $("selection-clear").addEventListener("click", () => {
    state.selected.clear();
    for (const box of $("contacts-body").querySelectorAll("td.select input")) box.checked = false;
    renderSelection();
  });
  $("add-selected").addEventListener("click", () => addToList(true));
  $("add-matching").addEventListener("click", () => addToList(false));
  $("list-new").addEventListener("click", openListDialog);
  $("list-form").addEventListener("submit", createList);
  $("list-cancel").addEventListener("click", () => $("list-dialog").close());
  $("per-page").addEventListener("change", (e) => {
    state.perPage = Number(e.target.value);
    resetPages();
    loadContacts();
  });
  $("next").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    loadContacts();
  });
  $("prev").addEventListener("click", () => {
    if (state.page === 0) return;
    state.page -= 1;
    loadContacts();
  });
  $("add").addEventListener("click", () => openContact(null));
  $("contact-form").addEventListener("submit", saveContact);
  $("contact-cancel").addEventListener("click", () => $("contact-dialog").close());
  $("contact-delete").addEventListener("click", deleteContact);
  $("stripe-add").addEventListener("click", () => {
    const row = stripeRow();
    $("stripe-list").append(row);
    row.querySelector("input").focus();
  });
  $("attribute-form").addEventListener("submit", defineAttribute);
  $("export").addEventListener("click", exportView);
  $("import-open").addEventListener("click", () => {
    importState.file = null;
    $("import-file").value = "";
    $("import-preview").hidden = true;
    $("import-report").hidden = true;
    $("import-errors").hidden = true;
    $("import-run").disabled = true;
    $("import-dialog").showModal();
  });
  $("import-close").addEventListener("click", () => $("import-dialog").close());
  $("import-file").addEventListener("change", (e) => e.target.files[0] && chooseFile(e.target.files[0]));
  $("import-run").addEventListener("click", runImport);
  $("import-errors").addEventListener("click", downloadErrors);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) chooseFile(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      $("import-file").click();
    }
  });
}

async function start() {
  wire();
  if (state.key) {
    const problem = await signIn(state.key);
    if (!problem) return;
    sessionStorage.removeItem(KEY);
  }
  show("view-signin");
  $("signin-key").focus();
}

start();
