/// The dashboard's page and script, served as they are: no build step, nothing
/// fetched from elsewhere. The script reads `/api/…` every two seconds with
/// the token the user gave (kept in the tab's session storage; a link may
/// carry it as `#token=…`, which never reaches a server) and draws with SVG.
///
/// Elements carry `data-` attributes naming what they show (a job's state, a
/// chart's points, a slice's stage) for tests that read the page.
enum DashboardPage {
  static let html = """
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Pipemesh</title>
    <style>
      body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
      header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 16px; align-items: baseline; }
      header h1 { font-size: 18px; margin: 0; }
      header span { color: #aab3c5; }
      main { padding: 16px 20px; display: grid; gap: 16px; grid-template-columns: minmax(360px, 1fr) 2fr; }
      section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 12px 16px; }
      section.wide { grid-column: 1 / -1; }
      h2 { font-size: 15px; margin: 0 0 8px; }
      table { border-collapse: collapse; width: 100%; }
      th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f4; white-space: nowrap; }
      th { font-weight: 600; color: #566074; }
      tr.job { cursor: pointer; }
      tr.job:hover, tr.job.selected { background: #eef3fb; }
      .state { font-size: 12px; padding: 1px 6px; border-radius: 8px; background: #e7e9ee; }
      .state.JOB_STATE_RUNNING, .state.MEMBER_STATE_BUSY { background: #d9ecff; }
      .state.JOB_STATE_SUCCEEDED, .state.MEMBER_STATE_FREE { background: #dcf3e2; }
      .state.JOB_STATE_FAILED, .state.MEMBER_STATE_SILENT { background: #fbdada; }
      .figures { display: flex; gap: 24px; margin: 4px 0 8px; }
      .figures div span { display: block; color: #566074; font-size: 12px; }
      .charts { display: flex; flex-wrap: wrap; gap: 12px; }
      svg text { font-size: 11px; fill: #566074; }
      svg .train { fill: none; stroke: #3b6fb6; stroke-width: 1.5; }
      svg .validation { fill: #e0782f; }
      svg .grid { stroke: #eef0f4; }
      svg .axis { stroke: #aab3c5; }
      .slice.forward { fill: #4e79a7; } .slice.backward { fill: #f28e2b; } .slice.weights { fill: #e15759; }
      .slice.commit { fill: #76b7b2; } .slice.transfer { fill: #bab0ac; }
      #problem { display: none; background: #fbdada; border: 1px solid #e6a5a5; padding: 8px 12px; border-radius: 6px; }
      #login { display: none; }
      .muted { color: #8a93a6; }
    </style>
    </head>
    <body>
    <header><h1>Pipemesh</h1><span id="where"></span><span id="updated"></span></header>
    <main>
      <div id="problem" class="wide"></div>
      <section id="login" class="wide">
        <h2>Token</h2>
        <p>This coordinator needs a token (the one the CLI reads from PIPEMESH_TOKEN).
           It stays in this tab only.</p>
        <form id="login-form"><input id="token" type="password" size="70" autocomplete="off">
        <button type="submit">Use</button></form>
      </section>
      <section><h2>Jobs</h2><table id="jobs"><thead><tr><th>Job</th><th>State</th><th>Step</th>
        <th>Loss</th><th>Owner</th></tr></thead><tbody></tbody></table></section>
      <section id="job"><h2>Job</h2><p class="muted">No job yet.</p></section>
      <section class="wide"><h2>Pipeline timeline</h2><div id="timeline"><p class="muted">No step traced yet.</p></div>
        <p class="muted">One steady step, as the partitions timed it.
          <a id="trace-link" href="#" download="trace.json">Download trace.json</a>
          and open it in Perfetto (ui.perfetto.dev) to zoom in.</p></section>
      <section><h2>Members</h2><table id="members"><thead><tr><th>Partition</th><th>State</th><th>Job</th>
        <th>Memory budget</th></tr></thead><tbody></tbody></table></section>
      <section><h2>Models</h2><table id="models"><thead><tr><th>Model</th><th>Version</th><th>Job</th>
        <th>Owner</th></tr></thead><tbody></tbody></table></section>
    </main>
    <script src="/dashboard.js"></script>
    </body>
    </html>
    """

  static let script = #"""
    "use strict";
    const view = { token: sessionStorage.getItem("pipemesh-token") || "", job: null, traceURL: null };
    const svgNS = "http://www.w3.org/2000/svg";

    (function takeTokenFromLink() {
      const match = location.hash.match(/token=([^&]+)/);
      if (!match) return;
      view.token = decodeURIComponent(match[1]);
      sessionStorage.setItem("pipemesh-token", view.token);
      history.replaceState(null, "", location.pathname);
    })();

    document.getElementById("login-form").addEventListener("submit", event => {
      event.preventDefault();
      view.token = document.getElementById("token").value.trim();
      sessionStorage.setItem("pipemesh-token", view.token);
      refresh();
    });

    async function api(path) {
      const headers = view.token ? { Authorization: "Bearer " + view.token } : {};
      const response = await fetch(path, { headers });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        const error = new Error(body.message || response.statusText);
        error.status = response.status;
        throw error;
      }
      return body;
    }

    function element(tag, attributes = {}, text) {
      const node = tag.startsWith("svg:") ? document.createElementNS(svgNS, tag.slice(4)) : document.createElement(tag);
      for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
      if (text !== undefined) node.textContent = text;
      return node;
    }

    const number = (value, digits = 4) => (value === undefined ? "–" : Number(value).toPrecision(digits));
    const bytes = value => (value ? (value / 2 ** 30).toFixed(1) + " GiB" : "–");

    function fillTable(id, rows, cells, attributes = () => ({})) {
      const body = document.querySelector(`#${id} tbody`);
      body.replaceChildren(...rows.map(row => {
        const line = element("tr", attributes(row));
        for (const cell of cells(row)) {
          const td = element("td");
          if (cell instanceof Node) td.append(cell); else td.textContent = cell;
          line.append(td);
        }
        return line;
      }));
      if (rows.length === 0) {
        const empty = element("tr");
        empty.append(element("td", { class: "muted" }, "none"));
        body.append(empty);
      }
    }

    const stateBadge = state => element("span", { class: "state " + state, "data-state": state },
      (state || "").replace(/^(JOB|MEMBER)_STATE_/, "").toLowerCase());

    /// Round steps for an axis from `low` to `high`: 1, 2 or 5 times a power of ten.
    function ticks(low, high, count = 5) {
      if (!(high > low)) return [low];
      const raw = (high - low) / count, power = 10 ** Math.floor(Math.log10(raw));
      const step = [1, 2, 5, 10].map(f => f * power).find(s => s >= raw);
      const ticks = [];
      for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
      return ticks;
    }

    /// A line of the steps' values and dots of the epochs' validation values.
    function chart(id, title, steps, validation) {
      const width = 420, height = 220, left = 48, right = 12, top = 20, bottom = 32;
      const svg = element("svg:svg", { id, width, height, viewBox: `0 0 ${width} ${height}`,
        "data-points": steps.length, "data-validation-points": validation.length });
      svg.append(element("svg:text", { x: left, y: 13 }, title));
      const xs = steps.map(p => p[0]).concat(validation.map(p => p[0]));
      const ys = steps.map(p => p[1]).concat(validation.map(p => p[1])).filter(Number.isFinite);
      if (xs.length === 0) return svg;
      const xTicks = ticks(Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1));
      const yTicks = ticks(Math.min(0, ...ys), Math.max(...ys, 1e-9));
      const [x0, x1] = [Math.min(xTicks[0], ...xs), Math.max(xTicks[xTicks.length - 1], ...xs)];
      const [y0, y1] = [yTicks[0], Math.max(yTicks[yTicks.length - 1], ...ys)];
      const x = v => left + (v - x0) / (x1 - x0 || 1) * (width - left - right);
      const y = v => height - bottom - (v - y0) / (y1 - y0 || 1) * (height - top - bottom);
      for (const t of yTicks) {
        svg.append(element("svg:line", { class: "grid", x1: left, x2: width - right, y1: y(t), y2: y(t) }));
        svg.append(element("svg:text", { x: left - 4, y: y(t) + 4, "text-anchor": "end", class: "y-tick" }, t));
      }
      for (const t of xTicks) {
        svg.append(element("svg:text", { x: x(t), y: height - bottom + 14, "text-anchor": "middle", class: "x-tick" }, t));
      }
      svg.append(element("svg:text", { x: width - right, y: height - 4, "text-anchor": "end" }, "step"));
      svg.append(element("svg:line", { class: "axis", x1: left, x2: width - right, y1: y(y0), y2: y(y0) }));
      if (steps.length) {
        svg.append(element("svg:polyline", { class: "train",
          points: steps.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ") }));
      }
      for (const p of validation) svg.append(element("svg:circle", { class: "validation", cx: x(p[0]), cy: y(p[1]), r: 3 }));
      return svg;
    }

    function showJob(job) {
      const section = document.getElementById("job");
      const steps = job.steps || [], epochs = job.epochs || [];
      const last = steps[steps.length - 1] || {};
      const classifier = steps.some(s => s.accuracy > 0) || epochs.some(e => e.validation_accuracy > 0);
      const figures = element("div", { class: "figures" });
      for (const [label, value] of [["step", `${job.step || 0} / ${job.total_steps || 0}`],
          ["loss", number(job.loss)], ["samples/s", last.samples_per_second ? Math.round(last.samples_per_second) : "–"],
          ["validation accuracy", epochs.length && classifier ? number(epochs[epochs.length - 1].validation_accuracy, 3) : "–"]]) {
        const div = element("div"); div.append(element("span", {}, label), document.createTextNode(value)); figures.append(div);
      }
      const charts = element("div", { class: "charts" });
      // Epochs without a held-out split have no validation figures.
      const validated = epochs.filter(e => e.validation_loss !== undefined);
      charts.append(chart("loss-chart", "loss (line: steps, dots: validation)",
        steps.map(s => [s.step || 0, s.loss || 0]), validated.map(e => [e.step || 0, e.validation_loss])));
      if (classifier) {
        charts.append(chart("accuracy-chart", "accuracy (line: steps, dots: validation)",
          steps.map(s => [s.step || 0, s.accuracy || 0]), validated.map(e => [e.step || 0, e.validation_accuracy || 0])));
      }
      const heading = element("h2", { "data-job": job.job }, "Job " + job.job + " ");
      heading.append(stateBadge(job.state));
      const children = [heading, figures, charts];
      if (job.error) children.push(element("p", { class: "error" }, job.error));
      const faults = job.faults || [];
      if (faults.length) {
        const list = element("ul", { class: "faults", "data-faults": faults.length });
        for (const fault of faults) {
          const back = fault.recovery_seconds ? `, stepping again ${number(fault.recovery_seconds, 2)} s later` : "";
          list.append(element("li", {}, `${(fault.state || "").replace("JOB_STATE_", "").toLowerCase()} at step ` +
            `${fault.step || 0}: ${fault.error || ""} (${fault.steps_redone || 0} steps redone${back})`));
        }
        children.push(element("h3", {}, "Stops"), list);
      }
      section.replaceChildren(...children);
      showTimeline(job.trace_json || "");
    }

    /// The trace's slices, a row per track (a stage's computations, the transfers into it).
    function showTimeline(traceJSON) {
      const holder = document.getElementById("timeline"), link = document.getElementById("trace-link");
      if (view.traceURL) URL.revokeObjectURL(view.traceURL);
      view.traceURL = traceJSON ? URL.createObjectURL(new Blob([traceJSON], { type: "application/json" })) : null;
      link.href = view.traceURL || "#";
      if (!traceJSON) { holder.replaceChildren(element("p", { class: "muted" }, "No step traced yet.")); return; }
      const events = JSON.parse(traceJSON).traceEvents || [];
      // The job's stops are listed with the job, not drawn at their distant times.
      const slices = events.filter(e => e.ph === "X" && e.cat !== "fault");
      const start = Math.min(...slices.map(e => e.ts));
      for (const slice of slices) slice.ts -= start;
      const replicas = new Set(slices.map(e => e.pid)).size;
      const names = new Map(events.filter(e => e.ph === "M" && e.name === "thread_name")
        .map(e => [`${e.pid}/${e.tid}`, (replicas > 1 ? `replica ${e.pid} ` : "") + e.args.name]));
      const tracks = [...new Set(slices.map(e => `${e.pid}/${e.tid}`))].sort((a, b) => {
        const [pa, ta] = a.split("/").map(Number), [pb, tb] = b.split("/").map(Number);
        return pa - pb || ta - tb;
      });
      const end = Math.max(...slices.map(e => e.ts + e.dur), 1);
      const width = Math.max(holder.clientWidth || 900, 600), left = 130, row = 22, height = tracks.length * row + 24;
      const svg = element("svg:svg", { width, height, "data-slices": slices.length, "data-tracks": tracks.length });
      const x = t => left + t / end * (width - left - 10);
      tracks.forEach((track, index) => {
        svg.append(element("svg:text", { x: 4, y: index * row + 15 }, names.get(track) || track));
      });
      for (const slice of slices) {
        const index = tracks.indexOf(`${slice.pid}/${slice.tid}`);
        const rect = element("svg:rect", { class: "slice " + slice.cat, x: x(slice.ts), y: index * row + 3,
          width: Math.max(x(slice.ts + slice.dur) - x(slice.ts), 0.5), height: row - 6,
          "data-name": slice.name, "data-stage": slice.args.stage });
        rect.append(element("svg:title", {}, `${slice.name} (stage ${slice.args.stage}): ${(slice.dur / 1000).toFixed(2)} ms`));
        svg.append(rect);
      }
      for (const t of ticks(0, end / 1000)) {
        svg.append(element("svg:text", { x: x(t * 1000), y: height - 6, "text-anchor": "middle" }, t + " ms"));
      }
      holder.replaceChildren(svg);
    }

    /// Only the newest refresh draws: an older one that ends later (a click meanwhile) is dropped.
    let refreshes = 0;

    async function refresh() {
      const problem = document.getElementById("problem"), login = document.getElementById("login");
      const mine = ++refreshes;
      try {
        const [jobs, pool, models] = await Promise.all([api("/api/jobs"), api("/api/pool"), api("/api/models")]);
        if (mine !== refreshes) return;
        problem.style.display = "none";
        login.style.display = "none";
        const list = jobs.jobs || [];
        if (!view.job || !list.some(j => j.job === view.job)) {
          view.job = (list.find(j => j.state === "JOB_STATE_RUNNING") || list[0] || {}).job || null;
        }
        fillTable("jobs", list, j => [j.job, stateBadge(j.state), `${j.step || 0} / ${j.total_steps || 0}`,
          number(j.loss), j.owner || "–"], j => ({ class: "job" + (j.job === view.job ? " selected" : ""), "data-job": j.job }));
        for (const line of document.querySelectorAll("#jobs tr.job")) {
          line.addEventListener("click", () => { view.job = line.dataset.job; refresh(); });
        }
        fillTable("members", pool.members || [], m => [m.endpoint, stateBadge(m.state), m.job || "–",
          bytes(m.memory_budget_bytes)], m => ({ "data-endpoint": m.endpoint, "data-state": m.state }));
        fillTable("models", models.models || [], m => [m.name, "v" + (m.version || 0), m.job || "–", m.owner || "–"],
          m => ({ "data-model": m.name }));
        if (view.job) {
          const job = await api("/api/jobs/" + encodeURIComponent(view.job));
          if (mine !== refreshes) return;
          showJob(job);
        }
        document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
        document.body.dataset.loaded = "true";
      } catch (error) {
        if (mine !== refreshes) return;
        problem.style.display = "block";
        problem.textContent = error.message;
        problem.dataset.status = error.status || 0;
        if (error.status === 401 || error.status === 403) login.style.display = "block";
      }
    }

    document.getElementById("where").textContent = location.host;
    refresh();
    setInterval(refresh, 2000);
    """#
}
