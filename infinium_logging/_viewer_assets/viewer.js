// The trace viewer of the local collector: a list that follows new traces, and one trace's detail.
// Every value from a trace reaches the page through text nodes (put/el below), never as markup;
// the Content-Security-Policy's Trusted Types rule makes markup sinks refuse strings anyway.
"use strict";

(function () {
  const PAGE = 50;
  const POLL_MS = 1000;
  // Direction overrides and isolates, marks, zero-width and other invisible controls: shown as
  // visible tokens so that they can neither reorder nor hide what is around them.
  const CONTROLS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/;
  const CONTROLS_ALL = new RegExp(CONTROLS.source, "g");

  const $ = (id) => document.getElementById(id);
  const state = {
    q: "", agent: "", errors: false,
    before: null, after: null, offset: 0,
    rows: [], total: 0, newest: 0, shownNewest: 0, current: -1, seen: new Set(),
  };

  // --- building the page from data, as text only -------------------------------------------

  function put(parent, value) {
    const text = value === null || value === undefined ? "" : String(value);
    if (!CONTROLS.test(text)) {
      parent.appendChild(document.createTextNode(text));
      return parent;
    }
    let last = 0;
    for (const match of text.matchAll(CONTROLS_ALL)) {
      parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      const code = match[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
      const token = document.createElement("span");
      token.className = "ctl";
      token.title = "invisible control character";
      token.textContent = "U+" + code;
      parent.appendChild(token);
      last = match.index + match[0].length;
    }
    parent.appendChild(document.createTextNode(text.slice(last)));
    return parent;
  }

  // el("td", {className: "num"}, "12", child): properties are set as DOM properties, children
  // are nodes or text.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null) continue;
        if (key === "dataset") Object.assign(node.dataset, value);
        else node[key] = value;
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (child instanceof Node) node.appendChild(child);
      else put(node, child);
    }
    return node;
  }

  // For attributes such as title, where a token element cannot go.
  const plain = (value) => String(value ?? "").replace(CONTROLS_ALL, (c) => "U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0"));

  const data = (tag, value, props) => el(tag, Object.assign({ className: "data" }, props), value);

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // --- formatting ---------------------------------------------------------------------------

  const nf = new Intl.NumberFormat();
  const num = (n) => (typeof n === "number" && isFinite(n) ? nf.format(n) : "–");

  function seconds(s) {
    if (typeof s !== "number" || !isFinite(s)) return "–";
    if (s > 0 && s < 0.001) return "< 1 ms";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    const m = Math.floor(s / 60);
    return m + " min " + Math.round(s - m * 60) + " s";
  }
  // Whole milliseconds on the wire: 0 is a step that took less than one.
  const millis = (ms) => (ms === 0 ? "< 1 ms" : typeof ms === "number" ? seconds(ms / 1000) : "–");

  function when(iso) {
    const date = new Date(iso);
    if (isNaN(date)) return String(iso || "");
    const today = new Date().toDateString() === date.toDateString();
    return today
      ? date.toLocaleTimeString()
      : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
  }

  function label(key) {
    const text = String(key).replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function shown(value) {
    if (Array.isArray(value)) {
      return value.every((v) => typeof v !== "object") ? value.join(", ") : JSON.stringify(value, null, 2);
    }
    if (value !== null && typeof value === "object") return JSON.stringify(value, null, 2);
    if (typeof value === "boolean") return value ? "yes" : "no";
    return String(value);
  }

  // --- talking to the collector ---------------------------------------------------------------

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  function live(ok) {
    const badge = $("live");
    badge.className = "live " + (ok ? "on" : "off");
    badge.textContent = ok ? "live" : "collector unreachable";
  }

  // --- the list -----------------------------------------------------------------------------

  function listQuery() {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (state.q) params.set("q", state.q);
    if (state.agent) params.set("agent", state.agent);
    if (state.errors) params.set("errors", "1");
    if (state.before !== null) params.set("before", String(state.before));
    if (state.after !== null) params.set("after", String(state.after));
    return "/viewer/api/traces?" + params.toString();
  }

  async function loadList() {
    let page;
    try {
      page = await getJSON(listQuery());
      live(true);
    } catch (error) {
      live(false);
      return;
    }
    if (state.after !== null && page.traces.length < PAGE) {
      // Paged back up to the top: the newest page is the live one.
      state.after = null;
      state.offset = 0;
      return loadList();
    }
    state.rows = page.traces;
    state.total = page.total;
    state.newest = page.newest;
    state.shownNewest = page.newest;
    renderAgents(page.agents);
    renderRows();
    $("fresh").classList.add("hidden");
  }

  function renderAgents(agents) {
    const select = $("agent");
    const have = Array.from(select.options).map((o) => o.value);
    for (const agent of agents) {
      if (!have.includes(agent)) select.appendChild(el("option", { value: agent }, agent));
    }
  }

  function renderRows() {
    const body = $("rows");
    // New traces shift the rows down: keep the one the reader is on, and its focus.
    const was = state.rows.length && state.current >= 0 ? body.rows[state.current] : null;
    const keepId = was ? was.dataset.traceId : null;
    const hadFocus = was ? was.contains(document.activeElement) : false;
    const firstLoad = state.seen.size === 0;
    clear(body);
    state.rows.forEach((trace, index) => {
      const href = "#/trace/" + encodeURIComponent(trace.trace_id);
      const mark = trace.errors > 0
        ? el("span", { className: "errmark", title: trace.errors + " error(s)" }, "!")
        : el("span", { className: "okmark", title: "no errors" });
      if (trace.errors > 0) mark.setAttribute("aria-label", trace.errors + " errors");
      const row = el(
        "tr",
        { dataset: { traceId: trace.trace_id, index: String(index) } },
        el("td", { className: "c-err" }, mark),
        el("td", { className: "c-name" }, data("a", trace.name || "(unnamed)", { href: href, title: plain(trace.name) })),
        el("td", { className: "c-agent mono", title: trace.agent_id }, trace.agent_id.slice(0, 8)),
        el("td", { className: "c-time", title: trace.received_at }, when(trace.received_at)),
        el("td", { className: "num" }, seconds(trace.duration)),
        el("td", { className: "num" }, num(trace.steps)),
        el("td", { className: "num" }, num(trace.tokens)),
        el("td", { className: "c-sum" }, seconds(trace.duration) + " · " + num(trace.steps) + " steps"),
      );
      row.addEventListener("click", (event) => {
        if (event.target.closest("a")) return;
        location.hash = href;
      });
      if (!firstLoad && !state.seen.has(trace.trace_id)) row.classList.add("arrived");
      state.seen.add(trace.trace_id);
      body.appendChild(row);
    });
    if (keepId) state.current = state.rows.findIndex((t) => t.trace_id === keepId);
    if (state.current >= state.rows.length) state.current = state.rows.length - 1;
    highlight(hadFocus);
    const filtered = state.q || state.agent || state.errors;
    $("empty").textContent = filtered
      ? "No trace matches these filters."
      : "No traces yet. Point an application at this collector and they appear here as they arrive.";
    $("empty").classList.toggle("hidden", state.rows.length > 0);
    const first = state.rows.length ? state.offset + 1 : 0;
    $("range").textContent = first + "–" + (state.offset + state.rows.length) + " of " + num(state.total);
    $("newer").disabled = state.offset === 0;
    $("older").disabled = state.offset + state.rows.length >= state.total;
  }

  function highlight(focus) {
    const rows = $("rows").rows;
    for (const row of rows) row.classList.remove("current");
    if (state.current < 0 || !rows[state.current]) return;
    rows[state.current].classList.add("current");
    if (focus) {
      const link = rows[state.current].querySelector("a");
      link.focus();
      rows[state.current].scrollIntoView({ block: "nearest" });
    }
  }

  function firstPage() {
    state.before = null;
    state.after = null;
    state.offset = 0;
    state.current = -1;
    return loadList();
  }

  function older() {
    if ($("older").disabled || !state.rows.length) return;
    state.before = state.rows[state.rows.length - 1].seq;
    state.after = null;
    state.offset += state.rows.length;
    state.current = -1;
    loadList();
  }

  function newer() {
    if ($("newer").disabled || !state.rows.length) return;
    state.after = state.rows[0].seq;
    state.before = null;
    state.offset = Math.max(0, state.offset - PAGE);
    state.current = -1;
    loadList();
  }

  async function poll() {
    if (document.hidden) return; // a background tab asks nothing; it catches up when shown
    let newest;
    try {
      newest = (await getJSON("/viewer/api/newest")).newest;
      live(true);
    } catch (error) {
      live(false);
      return;
    }
    if (newest === state.shownNewest) return;
    if (state.offset === 0 && state.before === null && state.after === null) {
      await loadList();
    } else {
      $("fresh").classList.remove("hidden");
    }
  }

  // --- one trace ------------------------------------------------------------------------------

  function card(title, ...children) {
    return el("section", { className: "card" }, el("h2", null, title), ...children);
  }

  function kv(entries) {
    const list = el("dl", { className: "kv" });
    for (const [key, value] of entries) {
      if (value === undefined || value === null || value === "") continue;
      list.appendChild(el("dt", null, label(key)));
      list.appendChild(data("dd", shown(value)));
    }
    return list.childElementCount ? list : null;
  }

  function bulletList(items) {
    return el("ul", { className: "plain" }, ...items.map((item) => data("li", shown(item))));
  }

  // An event logged at ERROR or above is a step whose action says so, with or without an
  // exception attached.
  const failed = (step) =>
    Boolean(step.error || (step.tool_call && step.tool_call.error) || step.action === "error");

  function stepKind(step) {
    if (failed(step)) return "error";
    if (step.llm_call) return "llm";
    if (step.tool_call) return "tool";
    return "step";
  }

  function marks(step) {
    const out = el("span", { className: "marks" });
    if (step.llm_call) out.appendChild(el("span", { className: "mark mark-llm", title: "LLM call" }, "LLM"));
    if (step.tool_call) out.appendChild(el("span", { className: "mark mark-tool", title: "tool call" }, "TOOL"));
    if (failed(step)) {
      out.appendChild(el("span", { className: "mark mark-error", title: "error" }, "ERROR"));
    }
    if (!out.childElementCount) out.appendChild(el("span", { className: "mark mark-step" }, "STEP"));
    return out;
  }

  function errorBlock(error, where) {
    return el(
      "div",
      { className: "error-item" },
      el("div", null, data("span", error.error_type, { className: "data etype" }), where ? el("span", { className: "where" }, "  · " + where) : null),
      data("div", error.message),
      kv([
        ["error_code", error.error_code],
        ["recoverable", error.recoverable],
        ["retry_count", error.retry_count || null],
      ]),
      error.stack_trace ? data("pre", error.stack_trace, { className: "data stack" }) : null,
    );
  }

  function timeline(steps, durationSeconds) {
    const total = Math.max(
      steps.reduce((sum, s) => sum + (s.duration_ms || 0), 0),
      (durationSeconds || 0) * 1000,
    );
    const list = el("ol", { className: "timeline" });
    let start = 0;
    for (const step of steps) {
      const kind = stepKind(step);
      const ms = step.duration_ms || 0;
      const bar = el("span", { className: "b" });
      if (total > 0) {
        bar.style.left = ((start / total) * 100).toFixed(3) + "%";
        bar.style.width = ((ms / total) * 100).toFixed(3) + "%";
      } else {
        bar.style.left = "0";
        bar.style.width = "0";
      }
      start += ms;
      const summary = el(
        "summary",
        null,
        el("span", { className: "n" }, String(step.step_number)),
        marks(step),
        // The message logged is what tells one step from the next; the action is mostly one of a few kinds.
        data("span", step.description || step.action, { className: "data action", title: plain(step.action) }),
        el("span", { className: "track", title: millis(step.duration_ms) }, bar),
        el("span", { className: "dur" }, millis(step.duration_ms)),
      );
      const body = el("div", { className: "step-body" });
      body.appendChild(kv([["action", step.action], ["description", step.description]]) || el("span"));
      if (step.input_preview !== undefined) body.append(el("h3", { className: "sub" }, "Input"), data("pre", step.input_preview));
      if (step.output_preview !== undefined) body.append(el("h3", { className: "sub" }, "Output"), data("pre", step.output_preview));
      if (step.llm_call) body.append(el("h3", { className: "sub" }, "LLM call"), kv(Object.entries(step.llm_call)));
      if (step.tool_call) {
        const { error, ...call } = step.tool_call;
        body.append(el("h3", { className: "sub" }, "Tool call"), kv(Object.entries(call)));
        if (error) body.append(errorBlock(error, "tool " + (call.tool_name || "")));
      }
      if (step.error) body.append(el("h3", { className: "sub" }, "Error"), errorBlock(step.error));
      if (step.metadata) body.append(el("h3", { className: "sub" }, "Metadata"), kv(Object.entries(step.metadata)));
      list.appendChild(el("li", { className: "kind-" + kind }, el("details", null, summary, body)));
    }
    return list;
  }

  function usageByModel(task) {
    const usage = task.llm_usage || {};
    const calls = usage.calls && usage.calls.length
      ? usage.calls
      : (task.steps || []).filter((s) => s.llm_call).map((s) => s.llm_call);
    const models = new Map();
    for (const call of calls) {
      const key = call.model + "\u0000" + (call.provider || "");
      const row = models.get(key) || { model: call.model, provider: call.provider, calls: 0, prompt: 0, completion: 0 };
      row.calls += 1;
      row.prompt += call.prompt_tokens || 0;
      row.completion += call.completion_tokens || 0;
      models.set(key, row);
    }
    if (!models.size && usage.model) {
      models.set(usage.model, {
        model: usage.model, provider: usage.provider, calls: usage.api_calls_count,
        prompt: usage.prompt_tokens, completion: usage.completion_tokens,
      });
    }
    const rows = Array.from(models.values());
    if (rows.length === 1 && typeof usage.estimated_cost_usd === "number") rows[0].cost = usage.estimated_cost_usd;
    return { rows, usage };
  }

  const usd = (n) => (typeof n === "number" ? "$" + n.toFixed(n < 0.01 ? 5 : 4) : "–");

  function usageCard(task) {
    const { rows, usage } = usageByModel(task);
    if (!rows.length && !task.llm_usage) return null;
    const head = el("tr", null, ...["Model", "Calls", "Prompt tokens", "Completion tokens", "Cost"].map((h) => el("th", { scope: "col" }, h)));
    const body = el("tbody", null, ...rows.map((r) => el(
      "tr",
      null,
      el("td", null, data("span", r.model), r.provider ? data("span", " · " + r.provider, { className: "data where" }) : null),
      el("td", null, num(r.calls)),
      el("td", null, num(r.prompt)),
      el("td", null, num(r.completion)),
      el("td", null, usd(r.cost)),
    )));
    const sum = (key) => rows.reduce((a, r) => a + (r[key] || 0), 0);
    const foot = el("tfoot", null, el(
      "tr",
      null,
      el("td", null, "Total"),
      el("td", null, num(usage.api_calls_count ?? sum("calls"))),
      el("td", null, num(usage.prompt_tokens ?? sum("prompt"))),
      el("td", null, num(usage.completion_tokens ?? sum("completion"))),
      el("td", null, usd(usage.estimated_cost_usd)),
    ));
    const table = el("table", { className: "usage" }, el("thead", null, head), body, foot);
    return card("LLM usage", el("div", { className: "scroll-x" }, table));
  }

  function allErrors(task) {
    const found = (task.errors || []).map((e) => [e, "trace"]);
    for (const step of task.steps || []) {
      if (step.error) found.push([step.error, "step " + step.step_number + " · " + step.action]);
      if (step.tool_call && step.tool_call.error) found.push([step.tool_call.error, "step " + step.step_number + " · tool " + step.tool_call.tool_name]);
    }
    for (const e of (task.general && task.general.errors_encountered) || []) found.push([e, "general"]);
    return found;
  }

  const SECTIONS = ["time_tracking", "customer", "support", "sales", "marketing", "content", "research", "project", "development", "executive", "general"];

  function renderTrace(item) {
    const task = item.trace;
    const view = $("trace-view");
    clear(view);
    const env = task.environment || {};
    const tags = Object.assign({}, env.custom_tags || {});
    const truncated = tags.truncated === "true";
    const cut = tags.truncated_fields;
    const errors = allErrors(task);
    const usage = usageByModel(task);
    const tokens = item.tokens;

    view.appendChild(el("a", { className: "back", href: "#/" }, "← All traces"));
    view.appendChild(el(
      "header",
      { className: "trace-head" },
      data("h1", task.name, { id: "trace-title" }),
      data("p", task.description, { className: "data desc" }),
      el(
        "ul",
        { className: "chips" },
        el("li", { className: "chip" }, el("strong", null, seconds(task.duration)), " duration"),
        el("li", { className: "chip" }, el("strong", null, num((task.steps || []).length)), " steps"),
        el("li", { className: "chip" }, el("strong", null, num(tokens)), " tokens"),
        usage.usage.estimated_cost_usd !== undefined ? el("li", { className: "chip" }, el("strong", null, usd(usage.usage.estimated_cost_usd)), " cost") : null,
        el("li", { className: errors.length ? "chip bad" : "chip good" }, errors.length ? errors.length + " error(s)" : "no errors"),
        el("li", { className: "chip", title: item.received_at }, "received " + when(item.received_at)),
        el("li", { className: "chip mono", title: "agent " + item.agent_id }, "agent " + item.agent_id.slice(0, 8)),
      ),
    ));
    if (truncated) {
      view.appendChild(el(
        "section",
        { className: "card warn", id: "fit-cut" },
        el("h2", null, "Shrunk to fit the size limit"),
        el("p", null, "fit_task cut: ", data("span", cut || "(not said)")),
      ));
    }
    const outcome = kv([
      ["input_summary", task.input_summary],
      ["output_summary", task.output_summary],
      ["started", task.current_datetime],
      ["trace_id", item.trace_id],
    ]);
    if (outcome) view.appendChild(card("Outcome", outcome));
    const expected = task.expected_outcome;
    if (expected) {
      const parts = [kv([["task_objective", expected.task_objective]])];
      for (const key of ["required_deliverables", "constraints", "acceptance_criteria"]) {
        if (expected[key] && expected[key].length) parts.push(el("h3", { className: "sub" }, label(key)), bulletList(expected[key]));
      }
      view.appendChild(card("Expected outcome", ...parts));
    }
    const steps = task.steps || [];
    if (steps.length) {
      const legend = el(
        "div",
        { className: "legend" },
        el("span", null, el("span", { className: "mark mark-llm" }, "LLM"), " LLM call"),
        el("span", null, el("span", { className: "mark mark-tool" }, "TOOL"), " tool call"),
        el("span", null, el("span", { className: "mark mark-error" }, "ERROR"), " failed"),
        el("span", null, "Open a step for its previews, metadata and error."),
      );
      const section = card("Timeline", legend, timeline(steps, task.duration));
      section.id = "timeline";
      view.appendChild(section);
    }
    const usageSection = usageCard(task);
    if (usageSection) {
      usageSection.id = "usage";
      view.appendChild(usageSection);
    }
    if (errors.length) {
      const section = card("Errors", ...errors.map(([e, where]) => errorBlock(e, where)));
      section.id = "errors";
      view.appendChild(section);
    }
    delete tags.truncated;
    delete tags.truncated_fields;
    const envFields = Object.assign({}, env);
    delete envFields.custom_tags;
    const general = task.general || {};
    const envParts = [kv(Object.entries(envFields))];
    if (Object.keys(tags).length) envParts.push(el("h3", { className: "sub" }, "Tags"), kv(Object.entries(tags)));
    if (general.tags && general.tags.length) envParts.push(el("ul", { className: "tags" }, ...general.tags.map((t) => data("li", t))));
    if (envParts.some(Boolean)) view.appendChild(card("Environment and tags", ...envParts));
    const sections = SECTIONS.filter((name) => task[name] && Object.keys(task[name]).length);
    if (sections.length) {
      const grid = el("div", { className: "grid2" });
      for (const name of sections) {
        const fields = Object.assign({}, task[name]);
        if (name === "general") {
          // Shown under Errors and under Environment and tags.
          delete fields.errors_encountered;
          delete fields.tags;
        }
        const list = kv(Object.entries(fields));
        if (list) grid.appendChild(el("div", null, el("h3", { className: "sub" }, label(name)), list));
      }
      if (grid.childElementCount) view.appendChild(card("Sections", grid));
    }
    const raw = data("pre", item.raw, { className: "data raw", id: "raw", tabIndex: 0 });
    const status = el("span", { className: "copied", role: "status" });
    const copy = el("button", { type: "button", id: "copy" }, "Copy");
    copy.addEventListener("click", () => copyText(item.raw, raw, status));
    view.appendChild(el(
      "section",
      { className: "card" },
      el("div", { className: "rawbar" }, el("h2", null, "Raw body (as received)"), el("span", null, copy, status)),
      raw,
    ));
  }

  async function copyText(text, pre, status) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) {
      // Off a secure origin (a non-loopback bind over plain HTTP) there is no clipboard API:
      // select the text so that Ctrl-C takes it.
      const range = document.createRange();
      range.selectNodeContents(pre);
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      status.textContent = "Selected: press Ctrl-C";
      return;
    }
    status.textContent = "Copied";
    setTimeout(() => { status.textContent = ""; }, 2000);
  }

  async function showTrace(id) {
    $("list-view").classList.add("hidden");
    const view = $("trace-view");
    view.classList.remove("hidden");
    clear(view);
    view.appendChild(el("p", { className: "empty" }, "Loading…"));
    try {
      const item = await getJSON("/viewer/api/traces/" + encodeURIComponent(id));
      renderTrace(item);
      document.title = (item.trace.name || "Trace") + " · Infinium traces";
    } catch (error) {
      clear(view);
      view.append(el("a", { className: "back", href: "#/" }, "← All traces"), el("p", { className: "empty" }, "This trace could not be loaded (" + error.message + ")."));
    }
    window.scrollTo(0, 0);
    $("main").focus({ preventScroll: true });
  }

  function showList() {
    $("trace-view").classList.add("hidden");
    $("list-view").classList.remove("hidden");
    document.title = "Traces · Infinium local collector";
    highlight(state.current >= 0);
  }

  function route() {
    const match = /^#\/trace\/([0-9a-fA-F-]{36})$/.exec(location.hash);
    if (match) showTrace(match[1]);
    else showList();
  }

  // --- wiring ---------------------------------------------------------------------------------

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName);
    const onList = !$("list-view").classList.contains("hidden");
    if (event.key === "Escape") {
      if (typing) event.target.blur();
      else if (!onList) location.hash = "#/";
      return;
    }
    if (typing) return;
    if (onList) {
      if (event.key === "/") {
        event.preventDefault();
        $("q").focus();
      } else if (event.key === "j") {
        event.preventDefault();
        state.current = Math.min(state.current + 1, state.rows.length - 1);
        highlight(true);
      } else if (event.key === "k") {
        event.preventDefault();
        state.current = Math.max(state.current - 1, 0);
        highlight(true);
      } else if (event.key === "n") {
        older();
      } else if (event.key === "p") {
        newer();
      }
    } else if (event.key === "Backspace") {
      location.hash = "#/";
    }
  }

  function start() {
    let typing = null;
    $("q").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.q = $("q").value.trim();
        firstPage();
      }, 200);
    });
    $("agent").addEventListener("change", () => {
      state.agent = $("agent").value;
      firstPage();
    });
    $("errors").addEventListener("change", () => {
      state.errors = $("errors").checked;
      firstPage();
    });
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("older").addEventListener("click", older);
    $("newer").addEventListener("click", newer);
    $("fresh-button").addEventListener("click", firstPage);
    document.addEventListener("keydown", onKey);
    window.addEventListener("hashchange", route);
    firstPage().then(route);
    setInterval(poll, POLL_MS);
    document.addEventListener("visibilitychange", poll);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
